"""Sort-based EER and minDCF for speaker-verification trial lists.

Both use SpeechBrain's definitions (``speechbrain.utils.metric_stats.EER`` and
``minDCF``): candidate thresholds are the unique scores and the midpoints
between consecutive ones; P_miss(t) = P(target score <= t) and
P_fa(t) = P(non-target score > t). They cost O(n log n) instead of
SpeechBrain's O(n^2) loops/matrices, so VoxCeleb1-E/H lists (~0.5-0.6 M trials)
take well under a second.

EER = (P_fa + P_miss) / 2 at the first threshold minimising |P_fa - P_miss|
(computed exactly; SpeechBrain's float32 loop can break an exact tie between
two thresholds differently on lists with unequal target/non-target counts).
minDCF (normalised) = min_t [C_miss P_miss(t) p + C_fa P_fa(t) (1 - p)]
                      / min(C_miss p, C_fa (1 - p)).
"""

import torch


def _error_rates(positive_scores, negative_scores):
    """P_miss and P_fa at every candidate threshold (float64)."""
    pos = torch.as_tensor(positive_scores, dtype=torch.float64).flatten()
    neg = torch.as_tensor(negative_scores, dtype=torch.float64).flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError(
            f"need target and non-target trials, got {pos.numel()} targets "
            f"and {neg.numel()} non-targets"
        )
    unique = torch.unique(torch.cat([pos, neg]))  # sorted
    thresholds = torch.cat([unique, (unique[:-1] + unique[1:]) / 2]).sort().values
    pos, neg = pos.sort().values, neg.sort().values
    p_miss = torch.searchsorted(pos, thresholds, right=True).double() / pos.numel()
    p_fa = 1 - torch.searchsorted(neg, thresholds, right=True).double() / neg.numel()
    return thresholds, p_miss, p_fa


def eer(positive_scores, negative_scores):
    """Equal error rate (fraction) and its threshold.

    Example
    -------
    >>> eer(torch.tensor([0.6, 0.7, 0.8, 0.5]), torch.tensor([0.4, 0.3, 0.2, 0.1]))[0]
    0.0
    """
    thresholds, p_miss, p_fa = _error_rates(positive_scores, negative_scores)
    i = torch.argmin((p_fa - p_miss).abs())
    return float((p_fa[i] + p_miss[i]) / 2), float(thresholds[i])


def min_dcf(positive_scores, negative_scores, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost and its threshold."""
    thresholds, p_miss, p_fa = _error_rates(positive_scores, negative_scores)
    c_det = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    i = torch.argmin(c_det)
    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    return float(c_det[i] / norm), float(thresholds[i])


def verification_metrics(scores, labels, p_targets=(0.01, 0.05)):
    """EER (percent), its threshold and minDCF at each p_target for one trial
    list. Non-finite scores or a list without both classes are errors, not
    a meaningless EER."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    labels = torch.as_tensor(labels).bool()
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ValueError(f"{bad} of {scores.numel()} trial scores are NaN or Inf: the embeddings are not finite")
    pos, neg = scores[labels], scores[~labels]
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError(
            f"the trial list has {pos.numel()} target and {neg.numel()} non-target trials: an EER needs both"
        )
    rate, threshold = eer(pos, neg)
    out = {"EER": 100 * rate, "EER_threshold": threshold}
    for p in p_targets:
        out[f"minDCF_{p:g}"] = min_dcf(pos, neg, p_target=p)[0]
    out["n_trials"] = int(scores.numel())
    return out
