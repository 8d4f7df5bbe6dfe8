"""VoxCeleb data preparation for self-supervised speaker recognition.

Writes the CSVs of SpeechBrain's VoxCeleb recipe (columns ``ID, duration,
wav, start, stop, spk_id``), so manifests can be shared with other recipes,
with one row per utterance (SpeechBrain's ``random_segment=True`` layout:
ID ``spk--recording--utt``, start 0, stop = number of samples) and two extra
columns SSPS needs:

- ``utt_index``: stable integer index of the utterance (row order of the
  sorted file list), used by the SSPS memory queues;
- ``rec_id``: the recording (YouTube video) ``spk/recording``, used only for
  diagnostics.

Outputs in ``save_folder``: ``train.csv`` (+ ``dev.csv`` when requested),
``enrol.csv`` and ``test.csv`` (full utterances of the trial lists, ID =
relative path without extension as in SpeechBrain; several lists, e.g.
VoxCeleb1-O, -E and -H, give one pair of CSVs for the union of their
utterances), ``skipped.csv`` and ``prep_options.json``.

Differences from SpeechBrain's prep, on purpose: speakers of *both* trial
columns are removed from training; the sample rate and channel count are
checked (wrong ones are an error naming the files); unreadable or silent
training files (and, with ``min_duration``, too short ones) are skipped,
counted and listed in ``skipped.csv``, or with ``bad_audio="error"`` are one
error naming every such file; the up-to-date check covers every option and
every trial file.

Layout expected: ``<data_folder>/wav/<spk>/<recording>/<utt>.wav`` (several
folders may be given comma-separated). Training reads ``data_folder`` only
(the paper: VoxCeleb2 dev); the trial files are looked up in
``test_data_folder`` (VoxCeleb1), which is never added to training. VoxCeleb2
ships m4a: convert it first, for example
``find . -name '*.m4a' | parallel ffmpeg -loglevel error -i {} -ac 1 -ar 16000 {.}.wav``
then point ``data_folder`` at the folder holding ``wav/``.
"""

import csv
import glob
import json
import logging
import os
import random

from ssps_ext.audio_scan import raise_on_format_errors, scan_audio
from ssps_ext.verification import read_trials

logger = logging.getLogger(__name__)
FIELDS = ["ID", "duration", "wav", "start", "stop", "spk_id", "rec_id", "utt_index"]
TEST_FIELDS = ["ID", "duration", "wav", "start", "stop", "spk_id"]


def _utt_parts(rel):
    """'id1/rec/00001.wav' -> ('id1', 'id1/rec', 'id1--rec--00001')."""
    parts = rel.replace(os.sep, "/").split("/")
    if len(parts) < 3:
        raise ValueError(f"expected wav/<spk>/<recording>/<utt>.wav, got wav/{rel}")
    stem = os.path.splitext("--".join(parts))[0]
    return parts[0], "/".join(parts[:2]), stem


def _folder_list(value):
    """'a, b' -> ['a', 'b'] (comma-separated folders)."""
    return [d.strip() for d in str(value).split(",") if d.strip()]


def _write_csv(path, fields, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _trial_rows(lists, folders, sample_rate, num_workers):
    """Rows for enrol.csv and test.csv (union of ``lists``: {trial file:
    trials}); every utterance must exist and load."""
    where = {}
    for trials_file, trials in lists.items():
        for n, (_, enrol, test) in enumerate(trials, 1):
            for rel in (enrol, test):
                if rel in where:
                    continue
                hits = [d for d in folders if os.path.isfile(os.path.join(d, "wav", rel))]
                if not hits:
                    raise FileNotFoundError(
                        f"{trials_file}: trial {n} names {rel}, which is not under "
                        + " or ".join(os.path.join(d, "wav") for d in folders)
                    )
                where[rel] = os.path.join(hits[0], "wav", rel)
    records = scan_audio(list(where.values()), sample_rate, amp_th=1e-5, num_workers=num_workers)
    raise_on_format_errors(records, sample_rate, "trial")
    for path, _, status, detail in records:
        if status != "ok":
            raise RuntimeError(f"trial file {path} is {status}: {detail}")
    frames = {p: n for p, n, _, _ in records}
    rows = {}
    for rel, path in where.items():
        n = frames[path]
        rows[rel] = dict(
            ID=os.path.splitext(rel)[0], duration=n / sample_rate, wav=path,
            start=0, stop=n, spk_id=rel.split("/")[0],
        )
    enrol = [rows[r] for r in sorted({t[1] for ts in lists.values() for t in ts})]
    test = [rows[r] for r in sorted({t[2] for ts in lists.values() for t in ts})]
    return enrol, test


def prepare_voxceleb(
    data_folder, save_folder, verification_pairs_file, splits=("train", "test"),
    split_ratio=(90, 10), amp_th=5e-4, sample_rate=16000, seed=1234,
    num_workers=None, skip_prep=False, test_data_folder=None, bad_audio="skip", min_duration=0.0,
):
    """Writes the VoxCeleb CSVs (see module docstring).

    Arguments
    ---------
    data_folder : str
        Training folder(s) holding ``wav/``; comma-separated for several.
    test_data_folder : str or None
        Folder(s) whose ``wav/`` holds the trial files (None: ``data_folder``,
        for corpora that hold both, like the mini corpus).
    save_folder : str
        Where the CSVs go.
    verification_pairs_file : str or list of str
        Trial list(s) (``veri_test2.txt`` format); the speakers of all of
        them leave training, the utterances of all of them are prepared.
    splits : sequence
        Any of "train", "dev", "test". "dev" holds out ``split_ratio[1]`` % of
        the training utterances (same speakers, as in SpeechBrain).
    amp_th : float or None
        Training files whose mean |x| is below this are skipped as silent
        (None: no check, only headers are read).
    skip_prep : bool
        Do nothing.
    bad_audio : str
        What an unreadable, non-finite (NaN / Inf) or silent training file
        does: "skip" (counted, logged, listed in ``skipped.csv``) or "error"
        (one error naming every such file). Trial files are always errors.
    min_duration : float
        Training files shorter than this many seconds are ``too_short``
        (skipped or an error, as ``bad_audio`` says); 0 keeps them (shorter
        than a crop, they are wrap-padded by the data pipeline).
    """
    if bad_audio not in ("skip", "error"):
        raise ValueError(f"prepare_voxceleb: bad_audio must be 'skip' or 'error', got {bad_audio!r}")
    if skip_prep:
        return
    folders = _folder_list(data_folder)
    test_folders = folders if test_data_folder is None else _folder_list(test_data_folder)
    pair_files = [verification_pairs_file] if isinstance(verification_pairs_file, str) else list(verification_pairs_file)
    if not pair_files:
        raise ValueError("prepare_voxceleb: no trial list given")
    options = dict(
        data_folder=folders, test_data_folder=test_folders, splits=sorted(splits), split_ratio=list(split_ratio),
        amp_th=amp_th, sample_rate=sample_rate, seed=seed,
        trials=[os.path.abspath(p) for p in pair_files],
        trials_mtime=[os.path.getmtime(p) for p in pair_files],
    )
    if bad_audio != "skip" or min_duration:  # default values keep earlier stamps valid
        options.update(bad_audio=bad_audio, min_duration=min_duration)
    if len(pair_files) == 1:  # one list: the stamp of earlier versions, so their CSVs stay valid
        options.update(trials=options["trials"][0], trials_mtime=options["trials_mtime"][0])
    opt_file = os.path.join(save_folder, "prep_options.json")
    outputs = {"train": ["train.csv"], "dev": ["dev.csv"], "test": ["enrol.csv", "test.csv"]}
    wanted = [os.path.join(save_folder, f) for s in splits for f in outputs[s]]
    if all(map(os.path.isfile, wanted)) and os.path.isfile(opt_file):
        with open(opt_file) as f:
            if json.load(f) == options:
                logger.info("VoxCeleb CSVs in %s are up to date, skipping prep", save_folder)
                return
    os.makedirs(save_folder, exist_ok=True)
    lists = {p: read_trials(p) for p in pair_files}

    if "train" in splits or "dev" in splits:
        held_out = {t[k].split("/")[0] for ts in lists.values() for t in ts for k in (1, 2)}
        files = []
        for d in folders:
            found = sorted(glob.glob(os.path.join(d, "wav", "*", "*", "*.wav")))
            if not found:
                raise FileNotFoundError(f"no wav/<spk>/<recording>/<utt>.wav under {d}")
            files += [(d, os.path.relpath(p, os.path.join(d, "wav"))) for p in found]
        files = [f for f in files if f[1].split(os.sep)[0] not in held_out]
        records = scan_audio([os.path.join(d, "wav", r) for d, r in files], sample_rate, amp_th, num_workers)
        raise_on_format_errors(records, sample_rate, "training")
        rows, skipped = [], []
        for (d, rel), (path, n, status, detail) in zip(files, records):
            if status == "ok" and n < min_duration * sample_rate:
                status, detail = "too_short", f"{n / sample_rate:.2f} s < min_duration {min_duration} s"
            if status != "ok":
                skipped.append(dict(wav=path, reason=status, detail=detail))
                continue
            spk, rec, stem = _utt_parts(rel)
            rows.append(dict(
                ID=stem, duration=n / sample_rate, wav=path, start=0, stop=n,
                spk_id=spk, rec_id=rec,
            ))
        if skipped and bad_audio == "error":
            listing = "\n".join(f"  {r['wav']}: {r['reason']} ({r['detail']})" for r in skipped)
            raise RuntimeError(
                f"{len(skipped)} training file(s) unusable (bad_audio: error; 'skip' drops and lists them):\n{listing}"
            )
        _write_csv(os.path.join(save_folder, "skipped.csv"), ["wav", "reason", "detail"], skipped)
        if skipped:
            logger.warning(
                "skipped %d unreadable/non-finite/silent/too-short training file(s), listed in %s",
                len(skipped), os.path.join(save_folder, "skipped.csv"),
            )
        if not rows:
            raise RuntimeError(f"no usable training utterance in {folders}")
        dev = []
        if "dev" in splits:
            order = list(range(len(rows)))
            random.Random(seed).shuffle(order)
            n_dev = int(len(rows) * split_ratio[1] / 100)
            dev_ids = set(order[:n_dev])
            dev = [r for i, r in enumerate(rows) if i in dev_ids]
            rows = [r for i, r in enumerate(rows) if i not in dev_ids]
            _write_csv(os.path.join(save_folder, "dev.csv"), TEST_FIELDS + ["rec_id"], dev)
        for i, row in enumerate(rows):
            row["utt_index"] = i
        _write_csv(os.path.join(save_folder, "train.csv"), FIELDS, rows)
        logger.info(
            "train.csv: %d utterances, %d speakers, %d recordings (%d trial speakers held out)",
            len(rows), len({r["spk_id"] for r in rows}), len({r["rec_id"] for r in rows}), len(held_out),
        )

    if "test" in splits:
        enrol, test = _trial_rows(lists, test_folders, sample_rate, num_workers)
        _write_csv(os.path.join(save_folder, "enrol.csv"), TEST_FIELDS, enrol)
        _write_csv(os.path.join(save_folder, "test.csv"), TEST_FIELDS, test)

    with open(opt_file, "w") as f:
        json.dump(options, f, indent=1)
