"""Dynamic loss gate (DLG) and label correction (LC) for pseudo-label training.

"Self-Supervised Speaker Verification Using Dynamic Loss-Gate and Label
Correction", Han, Chen & Qian, Interspeech 2022 (arXiv:2208.01928), used in
"Self-Supervised Learning with Cluster-Aware-DINO for High-Performance Robust
Speaker Verification", Han, Chen & Qian (arXiv:2304.05754). The abstracts fix
the ideas (a GMM on the loss distribution sets the gate; model predictions
correct unreliable labels); the details below follow the public
re-implementation described in ../shared/docs/peers.md section 5a
(wavlm_ssl_sv): GMM on log-losses of the previous epoch, sharpening
temperature 0.1, confidence 0.5, prediction from the clean crop.

Dynamic loss gate, with l_i = log(CE_i) the log-loss of sample i:

    p(l) = w_1 N(l; mu_1, s_1^2) + w_2 N(l; mu_2, s_2^2),  mu_1 < mu_2
    tau  : w_1 N(tau; mu_1, s_1^2) = w_2 N(tau; mu_2, s_2^2),  mu_1 < tau < mu_2
    sample i is reliable  iff  l_i <= tau

Label correction of an unreliable sample, o_i the classifier logits of its
clean (non-augmented) crop and T the sharpening temperature:

    p_i = softmax(o_i / T);  y_i <- argmax_c p_ic  if max_c p_ic > 0.5,  else dropped
"""

import logging
import math
from typing import NamedTuple

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

logger = logging.getLogger(__name__)

OPEN_GATE = math.inf  # threshold that passes every sample (before the gate starts)
DROPPED = -1  # label of a sample that LC drops


class GateFit(NamedTuple):
    """Outcome of one gate fit.

    threshold : float, tau on the log-loss axis.
    crossings : int, density crossings found strictly between the means
        (-1 when no GMM could be fitted).
    fallback : bool, True when ``threshold`` is the previous one (or the
        open gate) rather than the crossing of this fit.
    weights, means, stds : (2,) arrays of the mixture, sorted by mean (empty
        when no GMM could be fitted).
    """

    threshold: float
    crossings: int
    fallback: bool
    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray


def log_losses(losses, floor=1e-300):
    """l_i = log(max(CE_i, floor)) for per-sample losses (N,) (tensor or array).

    The floor only keeps an exact 0 finite: the losses the gate models come
    from ``objective.gate_ce`` in float64, which does not underflow to 0 for
    a well-fitted sample (a float32 CE of 0 at a high floor formed a spike
    that the GMM took for the low-loss population).

    Example
    -------
    >>> [round(v, 2) for v in log_losses(torch.tensor([1.0, 0.0], dtype=torch.float64)).tolist()]
    [0.0, -690.78]
    """
    x = torch.as_tensor(losses, dtype=torch.float64)
    return torch.log(x.clamp_min(floor))


def density_crossings(weights, means, stds):
    """Points strictly between the two means where the weighted densities
    w_1 N(x; mu_1, s_1^2) and w_2 N(x; mu_2, s_2^2) cross, ascending.

    Taking logs, w_1 N_1 = w_2 N_2 is the quadratic a x^2 + b x + c = 0 with
    a = 1/(2 s_2^2) - 1/(2 s_1^2), b = mu_1/s_1^2 - mu_2/s_2^2 and
    c = mu_2^2/(2 s_2^2) - mu_1^2/(2 s_1^2) + log(w_1 s_2 / (w_2 s_1)),
    solved exactly (a stable quadratic formula) instead of on a grid. A
    tangent point (zero discriminant) is not a crossing. At most one root
    lies between the means: the vertex of the quadratic lies on the far
    side of the narrower component's mean (x* - mu_2 = s_2^2 (mu_2 - mu_1) /
    (s_1^2 - s_2^2) > 0 when s_2 < s_1), so the log-density ratio is
    monotone between the means. No root there means one weighted density is above the other on the
    whole interval.

    Example
    -------
    >>> density_crossings([0.5, 0.5], [0.0, 2.0], [1.0, 1.0]).tolist()
    [1.0]
    """
    (w1, w2), (m1, m2), (s1, s2) = (np.asarray(v, dtype=np.float64) for v in (weights, means, stds))
    if m1 > m2:
        (w1, w2), (m1, m2), (s1, s2) = (w2, w1), (m2, m1), (s2, s1)
    a = 0.5 / s2**2 - 0.5 / s1**2
    b = m1 / s1**2 - m2 / s2**2
    c = 0.5 * m2**2 / s2**2 - 0.5 * m1**2 / s1**2 + math.log(w1 * s2 / (w2 * s1))
    if a == 0.0:  # equal variances: one linear root (none if the means are equal too)
        roots = np.array([-c / b]) if b != 0.0 else np.empty(0)
    else:
        disc = b * b - 4.0 * a * c
        if disc <= 0.0:
            roots = np.empty(0)
        else:
            q = -0.5 * (b + math.copysign(math.sqrt(disc), b))
            roots = np.array([q / a, c / q])  # q != 0 since disc > 0
    return np.sort(roots[(roots > m1) & (roots < m2)])


def fit_loss_mixture(values, random_state=0):
    """Fits the 2-component GMM to log-losses (N,); returns (weights, means,
    stds), each (2,), sorted by mean.

    Settings of the reference re-implementation: full covariance, tol 1e-5,
    at most 1000 EM iterations; ``random_state`` fixes the k-means start.
    """
    gmm = GaussianMixture(
        n_components=2, covariance_type="full", tol=1e-5, max_iter=1000, random_state=random_state
    )
    gmm.fit(np.asarray(values, dtype=np.float64).reshape(-1, 1))  # (N, 1): one feature
    if not gmm.converged_:
        logger.warning("loss gate: the GMM did not converge in %d EM iterations", gmm.max_iter)
    order = np.argsort(gmm.means_[:, 0])
    stds = np.sqrt(gmm.covariances_.reshape(2))  # (2, 1, 1) -> (2,)
    return gmm.weights_[order], gmm.means_[order, 0], stds[order]


def unfittable_reason(values):
    """Why a 2-component GMM cannot be fitted to ``values``, or None."""
    n = values.size
    if n < 2:
        return f"{n} loss value(s); the gate needs at least 2"
    bad = int((~np.isfinite(values)).sum())
    if bad:
        return f"{bad} of {n} log-losses are not finite (NaN or Inf)"
    distinct = np.unique(values).size
    if distinct < 2:
        return f"all {n} log-losses are equal ({values[0]:.6g}): no two loss populations to separate"
    return None


def fit_loss_gate(values, previous=None, random_state=0):
    """DLG threshold tau from the log-losses of the previous epoch.

    Arguments
    ---------
    values : array-like (N,)
        Per-sample log-losses l_i (``log_losses``), gathered over all ranks
        (in any order: they are sorted before the fit).
    previous : float or None
        The threshold in force (``OPEN_GATE`` = every sample reliable), None
        when no gate has been set yet.
    random_state : int
        Seed of the GMM's initialisation, so that a run is reproducible.

    Returns
    -------
    GateFit. The threshold is the single crossing of the weighted densities
    strictly between the two means. Fallback (``fallback=True``): when there
    is not exactly one crossing there (in practice none, see
    ``density_crossings``: one weighted density is above the other between
    the means, e.g. a broad component holding both modes), the two
    components do not split the samples into a low-loss and a high-loss
    population, so the previous threshold is kept (the open gate
    ``OPEN_GATE`` if ``previous`` is None), as the reference keeps it.

    Raises
    ------
    ValueError when no GMM can be fitted (fewer than 2 values, a non-finite
    value, all values equal) and ``previous`` is None. With a ``previous``
    threshold it is returned instead, with a logged warning.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> l = torch.cat([torch.randn(600, generator=g) - 3, torch.randn(400, generator=g) + 1])
    >>> fit = fit_loss_gate(l)
    >>> fit.crossings, fit.fallback, -2.0 < fit.threshold < 0.0
    (1, False, True)
    """
    # sorted: the fit depends on the values only, not on the order the ranks gathered them in
    values = np.sort(np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu(), dtype=np.float64).ravel())
    reason = unfittable_reason(values)
    if reason is None:
        try:
            weights, means, stds = fit_loss_mixture(values, random_state)
        except ValueError as err:  # scikit-learn's own checks (e.g. a collapsed component)
            reason = f"scikit-learn could not fit the GMM: {err}"
    if reason is not None:
        if previous is None:
            raise ValueError(
                f"dynamic loss gate: cannot fit a 2-component GMM: {reason}. "
                "Pass the previous threshold (previous=...) to keep it instead."
            )
        logger.warning("dynamic loss gate: cannot fit a 2-component GMM (%s): keeping the previous "
                       "threshold %s", reason, previous)
        return GateFit(float(previous), -1, True, np.empty(0), np.empty(0), np.empty(0))
    roots = density_crossings(weights, means, stds)
    if roots.size == 1:
        return GateFit(float(roots[0]), 1, False, weights, means, stds)
    kept = OPEN_GATE if previous is None else float(previous)
    logger.info("dynamic loss gate: %d density crossings between the means %s: keeping threshold %s",
                roots.size, np.round(means, 4).tolist(), kept)
    return GateFit(kept, int(roots.size), True, weights, means, stds)


def loss_gate_threshold(values, previous=None, random_state=0):
    """tau as a float: ``fit_loss_gate(values, previous, random_state).threshold``."""
    return fit_loss_gate(values, previous, random_state).threshold


def reliable_mask(losses, threshold):
    """(N,) bool: log(CE_i) <= tau (per-sample losses, not log-losses)."""
    return log_losses(losses) <= threshold


def correct_labels(labels, clean_logits, reliable, temperature=0.1, confidence=0.5):
    """Label correction: reliable samples keep their pseudo-label; an
    unreliable one takes the arg-max of its sharpened posterior
    softmax(o_i / T) when that probability exceeds ``confidence``, else it is
    dropped (label ``DROPPED`` = -1).

    Arguments
    ---------
    labels : torch.Tensor (N,) long
        Pseudo-labels y_i (cluster indices).
    clean_logits : torch.Tensor (N, C)
        Classifier outputs o_i for the clean crop (for SpeechBrain's
        ``Classifier``, cosines in [-1, 1]: T = 0.1 multiplies them by 10).
    reliable : torch.Tensor (N,) bool
        The gate's verdict (``reliable_mask``).
    temperature : float
        Sharpening temperature T (0.1 in the reference re-implementation).
    confidence : float
        A corrected label must have a probability strictly above this (0.5).

    Returns
    -------
    new_labels : torch.Tensor (N,) long, -1 where dropped.
    counts : dict of 0-d long tensors (no host sync) ``reliable``,
        ``corrected`` (unreliable and confident, whether or not the arg-max
        equals the old label), ``changed`` (corrected to another label) and
        ``dropped``; reliable + corrected + dropped = N.

    Example
    -------
    >>> logits = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    >>> new, counts = correct_labels(torch.tensor([0, 0, 1]), logits, torch.tensor([True, False, False]))
    >>> new.tolist(), {k: int(v) for k, v in counts.items()}
    ([0, 1, -1], {'reliable': 1, 'corrected': 1, 'changed': 1, 'dropped': 1})
    """
    if temperature <= 0:
        raise ValueError(f"label correction: temperature must be > 0, got {temperature}")
    if clean_logits.dim() != 2 or clean_logits.shape[0] != labels.shape[0] or reliable.shape != labels.shape:
        raise ValueError(
            f"label correction: labels {tuple(labels.shape)}, logits {tuple(clean_logits.shape)} and "
            f"reliable {tuple(reliable.shape)} must be (N,), (N, C) and (N,)"
        )
    reliable = reliable.to(torch.bool)
    posterior = torch.softmax(clean_logits.detach().float() / temperature, dim=-1)  # (N, C)
    prob, predicted = posterior.max(dim=-1)  # (N,) each
    corrected = ~reliable & (prob > confidence)  # (N,) unreliable and confident
    dropped = ~reliable & ~corrected  # (N,)
    new_labels = torch.where(reliable, labels, torch.where(corrected, predicted, torch.full_like(labels, DROPPED)))
    counts = {
        "reliable": reliable.sum(),
        "corrected": corrected.sum(),
        "changed": (corrected & (predicted != labels)).sum(),
        "dropped": dropped.sum(),
    }
    return new_labels, counts
