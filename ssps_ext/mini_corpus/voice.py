"""Source-filter voice synthesis for the mini corpus.

A speaker is a stable set of voice traits (:class:`Speaker`): mean pitch and
intonation range, vocal-tract length (a scale applied to every formant), a
personal vowel space, glottal spectral tilt, breathiness and speaking rate.
An utterance is a random syllable string spoken with those traits, rendered
frame by frame with an STFT formant synthesiser (cascade-resonance spectral
envelope applied to a glottal pulse train, noise excitation for consonants).

Everything is numpy/torch; all randomness comes from the ``numpy.random.
Generator`` passed in, so a given seed always gives the same waveform.
"""

from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 128  # 8 ms synthesis frames

# Average adult vowel formants F1..F4 (Hz) before the speaker's scale factor.
VOWELS = np.array(
    [
        [270, 2290, 3010, 3600],  # i
        [390, 1990, 2550, 3500],  # I
        [530, 1840, 2480, 3500],  # E
        [660, 1720, 2410, 3450],  # ae
        [730, 1090, 2440, 3400],  # a
        [570, 840, 2410, 3350],  # O
        [440, 1020, 2240, 3300],  # U
        [300, 870, 2240, 3300],  # u
        [640, 1190, 2390, 3400],  # V
        [490, 1350, 1690, 3300],  # 3r
    ],
    dtype=np.float64,
)
# Consonant noise bands (low, high) in Hz: s, sh, f, h-like, burst.
CONSONANTS = np.array(
    [[3800, 7800], [2200, 6000], [800, 7800], [300, 3500], [1000, 5000]],
    dtype=np.float64,
)


@dataclass
class Speaker:
    """Stable voice traits of one synthetic speaker."""

    f0: float  # mean pitch (Hz)
    f0_range: float  # intonation std (semitones)
    tract_scale: float  # formant scale (short vocal tract > 1)
    vowel_space: np.ndarray  # (n_vowels, 4) personal formant targets (Hz)
    bandwidth_scale: float  # formant bandwidth multiplier
    tilt: float  # glottal roll-off exponent (larger = darker voice)
    breathiness: float  # aspiration noise level relative to voicing
    rate: float  # syllables per second
    vowel_prior: np.ndarray  # (n_vowels,) personal vowel usage
    extra_formant: tuple  # (Hz, bandwidth) of a personal high resonance


def draw_speaker(rng):
    """Draws the traits of a new speaker."""
    female = rng.random() < 0.5
    f0 = rng.uniform(165, 250) if female else rng.uniform(85, 150)
    scale = rng.uniform(1.08, 1.25) if female else rng.uniform(0.88, 1.05)
    personal = np.exp(rng.normal(0.0, 0.09, VOWELS.shape))
    prior = rng.dirichlet(np.full(len(VOWELS), 2.0))
    return Speaker(
        f0=f0,
        f0_range=rng.uniform(1.0, 3.5),
        tract_scale=scale,
        vowel_space=VOWELS * scale * personal,
        bandwidth_scale=rng.uniform(0.7, 1.6),
        tilt=rng.uniform(0.8, 2.2),
        breathiness=rng.uniform(0.02, 0.25),
        rate=rng.uniform(3.0, 6.0),
        vowel_prior=prior,
        extra_formant=(rng.uniform(2600, 4200) * scale, rng.uniform(150, 400)),
    )


def session_variant(speaker, rng):
    """Small per-recording drift of a speaker (mood, effort, fatigue)."""
    return Speaker(
        f0=speaker.f0 * 2 ** (rng.normal(0, 1.0) / 12),
        f0_range=speaker.f0_range * rng.uniform(0.85, 1.15),
        tract_scale=speaker.tract_scale,
        vowel_space=speaker.vowel_space * np.exp(rng.normal(0, 0.01, (1, 4))),
        bandwidth_scale=speaker.bandwidth_scale * rng.uniform(0.9, 1.1),
        tilt=speaker.tilt + rng.normal(0, 0.1),
        breathiness=speaker.breathiness * rng.uniform(0.8, 1.2),
        rate=speaker.rate * rng.uniform(0.9, 1.1),
        vowel_prior=speaker.vowel_prior,
        extra_formant=speaker.extra_formant,
    )


def _frame_plan(speaker, n_frames, rng):
    """Per-frame control tracks: voicing, consonant type, formants, level.

    Returns
    -------
    voiced : (n_frames,) float in [0, 1]
    cons : (n_frames,) int consonant index, -1 where none
    formants : (n_frames, 4) Hz
    level : (n_frames,) linear amplitude
    """
    frame_s = HOP / SAMPLE_RATE
    voiced = np.zeros(n_frames)
    cons = np.full(n_frames, -1)
    formants = np.zeros((n_frames, 4))
    level = np.zeros(n_frames)
    t = int(rng.integers(3, 15))  # short leading silence
    prev = speaker.vowel_space[rng.choice(len(VOWELS), p=speaker.vowel_prior)]
    formants[:t] = prev
    while t < n_frames:
        if rng.random() < 0.15:  # pause between words
            n = int(rng.uniform(0.08, 0.3) / frame_s)
            formants[t : t + n] = prev
            t += n
            continue
        if rng.random() < 0.7:  # onset consonant
            n = max(2, int(rng.uniform(0.03, 0.1) / frame_s))
            cons[t : t + n] = rng.integers(len(CONSONANTS))
            level[t : t + n] = rng.uniform(0.15, 0.5)
            formants[t : t + n] = prev
            t += n
            if t >= n_frames:
                break
        target = speaker.vowel_space[
            rng.choice(len(VOWELS), p=speaker.vowel_prior)
        ]
        n = max(4, int(rng.uniform(0.6, 1.4) / speaker.rate / frame_s))
        ramp = np.linspace(0, 1, n)[:, None] ** 0.5
        end = min(t + n, n_frames)
        formants[t:end] = (prev + (target - prev) * ramp)[: end - t]
        voiced[t:end] = 1.0
        level[t:end] = rng.uniform(0.6, 1.0) * np.hanning(n + 2)[1:-1][
            : end - t
        ] ** 0.3
        prev = target
        t = end
    formants[formants == 0] = prev.mean()
    return voiced, cons, formants, level


def _f0_track(speaker, n_samples, rng):
    """Sample-level pitch contour: declination + smooth random intonation."""
    n_knots = max(2, int(n_samples / SAMPLE_RATE * 4))
    semis = rng.normal(0, speaker.f0_range, n_knots)
    semis += np.linspace(1.5, -1.5, n_knots)  # declination
    contour = np.interp(
        np.arange(n_samples), np.linspace(0, n_samples, n_knots), semis
    )
    jitter = rng.normal(0, 0.08, n_samples // 80 + 2)
    contour += np.interp(
        np.arange(n_samples), np.arange(len(jitter)) * 80, jitter
    )
    return speaker.f0 * 2 ** (contour / 12)


def resonance_envelope(freqs, formants, bandwidths):
    """Magnitude of a cascade of second-order resonances.

    |H(f)| = prod_k F_k^2 / sqrt((F_k^2 - f^2)^2 + (f B_k)^2)

    Arguments
    ---------
    freqs : (F,) frequency grid in Hz.
    formants, bandwidths : (T, K) per-frame centre frequencies and bandwidths.

    Returns
    -------
    (T, F) envelope.
    """
    f = freqs[None, :, None].astype(np.float32)  # (1, F, 1)
    fk = formants[:, None, :].astype(np.float32)  # (T, 1, K)
    bk = bandwidths[:, None, :].astype(np.float32)
    mag = fk**2 / np.sqrt((fk**2 - f**2) ** 2 + (f * bk) ** 2)
    return mag.prod(axis=-1)


def synthesize_utterance(speaker, duration, rng):
    """Renders ``duration`` seconds of speech for ``speaker``.

    Returns a float32 waveform at 16 kHz with peak amplitude about 0.5.
    """
    n_samples = int(duration * SAMPLE_RATE)
    n_frames = n_samples // HOP + 1
    voiced, cons, formants, level = _frame_plan(speaker, n_frames, rng)

    # Excitation: glottal pulse train (with shimmer) and white noise.
    f0 = _f0_track(speaker, n_samples, rng)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    pulses *= 1 + 0.1 * rng.standard_normal(n_samples)
    noise = rng.standard_normal(n_samples) * 0.1

    win = torch.hann_window(N_FFT)

    def stft(x):
        x = torch.from_numpy(x.astype(np.float32))
        return torch.stft(x, N_FFT, HOP, window=win, return_complex=True).T.numpy()

    voice_spec, noise_spec = stft(pulses), stft(noise)
    T = voice_spec.shape[0]
    voiced, cons, formants, level = (
        voiced[:T],
        cons[:T],
        formants[:T],
        level[:T],
    )
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE).astype(np.float32)

    # Voiced envelope: 4 formants + fixed F5 + the speaker's own resonance,
    # glottal tilt, lip radiation.
    f5 = np.full((T, 1), 4500.0 * speaker.tract_scale)
    fx = np.full((T, 1), speaker.extra_formant[0])
    fk = np.concatenate([formants, f5, fx], axis=1)
    bk = np.array([60, 90, 130, 170, 250, 0]) * speaker.bandwidth_scale
    bk = np.broadcast_to(bk * (1 + 0.3 * fk / 3000), fk.shape).copy()
    bk[:, -1] = speaker.extra_formant[1]
    env_v = resonance_envelope(freqs, fk, bk)
    tilt = (1 + (freqs / 150.0) ** 2) ** (-speaker.tilt / 2) * (
        1 + freqs / 500.0
    )
    env_v = env_v * tilt[None, :].astype(np.float32)
    env_v /= env_v.max(axis=1, keepdims=True) + 1e-9

    # Unvoiced envelope: band-pass noise of the current consonant.
    band = CONSONANTS[np.maximum(cons, 0)]
    lo, hi = band[:, :1], band[:, 1:]
    ff = freqs[None, :]
    env_u = 1 / (1 + (lo / (ff + 1)) ** 4) / (1 + (ff / hi) ** 4)
    env_u = (env_u * ((cons >= 0) * level)[:, None]).astype(np.float32)

    gain_v = (voiced * level).astype(np.float32)[:, None]
    spec = voice_spec * (env_v * (3.0 * gain_v))
    spec += noise_spec * (env_v * (gain_v * speaker.breathiness) + env_u)
    wav = torch.istft(
        torch.from_numpy(spec.T.copy()),
        N_FFT,
        HOP,
        window=win,
        length=n_samples,
    ).numpy()
    wav /= np.abs(wav).max() + 1e-9
    return (0.5 * wav).astype(np.float32)
