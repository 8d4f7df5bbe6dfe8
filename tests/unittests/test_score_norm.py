"""Score normalisation against a direct per-trial computation."""

import pytest
import torch

from ssps_ext.score_norm import cohort_stats, normalised_scores


def unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


def test_every_variant_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    emb, cohort = unit(torch.randn(7, 5, generator=g)), unit(torch.randn(40, 5, generator=g))
    enrol, test = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 0])
    out = normalised_scores(emb, enrol, test, cohort, top_k=10)
    for k in range(4):
        e, t = emb[enrol[k]], emb[test[k]]
        s = float(e @ t)
        ce, ct = cohort @ e, cohort @ t
        z = (s - ce.mean()) / ce.std()
        tn = (s - ct.mean()) / ct.std()
        top_e, top_t = ce.topk(10).values, ct.topk(10).values
        as_norm = ((s - top_e.mean()) / top_e.std() + (s - top_t.mean()) / top_t.std()) / 2
        m = cohort.mean(0)
        mean_sub = float(unit(e - m) @ unit(t - m))
        assert float(out["z"][k]) == pytest.approx(float(z), abs=1e-5)
        assert float(out["t"][k]) == pytest.approx(float(tn), abs=1e-5)
        assert float(out["s"][k]) == pytest.approx(float(z + tn) / 2, abs=1e-5)
        assert float(out["as"][k]) == pytest.approx(float(as_norm), abs=1e-5)
        assert float(out["mean"][k]) == pytest.approx(mean_sub, abs=1e-5)


def test_blocks_and_topk_larger_than_cohort():
    g = torch.Generator().manual_seed(1)
    emb, cohort = unit(torch.randn(9, 4, generator=g)), unit(torch.randn(6, 4, generator=g))
    full = cohort_stats(emb, cohort)
    assert all(torch.allclose(a, b) for a, b in zip(full, cohort_stats(emb, cohort, block=2)))
    assert all(torch.allclose(a, b) for a, b in zip(full, cohort_stats(emb, cohort, top_k=100)))


def test_as_norm_removes_a_per_speaker_score_offset():
    """Two 'hub' utterances close to the cohort score high with everyone:
    raw scoring ranks their non-target trial above a target trial, AS-norm
    does not."""
    g = torch.Generator().manual_seed(2)
    base = unit(torch.randn(3, 16, generator=g))
    cohort = unit(base[0] + 0.3 * torch.randn(50, 16, generator=g))
    hub_a, hub_b = unit(base[0] + 0.2 * base[1]), unit(base[0] + 0.2 * base[2])  # different "speakers"
    spk = unit(base[1] + 0.9 * base[2])
    spk2 = unit(spk + 0.35 * unit(torch.randn(16, generator=g)))
    emb = torch.stack([hub_a, hub_b, spk, spk2])
    enrol, test = torch.tensor([0, 2]), torch.tensor([1, 3])  # non-target, target
    raw = (emb[enrol] * emb[test]).sum(-1)
    assert raw[0] > raw[1]
    normed = normalised_scores(emb, enrol, test, cohort, top_k=20)["as"]
    assert normed[1] > normed[0]
