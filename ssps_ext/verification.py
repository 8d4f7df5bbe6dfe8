"""Speaker verification: full-utterance embeddings, cosine scores, EER/minDCF.

As in the SSPS paper (section 3.4) and its reference code: one embedding per
full-length utterance, L2-normalised, cosine scoring, EER and minDCF with
C_miss = C_fa = 1 at p_target 0.01 (and 0.05, the 3D-Speaker convention).
Extraction is sharded over DDP ranks and gathered; scoring is a single
vectorised product, so VoxCeleb1-E/H lists take seconds.
"""

import json
import logging
import os

import numpy as np
import torch
import torch.distributed
from tqdm import tqdm

from . import distributed as dist
from .metrics import verification_metrics
from .score_norm import normalised_scores

logger = logging.getLogger(__name__)


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


def trial_id(path):
    """Trial-list path -> manifest ID (relative path without extension)."""
    return os.path.splitext(path)[0]


@torch.no_grad()
def extract_embeddings(embed, dataset, ids, device, batch_size=1, progressbar=True):
    """L2-normalised embeddings of ``ids`` (full utterances) -> (len(ids), D).

    ``batch_size`` > 1 pads utterances of similar length together (sorted by
    duration) and passes relative lengths; 1 (default) is exact.
    """
    wanted = sorted(ids, key=lambda i: -float(dataset.data[i]["duration"]))
    mine = wanted[dist.rank() :: dist.world_size()]
    out = {}
    batches = [mine[k : k + batch_size] for k in range(0, len(mine), batch_size)]
    for batch in tqdm(batches, disable=not progressbar or dist.rank() != 0, desc="embeddings"):
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
    """det.png, scores.png and tsne.png (``ssps_ext.plots``) in ``folder``."""
    from . import plots

    labels = np.array([t[0] for t in trials])
    name = os.path.basename(folder)
    plots.det_png({name: (scores.numpy(), labels)}, os.path.join(folder, "det.png"))
    plots.histogram_png(scores.numpy(), labels, os.path.join(folder, "scores.png"), result["EER_threshold"])
    plots.tsne_png(embeddings.numpy(), ids, os.path.join(folder, "tsne.png"))


def evaluate_trials(embed, dataset, trials_file, out_json, device, batch_size=1, extra=None, progressbar=True,
                    cohort=None, top_k=300):
    """Embeds every utterance of ``trials_file`` and writes the metrics.

    Arguments
    ---------
    embed : callable (wavs (N, T), rel_lengths (N,)) -> (N, D)
    dataset : DynamicItemDataset with a ``sig`` item, IDs = trial paths
        without extension (``enrol.csv`` + ``test.csv``).
    out_json : str
        Gets EER (percent), its threshold, minDCF_0.01, minDCF_0.05,
        n_trials, trials_file and ``extra``; ``scores.txt`` (enrol test label
        score) and the pictures of ``write_plots`` go beside it.
    cohort : optional (dataset, ids) of training utterances: their
        embeddings normalise the scores (``ssps_ext.score_norm``) and
        ``score_norm`` gets the metrics of each variant.
    """
    trials = read_trials(trials_file)
    ids = sorted({trial_id(p) for t in trials for p in t[1:]})
    unknown = [i for i in ids if i not in dataset.data]
    if unknown:
        raise KeyError(
            f"{trials_file} names {len(unknown)} utterance(s) missing from the "
            f"enrol/test manifests, e.g. {unknown[0]}; re-run data preparation"
        )
    emb = extract_embeddings(embed, dataset, ids, device, batch_size, progressbar)
    scores = score_trials(ids, emb, trials)
    labels = [t[0] for t in trials]
    result = verification_metrics(scores, labels)
    if cohort is not None:
        cohort_emb = extract_embeddings(embed, cohort[0], cohort[1], device, batch_size, progressbar)
        variants = normalised_scores(emb, *trial_indices(ids, trials), cohort_emb, top_k)
        result["score_norm"] = {
            "cohort": len(cohort[1]), "top_k": top_k,
            **{name: verification_metrics(v, labels) for name, v in variants.items()},
        }
    result.update(trials_file=os.path.abspath(trials_file), **(extra or {}))
    if dist.rank() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
        with open(out_json, "w") as f:
            json.dump(result, f, indent=2)
        with open(os.path.join(os.path.dirname(os.path.abspath(out_json)), "scores.txt"), "w") as f:
            for (label, e, t), s in zip(trials, scores.tolist()):
                f.write(f"{e} {t} {label} {s:.6f}\n")
        write_plots(os.path.dirname(os.path.abspath(out_json)), scores, trials, ids, emb, result)
    logger.info("verification on %s: %s", trials_file, result)
    return result
