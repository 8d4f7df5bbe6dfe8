"""Checks audio files before training and writes augmentation manifests.

``scan_audio`` reads each file's header (and, with ``amp_th``, its samples)
in a process pool and classifies it as ``ok``, ``unreadable``, ``non_finite`` (NaN / Inf
samples in a float file), ``silent``,
``bad_rate`` or ``bad_channels``. Callers decide what is fatal: a wrong
sample rate or channel count is a corpus-preparation mistake (clear error),
an unreadable, non-finite or silent training file is a counted, logged
skip; any such trial file is an error.
"""

import glob
import logging
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)


def _scan_one(args):
    path, sample_rate, amp_th = args
    try:
        info = sf.info(path)
    except Exception as e:  # missing, truncated header, not audio...
        return path, 0, "unreadable", str(e).splitlines()[0]
    if info.samplerate != sample_rate:
        return path, info.frames, "bad_rate", f"{info.samplerate} Hz"
    if info.channels != 1:
        return path, info.frames, "bad_channels", f"{info.channels} channels"
    if info.frames == 0:
        return path, 0, "unreadable", "no samples"
    if amp_th:
        try:
            x, _ = sf.read(path, dtype="float32")
        except Exception as e:
            return path, info.frames, "unreadable", str(e).splitlines()[0]
        if not np.isfinite(x).all():
            return path, info.frames, "non_finite", f"{int((~np.isfinite(x)).sum())} NaN/Inf samples"
        if np.abs(x).mean() < amp_th:
            return path, info.frames, "silent", f"mean |x| < {amp_th}"
    return path, info.frames, "ok", ""


def scan_audio(paths, sample_rate=16000, amp_th=None, num_workers=None):
    """Returns ``[(path, n_frames, status, detail), ...]`` in input order."""
    jobs = [(p, sample_rate, amp_th) for p in paths]
    workers = num_workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 256:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(_scan_one, jobs, chunksize=256))
    return [_scan_one(j) for j in jobs]


def raise_on_format_errors(records, sample_rate, what):
    """Raises one ValueError listing files with a wrong rate or channel count."""
    bad = [r for r in records if r[2] in ("bad_rate", "bad_channels")]
    if bad:
        listing = "\n".join(f"  {p}: {d}" for p, _, _, d in bad[:10])
        raise ValueError(
            f"{len(bad)} {what} file(s) are not {sample_rate} Hz mono, e.g.:\n"
            f"{listing}\nConvert them first (sox in.wav -r {sample_rate} -c 1 out.wav)."
        )


def write_augmentation_csv(folder, csv_path, sample_rate=16000):
    """Manifest of every wav under ``folder`` for ``AddNoise``/``AddReverb``.

    Uses SpeechBrain's ``write_csv`` (ID,duration,wav,wav_format,wav_opts)
    after checking that the files are mono at ``sample_rate``, because
    ``write_csv`` would otherwise overwrite multi-channel files in place.
    """
    files = sorted(glob.glob(os.path.join(folder, "**", "*.wav"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .wav file under augmentation folder {folder}")
    records = scan_audio(files, sample_rate)
    raise_on_format_errors(records, sample_rate, f"augmentation ({folder})")
    broken = [(p, d) for p, _, s, d in records if s == "unreadable"]
    if broken:
        raise RuntimeError(f"unreadable augmentation file {broken[0][0]}: {broken[0][1]}")
    dotted = [f for f in files if os.path.basename(f).count(".") != 1]
    if dotted:
        raise ValueError(f"augmentation file names need exactly one dot: {dotted[0]}")
    from speechbrain.augment.preparation import write_csv

    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    write_csv(files, csv_path)
    return len(files)
