"""Recording channels, room impulse responses and noises for the mini corpus.

A recording (a "video" in VoxCeleb terms) draws one :class:`Channel` shared by
all of its utterances: microphone band limits and a smooth random EQ curve,
a room impulse response, a background-noise type with its own spectrum and
SNR, and a gain. ``strength="medium"`` and "strong" make the condition
harsher, as in the hardest VoxCeleb videos: a telephone band on some
recordings, a stronger EQ and tilt, longer reverberation, lower SNRs and a
per-recording dynamic-range compression. Two crops of one utterance
therefore share the speaker *and* the channel, which is exactly the confound
SSPS is designed to break.
"""

from dataclasses import dataclass

import numpy as np

from .voice import SAMPLE_RATE

NOISE_TYPES = ("white", "pink", "brown", "hum", "babble", "hiss")


def smooth_curve_db(rng, freqs, n_knots=8, std_db=4.0):
    """Random smooth gain curve (dB) over log-frequency."""
    logf = np.log(np.maximum(freqs, 20.0))
    knots = np.linspace(logf.min(), logf.max(), n_knots)
    return np.interp(logf, knots, rng.normal(0.0, std_db, n_knots))


def synth_rir(rng, rt60, length_s, direct=1.0):
    """Exponentially decaying noise RIR with a direct path.

    The energy decays by 60 dB after ``rt60`` seconds; ``direct`` scales the
    direct-path impulse relative to the diffuse tail.
    """
    n = int(length_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    onset = int(rng.uniform(0.002, 0.01) * SAMPLE_RATE)
    tail[:onset] = 0.0
    # Darker tail: high frequencies decay faster in real rooms.
    spec = np.fft.rfft(tail)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec /= 1 + (freqs / rng.uniform(2000, 6000)) ** 2
    tail = np.fft.irfft(spec, n)
    tail /= np.sqrt((tail**2).sum()) + 1e-9
    rir = tail
    rir[0] += direct
    return (rir / np.abs(rir).max()).astype(np.float32)


def colored_noise(rng, n, gain_db_fn):
    """Stationary Gaussian noise whose spectrum is 10**(gain_db_fn(f)/20)."""
    nfft = 1 << int(np.ceil(np.log2(max(n, 2))))  # fast FFT size, then crop
    spec = np.fft.rfft(rng.standard_normal(nfft))
    freqs = np.fft.rfftfreq(nfft, 1 / SAMPLE_RATE)
    spec *= 10 ** (gain_db_fn(freqs) / 20)
    x = np.fft.irfft(spec, nfft)[:n]
    return x / (x.std() + 1e-9)


@dataclass
class Channel:
    """Acoustic condition of one recording."""

    response_db: np.ndarray  # (n_fft//2+1,) band-limit + EQ on the FFT grid
    rir: np.ndarray  # room impulse response
    noise_type: str
    noise_shape_db: np.ndarray  # noise spectrum on the same grid
    hum_f0: float
    snr_db: float
    gain: float
    compress: float = 0.0  # tanh drive of the compressor (0 = linear)


CHANNEL_NFFT = 2048


# Severity of the recording channels: telephone-band share, EQ and tilt (dB),
# longest RT60 (s), SNR range (dB), compressed share and tanh drive range.
STRENGTHS = {
    "normal": dict(phone=0.0, eq=4.0, tilt=4.0, rt60=0.7, snr=(5, 30), compressed=0.0, drive=(1.0, 1.0)),
    "medium": dict(phone=0.3, eq=6.0, tilt=6.0, rt60=0.85, snr=(5, 25), compressed=0.5, drive=(1.0, 3.0)),
    "strong": dict(phone=0.4, eq=8.0, tilt=8.0, rt60=1.0, snr=(0, 20), compressed=0.5, drive=(1.0, 6.0)),
}


def draw_channel(rng, strength="normal", band_low=(60, 400), band_high=(2800, 7800), snr=None, rt60=None):
    """Draws the acoustic condition of a new recording.

    ``strength``: a key of ``STRENGTHS`` ("normal" for the default corpus).
    ``band_low`` / ``band_high``: ranges (Hz) of the microphone's band edges
    outside the telephone band; ``snr`` (dB range) and ``rt60`` (longest, s)
    replace the strength's values when given. The random draws are the same
    whatever the ranges, so only the values change.
    """
    if strength not in STRENGTHS:
        raise ValueError(f"channel strength {strength!r} not in {tuple(STRENGTHS)}")
    cfg = dict(STRENGTHS[strength])
    cfg.update({k: v for k, v in (("snr", snr), ("rt60", rt60)) if v is not None})
    harsh = strength != "normal"  # draws only the normal corpus has none of
    freqs = np.fft.rfftfreq(CHANNEL_NFFT, 1 / SAMPLE_RATE)
    if harsh and rng.random() < cfg["phone"]:  # telephone band
        low, high = rng.uniform(250, 400), rng.uniform(3200, 3600)
    else:
        low = rng.uniform(*band_low)
        high = rng.uniform(*band_high)
    order = rng.uniform(2, 6)
    band = 1 / (1 + (low / (freqs + 1)) ** order) / (1 + (freqs / high) ** order)
    response = 20 * np.log10(band + 1e-6) + smooth_curve_db(rng, freqs, 10, cfg["eq"])
    response += rng.uniform(-cfg["tilt"], cfg["tilt"]) * np.log2(np.maximum(freqs, 50) / 1000)
    rir = synth_rir(rng, rt60=rng.uniform(0.08, cfg["rt60"]), length_s=0.5, direct=rng.uniform(0.5, 4))
    channel = Channel(
        response_db=response,
        rir=rir,
        noise_type=str(rng.choice(NOISE_TYPES)),
        noise_shape_db=smooth_curve_db(rng, freqs, 8, 6.0),
        hum_f0=float(rng.choice([50.0, 60.0])),
        snr_db=rng.uniform(*cfg["snr"]),
        gain=10 ** (rng.uniform(-12, 0) / 20),
    )
    if harsh:
        drive = rng.uniform(*cfg["drive"])
        channel.compress = float(drive if rng.random() < cfg["compressed"] else 0.0)
    return channel


def _fft_filter(x, response_db, rir=None):
    """Zero-phase magnitude response (given on the CHANNEL_NFFT grid),
    optionally after a convolution with ``rir``, both done with one FFT."""
    n = len(x)
    extra = 0 if rir is None else len(rir)
    nfft = 1 << int(np.ceil(np.log2(n + extra + 1)))
    grid = np.fft.rfftfreq(CHANNEL_NFFT, 1 / SAMPLE_RATE)
    freqs = np.fft.rfftfreq(nfft, 1 / SAMPLE_RATE)
    spec = np.fft.rfft(x, nfft) * 10 ** (np.interp(freqs, grid, response_db) / 20)
    if rir is not None:
        spec *= np.fft.rfft(rir, nfft)
    return np.fft.irfft(spec, nfft)[:n]


def _background(channel, n, rng):
    """Background noise of the recording's type and spectrum, unit std."""
    t = np.arange(n) / SAMPLE_RATE
    shape = channel.noise_shape_db
    grid = np.fft.rfftfreq(CHANNEL_NFFT, 1 / SAMPLE_RATE)

    def spectrum(tilt_db_per_oct):
        def fn(f):
            base = np.interp(f, grid, shape)
            return base + tilt_db_per_oct * np.log2(np.maximum(f, 20) / 1000)

        return fn

    kind = channel.noise_type
    if kind == "white":
        x = colored_noise(rng, n, spectrum(0.0))
    elif kind == "pink":
        x = colored_noise(rng, n, spectrum(-3.0))
    elif kind == "brown":
        x = colored_noise(rng, n, spectrum(-6.0))
    elif kind == "hiss":
        x = colored_noise(rng, n, spectrum(4.0))
    elif kind == "hum":
        harmonics = np.arange(1, 8)[:, None]
        amps = 1.0 / harmonics
        x = (amps * np.sin(2 * np.pi * channel.hum_f0 * harmonics * t)).sum(0)
        x += 0.3 * colored_noise(rng, n, spectrum(-3.0))
    else:  # babble: speech-shaped noise with syllabic modulation
        x = colored_noise(rng, n, lambda f: -12 * np.abs(np.log2((f + 50) / 500)))
        mod = np.abs(colored_noise(rng, n // 400 + 2, lambda f: 0 * f))
        x *= 0.5 + np.interp(np.arange(n), np.arange(len(mod)) * 400, mod)
    return x / (x.std() + 1e-9)


def apply_channel(speech, channel, rng):
    """Passes clean speech through a recording's channel.

    reverberation -> microphone response -> background noise at the
    recording SNR (+-2 dB per utterance) -> compression (tanh drive) -> gain.
    """
    n = len(speech)
    wet = _fft_filter(speech, channel.response_db, channel.rir)
    noise = _background(channel, n, rng)
    snr = channel.snr_db + rng.uniform(-2, 2)
    power = np.mean(wet**2) + 1e-10
    wet = wet + noise * np.sqrt(power / 10 ** (snr / 10))
    if channel.compress > 0:
        wet = np.tanh(channel.compress * wet / (np.abs(wet).max() + 1e-9))
    wet *= channel.gain / (np.abs(wet).max() + 1e-9) * 0.9
    return wet.astype(np.float32)
