"""The default features equal a direct computation of the reference's recipe:
25-ms Hamming frames every 10 ms, 512-point power spectrum, 40 triangular mel
filters, log, then per-utterance mean and variance normalisation of each band."""

import math
import os

import torch

from ssps_ext.hparams import load_hparams

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams")


def direct_features(wav, n_fft=512, n_mels=40, sr=16000, win=400, hop=160):
    """(T,) waveform -> (frames, n_mels), written from the definitions."""
    x = torch.nn.functional.pad(wav, (n_fft // 2, n_fft // 2))  # centred frames, zero padding
    frames = x.unfold(0, n_fft, hop)  # (frames, n_fft)
    window = torch.zeros(n_fft)
    start = (n_fft - win) // 2
    n = torch.arange(win, dtype=torch.float64)
    window[start:start + win] = (0.54 - 0.46 * torch.cos(2 * math.pi * n / win)).float()  # periodic Hamming
    power = torch.fft.rfft(frames * window).abs() ** 2  # (frames, n_fft/2 + 1)
    mel = torch.linspace(0, 2595 * math.log10(1 + sr / 2 / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    centre, half_width = hz[1:-1], (hz[1:] - hz[:-1])[:-1]
    freqs = torch.linspace(0, sr // 2, n_fft // 2 + 1)
    slope = (freqs[None, :] - centre[:, None]) / half_width[:, None]
    filters = torch.clamp(torch.minimum(slope + 1, 1 - slope), min=0)  # (n_mels, bins)
    logmel = 10 * torch.log10(torch.clamp(power @ filters.T, min=1e-10))
    logmel = torch.maximum(logmel, logmel.max() - 80)  # 80-dB floor
    mean, std = logmel.mean(0), logmel.std(0, unbiased=False)
    return (logmel - mean) / std


def test_default_features_match_direct_computation():
    h, _ = load_hparams(os.path.join(HPARAMS, "simclr.yaml"), {"data_folder": "/d", "test_data_folder": "/t"})
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000 * 2) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + torch.sin(2 * math.pi * 3 * t)) + 0.01 * torch.randn(t.shape, generator=g)
    ours = h["mean_var_norm"](h["compute_features"](wav[None]), torch.ones(1))[0]
    expected = direct_features(wav)
    assert ours.shape == expected.shape == (201, 40)
    assert torch.allclose(ours, expected, atol=2e-3)
    # per band: zero mean and unit variance over the utterance
    assert torch.allclose(ours.mean(0), torch.zeros(40), atol=1e-4)
    assert torch.allclose(ours.std(0, unbiased=False), torch.ones(40), atol=1e-3)


def test_variance_normalisation_makes_log_base_irrelevant():
    """dB (SpeechBrain) and natural log (reference) give the same normalised features."""
    g = torch.Generator().manual_seed(1)
    power = torch.rand(1, 50, 40, generator=g) + 1e-3
    h, _ = load_hparams(os.path.join(HPARAMS, "simclr.yaml"), {"data_folder": "/d", "test_data_folder": "/t"})
    norm = h["mean_var_norm"]
    db, ln = 10 * torch.log10(power), torch.log(power)
    assert torch.allclose(norm(db, torch.ones(1)), norm(ln, torch.ones(1)), atol=1e-4)
