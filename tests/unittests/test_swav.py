"""SwAV: Sinkhorn-Knopp marginals, the swapped loss against a direct
computation, the queue, and SwAV-SSPS scoring the substituted z2."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssps_ext.heads import SwAVHead
from ssps_ext.losses.swav import SwAVLoss, sinkhorn_knopp


def test_sinkhorn_knopp_marginals():
    """Rows (samples) sum to 1; the prototypes' totals converge to B/K."""
    scores = F.normalize(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), dim=1) @ \
        F.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), dim=1).T  # (64, 16)
    q = sinkhorn_knopp(scores, n_iters=50, epsilon=0.05)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((16,), 4.0), atol=1e-3)
    q3 = sinkhorn_knopp(scores, n_iters=3, epsilon=0.05)
    assert torch.allclose(q3.sum(1), torch.ones(64), atol=1e-5)  # last step normalises the samples
    assert float((q3.sum(0) - 4).abs().max()) < float((F.softmax(scores / 0.05, 1).sum(0) - 4).abs().max())


def test_sinkhorn_knopp_one_iteration_by_hand():
    scores = torch.tensor([[0.1, 0.3], [0.2, -0.1], [0.0, 0.05]])
    e = [[math.exp(float(s) / 0.5) for s in row] for row in scores]
    total = sum(map(sum, e))
    q = [[v / total for v in row] for row in e]
    rows = [sum(q[i][k] for i in range(3)) for k in range(2)]  # per prototype
    q = [[q[i][k] / rows[k] / 2 for k in range(2)] for i in range(3)]
    cols = [sum(q[i]) for i in range(3)]  # per sample
    q = [[q[i][k] / cols[i] / 3 * 3 for k in range(2)] for i in range(3)]
    got = sinkhorn_knopp(scores, n_iters=1, epsilon=0.5)
    assert torch.allclose(got, torch.tensor(q), atol=1e-6)


def test_swapped_loss_by_hand():
    g = torch.Generator().manual_seed(2)
    p1, p2 = torch.randn(4, 5, generator=g) * 0.3, torch.randn(4, 5, generator=g) * 0.3
    loss = SwAVLoss(dim=3, temperature=0.1, queue_size=0)
    q1, q2 = sinkhorn_knopp(p1), sinkhorn_knopp(p2)
    def l(q, p):
        return -sum(float(q[i, k]) * float(F.log_softmax(p[i] / 0.1, 0)[k]) for i in range(4) for k in range(5)) / 4
    assert float(loss(p1, p2, 1, None)) == pytest.approx(0.5 * (l(q1, p2) + l(q2, p1)), rel=1e-5)


def test_queue_enters_the_codes_from_its_start_epoch():
    head = SwAVHead(in_dim=4, hidden_dim=8, out_dim=3, n_prototypes=5)
    loss = SwAVLoss(dim=3, queue_size=6, queue_start_epoch=3)
    z = F.normalize(torch.randn(2, 3), dim=1)
    loss.enqueue(z, -z)
    loss.enqueue(z * 0 + F.normalize(torch.ones(1, 3), dim=1), z)
    assert torch.allclose(loss.queue[0, 2:4], z) and torch.allclose(loss.queue[1, 2:4], -z)  # shifted back
    p = head.scores(z).detach()
    assert torch.equal(loss.codes(p, 0, 2, head.scores), sinkhorn_knopp(p))  # before: batch only
    with_queue = sinkhorn_knopp(torch.cat([p, head.scores(loss.queue[0])]).detach())[:2]
    assert torch.allclose(loss.codes(p, 0, 3, head.scores), with_queue)


def test_prototype_scores_are_cosines():
    head = SwAVHead(in_dim=4, hidden_dim=8, out_dim=3, n_prototypes=5)
    head.prototypes.data *= 7
    z, p = head(torch.randn(6, 4))
    assert torch.allclose(z.norm(dim=1), torch.ones(6)) and float(p.abs().max()) <= 1 + 1e-6


def test_swav_ssps_scores_the_substituted_rows_only():
    """With SSPS, P2 is recomputed from z2 with its sampled rows replaced;
    view 1's scores and z2's other rows are untouched; the queue gets the
    original z2."""
    from ssps_ext.brains.swav import SwAVBrain

    class StubSSPS:
        def sample(self, indices, ref):
            return torch.tensor([0, -1, -1]), {}

        def substitute(self, emb, slots, view=0):
            return torch.where((slots >= 0)[:, None], F.normalize(torch.ones_like(emb), dim=1), emb)

        def update(self, *args):
            pass

    head = SwAVHead(in_dim=4, hidden_dim=8, out_dim=3, n_prototypes=5)
    seen = {}

    def fake_loss(p1, p2, epoch, score_fn):
        seen.update(p1=p1, p2=p2)
        return p1.sum() * 0

    fake_loss.enqueue = lambda z1, z2: seen.update(queued=z2)
    brain = SwAVBrain.__new__(SwAVBrain)
    ssps = StubSSPS()
    brain.ssps_active = lambda write=False: True
    type(brain).ssps = property(lambda self: ssps)
    brain.modules = type("M", (), {"swav_head": head})()
    brain.hparams = type("H", (), {})()
    brain.hparams.loss = fake_loss
    type(brain).epoch = property(lambda self: 1)
    brain._deferred, brain.record = [], lambda **kw: None
    batch = type("B", (), {"index": type("P", (), {"data": torch.arange(3)})()})()
    try:
        z1, z2 = F.normalize(torch.randn(3, 3), dim=1), F.normalize(torch.randn(3, 3), dim=1)
        p1, p2 = head.scores(z1), head.scores(z2)
        brain.device = "cpu"
        brain.compute_objectives((z1, z2, p1, p2, torch.zeros(3, 2)), batch, None)
    finally:
        del type(brain).ssps, type(brain).epoch
    assert torch.equal(seen["p1"], p1)
    expected = head.scores(torch.cat([F.normalize(torch.ones(1, 3), dim=1), z2[1:]]))
    assert torch.allclose(seen["p2"], expected) and not torch.allclose(seen["p2"][0], p2[0])
    for fn, args in brain._deferred:
        fn(*args)
    assert torch.equal(seen["queued"], z2)
