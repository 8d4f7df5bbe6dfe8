"""Sort-based EER / minDCF against brute force and SpeechBrain."""

import pytest
import torch
from speechbrain.utils.metric_stats import EER as sb_eer
from speechbrain.utils.metric_stats import minDCF as sb_mindcf

from ssps_ext.metrics import eer, min_dcf, verification_metrics


def brute_force(pos, neg, p_target):
    """Every candidate threshold checked with explicit comparisons."""
    uniq = sorted(set(pos.tolist() + neg.tolist()))
    cands = sorted(uniq + [(a + b) / 2 for a, b in zip(uniq[:-1], uniq[1:])])
    best_gap, best_eer, best_dcf = None, None, None
    for t in cands:
        p_miss = sum(1 for s in pos.tolist() if s <= t) / len(pos)
        p_fa = sum(1 for s in neg.tolist() if s > t) / len(neg)
        if best_gap is None or abs(p_fa - p_miss) < best_gap:
            best_gap, best_eer = abs(p_fa - p_miss), (p_fa + p_miss) / 2
        dcf = (p_miss * p_target + p_fa * (1 - p_target)) / min(p_target, 1 - p_target)
        best_dcf = dcf if best_dcf is None else min(best_dcf, dcf)
    return best_eer, best_dcf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force_and_speechbrain(seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(60, generator=g) + 1.0
    neg = torch.randn(90, generator=g)
    for p in (0.01, 0.05):
        ref_eer, ref_dcf = brute_force(pos, neg, p)
        assert eer(pos, neg)[0] == pytest.approx(ref_eer, abs=1e-9)
        assert min_dcf(pos, neg, p_target=p)[0] == pytest.approx(ref_dcf, abs=1e-9)
        assert min_dcf(pos, neg, p_target=p)[0] == pytest.approx(sb_mindcf(pos, neg, p_target=p)[0] / min(p, 1 - p), abs=1e-5)
    # With as many targets as non-targets |P_fa - P_miss| reaches 0 without an
    # ambiguous tie; SpeechBrain compares gaps in float32 and may break exact
    # ties between unequal-size lists differently (ours: first threshold).
    assert eer(pos[:60], neg[:60])[0] == pytest.approx(sb_eer(pos[:60], neg[:60])[0], abs=1e-6)


def test_ties_and_extremes():
    assert eer(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))[0] == 0.0
    assert eer(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))[0] == 0.5
    assert eer(torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.8]))[0] == 1.0
    with pytest.raises(ValueError, match="non-targets"):
        eer(torch.tensor([0.1]), torch.tensor([]))


def test_verification_metrics_keys_and_percent():
    out = verification_metrics(torch.tensor([0.9, 0.2, 0.8, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert out["EER"] == 0.0 and out["n_trials"] == 4
    assert set(out) == {"EER", "EER_threshold", "minDCF_0.01", "minDCF_0.05", "n_trials"}
    assert 0.2 < out["EER_threshold"] <= 0.8  # separates the two classes
    noisy = verification_metrics(torch.tensor([0.9, 0.95, 0.8, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert noisy["EER"] == pytest.approx(50.0)


def test_bad_scores_or_one_class_lists_are_errors():
    with pytest.raises(ValueError, match="1 of 4 trial scores are NaN"):
        verification_metrics(torch.tensor([0.9, float("nan"), 0.8, 0.1]), torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="2 target and 0 non-target"):
        verification_metrics(torch.tensor([0.9, 0.8]), torch.tensor([1, 1]))


def test_eer_threshold_is_the_decision_threshold_with_equal_error_rates():
    # hand-built: 0.4 is the first threshold where "accept if score > t"
    # falsely rejects 1 of 4 targets (0.3) and falsely accepts 1 of 4 non-targets (0.6)
    scores = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.6, 0.4, 0.2, 0.0])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    out = verification_metrics(scores, labels)
    assert out["EER_threshold"] == pytest.approx(0.4)
    accept = scores > out["EER_threshold"]
    false_reject = (~accept[labels == 1]).float().mean().item()
    false_accept = accept[labels == 0].float().mean().item()
    assert false_reject == false_accept == pytest.approx(out["EER"] / 100) == pytest.approx(0.25)
