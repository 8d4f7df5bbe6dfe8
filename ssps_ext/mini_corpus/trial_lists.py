"""VoxCeleb1-E- and VoxCeleb1-H-like trial lists of the mini corpus.

- ``list_test_all2.txt`` (E-like): every target pair across recordings of
  all test speakers (at most ``4 * max_target_trials``), and as many
  non-targets drawn over all test speakers: more trials than
  ``veri_test2.txt``.
- ``list_test_hard2.txt`` (H-like): the same targets; non-targets only
  between speakers of the same group, as VoxCeleb1-H pairs speakers of the
  same nationality and gender. The group is the synthetic speaker's sex,
  i.e. its pitch band (``voice.draw_speaker``: female voices 165-250 Hz and a
  shorter vocal tract, male 85-150 Hz), read from the speaker's own
  generator, so the lists can be added to a corpus built earlier.

Both come from their own generator (``[seed, 9002]``) and are written after
everything else, so the rest of the corpus is byte-identical to a build
without them. The lists depend only on the files under ``wav/`` and the
seed: building a corpus and adding the lists to an older build give the
same bytes.
"""

import glob
import logging
import os

import numpy as np

from .voice import draw_speaker

logger = logging.getLogger(__name__)
E_LIST, H_LIST = "list_test_all2.txt", "list_test_hard2.txt"
FEMALE_MIN_F0 = 157.5  # between the male (85-150 Hz) and female (165-250 Hz) pitch ranges


def speaker_rng(seed, role, index):
    """The generator of one speaker (role 0 = dev, 1 = test); the speaker's
    traits are its first draw (``_speaker_job``)."""
    return np.random.default_rng([seed, role, index])


def speaker_group(seed, spk_id):
    """"female" or "male" voice of test speaker ``id1NNNN`` of a corpus."""
    index = int(spk_id[3:]) - 1
    return "female" if draw_speaker(speaker_rng(seed, 1, index)).f0 >= FEMALE_MIN_F0 else "male"


def _pick(rng, candidates, n):
    """``n`` (or all, if fewer) of the pair indices ``candidates``, sorted."""
    if len(candidates) <= n:
        return candidates
    return np.sort(rng.choice(candidates, n, replace=False))


def write_extra_trial_lists(out, seed, max_target_trials):
    """Writes ``list_test_all2.txt`` and ``list_test_hard2.txt`` into the
    corpus ``out`` (see module docstring); returns {file name: trials}.

    The H-like list is left out (warning) when no two test speakers share a
    group, as it would have no non-target trial.
    """
    rng = np.random.default_rng([seed, 9002])
    utts = sorted(
        os.path.relpath(p, os.path.join(out, "wav")).replace(os.sep, "/")
        for p in glob.glob(os.path.join(out, "wav", "id1*", "*", "*.wav"))
    )
    spk = np.array([u.split("/")[0] for u in utts])
    rec = np.array(["/".join(u.split("/")[:2]) for u in utts])
    group = np.array([{s: speaker_group(seed, s) for s in set(spk)}[s] for s in spk])
    i, j = np.triu_indices(len(utts), k=1)
    targets = _pick(rng, np.flatnonzero((spk[i] == spk[j]) & (rec[i] != rec[j])), 4 * max_target_trials)
    nontarget = spk[i] != spk[j]
    pools = {E_LIST: np.flatnonzero(nontarget), H_LIST: np.flatnonzero(nontarget & (group[i] == group[j]))}
    written = {}
    for name, pool in pools.items():
        if len(pool) == 0 or len(targets) == 0:
            logger.warning("mini corpus %s: no target or non-target pair for %s, not written", out, name)
            continue
        chosen = _pick(rng, pool, len(targets))
        lines = [f"1 {utts[i[k]]} {utts[j[k]]}" for k in targets]
        lines += [f"0 {utts[i[k]]} {utts[j[k]]}" for k in chosen]
        lines = [lines[k] for k in rng.permutation(len(lines))]
        with open(os.path.join(out, name), "w") as f:
            f.write("\n".join(lines) + "\n")
        written[name] = len(lines)
    return written
