"""The incremental Q' index gives the direct computation's arrays and draws."""

import torch

from ssps_ext.ssps import SSPS
from ssps_ext.ssps.queue import RingQueue
from ssps_ext.ssps.queue_index import QueueIndex
from ssps_ext.ssps.sampling import QueueClusters, draw_slots


def direct(queue, assignments, recordings):
    return QueueClusters(queue.indices, queue.recency(), assignments, recordings)


def test_direct_order_is_key_then_slot_for_tied_keys():
    """Ties keep slot order (torch's default CPU sort does not below 32,768 rows)."""
    g = torch.Generator().manual_seed(0)
    P = 5000
    slot_utts = torch.randperm(P, generator=g)
    assignments = torch.randint(0, 7, (P,), generator=g)  # about 700 slots per key
    q = QueueClusters(slot_utts, torch.arange(P), assignments)
    order = q.keys * P + q.slots
    assert torch.equal(order, order.sort().values)
    assert sorted(q.slots.tolist()) == list(range(P))


def test_incremental_index_equals_direct_after_every_write():
    g = torch.Generator().manual_seed(1)
    N, P = 90, 40
    assignments = torch.randint(-1, 6, (N,), generator=g)  # some utterances without a cluster
    recordings = torch.randint(0, 11, (N,), generator=g)
    for rec in (None, recordings):
        queue = RingQueue(P, 3)
        queue.write(torch.randint(0, N, (17,), generator=g), torch.zeros(1, 17, 3))
        index = QueueIndex(queue, assignments, rec)
        sizes = [1, 5, 40, 3, 63, 8, 12, 39, 2, 41, 7] * 4  # wrap-arounds, one write longer than Q'
        for n in sizes:
            utts = torch.randint(0, N // 3 if n % 2 else N, (n,), generator=g)  # repeats within and across writes
            before = queue.n_written.clone()
            index.write(queue, utts, torch.randn(1, n, 3, generator=g))
            assert int(queue.n_written - before) == n and index.current(queue, assignments)
            ref = direct(queue, assignments, rec)
            assert torch.equal(index.keys, ref.keys) and torch.equal(index.slots, ref.slots)
            chosen = torch.randint(-1, 6, (64,), generator=g)
            anchor_rec = None if rec is None else recordings[torch.randint(0, N, (64,), generator=g)]
            state = g.get_state()
            a = draw_slots(chosen, index, g, anchor_rec)
            g.set_state(state)
            b = draw_slots(chosen, ref, g, anchor_rec)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_index_goes_stale_when_the_clusters_or_the_queue_change_elsewhere():
    assignments = torch.tensor([0, 1, 0, 1])
    queue = RingQueue(3, 2)
    queue.write(torch.tensor([0, 1]), torch.zeros(1, 2, 2))
    index = QueueIndex(queue, assignments)
    assert index.current(queue, assignments)
    queue.write(torch.tensor([2]), torch.zeros(1, 1, 2))  # bypasses the index
    assert not index.current(queue, assignments)
    index = QueueIndex(queue, assignments)
    assignments[3] = 0  # k-means ran
    assert not index.current(queue, assignments)
    assert not QueueIndex(queue, assignments).current(queue, assignments.clone())


def make_ssps(seed, same_recording="allow"):
    g = torch.Generator().manual_seed(seed)
    N, B, K = 300, 16, 12
    ssps = SSPS(K=K, M=1, start_epoch=1, pos_queue_size=100, same_recording=same_recording, seed=3)
    ssps.setup(N, B, 4, 4, speakers=torch.randint(0, 20, (N,), generator=g),
               recordings=torch.randint(0, 60, (N,), generator=g))
    ssps.assignments.copy_(torch.randint(-1, K, (N,), generator=g))
    ssps.nearby.copy_(torch.randint(0, K, (K, 1), generator=g))
    return ssps, g


def test_ssps_draws_equal_a_rebuild_every_step():
    for mode in ("allow", "prefer_other"):
        incremental, g = make_ssps(5, mode)
        rebuilt, _ = make_ssps(5, mode)
        for step in range(30):
            idx = torch.randint(0, 300, (16,), generator=g)
            emb = torch.randn(1, 16, 4, generator=g)
            ref = torch.nn.functional.normalize(torch.randn(16, 4, generator=g), dim=1)
            rebuilt._index = None  # the direct computation, every step
            a, _ = incremental.sample(idx, ref)
            b, _ = rebuilt.sample(idx, ref)
            assert torch.equal(a, b), (mode, step)
            incremental.update(idx, ref, emb)
            rebuilt.update(idx, ref, emb)
        assert (a >= 0).any()
        assert incremental._index is not None and incremental._index.current(incremental.pos_queue, incremental.assignments)
        incremental.load_state_dict(rebuilt.state_dict())  # a checkpoint load invalidates it
        assert not incremental._index.current(incremental.pos_queue, incremental.assignments)
