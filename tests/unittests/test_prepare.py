"""voxceleb_prepare: CSV columns, ids, speaker exclusion and bad input."""

import csv
import os

import numpy as np
import pytest
import soundfile as sf
from voxceleb_prepare import prepare_voxceleb


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def write_wav(root, rel, seconds=2.0, sr=16000, channels=1, amp=0.3):
    path = os.path.join(root, "wav", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, subtype="PCM_16")
    return path


def small_tree(root):
    for spk in ("id00001", "id00002", "id00003"):
        for rec in ("recA", "recB"):
            for utt in ("00001", "00002"):
                write_wav(root, f"{spk}/{rec}/{utt}.wav")
    with open(os.path.join(root, "trials.txt"), "w") as f:
        f.write("1 id00003/recA/00001.wav id00003/recB/00002.wav\n0 id00003/recA/00002.wav id00002/recA/00001.wav\n")
    return os.path.join(root, "trials.txt")


def test_csvs_on_mini_corpus(tiny_corpus, tmp_path):
    out = str(tmp_path / "csv")
    prepare_voxceleb(tiny_corpus, out, os.path.join(tiny_corpus, "veri_test2.txt"), num_workers=1)
    train = read(os.path.join(out, "train.csv"))
    assert list(train[0]) == ["ID", "duration", "wav", "start", "stop", "spk_id", "rec_id", "utt_index"]
    assert [int(r["utt_index"]) for r in train] == list(range(len(train)))
    for r in train:
        spk, rec, utt = r["ID"].split("--")
        assert r["spk_id"] == spk and r["rec_id"] == f"{spk}/{rec}"
        assert r["wav"].endswith(f"wav/{spk}/{rec}/{utt}.wav") and os.path.isfile(r["wav"])
        assert int(r["start"]) == 0 and int(r["stop"]) == int(float(r["duration"]) * 16000)
    assert all(r["spk_id"].startswith("id0") for r in train)  # test speakers excluded
    enrol, test = read(os.path.join(out, "enrol.csv")), read(os.path.join(out, "test.csv"))
    assert list(enrol[0]) == ["ID", "duration", "wav", "start", "stop", "spk_id"]
    trial_paths = {p for line in open(os.path.join(tiny_corpus, "veri_test2.txt")) for p in line.split()[1:]}
    assert {r["ID"] + ".wav" for r in enrol + test} == trial_paths


def test_both_trial_columns_excluded_and_skip_logic(tmp_path):
    root = str(tmp_path)
    trials = small_tree(root)
    out = os.path.join(root, "csv")
    prepare_voxceleb(root, out, trials, num_workers=1)
    spk = {r["spk_id"] for r in read(os.path.join(out, "train.csv"))}
    assert spk == {"id00001"}  # id00002 only appears in the test column
    stamp = os.path.getmtime(os.path.join(out, "train.csv"))
    prepare_voxceleb(root, out, trials, num_workers=1)
    assert os.path.getmtime(os.path.join(out, "train.csv")) == stamp  # skipped
    prepare_voxceleb(root, out, trials, num_workers=1, amp_th=1e-3)  # option changed: redone
    assert os.path.getmtime(os.path.join(out, "train.csv")) != stamp


def test_bad_sample_rate_and_stereo_name_the_file(tmp_path):
    root = str(tmp_path)
    trials = small_tree(root)
    bad = write_wav(root, "id00001/recC/00001.wav", sr=8000)
    with pytest.raises(ValueError, match="recC/00001.wav"):
        prepare_voxceleb(root, os.path.join(root, "a"), trials, num_workers=1)
    os.remove(bad)
    write_wav(root, "id00001/recD/00001.wav", channels=2)
    with pytest.raises(ValueError, match="recD/00001.wav.*2 channels"):
        prepare_voxceleb(root, os.path.join(root, "b"), trials, num_workers=1)


def test_unreadable_and_silent_training_files_are_skipped_and_listed(tmp_path):
    root = str(tmp_path)
    trials = small_tree(root)
    corrupt = os.path.join(root, "wav", "id00001", "recA", "00003.wav")
    with open(corrupt, "wb") as f:
        f.write(b"RIFF not really a wav")
    silent = write_wav(root, "id00001/recA/00004.wav", amp=0.0)
    nan = os.path.join(root, "wav", "id00001", "recA", "00005.wav")
    x = np.full(16000, 0.1, dtype=np.float32)
    x[100] = np.nan
    sf.write(nan, x, 16000, subtype="FLOAT")
    out = os.path.join(root, "csv")
    prepare_voxceleb(root, out, trials, num_workers=1)
    assert len(read(os.path.join(out, "train.csv"))) == 4
    skipped = {r["wav"]: r["reason"] for r in read(os.path.join(out, "skipped.csv"))}
    assert skipped == {corrupt: "unreadable", silent: "silent", nan: "non_finite"}
    # the same file in a trial list is an error naming it
    os.replace(nan, os.path.join(root, "wav", "id00003", "recA", "00001.wav"))
    with pytest.raises(RuntimeError, match="id00003/recA/00001.wav is non_finite"):
        prepare_voxceleb(root, os.path.join(root, "csv2"), trials, num_workers=1)


def test_trial_errors_name_the_line_or_file(tmp_path):
    root = str(tmp_path)
    small_tree(root)
    unknown = os.path.join(root, "unknown.txt")
    with open(unknown, "w") as f:
        f.write("1 id00003/recA/00001.wav id00003/nope/00009.wav\n")
    with pytest.raises(FileNotFoundError, match="nope/00009.wav"):
        prepare_voxceleb(root, os.path.join(root, "c"), unknown, num_workers=1)
    malformed = os.path.join(root, "malformed.txt")
    with open(malformed, "w") as f:
        f.write("1 id00003/recA/00001.wav\n")
    with pytest.raises(ValueError, match="malformed.txt:1"):
        prepare_voxceleb(root, os.path.join(root, "d"), malformed, num_workers=1)


def test_several_lists_prepared_once_as_a_union(tmp_path):
    """Two lists: one enrol/test CSV pair for the union, the speakers of both
    held out, one stamp for both (a changed second list redoes the prep), and
    a missing file is an error naming its list."""
    root = str(tmp_path)
    first = small_tree(root)
    write_wav(root, "id00004/recA/00001.wav")
    write_wav(root, "id00004/recB/00001.wav")
    second = os.path.join(root, "second.txt")
    with open(second, "w") as f:
        f.write("1 id00004/recA/00001.wav id00004/recB/00001.wav\n0 id00003/recA/00001.wav id00004/recB/00001.wav\n")
    out = os.path.join(root, "csv")
    prepare_voxceleb(root, out, [first, second], num_workers=1)
    assert {r["spk_id"] for r in read(os.path.join(out, "train.csv"))} == {"id00001"}  # id00004: second list
    ids = {r["ID"] for r in read(os.path.join(out, "enrol.csv")) + read(os.path.join(out, "test.csv"))}
    wanted = {p[:-4] for path in (first, second) for line in open(path) for p in line.split()[1:]}
    assert ids == wanted
    assert {r["ID"] for r in read(os.path.join(out, "enrol.csv"))} == {
        line.split()[1][:-4] for path in (first, second) for line in open(path)}
    stamp = os.path.getmtime(os.path.join(out, "enrol.csv"))
    prepare_voxceleb(root, out, [first, second], num_workers=1)
    assert os.path.getmtime(os.path.join(out, "enrol.csv")) == stamp  # up to date: skipped
    with open(second, "a") as f:
        f.write("0 id00004/recA/00001.wav id00002/recA/00002.wav\n")
    os.utime(second, (stamp + 5, stamp + 5))
    prepare_voxceleb(root, out, [first, second], num_workers=1)
    assert os.path.getmtime(os.path.join(out, "enrol.csv")) != stamp  # the second list changed: redone
    assert "id00002/recA/00002" in {r["ID"] for r in read(os.path.join(out, "test.csv"))}
    with open(second, "a") as f:
        f.write("1 id00004/recA/00001.wav id00004/recC/00009.wav\n")
    with pytest.raises(FileNotFoundError, match="second.txt: trial 4 names id00004/recC/00009.wav"):
        prepare_voxceleb(root, os.path.join(root, "e"), [first, second], num_workers=1)


def test_bad_audio_switch_and_too_short_files(tmp_path):
    root = str(tmp_path)
    trials = small_tree(root)
    short = write_wav(root, "id00001/recA/00003.wav", seconds=0.3)
    silent = write_wav(root, "id00001/recA/00004.wav", amp=0.0)
    out = os.path.join(root, "csv")
    prepare_voxceleb(root, out, trials, num_workers=1)  # min_duration 0: the short file is kept
    assert short in {r["wav"] for r in read(os.path.join(out, "train.csv"))}
    prepare_voxceleb(root, out, trials, num_workers=1, min_duration=0.5)  # a changed option redoes the prep
    assert {r["wav"]: r["reason"] for r in read(os.path.join(out, "skipped.csv"))} == {
        short: "too_short", silent: "silent"}
    assert short not in {r["wav"] for r in read(os.path.join(out, "train.csv"))}
    with pytest.raises(RuntimeError, match="2 training file") as error:
        prepare_voxceleb(root, os.path.join(root, "csv2"), trials, num_workers=1, min_duration=0.5, bad_audio="error")
    assert short in str(error.value) and silent in str(error.value)
    with pytest.raises(ValueError, match="bad_audio must be"):
        prepare_voxceleb(root, os.path.join(root, "csv3"), trials, bad_audio="ignore")
