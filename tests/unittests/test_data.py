"""Audio loading checks, wrap-padding and random crops."""

import numpy as np
import pytest
import soundfile as sf
import torch

from ssps_ext.data import crop_pipeline, load_utterance, random_crops, wrap_pad


def test_wrap_pad_repeats_from_start():
    x = torch.arange(5.0)
    assert wrap_pad(x, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert wrap_pad(x, 3) is x


def test_random_crops_are_contiguous_windows():
    torch.manual_seed(0)
    x = torch.arange(100.0)
    crops = random_crops(x, 10, 4)
    assert crops.shape == (4, 10)
    assert torch.all(crops[:, 1:] - crops[:, :-1] == 1)  # contiguous
    short = random_crops(torch.arange(3.0), 7, 2)  # wrap-padded, start 0
    assert short.tolist() == [[0, 1, 2, 0, 1, 2, 0]] * 2


def test_crop_pipeline_groups(tmp_path):
    path = str(tmp_path / "a.wav")
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, 16000), 16000)
    func, provides = crop_pipeline({"views": (2, 0.5), "ref": (1, 2.0)})
    views, ref = func(path)
    assert provides == ["views", "ref"]
    assert views.shape == (2, 8000) and ref.shape == (1, 32000)


@pytest.mark.parametrize(
    "kind,match",
    [("missing", "Failed to load audio from .*nofile.wav"), ("rate", "8000 Hz, expected 16000"), ("stereo", "2 channels, expected mono")],
)
def test_load_errors_name_the_file(tmp_path, kind, match):
    path = str(tmp_path / ("nofile.wav" if kind == "missing" else f"{kind}.wav"))
    if kind == "rate":
        sf.write(path, np.zeros(800), 8000)
    elif kind == "stereo":
        sf.write(path, np.zeros((1600, 2)), 16000)
    with pytest.raises((RuntimeError, ValueError), match=match):
        load_utterance(path)
