"""Spherical k-means: blobs, backends, empty clusters, bad K."""

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from ssps_ext.ssps.kmeans import _TorchAssign, available_backends, resolve_backend, spherical_kmeans


def blobs(n_blobs=6, per_blob=40, dim=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_blobs, dim, generator=g), dim=1)
    labels = torch.arange(n_blobs).repeat_interleave(per_blob)
    x = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return x, labels


@pytest.mark.parametrize("backend", available_backends())
def test_recovers_separated_blobs(backend):
    x, truth = blobs()
    best = max(
        adjusted_rand_score(truth.numpy(), spherical_kmeans(x, 6, 10, seed=s, backend=backend)[1].numpy())
        for s in range(3)
    )
    assert best == pytest.approx(1.0)


def test_backends_agree_up_to_permutation():
    if len(available_backends()) < 2:
        pytest.skip(f"only {available_backends()} here: install faiss-cpu to compare backends")
    x, _ = blobs(n_blobs=8, noise=0.3, seed=1)
    results = [spherical_kmeans(x, 8, 10, seed=4, backend=b) for b in available_backends()]
    ref_centroids, ref_labels = results[0]
    for centroids, labels in results[1:]:
        assert adjusted_rand_score(ref_labels.numpy(), labels.numpy()) == pytest.approx(1.0)
        assert torch.allclose(centroids, ref_centroids, atol=1e-4)  # same init -> same order


def test_unit_centroids_and_empty_cluster_keeps_its_centroid():
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([p, p, q])
    centroids, labels = spherical_kmeans(x, 3, 5, seed=0, backend="torch")
    # the two identical initial rows tie: one cluster takes both, the other stays empty
    assert labels[0] == labels[1] and len(set(labels.tolist())) == 2
    assert torch.allclose(centroids.norm(dim=1), torch.ones(3))
    assert sorted(map(tuple, centroids.round().tolist())) == [(0.0, 1.0), (1.0, 0.0), (1.0, 0.0)]


def test_k_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="K = 10 clusters but only 4 points"):
        spherical_kmeans(torch.randn(4, 3), 10)


def test_auto_backend_is_the_faster_measured_and_bad_names(monkeypatch):
    from ssps_ext.ssps import kmeans

    with pytest.raises(ValueError, match="kmeans backend 'sklearn'"):
        resolve_backend("sklearn", "cpu")
    monkeypatch.setattr(kmeans, "_AUTO", {})
    monkeypatch.setattr(kmeans, "available_backends", lambda: ["faiss-gpu", "faiss-cpu", "torch"])
    assert kmeans.candidates("cpu") == ["faiss-cpu", "torch"]
    for times, expected in (({"faiss-cpu": 0.1, "torch": 0.5}, "faiss-cpu"), ({"faiss-cpu": 0.5, "torch": 0.1}, "torch")):
        monkeypatch.setattr(kmeans, "_AUTO", {})
        monkeypatch.setattr(kmeans, "probe_seconds", lambda name, *a, **k: times[name])
        assert resolve_backend("auto", "cpu", 16, 8) == expected
    assert kmeans._AUTO[("cpu", 16, 8, "float32")] == ("torch", {"faiss-cpu": 0.5, "torch": 0.1})


def test_auto_backend_measures_the_backends_installed_here(monkeypatch):
    from ssps_ext.ssps import kmeans

    monkeypatch.setattr(kmeans, "_AUTO", {})
    picked = resolve_backend("auto", "cpu", 32, 64)
    names = kmeans.candidates("cpu")
    if len(names) < 2:
        assert picked == names[0] == "torch"
        return
    chosen, seconds = kmeans._AUTO[("cpu", 32, 64, "float32")]
    assert picked == chosen and set(seconds) == set(names) and seconds[picked] == min(seconds.values())


def test_blocked_torch_assignment_matches_full_argmax():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(1000, 8, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(7, 8, generator=g), dim=1)
    small_blocks = _TorchAssign(block_elements=7 * 13)  # 13 rows per block, last one partial
    assert torch.equal(small_blocks(x, c), (x @ c.T).argmax(1))


def test_low_precision_e_step_rounds_near_ties_and_keeps_separated_clusters():
    c = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.03]]), dim=1)
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.02]]), dim=1)
    sims = (x @ c.T)[0]  # 0.99980, 0.99998: 2e-4 apart, below bfloat16's spacing near 1 (2^-8)
    assert sims[1] > sims[0] and torch.equal(sims.bfloat16()[0], sims.bfloat16()[1])
    assert _TorchAssign()(x, c).tolist() == [1]
    assert _TorchAssign(torch.bfloat16)(x, c).tolist() == [0]  # the tie goes to the first centroid
    points, truth = blobs()
    full = spherical_kmeans(points, 6, 10, seed=0, backend="torch")
    half = spherical_kmeans(points, 6, 10, seed=0, backend="torch", sim_dtype="bfloat16")
    assert torch.equal(full[1], half[1]) and half[0].dtype == torch.float32
    assert torch.allclose(full[0], half[0], atol=1e-6)  # the M-step is float32 in both


def test_similarity_dtype_must_suit_the_backend(monkeypatch):
    from ssps_ext.ssps import SSPS, kmeans

    with pytest.raises(ValueError, match="sim_dtype 'float64'"):
        spherical_kmeans(torch.randn(8, 3), 2, sim_dtype="float64")
    with pytest.raises(ValueError, match="'faiss-cpu' computes similarities in \\('float32',\\), not 'bfloat16'"):
        SSPS(K=4, kmeans_backend="faiss-cpu", kmeans_dtype="bfloat16")
    with pytest.raises(ValueError, match="'faiss-gpu' computes .* not 'bfloat16'"):
        resolve_backend("faiss-gpu", "cuda", sim_dtype="bfloat16")
    monkeypatch.setattr(kmeans, "available_backends", lambda: ["faiss-gpu", "faiss-cpu", "torch"])
    assert kmeans.candidates("cpu", "bfloat16") == ["torch"]
    assert kmeans.candidates("cuda", "float16") == ["faiss-gpu", "torch"]
    assert kmeans.candidates("cuda", "bfloat16") == ["torch"]
    assert resolve_backend("auto", "cpu", 16, 8, sim_dtype="bfloat16") == "torch"  # the only candidate: no probe
