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
