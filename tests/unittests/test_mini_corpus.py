"""The synthetic corpus: layout, determinism, trial-list properties."""

import glob
import hashlib
import os

import numpy as np
import soundfile as sf

from ssps_ext.mini_corpus import CorpusConfig, build_mini_corpus
from ssps_ext.mini_corpus.voice import draw_speaker, synthesize_utterance


def test_layout_and_trials(tiny_corpus):
    wavs = sorted(glob.glob(os.path.join(tiny_corpus, "wav", "*", "*", "*.wav")))
    speakers = {p.split(os.sep)[-3] for p in wavs}
    assert {s for s in speakers if s.startswith("id0")} and {s for s in speakers if s.startswith("id1")}
    info = sf.info(wavs[0])
    assert info.samplerate == 16000 and info.channels == 1
    lines = [line.split() for line in open(os.path.join(tiny_corpus, "veri_test2.txt"))]
    assert {label for label, _, _ in lines} == {"0", "1"}
    for label, enrol, test in lines:
        assert enrol.startswith("id1") and test.startswith("id1")  # test speakers only
        assert os.path.isfile(os.path.join(tiny_corpus, "wav", enrol))
        same_spk = enrol.split("/")[0] == test.split("/")[0]
        assert same_spk == (label == "1")
        if label == "1":
            assert enrol.split("/")[1] != test.split("/")[1]  # targets cross recordings
    for folder in ("noise/speech", "noise/noise", "noise/music", "rir"):
        assert glob.glob(os.path.join(tiny_corpus, folder, "**", "*.wav"), recursive=True)


def digest(folder):
    h = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.*"), recursive=True)):
        h.update(os.path.relpath(path, folder).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = CorpusConfig(
        n_dev_speakers=2, n_test_speakers=2, recordings_per_speaker=(2, 2), utterances_per_recording=(1, 2),
        duration_s=(1.0, 1.5), n_noise_per_category=1, n_rir_per_room=1, max_target_trials=10,
    )
    a, b, c = (str(tmp_path / n) for n in "abc")
    build_mini_corpus(a, seed=3, config=cfg, num_workers=1)
    build_mini_corpus(b, seed=3, config=cfg, num_workers=2)
    build_mini_corpus(c, seed=4, config=cfg, num_workers=1)
    assert digest(a) == digest(b) != digest(c)


def test_speaker_traits_shape_the_spectrum():
    """Long-term spectra: two utterances of one speaker are more alike than
    utterances of different speakers (averaged over 6 speakers)."""
    rng = np.random.default_rng(0)
    speakers = [draw_speaker(rng) for _ in range(6)]

    def ltas(s):
        x = synthesize_utterance(s, 2.0, rng)
        frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::128] * np.hanning(512)
        return np.log((np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0) + 1e-9)

    spectra = [(ltas(s), ltas(s)) for s in speakers]
    grand = np.mean([a for pair in spectra for a in pair], axis=0)
    spectra = [(a - grand, b - grand) for a, b in spectra]  # speaker-specific deviations
    same = np.mean([np.corrcoef(a, b)[0, 1] for a, b in spectra])
    other = np.mean([np.corrcoef(spectra[i][0], spectra[j][1])[0, 1] for i in range(6) for j in range(6) if i != j])
    assert same > other + 0.2


def test_channel_profile_shape_and_harsh_channels():
    """The fidelity study's corpus: 48 x 5 x 6 utterances of ~6 s, 16 test
    speakers, 4,000 trials; the harsher channel strengths do what they say."""
    import pytest

    from ssps_ext.mini_corpus import PROFILES
    from ssps_ext.mini_corpus.channel import STRENGTHS, draw_channel

    cfg = PROFILES["channel"]
    assert (cfg.n_dev_speakers, cfg.recordings_per_speaker, cfg.utterances_per_recording) == (48, (5, 5), (6, 6))
    assert cfg.n_test_speakers == 16 and 2 * cfg.max_target_trials == 4000 and cfg.duration_s == (5.5, 6.5)
    assert cfg.channel_strength == "normal"
    freqs = np.fft.rfftfreq(2048, 1 / 16000)
    k1, k5 = np.searchsorted(freqs, 1000), np.searchsorted(freqs, 5000)

    def muffled(channels):  # share of recordings losing >= 15 dB at 5 kHz relative to 1 kHz
        return np.mean([c.response_db[k5] - c.response_db[k1] < -15 for c in channels])

    normal = [draw_channel(np.random.default_rng([0, k])) for k in range(300)]
    assert all(c.compress == 0.0 for c in normal)
    for strength in ("medium", "strong"):
        harsh = [draw_channel(np.random.default_rng([0, k]), strength) for k in range(300)]
        share = STRENGTHS[strength]["compressed"]
        assert abs(np.mean([c.compress > 0 for c in harsh]) - share) < 0.1
        lo, hi = STRENGTHS[strength]["snr"]
        assert all(lo <= c.snr_db <= hi for c in harsh)
        assert muffled(harsh) > muffled(normal) + 0.1  # telephone band and stronger EQ / tilt
    with pytest.raises(ValueError, match="channel strength"):
        draw_channel(np.random.default_rng(0), "weak")


def test_channel_band_edges_and_noise_ranges():
    """Band-edge and SNR ranges change the values drawn, not the draws: the
    same seed gives the same noise type and gain, only the edges move."""
    from ssps_ext.mini_corpus.channel import CHANNEL_NFFT, SAMPLE_RATE, draw_channel

    freqs = np.fft.rfftfreq(CHANNEL_NFFT, 1 / SAMPLE_RATE)
    wide = draw_channel(np.random.default_rng(5), "normal", band_low=(60, 61), band_high=(7800, 7801), snr=(30, 31))
    narrow = draw_channel(np.random.default_rng(5), "normal", band_low=(390, 400), band_high=(2800, 2810), snr=(0, 1))
    assert wide.noise_type == narrow.noise_type and wide.gain == narrow.gain
    assert 30 <= wide.snr_db <= 31 and 0 <= narrow.snr_db <= 1
    at = {f: int(np.argmin(np.abs(freqs - f))) for f in (100, 1000, 6000)}
    # relative to 1 kHz, 100 Hz and 6 kHz are cut by the narrow band and kept by the wide one
    for f in (100, 6000):
        assert (narrow.response_db[at[f]] - narrow.response_db[at[1000]]) < (
            wide.response_db[at[f]] - wide.response_db[at[1000]]
        ) - 6
