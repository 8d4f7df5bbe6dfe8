"""The mini corpus's VoxCeleb1-E- and -H-like trial lists."""

import glob
import hashlib
import os

import pytest

import ssps_ext.mini_corpus
from ssps_ext.mini_corpus import CorpusConfig, build_mini_corpus
from ssps_ext.mini_corpus.trial_lists import E_LIST, H_LIST, speaker_group, write_extra_trial_lists

SEED = 0
CONFIG = CorpusConfig(  # 8 test speakers (4 female, 4 male voices at seed 0), no dev speaker
    n_dev_speakers=0, n_test_speakers=8, recordings_per_speaker=(2, 2), utterances_per_recording=(2, 3),
    duration_s=(0.5, 0.6), n_noise_per_category=1, n_rir_per_room=1, max_target_trials=6,
)


def digests(folder):
    return {
        os.path.relpath(p, folder): hashlib.sha1(open(p, "rb").read()).hexdigest()
        for p in glob.glob(os.path.join(folder, "**", "*.*"), recursive=True)
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lists") / "corpus")
    build_mini_corpus(out, seed=SEED, config=CONFIG, num_workers=1)
    return out


def trials(corpus, name):
    return [line.split() for line in open(os.path.join(corpus, name))]


def test_lists_do_not_change_the_rest_of_the_corpus(corpus, tmp_path, monkeypatch):
    """Same seed, list writing disabled: every other file has the same bytes."""
    monkeypatch.setattr(ssps_ext.mini_corpus, "write_extra_trial_lists", lambda *args: {})
    without = str(tmp_path / "without")
    build_mini_corpus(without, seed=SEED, config=CONFIG, num_workers=1)
    with_lists = digests(corpus)
    assert set(with_lists) - set(digests(without)) == {E_LIST, H_LIST}
    assert {k: with_lists[k] for k in digests(without)} == digests(without)
    # adding the lists to that older build gives the lists of a fresh build
    write_extra_trial_lists(without, SEED, CONFIG.max_target_trials)
    assert digests(without) == with_lists


def test_e_like_list_covers_all_test_speakers_with_more_trials(corpus):
    o, e = trials(corpus, "veri_test2.txt"), trials(corpus, E_LIST)
    assert len(e) > len(o) and {t[0] for t in e} == {"0", "1"}
    speakers = {p.split("/")[0] for p in os.listdir(os.path.join(corpus, "wav")) if p.startswith("id1")}
    assert {p.split("/")[0] for t in e for p in t[1:]} == speakers
    for label, a, b in e:
        assert os.path.isfile(os.path.join(corpus, "wav", a)) and os.path.isfile(os.path.join(corpus, "wav", b))
        assert (a.split("/")[0] == b.split("/")[0]) == (label == "1")
        if label == "1":
            assert a.split("/")[1] != b.split("/")[1]  # targets across recordings


def test_h_like_non_targets_stay_within_a_group(corpus):
    e, h = trials(corpus, E_LIST), trials(corpus, H_LIST)
    group = {s: speaker_group(SEED, s) for s in {p.split("/")[0] for t in e for p in t[1:]}}
    assert set(group.values()) == {"female", "male"}
    cross = [t for t in e if t[0] == "0" and group[t[1].split("/")[0]] != group[t[2].split("/")[0]]]
    assert cross  # the E-like list has non-targets across groups: the H-like filter has work to do
    non_targets = [t for t in h if t[0] == "0"]
    assert non_targets and all(group[a.split("/")[0]] == group[b.split("/")[0]] for _, a, b in non_targets)
    assert sorted(t for t in h if t[0] == "1") == sorted(t for t in e if t[0] == "1")


def test_group_is_the_pitch_band_of_the_voice():
    """The group is read from the speaker's own draw: female voices are the
    high-pitch ones (165-250 Hz), male the low ones (85-150 Hz)."""
    from ssps_ext.mini_corpus.trial_lists import speaker_rng
    from ssps_ext.mini_corpus.voice import draw_speaker

    for k in range(12):
        voice = draw_speaker(speaker_rng(SEED, 1, k))
        expected = "female" if 165 <= voice.f0 <= 250 else "male"
        assert 85 <= voice.f0 <= 250 and speaker_group(SEED, f"id1{k + 1:04d}") == expected
