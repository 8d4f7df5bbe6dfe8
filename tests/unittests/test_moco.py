"""MoCo: the loss against a hand computation (margin, symmetric form), the
key queues (wrap-around, gathered over 2 gloo processes), shuffle-BN, and
MoCo-SSPS substituting exactly the sampled keys."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ssps_ext import distributed
from ssps_ext.losses.moco import MoCoLoss


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def by_hand(q, k, queue, tau, m):
    """-1/b sum_i log(e^{(q_i.k_i - m)/tau} / (e^{(q_i.k_i - m)/tau} + sum_j e^{q_i.queue_j/tau}))."""
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp((float(q[i] @ k[i]) - m) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(queue.shape[0]))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_loss_matches_hand_computation(margin):
    q1, q2, k1, k2 = unit(3, 4, 8).unbind(1)  # 3 queries, 4 roles
    one = MoCoLoss(dim=8, queue_size=5, temperature=0.5, margin=margin, symmetric=False)
    one.queue.copy_(unit(1, 5, 8, seed=1))
    loss, _ = one(q1, q2, k1, k2)
    assert float(loss) == pytest.approx(by_hand(q1, k2, one.queue[0], 0.5, margin), rel=1e-5)
    sym = MoCoLoss(dim=8, queue_size=5, temperature=0.5, margin=margin, symmetric=True)
    sym.queue.copy_(unit(2, 5, 8, seed=2))
    loss, _ = sym(q1 * 3, q2, k1, k2 * 2)  # inputs are normalised by the loss
    expected = 0.5 * (by_hand(q1, k2, sym.queue[1], 0.5, margin) + by_hand(q2, k1, sym.queue[0], 0.5, margin))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_accuracy_counts_keys_ranked_first():
    q = unit(3, 8)
    loss = MoCoLoss(dim=8, queue_size=2, temperature=0.1, symmetric=False)
    loss.queue.copy_(torch.stack([q[0], -q[1]])[None])  # query 0 meets itself in the queue
    k = torch.stack([-q[0], q[1], q[2]])  # query 0's key points away
    _, accuracy = loss(q, q, k, k)
    assert float(accuracy) == pytest.approx(2 / 3)


def test_queue_wraps_around_oldest_first():
    loss = MoCoLoss(dim=2, queue_size=5, symmetric=True)
    keys = [F.normalize(torch.tensor([[1.0, float(i)]]), dim=-1) for i in range(7)]
    loss.enqueue(torch.cat(keys[:3]), -torch.cat(keys[:3]))
    loss.enqueue(torch.cat(keys[3:7]), -torch.cat(keys[3:7]))  # 7 keys into 5 slots
    order = [5, 6, 2, 3, 4]  # slots 0-1 overwritten by keys 5 and 6
    assert torch.allclose(loss.queue[0], torch.cat([keys[i] for i in order]))
    assert torch.allclose(loss.queue[1], -torch.cat([keys[i] for i in order]))
    assert int(loss.ptr) == 2
    big = MoCoLoss(dim=2, queue_size=2, symmetric=False)
    big.enqueue(torch.cat(keys[:3]), torch.cat(keys[:3]))  # more keys than slots: the newest 2
    assert torch.allclose(big.queue[0], torch.cat([keys[2], keys[1]])) and int(big.ptr) == 1


def test_shuffled_forward_is_the_identity_on_one_process():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    assert torch.equal(distributed.shuffled_forward(lin, x), lin(x).detach())


WORLD, b = 2, 3


def worker(rank, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    torch.manual_seed(rank)  # ranks draw differently; the permutation comes from rank 0
    keys = unit(WORLD * b, 4, seed=7)
    mine = keys[rank * b : (rank + 1) * b]
    loss = MoCoLoss(dim=4, queue_size=8, symmetric=False)
    loss.queue.zero_()
    loss.enqueue(mine, mine)
    torch.manual_seed(11)
    lin = torch.nn.Linear(4, 2)
    seen = []

    def fn(rows):
        seen.append(rows.clone())
        return lin(rows)

    out = distributed.shuffled_forward(fn, mine)
    torch.save({"queue": loss.queue.clone(), "ptr": loss.ptr.clone(), "out": out, "seen": seen[0]},
               os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_gather_keys_and_shuffle_rows(tmp_path):
    mp.spawn(worker, args=(str(tmp_path),), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    keys = unit(WORLD * b, 4, seed=7)
    for r, got in enumerate(ranks):
        assert torch.allclose(got["queue"][0, : WORLD * b], keys) and int(got["ptr"]) == WORLD * b
        torch.manual_seed(11)
        lin = torch.nn.Linear(4, 2)
        assert torch.allclose(got["out"], lin(keys[r * b : (r + 1) * b]).detach(), atol=1e-6)  # back in order
    seen = torch.cat([got["seen"] for got in ranks])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, keys.tolist()))  # every row encoded once
    assert not torch.equal(ranks[0]["seen"], keys[:b])  # rank 0 did not encode just its own rows


def test_moco_ssps_substitutes_exactly_the_sampled_keys():
    """Rows with a slot take both stored keys of that slot; the others keep
    their own keys; Q' receives the original keys."""
    from ssps_ext.brains.moco import MoCoBrain

    class StubSSPS:
        def sample(self, indices, ref):
            return torch.tensor([2, -1, 0, -1]), {}

        def substitute(self, emb, slots, view=0):
            stored = torch.full((3, emb.shape[1]), 10.0 * (view + 1)) + torch.arange(3.0)[:, None]
            return torch.where((slots >= 0)[:, None], stored[slots.clamp(min=0)], emb)

        def update(self, *args):
            self.written = args

    brain = MoCoBrain.__new__(MoCoBrain)
    ssps = StubSSPS()
    brain.ssps_active = lambda write=False: True
    type(brain).ssps = property(lambda self: ssps)
    brain._deferred, brain.record = [], lambda **kw: None
    try:
        k1, k2 = torch.randn(4, 3), torch.randn(4, 3)
        n1, n2 = brain.ssps_step(torch.arange(4), None, k1, k2)
    finally:
        del type(brain).ssps
    assert torch.equal(n1[[1, 3]], k1[[1, 3]]) and torch.equal(n2[[1, 3]], k2[[1, 3]])
    assert torch.equal(n1[0], torch.full((3,), 12.0)) and torch.equal(n2[0], torch.full((3,), 22.0))
    assert torch.equal(n1[2], torch.full((3,), 10.0)) and torch.equal(n2[2], torch.full((3,), 20.0))
    (fn, args), = brain._deferred
    assert torch.equal(args[2], torch.stack([k1, k2]))  # the originals go to Q'
