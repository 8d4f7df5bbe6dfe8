"""Vectorised SSPS samplers on hand-built queues and clusters."""

import math

import pytest
import torch

from ssps_ext.ssps.sampling import (
    QueueClusters, choose_clusters, draw_slots, nearby_clusters, nearest_neighbour_slots,
)


def circle_centroids(k):
    angles = torch.arange(k) * 2 * math.pi / k
    return torch.stack([angles.cos(), angles.sin()], 1)


def test_nearby_clusters_same_and_neighbours():
    c = circle_centroids(8)
    assert nearby_clusters(c, 0).squeeze(1).tolist() == list(range(8))
    table = nearby_clusters(c, 2)
    assert table.shape == (8, 2)
    for k in range(8):
        assert k not in table[k].tolist()  # the own cluster is never a candidate
        assert set(table[k].tolist()) == {(k - 1) % 8, (k + 1) % 8}
    with pytest.raises(ValueError, match="M = 8"):
        nearby_clusters(c, 8)


def test_choose_clusters_uniform_exp_and_unassigned():
    g = torch.Generator().manual_seed(0)
    table = torch.tensor([[1, 2], [0, 2], [0, 1]])
    anchors = torch.tensor([0, -1, 2] * 2000)
    chosen = choose_clusters(anchors, table, generator=g)
    assert (chosen[1::3] == -1).all()
    first = chosen[0::3]
    assert set(first.tolist()) == {1, 2} and abs((first == 1).float().mean() - 0.5) < 0.05
    exp = choose_clusters(anchors, table, prob="exp", exp_lambda=0.7, generator=g)[0::3]
    assert (exp == 1).float().mean() == pytest.approx(1 / (1 + math.exp(-0.7)), abs=0.05)


def test_draws_only_members_of_the_chosen_cluster_in_the_queue():
    g = torch.Generator().manual_seed(1)
    assignments = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # utterance -> cluster
    slot_utts = torch.tensor([1, 4, 2, -1, 5, 7])  # Q' content; cluster 0 only via utt 1
    queue = QueueClusters(slot_utts, torch.arange(6), assignments)
    chosen = torch.tensor([0, 1, 2, 3, -1] * 200)
    slots, pool = draw_slots(chosen, queue, g)
    utts = torch.where(slots >= 0, slot_utts[slots.clamp(min=0)], -1)
    assert set(utts[0::5].tolist()) == {1}
    assert set(utts[1::5].tolist()) == {2, 4}  # both cluster-1 members present, utt 3 absent
    assert set(utts[2::5].tolist()) == {5}
    assert set(utts[3::5].tolist()) == {7}
    assert (slots[4::5] == -1).all()  # no cluster -> fall back
    assert pool[:5].tolist() == [1, 2, 1, 1, 0]
    empty = draw_slots(torch.tensor([1]), QueueClusters(torch.tensor([0, 5]), torch.arange(2), assignments), g)[0]
    assert empty.tolist() == [-1]  # chosen cluster has no member in Q'


def test_duplicate_utterance_uses_newest_slot_and_recording_exclusion():
    g = torch.Generator().manual_seed(2)
    assignments = torch.zeros(6, dtype=torch.long)
    recordings = torch.tensor([0, 0, 1, 1, 2, 2])
    slot_utts = torch.tensor([3, 1, 3, 4])  # utterance 3 twice; slot 2 is newer
    recency = torch.tensor([0, 1, 2, 3])
    plain = draw_slots(torch.zeros(300, dtype=torch.long), QueueClusters(slot_utts, recency, assignments), g)[0]
    assert set(plain.tolist()) == {1, 2, 3}  # the stale copy of utterance 3 (slot 0) is never drawn
    queue = QueueClusters(slot_utts, recency, assignments, recordings)
    slots, _ = draw_slots(torch.zeros(300, dtype=torch.long), queue, g, anchor_recordings=torch.full((300,), 1))
    assert set(slots.tolist()) <= {1, 3}  # never utterance 3 (recording 1), never the stale slot 0
    assert set(slots.tolist()) == {1, 3}
    only_own = QueueClusters(torch.tensor([2, 3]), torch.arange(2), assignments, recordings)
    assert draw_slots(torch.tensor([0]), only_own, g, torch.tensor([1]))[0].tolist() == [-1]


def test_nearest_neighbour_never_returns_the_anchor():
    refs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    utts = torch.tensor([10, 11, 12])
    slots = nearest_neighbour_slots(refs[:2], utts[:2], refs, utts, k=1)
    assert slots.tolist() == [1, 0]
    none = nearest_neighbour_slots(refs[:1], utts[:1], refs[:1], utts[:1], k=1)
    assert none.tolist() == [-1]


def test_empty_slots_do_not_hide_or_favour_utterance_zero():
    """Empty Q' slots (-1) are apart from utterance 0: utterance 0 written
    twice around an empty slot still counts once (its newest slot)."""
    g = torch.Generator().manual_seed(3)
    assignments = torch.zeros(3, dtype=torch.long)  # utterances 0, 1, 2 in cluster 0
    slot_utts = torch.tensor([0, -1, 0, 1, -1, 2])
    for recency in (torch.arange(6), torch.tensor([1, 2, 3, 4, 0, 5])):
        queue = QueueClusters(slot_utts, recency, assignments)
        assert queue.slots.sort().values.tolist() == [2, 3, 5]  # newest copy of utterance 0, then 1 and 2
        slots, pool = draw_slots(torch.zeros(3000, dtype=torch.long), queue, g)
        assert (pool == 3).all()
        counts = torch.bincount(slot_utts[slots], minlength=3)  # draws per utterance
        assert (counts.float() / 3000 - 1 / 3).abs().max() < 0.04  # uniform, utterance 0 not over-drawn


def test_blocked_nearby_clusters_equal_dense_topk():
    g = torch.Generator().manual_seed(4)
    c = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    cos = c @ c.T
    cos.fill_diagonal_(float("-inf"))
    dense = cos.topk(5, dim=1).indices
    for block in (1, 7, 64, 300, 1000):
        assert torch.equal(nearby_clusters(c, 5, block_rows=block), dense)


def test_nearest_neighbour_draws_among_valid_when_k_exceeds_them():
    refs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]]), dim=1)
    utts = torch.tensor([10, 11, 12, -1])  # slot 3 is empty
    g = torch.Generator().manual_seed(5)
    anchor = refs[:1].expand(400, 2)
    slots = nearest_neighbour_slots(anchor, utts[:1].expand(400), refs, utts, k=10, generator=g)
    assert set(slots.tolist()) == {1, 2}  # the two valid slots, never the anchor (0) or the empty slot (3)
