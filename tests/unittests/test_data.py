"""Audio loading checks, wrap-padding and random crops."""

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain.dataio import audio_io

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


def test_long_utterances_read_only_the_cropped_samples(tmp_path, monkeypatch):
    """Crops of a 60-s segment are read one by one and equal the crops of the
    whole segment for the same generator state; a short one is read once."""
    path = str(tmp_path / "long.wav")
    sf.write(path, np.random.default_rng(1).integers(-3000, 3000, 16000 * 70).astype(np.int16), 16000)
    func, _ = crop_pipeline({"views": (2, 2.0), "ref": (1, 4.0)})
    reads = []
    load = audio_io.load
    monkeypatch.setattr(audio_io, "load", lambda *a, **k: reads.append(k["num_frames"]) or load(*a, **k))
    torch.manual_seed(3)
    views, ref = func(path, 16000, 16000 * 61)
    assert reads == [32000, 32000, 64000]
    whole = load_utterance(path, 16000, 16000, 16000 * 60)
    torch.manual_seed(3)
    assert torch.equal(views, random_crops(whole, 32000, 2)) and torch.equal(ref, random_crops(whole, 64000, 1))
    reads.clear()
    func(path, 0, 16000 * 6)  # 8 s of crops from a 6-s utterance: one read
    assert reads == [16000 * 6]
    with pytest.raises(ValueError, match="shorter than the manifest's stop"):
        func(path, 16000 * 69, 16000 * 100)


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


def test_crops_are_the_windows_at_the_drawn_starts():
    """random_crops draws n starts with one randint and returns those windows
    (the same values as gathering wav[start + arange(length)])."""
    wav = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    crops = random_crops(wav, 100, 3)
    torch.manual_seed(7)
    starts = torch.randint(0, 901, (3,))
    assert torch.equal(crops, wav[starts[:, None] + torch.arange(100)[None, :]])
