"""VICReg: each term against a direct computation, and the Brain's SSPS
step substituting exactly the sampled rows of the second view."""

import pytest
import torch

from ssps_ext.losses.vicreg import VICRegLoss, covariance_term, variance_term


def test_terms_match_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 3, generator=g) * 0.5, torch.randn(6, 3, generator=g) * 2
    # invariance: mean over the 18 entries of the squared difference
    inv = sum(float((z1[i, d] - z2[i, d]) ** 2) for i in range(6) for d in range(3)) / 18
    # variance: hinge of each dimension's unbiased standard deviation (eps 1e-4)
    def var(z):
        total = 0.0
        for d in range(3):
            m = sum(float(z[i, d]) for i in range(6)) / 6
            v = sum((float(z[i, d]) - m) ** 2 for i in range(6)) / 5
            total += max(0.0, 1 - (v + 1e-4) ** 0.5)
        return total / 3
    # covariance: squared off-diagonal entries of the unbiased covariance, over D
    def cov(z):
        m = [sum(float(z[i, d]) for i in range(6)) / 6 for d in range(3)]
        total = 0.0
        for d in range(3):
            for e in range(3):
                if d != e:
                    c = sum((float(z[i, d]) - m[d]) * (float(z[i, e]) - m[e]) for i in range(6)) / 5
                    total += c * c
        return total / 3
    assert float(variance_term(z1)) == pytest.approx(var(z1), rel=1e-5)
    assert float(variance_term(z2 * 10)) == pytest.approx(0.0, abs=1e-7)  # every std > 1: no penalty
    assert float(covariance_term(z1)) == pytest.approx(cov(z1), rel=1e-5)
    loss = VICRegLoss(inv_weight=2.0, var_weight=3.0, cov_weight=0.5)
    expected = 2.0 * inv + 3.0 * (var(z1) + var(z2)) + 0.5 * (cov(z1) + cov(z2))
    assert float(loss(z1, z2)) == pytest.approx(expected, rel=1e-5)
    stats = loss.stats(z1, z2)
    assert float(stats["vicreg_inv"]) == pytest.approx(inv, rel=1e-5)


def test_collapse_is_penalised_and_gradients_flow():
    z = torch.zeros(8, 4, requires_grad=True)
    loss = VICRegLoss()(z + 1e-3 * torch.randn(8, 4), z)
    assert float(loss) > 1.9  # two views of collapsed embeddings: variance hinge ~1 each
    loss.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_vicreg_ssps_substitutes_only_the_sampled_second_view_rows():
    """SimCLRBrain.ssps_step (VICReg's Brain): rows with a slot take Q', others
    and the first view are untouched; Q' receives the original Z'."""
    from ssps_ext.brains.simclr import SimCLRBrain

    class StubSSPS:
        def sample(self, indices, ref):
            return torch.tensor([-1, 1, -1]), {}

        def substitute(self, emb, slots, view=0):
            return torch.where((slots >= 0)[:, None], torch.full_like(emb, 7.0), emb)

        def update(self, *args):
            pass

    brain = SimCLRBrain.__new__(SimCLRBrain)
    ssps = StubSSPS()
    brain.ssps_active = lambda write=False: True
    type(brain).ssps = property(lambda self: ssps)
    brain._deferred, brain.record = [], lambda **kw: None
    try:
        z1, z2 = torch.randn(3, 5), torch.randn(3, 5)
        out = brain.ssps_step(torch.arange(3), None, z1, z2)
    finally:
        del type(brain).ssps
    assert torch.equal(out[[0, 2]], z2[[0, 2]]) and torch.equal(out[1], torch.full((5,), 7.0))
    (fn, args), = brain._deferred
    assert torch.equal(args[2], z2[None])
