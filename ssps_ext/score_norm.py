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
"""

import torch


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
