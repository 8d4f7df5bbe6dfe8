"""Speaker verification: full-utterance embeddings, cosine scores, EER/minDCF.

As in the SSPS paper (section 3.4) and its reference code: one embedding per
full-length utterance, L2-normalised, cosine scoring, EER and minDCF with
C_miss = C_fa = 1 at p_target 0.01 (and 0.05, the 3D-Speaker convention).
Several trial lists (VoxCeleb1-O, -E, -H) are scored from one extraction
over the union of their utterances; extraction is sharded over DDP ranks
and gathered; scoring is a single vectorised product per list, so the
VoxCeleb1-E/H lists take seconds.
"""

import json
import logging
import os
import re

import numpy as np
import torch
import torch.distributed
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from . import distributed as dist
from .metrics import verification_metrics
from .score_norm import cached_cohort_embeddings, normalised_scores

logger = logging.getLogger(__name__)
LIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # also a folder name


def read_trials(path):
    """Parses a VoxCeleb trial list (``label enrol.wav test.wav`` lines).

    Returns
    -------
    list of (label, enrol, test) with the paths as written; errors name the line.
    """
    trials = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or parts[0] not in ("0", "1"):
                raise ValueError(f"{path}:{n}: expected 'label enrol test', got {line.strip()!r}")
            trials.append((int(parts[0]), parts[1], parts[2]))
    if not trials:
        raise ValueError(f"trial file {path} has no trials")
    return trials


def trial_lists(lists):
    """The ``verification_lists`` setting as an ordered ``{name: trial file}``.

    ``lists`` is a mapping (entries set to None are not evaluated) or one
    file (named after it). Names become folder names, so they are checked.
    """
    if isinstance(lists, (str, os.PathLike)):
        lists = {os.path.splitext(os.path.basename(lists))[0]: lists}
    out = {}
    for name, path in dict(lists).items():
        if path is None:
            continue
        if not LIST_NAME.fullmatch(str(name)):
            raise ValueError(f"verification_lists: {name!r} is not a usable list name (letters, digits, . _ + -)")
        out[str(name)] = str(path)
    if not out:
        raise ValueError(f"verification_lists names no trial file: {dict(lists)}")
    return out


def trial_id(path):
    """Trial-list path -> manifest ID (relative path without extension)."""
    return os.path.splitext(path)[0]


@torch.no_grad()
def extract_embeddings(embed, dataset, ids, device, batch_size=1, progressbar=True, desc="embeddings"):
    """L2-normalised embeddings of ``ids`` (full utterances) -> (len(ids), D).

    ``batch_size`` > 1 pads utterances of similar length together (sorted by
    duration) and passes relative lengths; 1 (default) is exact.
    """
    wanted = sorted(ids, key=lambda i: -float(dataset.data[i]["duration"]))
    mine = wanted[dist.rank() :: dist.world_size()]
    out = {}
    batches = [mine[k : k + batch_size] for k in range(0, len(mine), batch_size)]
    for batch in tqdm(batches, disable=not progressbar or dist.rank() != 0, desc=desc):
        sigs = [_load(dataset, i) for i in batch]
        length = max(s.shape[0] for s in sigs)
        wavs = torch.zeros(len(sigs), length)
        for row, s in enumerate(sigs):
            wavs[row, : s.shape[0]] = s
        lens = torch.tensor([s.shape[0] / length for s in sigs])
        emb = embed(wavs.to(device), lens.to(device))
        emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu()
        out.update(zip(batch, emb))
    if dist.is_distributed():
        parts = [None] * dist.world_size()
        torch.distributed.all_gather_object(parts, out)
        out = {k: v for p in parts for k, v in p.items()}
    return torch.stack([out[i] for i in ids])


def _load(dataset, utt_id):
    """The ``sig`` item of one ID of a DynamicItemDataset."""
    return dataset.pipeline.compute_outputs({"id": utt_id, **dataset.data[utt_id]})["sig"]


def trial_indices(ids, trials):
    """(enrol, test) row indices into the ``ids`` embeddings, one per trial."""
    index = {u: k for k, u in enumerate(ids)}
    e = torch.tensor([index[trial_id(t[1])] for t in trials])
    t = torch.tensor([index[trial_id(t[2])] for t in trials])
    return e, t


def score_trials(ids, embeddings, trials):
    """Cosine score of every trial (embeddings already L2-normalised)."""
    e, t = trial_indices(ids, trials)
    return (embeddings[e] * embeddings[t]).sum(-1)


def write_plots(folder, scores, trials, ids, embeddings, result):
    """det.png, scores.png and (with ``embeddings``) tsne.png in ``folder``."""
    from . import plots

    labels = np.array([t[0] for t in trials])
    name = os.path.basename(folder)
    plots.det_png({name: (scores.numpy(), labels)}, os.path.join(folder, "det.png"))
    plots.histogram_png(scores.numpy(), labels, os.path.join(folder, "scores.png"), result["EER_threshold"])
    if embeddings is not None:
        # One thread: t-SNE of <= 10 speakers is small, and scikit-learn's
        # OpenMP threads on busy cores took 17-44 s instead of 0.3-1.4 s here.
        with threadpool_limits(1):
            plots.tsne_png(embeddings.numpy(), ids, os.path.join(folder, "tsne.png"))


def _check_known(trials, trials_file, dataset):
    """KeyError naming ``trials_file`` if it names utterances ``dataset`` lacks."""
    unknown = sorted({trial_id(p) for t in trials for p in t[1:]} - set(dataset.data))
    if unknown:
        raise KeyError(
            f"{trials_file} names {len(unknown)} utterance(s) missing from the "
            f"enrol/test manifests, e.g. {unknown[0]}; re-run data preparation"
        )


def _score_list(ids, emb, trials, cohort_emb, top_k):
    """Scores and metrics of one list (+ ``score_norm`` with a cohort)."""
    scores = score_trials(ids, emb, trials)
    labels = [t[0] for t in trials]
    result = verification_metrics(scores, labels)
    if cohort_emb is not None:
        variants = normalised_scores(emb, *trial_indices(ids, trials), cohort_emb, top_k)
        result["score_norm"] = {
            "cohort": len(cohort_emb), "top_k": top_k,
            **{name: verification_metrics(v, labels) for name, v in variants.items()},
        }
    return scores, result


def evaluate_lists(embed, dataset, lists, out_json, device, batch_size=1, extra=None, progressbar=True,
                   cohort=None, top_k=300, cohort_cache=None):
    """Embeds the utterances of every trial list once and scores each list.

    Arguments
    ---------
    embed : callable (wavs (N, T), rel_lengths (N,)) -> (N, D)
    dataset : DynamicItemDataset with a ``sig`` item, IDs = trial paths
        without extension (``enrol.csv`` + ``test.csv``).
    lists : ``{name: trial file}`` (see ``trial_lists``); the first is the
        main one.
    out_json : str
        Gets the first list's EER (percent), its threshold, minDCF_0.01,
        minDCF_0.05, n_trials, trials_file, then ``extra``, and ``lists``:
        ``{name: the same metrics}`` for every list. The first list's
        ``scores.txt`` (enrol test label score), det.png and scores.png go
        beside it, those of the others in a subfolder named after the list;
        tsne.png (``write_plots``) once, beside it.
    cohort : optional (dataset, ids) of training utterances: their
        embeddings normalise the scores (``ssps_ext.score_norm``) and each
        list gets the metrics of each variant under ``score_norm``.
    cohort_cache : optional file caching the cohort embeddings
        (``cached_cohort_embeddings``); None computes them.
    """
    lists = trial_lists(lists)
    trials = {name: read_trials(path) for name, path in lists.items()}
    for name, path in lists.items():
        _check_known(trials[name], path, dataset)
    ids = sorted({trial_id(p) for ts in trials.values() for t in ts for p in t[1:]})
    emb = extract_embeddings(embed, dataset, ids, device, batch_size, progressbar)
    cohort_emb = None
    if cohort is not None:
        def compute():
            return extract_embeddings(embed, cohort[0], cohort[1], device, batch_size, progressbar, "cohort")

        cohort_emb = cached_cohort_embeddings(cohort_cache, cohort[1], compute) if cohort_cache else compute()
    folder = os.path.dirname(os.path.abspath(out_json))
    results = {}
    for k, (name, path) in enumerate(lists.items()):
        scores, result = _score_list(ids, emb, trials[name], cohort_emb, top_k)
        result["trials_file"] = os.path.abspath(path)
        results[name] = result
        logger.info("verification on %s (%s): %s", name, path, result)
        if dist.rank() == 0:
            where = folder if k == 0 else os.path.join(folder, name)
            os.makedirs(where, exist_ok=True)
            with open(os.path.join(where, "scores.txt"), "w") as f:
                for (label, e, t), s in zip(trials[name], scores.tolist()):
                    f.write(f"{e} {t} {label} {s:.6f}\n")
            write_plots(where, scores, trials[name], ids, emb if k == 0 else None, result)
    summary = {**next(iter(results.values())), **(extra or {}), "lists": results}
    if dist.rank() == 0:
        with open(out_json, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def evaluate_trials(embed, dataset, trials_file, out_json, device, **kwargs):
    """``evaluate_lists`` on one trial file (same arguments otherwise)."""
    return evaluate_lists(embed, dataset, trial_lists(trials_file), out_json, device, **kwargs)
