"""CA-DINO: partners come only from the anchor's cluster, rounds and K
schedule, partner crops in the training dataset."""

import pytest
import torch

from ssps_ext.data import KeyedCrops, random_crops
from ssps_ext.ssps.cluster_aware import ClusterAware, draw_partners


def test_partners_are_other_members_of_the_anchor_cluster():
    assignments = torch.tensor([2, 0, 2, 1, 0, 2, 3, 0, 2])  # cluster 1 and 3: singletons
    for seed in range(20):
        p = draw_partners(assignments, 1.0, torch.Generator().manual_seed(seed))
        assert torch.equal(assignments[p], assignments)  # same cluster, always
        singleton = torch.tensor([i in (3, 6) for i in range(9)])
        assert torch.equal(p[singleton], torch.tensor([3, 6]))  # no one else to take
        assert bool((p[~singleton] != torch.arange(9)[~singleton]).all())  # never itself otherwise


def test_partners_are_uniform_over_the_other_members():
    assignments = torch.tensor([0, 0, 0, 0, 1, 1])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_partners(assignments, 1.0, g) for _ in range(3000)])  # (3000, 6)
    counts = torch.stack([(draws[:, 0] == j).sum() for j in (1, 2, 3)]).float() / 3000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.04)
    assert bool((draws[:, 0] != 0).all()) and bool((draws[:, 4] == 5).all())


def test_partner_probability():
    assignments = torch.zeros(4000, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(draw_partners(assignments, 0.0, g), torch.arange(4000))
    crossed = (draw_partners(assignments, 0.3, g) != torch.arange(4000)).float().mean()
    assert abs(float(crossed) - 0.3) < 0.03


def test_rounds_progressive_K_and_resume():
    ca = ClusterAware(K=[4, 2], prob=1.0, start_epoch=3, interval=2, kmeans_iters=5, seed=0)
    ca.setup(8)
    assert not ca.due(2) and ca.due(3)
    # two tight groups of 4 points and two sub-groups each
    centres = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0.9, 0.1]])
    x = torch.nn.functional.normalize(centres.repeat_interleave(2, 0) + 0.01 * torch.randn(8, 3), dim=-1)
    stats = ca.cluster(x, 3, speakers=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    assert int(stats["ca_K"]) == 4 and len(set(ca.assignments.tolist())) == 4
    assert not ca.due(3) and not ca.due(4)  # clustered for the round of epochs 3-4 (a resume skips it)
    assert ca.due(5)
    stats = ca.cluster(x, 5, speakers=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    assert int(stats["ca_K"]) == 2 and float(stats["ca_nmi_speaker"]) == pytest.approx(1.0)
    assert ca.round_of(9) == 3 and ca.K[min(ca.round_of(9), 1)] == 2  # the last K is kept
    p1, s1 = ca.partners(5)
    p2, _ = ca.partners(5)
    assert torch.equal(p1, p2) and float(s1["ca_cross_share"]) == 1.0  # a function of (seed, epoch)
    assert torch.equal(ca.assignments[p1], ca.assignments)


def test_bad_settings():
    with pytest.raises(ValueError, match="prob"):
        ClusterAware(K=[4], prob=1.5)
    with pytest.raises(ValueError, match="K"):
        ClusterAware(K=[0])
    with pytest.raises(ValueError, match="K = 10 clusters but the training set has 8"):
        ClusterAware(K=[10]).setup(8)


class Utterances(torch.utils.data.Dataset):
    """Item i: groups "a" and "b", each a crop of the ramp i * 1000 + arange(400)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        wav = torch.arange(400.0) + 1000 * i
        return {"id": i, "a": random_crops(wav, 50, 2), "b": random_crops(wav, 50, 1)}


def test_partner_groups_come_from_the_partner():
    data = KeyedCrops(Utterances(), seed=0)
    plain = data[(1, 3)]
    data.partners, data.partner_groups = torch.tensor([2, 1, 0, 3]), ("a",)
    item = data[(0, 3)]
    assert item["id"] == 0
    assert bool((item["a"] // 1000 == 2).all()) and bool((item["b"] // 1000 == 0).all())
    assert all(torch.equal(plain[k], data[(1, 3)][k]) for k in ("a", "b"))  # its own partner: unchanged
