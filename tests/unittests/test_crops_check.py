"""Crop groups each Brain reads are checked before training."""

from types import SimpleNamespace

import pytest

from ssps_ext.brains.dino import DINOBrain
from ssps_ext.brains.simclr import SimCLRBrain


def brain(cls, crops, ssps=None, n_crops=6):
    b = cls.__new__(cls)  # the check needs only the hyperparameters
    b.hparams = SimpleNamespace(crops=crops, ssps=ssps, dino_loss=SimpleNamespace(n_crops=n_crops))
    return b


def test_simclr_needs_two_views_and_ssps_a_reference():
    brain(SimCLRBrain, {"views": [2, 2.0]}).check_crops()
    brain(SimCLRBrain, {"views": [2, 2.0], "ref": [1, 4.0]}, ssps=object()).check_crops()
    with pytest.raises(ValueError, match="'views' with 2 crop"):
        brain(SimCLRBrain, {"views": [3, 2.0]}).check_crops()
    with pytest.raises(ValueError, match="'ref' with at least 1"):
        brain(SimCLRBrain, {"views": [2, 2.0]}, ssps=object()).check_crops()


def test_dino_needs_two_globals_and_the_loss_view_count():
    brain(DINOBrain, {"global_views": [2, 4.0], "local_views": [4, 2.0]}).check_crops()
    with pytest.raises(ValueError, match="'local_views'"):
        brain(DINOBrain, {"global_views": [2, 4.0]}).check_crops()
    with pytest.raises(ValueError, match="n_crops = 6 but crops give 5"):
        brain(DINOBrain, {"global_views": [2, 4.0], "local_views": [3, 2.0]}).check_crops()
