"""SimCLRBrain training steps on a fixed batch: the loss goes down."""

import functools

import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.epoch_loop import EpochCounter

from ssps_ext.brains.simclr import SimCLRBrain
from ssps_ext.losses.ntxent import NTXent


class _Padded:
    def __init__(self, data):
        self.data = data


def test_fixed_batch_loss_decreases_through_fit_batch():
    """Eight utterances, two crops each: 25 full training steps (forward per
    view, symmetric NT-Xent, Adam) must cut the loss on the same batch by
    more than half; with the optimiser's learning rate at 0 it stays put."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    f0 = torch.linspace(100, 240, 8)[:, None]  # 8 "voices"
    clean = torch.sin(2 * torch.pi * f0 * t) + 0.3 * torch.sin(2 * torch.pi * 3.1 * f0 * t)
    views = torch.stack([clean + 0.05 * torch.randn(8, 8000, generator=g) for _ in range(2)], 1)  # (8, 2, T)
    batch = type("B", (), {"views": _Padded(views), "index": _Padded(torch.arange(8)), "id": list("abcdefgh")})

    def brain(lr):
        torch.manual_seed(0)
        modules = {
            "compute_features": Fbank(n_mels=16), "mean_var_norm": InputNormalization(norm_type="sentence"),
            "encoder": ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8, se_channels=8),
        }
        hparams = dict(
            augment=False, view_augment=None, ssps=None, projector=None, emb_dim=16, views_in_one_batch=False,
            loss=NTXent(0.1, symmetric=True), epoch_counter=EpochCounter(1),
            lr_schedule=lambda epoch, position, steps: lr,
        )
        out = SimCLRBrain(modules, functools.partial(torch.optim.Adam, lr=lr), hparams, run_opts={"device": "cpu"})
        out.init_optimizers()
        out.steps_per_epoch, out.step = 25, 0
        out.hparams.epoch_counter.current = 1
        return out

    def losses(lr):
        b = brain(lr)
        out = []
        for _ in range(25):
            b.step += 1
            out.append(float(b.fit_batch(batch)))
        return out

    trained = losses(3e-3)
    assert trained[-1] < 0.5 * trained[0], trained
    frozen = losses(0.0)
    assert abs(frozen[-1] - frozen[0]) < 0.05 * frozen[0], frozen
