"""RingQueue wrap-around and recency."""

import torch

from ssps_ext.ssps.queue import RingQueue


def test_wrap_around_keeps_latest_rows():
    q = RingQueue(size=5, dim=2, views=2)
    q.write(torch.tensor([0, 1, 2]), torch.arange(12.0).view(2, 3, 2))
    assert not q.filled and q.indices.tolist() == [0, 1, 2, -1, -1]
    q.write(torch.tensor([3, 4, 5, 6]), torch.full((2, 4, 2), -1.0))
    assert q.filled and int(q.ptr) == 2
    assert q.indices.tolist() == [5, 6, 2, 3, 4]
    assert q.embeddings[:, 2].tolist() == [[4.0, 5.0], [10.0, 11.0]]  # row of utterance 2 intact
    assert q.recency().tolist() == [3, 4, 0, 1, 2]  # slot 2 is the oldest


def test_more_rows_than_size_keeps_the_newest():
    q = RingQueue(size=3, dim=1)
    q.write(torch.arange(7), torch.arange(7.0).view(1, 7, 1))
    assert sorted(q.indices.tolist()) == [4, 5, 6]
    assert q.embeddings[0, q.indices.argsort(), 0].tolist() == [4.0, 5.0, 6.0]
    assert q.recency()[q.indices == 6].item() == 2  # newest


def test_state_dict_round_trip():
    q = RingQueue(size=4, dim=3)
    q.write(torch.tensor([9, 8]), torch.randn(1, 2, 3))
    r = RingQueue(size=4, dim=3)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.indices, q.indices) and torch.equal(r.embeddings, q.embeddings) and int(r.ptr) == 2
