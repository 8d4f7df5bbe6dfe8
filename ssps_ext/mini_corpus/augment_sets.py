"""Synthetic stand-ins for MUSAN and the simulated RIRs of OpenSLR 28.

They feed SpeechBrain's ``AddNoise`` / ``AddReverb`` lobes during training.
They are drawn from their own random streams and their own distributions
(other voices, other rooms), never from the recordings' channels, so that
augmentation does not simply replay the corpus' confounds.

Layout (as ``musan_split`` and ``simulated_rirs`` after preparation)::

    noise/speech/*.wav  noise/noise/*.wav  noise/music/*.wav   4 s each
    rir/<room>/*.wav
"""

import os

import numpy as np
import soundfile as sf

from .channel import colored_noise, smooth_curve_db, synth_rir
from .voice import SAMPLE_RATE, draw_speaker, synthesize_utterance

NOISE_SECONDS = 4.0  # covers the longest crop (4 s); MUSAN is split into 8-s chunks


def _speech_noise(rng):
    """A MUSAN-'speech' stand-in: one or two overlapping unseen voices."""
    n = int(NOISE_SECONDS * SAMPLE_RATE)
    x = np.zeros(n, dtype=np.float64)
    for _ in range(int(rng.integers(1, 3))):
        x += synthesize_utterance(draw_speaker(rng), NOISE_SECONDS, rng)
    return x


def _noise_noise(rng):
    """A MUSAN-'noise' stand-in: coloured noise with slow level changes."""
    n = int(NOISE_SECONDS * SAMPLE_RATE)
    freqs_db = lambda f: smooth_curve_db(rng, f, 6, 8.0) + rng.uniform(
        -6, 3
    ) * np.log2(np.maximum(f, 20) / 1000)
    x = colored_noise(rng, n, freqs_db)
    env = np.interp(
        np.arange(n),
        np.linspace(0, n, 9),
        np.exp(rng.normal(0, 0.5, 9)),
    )
    return x * env


def _music_noise(rng):
    """A MUSAN-'music' stand-in: random harmonic notes with decays."""
    n = int(NOISE_SECONDS * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    note_len = rng.uniform(0.15, 0.6)
    starts = np.arange(0, NOISE_SECONDS, note_len)
    for start in starts:
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        mask = (t >= start) & (t < start + 2 * note_len)
        tt = t[mask] - start
        partials = np.arange(1, 6)[:, None]
        tone = (np.sin(2 * np.pi * f0 * partials * tt) / partials**1.5).sum(0)
        x[mask] += tone * np.exp(-tt / (0.5 * note_len))
    return x


NOISE_CATEGORIES = {
    "speech": _speech_noise,
    "noise": _noise_noise,
    "music": _music_noise,
}
ROOMS = {"smallroom": (0.15, 0.4), "mediumroom": (0.3, 0.7), "largeroom": (0.5, 1.0)}


def _write(path, x):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.5 * x / (np.abs(x).max() + 1e-9)
    sf.write(path, x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")


def write_noise_set(folder, seed, n_per_category=8):
    """Writes ``n_per_category`` 8-s files per MUSAN category; returns paths."""
    paths = []
    for c, (name, fn) in enumerate(sorted(NOISE_CATEGORIES.items())):
        for i in range(n_per_category):
            rng = np.random.default_rng([seed, 7001, c, i])
            path = os.path.join(folder, name, f"{name}-{i:04d}.wav")
            _write(path, fn(rng))
            paths.append(path)
    return paths


def write_rir_set(folder, seed, n_per_room=10):
    """Writes simulated-room impulse responses; returns the paths."""
    paths = []
    for r, (room, (lo, hi)) in enumerate(sorted(ROOMS.items())):
        for i in range(n_per_room):
            rng = np.random.default_rng([seed, 7002, r, i])
            rt60 = rng.uniform(lo, hi)
            rir = synth_rir(rng, rt60, min(1.0, rt60 + 0.1), rng.uniform(0.3, 2))
            path = os.path.join(folder, room, f"{room}-{i:04d}.wav")
            _write(path, rir)
            paths.append(path)
    return paths
