"""Dynamic loss gate (GMM threshold, fallbacks, unfittable input) and label
correction (ssps_ext/pseudo_labels/gate.py) on hand-built inputs."""

import logging
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from ssps_ext.pseudo_labels.gate import (
    DROPPED,
    OPEN_GATE,
    correct_labels,
    density_crossings,
    fit_loss_gate,
    log_losses,
    loss_gate_threshold,
    reliable_mask,
)


def mixture_sample(n, weights, means, stds, seed):
    """n draws of the 1-D mixture sum_k w_k N(mu_k, s_k^2)."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < weights[0]
    return np.where(first, rng.normal(means[0], stds[0], n), rng.normal(means[1], stds[1], n))


def true_crossing(weights, means, stds):
    """The crossing of the weighted densities between the means, by root finding."""
    def diff(x):
        return weights[0] * norm.pdf(x, means[0], stds[0]) - weights[1] * norm.pdf(x, means[1], stds[1])

    return brentq(diff, means[0], means[1], xtol=1e-12)


# ---------------------------------------------------------------- the gate
@pytest.mark.parametrize("seed", [0, 1])
def test_gate_recovers_the_crossing_of_the_true_mixture(seed):
    """Log-losses of 70 % clean labels N(-3, 0.7^2) and 30 % noisy labels
    N(0.5, 1): the fitted threshold is within 0.1 of the true crossing
    (-1.3238), and the samples it calls reliable are mostly the clean ones."""
    w, m, s = (0.7, 0.3), (-3.0, 0.5), (0.7, 1.0)
    truth = true_crossing(w, m, s)
    assert truth == pytest.approx(-1.3238, abs=1e-4)
    values = mixture_sample(20000, w, m, s, seed)
    fit = fit_loss_gate(values)
    assert fit.crossings == 1 and not fit.fallback
    assert abs(fit.threshold - truth) < 0.1, (fit.threshold, truth)
    np.testing.assert_allclose(fit.means, m, atol=0.1)
    np.testing.assert_allclose(fit.weights, w, atol=0.03)
    assert loss_gate_threshold(values) == fit.threshold  # the float API, same fixed random_state


def test_gate_is_reproducible_and_ignores_input_order():
    values = mixture_sample(5000, (0.6, 0.4), (-2.0, 1.0), (0.8, 0.8), 3)
    a = fit_loss_gate(values).threshold
    assert fit_loss_gate(values).threshold == a
    shuffled = np.random.default_rng(1).permutation(values)  # e.g. another gathering order of the ranks
    assert fit_loss_gate(torch.as_tensor(shuffled)).threshold == a


def test_density_crossings_solves_the_quadratic_exactly():
    """Unequal variances: the analytic root equals the numerical one; equal
    variances and weights: the midpoint; equal variances, unequal weights:
    mu_bar + s^2 log(w_1 / w_2) / (mu_2 - mu_1)."""
    w, m, s = (0.3, 0.7), (-1.0, 2.5), (0.4, 1.3)
    np.testing.assert_allclose(density_crossings(w, m, s), [true_crossing(w, m, s)], atol=1e-9)
    assert density_crossings((0.5, 0.5), (1.0, 3.0), (0.5, 0.5)).tolist() == [2.0]
    expected = 0.5 + 1.0 * math.log(0.6 / 0.4) / 1.0
    np.testing.assert_allclose(density_crossings((0.6, 0.4), (0.0, 1.0), (1.0, 1.0)), [expected], atol=1e-12)
    # components given in the other order: same crossing
    np.testing.assert_allclose(density_crossings(w[::-1], m[::-1], s[::-1]), [true_crossing(w, m, s)], atol=1e-9)


def test_at_most_one_crossing_between_the_means():
    """The documented fact the fallback rests on: over random mixtures there
    is never more than one crossing between the means, and exactly one when
    the other component dominates at each mean."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        w1 = rng.uniform(0.02, 0.98)
        w, m = (w1, 1 - w1), np.sort(rng.normal(0, 2, 2))
        s = rng.uniform(0.1, 3.0, 2)
        roots = density_crossings(w, m, s)
        d_lo = w[0] * norm.pdf(m[0], m[0], s[0]) - w[1] * norm.pdf(m[0], m[1], s[1])
        d_hi = w[0] * norm.pdf(m[1], m[0], s[0]) - w[1] * norm.pdf(m[1], m[1], s[1])
        assert roots.size <= 1
        assert roots.size == int(d_lo * d_hi < 0), (w, m, s, roots)


def test_no_crossing_keeps_the_previous_threshold():
    """Equal-weight N(0, 1) and N(1, 3^2): the narrow component's weighted
    density is above the broad one's on the whole interval between the means
    (0.40 vs 0.13 at 0, 0.24 vs 0.13 at 1), so there is no crossing; the fit
    on a sample of it keeps the previous threshold, or the open gate."""
    w, m, s = (0.5, 0.5), (0.0, 1.0), (1.0, 3.0)
    assert density_crossings(w, m, s).size == 0
    values = mixture_sample(20000, w, m, s, 0)
    fit = fit_loss_gate(values, previous=0.25)
    assert (fit.crossings, fit.fallback, fit.threshold) == (0, True, 0.25)
    assert loss_gate_threshold(values, previous=-1.5) == -1.5
    assert fit_loss_gate(values).threshold == OPEN_GATE == math.inf  # no gate yet: every sample reliable


@pytest.mark.parametrize(
    "values, problem",
    [
        (np.full(50, 0.7), "all 50 log-losses are equal"),
        (np.array([0.1, float("nan"), 2.0]), "1 of 3 log-losses are not finite"),
        (np.array([0.1, float("inf"), -float("inf"), 2.0]), "2 of 4 log-losses are not finite"),
        (np.array([1.0]), "1 loss value"),
        (np.array([]), "0 loss value"),
    ],
)
def test_unfittable_losses_raise_or_keep_the_previous_threshold(values, problem, caplog):
    with pytest.raises(ValueError, match="cannot fit a 2-component GMM") as err:
        fit_loss_gate(values)
    assert problem in str(err.value) and "previous=" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="ssps_ext.pseudo_labels.gate"):
        fit = fit_loss_gate(values, previous=-0.5)
    assert (fit.threshold, fit.fallback, fit.crossings) == (-0.5, True, -1)
    assert any(problem in r.getMessage() and "-0.5" in r.getMessage() for r in caplog.records)


def test_log_losses_and_reliable_mask():
    losses = torch.tensor([0.5, 1.0, math.e, 0.0, 10.0], dtype=torch.float64)
    np.testing.assert_allclose(log_losses(losses).numpy(), [math.log(0.5), 0.0, 1.0, math.log(1e-300), math.log(10)])
    assert reliable_mask(losses, 0.0).tolist() == [True, True, False, True, False]
    assert reliable_mask(losses, 1.0).tolist() == [True, True, True, True, False]  # log(e) = 1 <= 1
    assert reliable_mask(losses, OPEN_GATE).all()


# ---------------------------------------------------------------- label correction
def test_label_correction_on_hand_built_posteriors():
    """Six samples, three classes, T = 0.1 (logits x 10):
    0 reliable, kept (even though the posterior prefers class 2);
    1 unreliable, posterior max 0.9999 on class 2 (its old label 0) -> 2;
    2 unreliable, max softmax([1, 0.9, 0] / 0.1) = 0.731 on class 0 = its own label -> 0 (corrected, unchanged);
    3 unreliable, two equal maxima, 0.5 each: not above 0.5 -> dropped;
    4 unreliable, flat posterior 1/3 -> dropped;
    5 reliable, kept."""
    labels = torch.tensor([1, 0, 0, 2, 1, 2])
    logits = torch.tensor([
        [0.0, 0.0, 1.0],
        [0.0, 0.1, 1.0],
        [1.0, 0.9, 0.0],
        [0.3, 0.3, -1.0],
        [0.2, 0.2, 0.2],
        [1.0, 0.0, 0.0],
    ])
    reliable = torch.tensor([True, False, False, False, False, True])
    p = torch.softmax(logits / 0.1, dim=-1).max(dim=-1).values
    assert p[2] == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-10)), abs=1e-6)
    assert p[3] == pytest.approx(0.5, abs=1e-4) and p[3] <= 0.5
    new, counts = correct_labels(labels, logits, reliable, temperature=0.1, confidence=0.5)
    assert new.tolist() == [1, 2, 0, DROPPED, DROPPED, 2]
    assert {k: int(v) for k, v in counts.items()} == {"reliable": 2, "corrected": 2, "changed": 1, "dropped": 2}
    assert all(v.dim() == 0 for v in counts.values())  # tensors: no host sync per step


def test_label_correction_temperature_and_threshold_matter():
    """Two unreliable samples with maxima 0.731 and 0.9998 at T = 0.1:
    both corrected; at T = 1 the maxima fall to 0.440 and 0.564, so the
    first is dropped; at T = 0.1 with confidence 0.8 the first is dropped."""
    labels = torch.tensor([0, 0])
    logits = torch.tensor([[1.0, 0.9, 0.0], [0.0, 0.1, 1.0]])
    unreliable = torch.tensor([False, False])
    assert correct_labels(labels, logits, unreliable, temperature=0.1)[0].tolist() == [0, 2]
    assert correct_labels(labels, logits, unreliable, temperature=1.0)[0].tolist() == [DROPPED, 2]  # 0.440, 0.564
    assert correct_labels(labels, logits, unreliable, temperature=0.1, confidence=0.8)[0].tolist() == [DROPPED, 2]
    tie = torch.tensor([[0.3, 0.3]])  # posterior exactly 0.5: not above the threshold
    assert torch.softmax(tie / 0.1, dim=-1).max() == 0.5
    assert correct_labels(torch.tensor([1]), tie, torch.tensor([False]))[0].tolist() == [DROPPED]
    everyone = torch.tensor([True, True])
    new, counts = correct_labels(labels, logits, everyone)
    assert new.tolist() == [0, 0] and int(counts["reliable"]) == 2 and int(counts["dropped"]) == 0


def test_label_correction_checks_its_inputs():
    with pytest.raises(ValueError, match="temperature"):
        correct_labels(torch.tensor([0]), torch.zeros(1, 2), torch.tensor([True]), temperature=0.0)
    with pytest.raises(ValueError, match=r"\(N,\), \(N, C\)"):
        correct_labels(torch.tensor([0, 1]), torch.zeros(3, 2), torch.tensor([True, False]))
