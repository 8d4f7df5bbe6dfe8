"""Score normalisation of cosine trials against a cohort of training embeddings.

For a trial (e, t) with raw score s and a cohort C of L2-normalised
embeddings, let mu_e, sd_e be the mean and standard deviation of the cosines
between e and the cohort (over the whole cohort, or over its ``top_k``
highest cosines for the adaptive variant), and mu_t, sd_t the same for t:

    Z-norm   (s - mu_e) / sd_e
    T-norm   (s - mu_t) / sd_t
    S-norm   ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2
    AS-norm  S-norm with top-k statistics (Matejka et al., 2017; WeSpeaker's
             default top_k = 300)
    mean     cosine after subtracting the cohort mean embedding from e and t
             and re-normalising (the "mean subtraction of training
             embeddings" of the SSL papers' back-ends)

With cosine scoring the enrol and test sides are symmetric, so Z- and T-norm
differ only in which side's statistics they use.

The cohort embeddings depend only on the evaluated weights and the cohort:
``cached_cohort_embeddings`` keeps them in a file (the recipe puts it in the
evaluated checkpoint's folder, ``cohort_<N>_<hash>.pt``) and reuses it when
the same weights and cohort are evaluated again.
"""

import hashlib
import json
import logging
import os

import torch

from . import distributed as dist

logger = logging.getLogger(__name__)


def cohort_stats(embeddings, cohort, top_k=None, block=4096):
    """Mean and std (U,) of each embedding's cosines with the cohort, over
    all of it or its ``top_k`` highest; computed ``block`` rows at a time."""
    means, stds = [], []
    for lo in range(0, embeddings.shape[0], block):
        cos = embeddings[lo : lo + block] @ cohort.T  # (u, C)
        if top_k is not None and top_k < cos.shape[1]:
            cos = cos.topk(top_k, dim=1).values  # (u, top_k)
        means.append(cos.mean(1))
        stds.append(cos.std(1).clamp(min=1e-6))
    return torch.cat(means), torch.cat(stds)


def normalised_scores(embeddings, enrol, test, cohort, top_k=300):
    """All normalised variants of the trial scores.

    Arguments
    ---------
    embeddings : (U, D) L2-normalised embeddings of the trial utterances.
    enrol, test : (n,) long indices into ``embeddings`` per trial.
    cohort : (C, D) L2-normalised cohort embeddings (training utterances).
    top_k : cohort size of the adaptive statistics (AS-norm).

    Returns
    -------
    dict name -> (n,) scores, for "mean", "z", "t", "s" and "as".
    """
    raw = (embeddings[enrol] * embeddings[test]).sum(-1)  # (n,)
    mu, sd = cohort_stats(embeddings, cohort)
    z = (raw - mu[enrol]) / sd[enrol]
    t = (raw - mu[test]) / sd[test]
    mu_k, sd_k = cohort_stats(embeddings, cohort, top_k)
    adaptive = ((raw - mu_k[enrol]) / sd_k[enrol] + (raw - mu_k[test]) / sd_k[test]) / 2
    centred = torch.nn.functional.normalize(embeddings - cohort.mean(0, keepdim=True), dim=-1)
    return {
        "mean": (centred[enrol] * centred[test]).sum(-1),
        "z": z,
        "t": t,
        "s": (z + t) / 2,
        "as": adaptive,
    }


# ---------------------------------------------------------------- cohort cache
def state_digest(state_dict):
    """SHA-1 of a state dict's names, dtypes, shapes and values (the identity
    of the weights, whatever file or average they came from)."""
    h = hashlib.sha1()
    for name, value in state_dict.items():
        value = torch.as_tensor(value).detach().cpu().contiguous()
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cohort_cache_file(folder, ids, identity):
    """``<folder>/cohort_<N>_<hash>.pt``, the hash covering the cohort ``ids``
    and ``identity`` (JSON-able: what else the embeddings depend on, e.g. the
    encoder's ``state_digest``, the averaged checkpoints, the eval settings)."""
    key = json.dumps({"ids": list(ids), "identity": identity}, sort_keys=True, default=str)
    return os.path.join(folder, f"cohort_{len(ids)}_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt")


def cached_cohort_embeddings(path, ids, compute):
    """Cohort embeddings from ``path`` if it holds those of ``ids``, else
    ``compute()`` them and write ``path`` (temporary file, then an atomic
    rename, by rank 0). An unreadable cache is recomputed; an unwritable
    folder only costs the reuse (warning)."""
    if os.path.isfile(path):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["ids"] == list(ids) and saved["embeddings"].shape[0] == len(ids):
                logger.info("cohort embeddings from %s", path)
                return saved["embeddings"]
            logger.warning("%s holds another cohort: recomputing it", path)
        except Exception as err:  # truncated or foreign file: recompute
            logger.warning("cohort cache %s unreadable (%s): recomputing it", path, err)
    embeddings = compute()
    if dist.rank() == 0:
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:  # open() raises OSError, torch.save a RuntimeError
                torch.save({"ids": list(ids), "embeddings": embeddings}, f)
            os.replace(tmp, path)
        except OSError as err:
            logger.warning("could not cache the cohort embeddings in %s: %s", path, err)
            if os.path.exists(tmp):
                os.remove(tmp)
    return embeddings
