"""Spherical k-means on L2-normalised rows (SSPS paper section 2.2.2).

Lloyd iterations with cosine similarity, as in the reference code (adapted
there from SwAV / DeepCluster-v2):
- init: K distinct random rows, drawn from a seeded generator so that every
  process draws the same ones;
- E-step: each row goes to the centroid with the largest dot product;
- M-step: mean of the members, re-normalised; an empty cluster keeps its
  previous centroid;
- ``n_iter`` M-steps and ``n_iter + 1`` E-steps (the last one gives labels).

The E-step, which dominates (N x K x D), has three interchangeable backends
behind ``spherical_kmeans``: faiss on GPU, faiss on CPU, or plain torch
(chunked matmul on the input's device). The M-step is a vectorised
``index_add_``/``bincount`` in torch for all of them, so the backends agree
up to ties.

Mixed precision (``sim_dtype``): the E-step similarities may be computed in
bfloat16 (torch) or float16 (torch, faiss-gpu); the points, centroids and
M-step stay float32. A point whose two best centroids are closer than the
low precision's rounding may then change cluster.
"""

import logging
import time

import torch

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "faiss-gpu", "faiss-cpu", "torch")
SIM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BACKEND_DTYPES = {"torch": tuple(SIM_DTYPES), "faiss-gpu": ("float32", "float16"), "faiss-cpu": ("float32",)}


def check_sim_dtype(backend, sim_dtype):
    """Raises ValueError if ``backend`` cannot compute similarities in ``sim_dtype``."""
    if sim_dtype not in SIM_DTYPES:
        raise ValueError(f"k-means sim_dtype {sim_dtype!r} not in {tuple(SIM_DTYPES)}")
    if backend != "auto" and sim_dtype not in _BACKEND_DTYPES[backend]:
        raise ValueError(f"k-means backend {backend!r} computes similarities in {_BACKEND_DTYPES[backend]}, "
                         f"not {sim_dtype!r}")


def _faiss():
    try:
        import faiss

        return faiss
    except ImportError:
        return None


def available_backends():
    """Backends usable on this machine."""
    faiss, out = _faiss(), []
    if faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        out.append("faiss-gpu")
    if faiss is not None:
        out.append("faiss-cpu")
    return out + ["torch"]


_AUTO = {}  # (device type, dim, K, sim_dtype) -> (backend, {backend: seconds}) measured in this process


def candidates(device, sim_dtype="float32"):
    """Backends that cluster tensors on ``device`` without a host round trip
    (CPU: faiss-cpu, torch; CUDA: faiss-gpu, torch) in ``sim_dtype``."""
    cuda = torch.device(device).type == "cuda"
    return [b for b in available_backends()
            if (b == "torch" or (b == "faiss-gpu") == cuda) and sim_dtype in _BACKEND_DTYPES[b]]


def probe_seconds(backend, device, dim, n_clusters, rows=8192, sim_dtype="float32"):
    """Seconds of one E-step (``rows`` x ``dim`` points, ``n_clusters``
    centroids) with ``backend``, best of two."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(rows, dim, generator=g), dim=1).to(device)
    c = x[torch.randperm(rows, generator=g)[: min(n_clusters, rows)]]
    assign = _assigner(backend, dim, sim_dtype)
    times = []
    for _ in range(2):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        assign(x, c)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def resolve_backend(backend, device, dim=512, n_clusters=4096, sim_dtype="float32"):
    """The backend to use. ``auto``: the fastest of ``candidates(device,
    sim_dtype)``, measured once per process for (device, dim, K, dtype) on a
    probe of one E-step (``probe_seconds``), and logged; a named backend must
    be available."""
    if backend not in BACKENDS:
        raise ValueError(f"kmeans backend {backend!r} not in {BACKENDS}")
    check_sim_dtype(backend, sim_dtype)
    if backend != "auto":
        available = available_backends()
        if backend not in available:
            raise RuntimeError(f"kmeans backend {backend!r} is not available here (have {available})")
        return backend
    names = candidates(device, sim_dtype)
    if len(names) == 1:
        return names[0]
    key = (torch.device(device).type, int(dim), min(int(n_clusters), 8192), sim_dtype)
    if key not in _AUTO:
        seconds = {name: probe_seconds(name, device, key[1], key[2], sim_dtype=sim_dtype) for name in names}
        _AUTO[key] = (min(seconds, key=seconds.get), seconds)
        logger.info("k-means backend auto -> %s (one E-step, %d x %d to %d: %s)", _AUTO[key][0], 8192, key[1], key[2],
                    ", ".join(f"{n} {s * 1000:.1f} ms" for n, s in seconds.items()))
    return _AUTO[key][0]


class _TorchAssign:
    """Nearest centroid by blocked matmul in ``dtype`` on the data's device;
    a block's (rows, K) similarity matrix holds at most ``block_elements``
    values (2^27: 512 MiB in float32)."""

    def __init__(self, dtype=torch.float32, block_elements=2**27):
        self.dtype, self.block_elements = dtype, block_elements

    def __call__(self, x, centroids):
        labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        c = centroids.to(self.dtype)
        rows = max(1, self.block_elements // centroids.shape[0])
        for start in range(0, x.shape[0], rows):
            block = x[start : start + rows].to(self.dtype)
            labels[start : start + rows] = (block @ c.T).argmax(1)  # (rows, K) -> (rows,)
        return labels


class _FaissAssign:
    """Nearest centroid with a faiss inner-product index (CPU or GPU)."""

    def __init__(self, dim, gpu, float16=False):
        faiss = _faiss()
        if gpu:
            import faiss.contrib.torch_utils  # noqa: F401  (torch tensors in/out)

            self.res = faiss.StandardGpuResources()
            config = faiss.GpuIndexFlatConfig()
            config.useFloat16 = float16  # float16 storage and GEMM
            self.index = faiss.GpuIndexFlatIP(self.res, dim, config)
        else:
            self.index = faiss.IndexFlatIP(dim)
        self.gpu = gpu

    def __call__(self, x, centroids):
        self.index.reset()
        if self.gpu:
            self.index.add(centroids.contiguous())
            _, labels = self.index.search(x.contiguous(), 1)
            return labels[:, 0].to(x.device, torch.long)
        self.index.add(centroids.detach().cpu().float().numpy())
        _, labels = self.index.search(x.detach().cpu().float().numpy(), 1)
        return torch.from_numpy(labels[:, 0]).to(x.device, torch.long)


def _assigner(backend, dim, sim_dtype="float32"):
    """The E-step of ``backend`` for ``dim``-d points, similarities in ``sim_dtype``."""
    check_sim_dtype(backend, sim_dtype)
    if backend == "torch":
        return _TorchAssign(SIM_DTYPES[sim_dtype])
    return _FaissAssign(dim, gpu=backend == "faiss-gpu", float16=sim_dtype == "float16")


@torch.no_grad()
def spherical_kmeans(x, n_clusters, n_iter=10, seed=0, backend="auto", sim_dtype="float32"):
    """Clusters the rows of ``x`` by cosine similarity.

    Arguments
    ---------
    x : (N, D) float tensor (normalised here).
    n_clusters : int, K <= N.
    n_iter : int, number of Lloyd iterations (paper: 10).
    seed : int, seeds the choice of the K initial rows.
    backend : "auto", "faiss-gpu", "faiss-cpu" or "torch".
    sim_dtype : "float32", "bfloat16" (torch) or "float16" (torch,
        faiss-gpu): precision of the E-step similarities.

    Returns
    -------
    centroids : (K, D) unit-norm, labels : (N,) long in [0, K).
    """
    n, dim = x.shape
    if n_clusters > n:
        raise ValueError(f"k-means: K = {n_clusters} clusters but only {n} points to cluster")
    if n_clusters < 1:
        raise ValueError(f"k-means: K must be >= 1, got {n_clusters}")
    x = torch.nn.functional.normalize(x.float(), dim=1)
    name = resolve_backend(backend, x.device, dim, n_clusters, sim_dtype)
    assign = _assigner(name, dim, sim_dtype)
    g = torch.Generator().manual_seed(int(seed))
    init = torch.randperm(n, generator=g)[:n_clusters].to(x.device)
    centroids = x[init].clone()
    for _ in range(n_iter):
        labels = assign(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=n_clusters)
        filled = counts > 0
        centroids[filled] = torch.nn.functional.normalize(sums[filled], dim=1)
    return centroids, assign(x, centroids)
