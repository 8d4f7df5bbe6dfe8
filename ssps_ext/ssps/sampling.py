"""Vectorised pseudo-positive sampling (SSPS paper section 2.2.2, Eq. 3-6).

All functions work on whole batches with sorting, ``searchsorted`` and
masks; there is no per-anchor Python loop and no ``.item()``.

- ``nearby_clusters``: C_k = top-M clusters j != k by centroid cosine (Eq. 5),
  or [k] itself when M = 0 (same-cluster sampling, Eq. 3).
- ``choose_clusters``: c-hat_i = sample(C_{c_i}) (Eq. 4), uniform or with
  exponentially decaying weights over the similarity rank.
- ``QueueClusters`` + ``draw_slots``: pos(i) = a uniformly drawn member of
  cluster c-hat_i *currently in Q'* (Eq. 6 restricted to Q', the reference
  code's behaviour), optionally excluding the anchor's own recording.
- ``nearest_neighbour_slots``: SSPS-NN, one of the k nearest references.
A slot of -1 means "fall back to the ordinary same-utterance positive".
"""

import torch


def nearby_clusters(centroids, M, block_rows=4096):
    """(K, max(M, 1)) table of candidate clusters for each cluster.

    M = 0: each cluster itself. M >= 1: the M most similar *other* clusters,
    most similar first (the own cluster is masked, not assumed to rank first).
    The cosines are computed ``block_rows`` clusters at a time, so memory is
    (block_rows, K) instead of (K, K) (2.5 GB at K = 25k, 90 GB at 150k).
    """
    K = centroids.shape[0]
    if M == 0:
        return torch.arange(K, device=centroids.device)[:, None]
    if M >= K:
        raise ValueError(f"SSPS: M = {M} neighbouring clusters needs M < K = {K}")
    table = torch.empty(K, M, dtype=torch.long, device=centroids.device)
    for lo in range(0, K, block_rows):
        hi = min(lo + block_rows, K)
        cos = centroids[lo:hi] @ centroids.T  # (hi - lo, K)
        rows = torch.arange(hi - lo, device=centroids.device)
        cos[rows, rows + lo] = float("-inf")  # the own cluster
        table[lo:hi] = cos.topk(M, dim=1).indices
    return table


def choose_clusters(anchor_clusters, table, prob="uniform", exp_lambda=0.7, generator=None):
    """Draws c-hat for each anchor; -1 where the anchor has no cluster.

    ``prob="exp"`` weights the k-th candidate (k = 0 most similar) by
    lambda * exp(-lambda * k).
    """
    b, width = anchor_clusters.shape[0], table.shape[1]
    if prob == "uniform":
        weights = torch.ones(width)
    elif prob == "exp":
        weights = exp_lambda * torch.exp(-exp_lambda * torch.arange(width, dtype=torch.float))
    else:
        raise ValueError(f"SSPS cluster sampling {prob!r} not in ('uniform', 'exp')")
    # draws on the CPU generator, then to the table's device
    pick = torch.multinomial(weights.expand(b, width), 1, replacement=True, generator=generator)
    chosen = table[anchor_clusters.clamp(min=0), pick[:, 0].to(table.device)]  # (b,)
    return torch.where(anchor_clusters >= 0, chosen, torch.full_like(chosen, -1))


def newest_slots(slot_utts, recency):
    """(P,) True at the newest written slot of each utterance in Q'.

    Sorts by (utterance + 1, recency) and keeps the last of each run; empty
    slots (-1) form their own run (key 0) instead of sharing utterance 0's.
    The keys are unique, so the result does not depend on the sort.
    """
    P = slot_utts.shape[0]
    order = torch.argsort((slot_utts + 1) * P + recency)
    utts_sorted = slot_utts[order]
    last = torch.ones(P, dtype=torch.bool, device=slot_utts.device)
    last[:-1] = utts_sorted[:-1] != utts_sorted[1:]
    newest = torch.zeros(P, dtype=torch.bool, device=slot_utts.device)
    newest[order] = last
    return newest & (slot_utts >= 0)


def slot_keys(utts, assignments, recordings, n_rec):
    """(n,) key = cluster * n_rec + recording of utterances (-1: no cluster)."""
    cluster = assignments[utts.clamp(min=0)]
    rec = torch.zeros_like(utts) if recordings is None else recordings[utts.clamp(min=0)]
    return torch.where((utts >= 0) & (cluster >= 0), cluster * n_rec + rec, -1)


class QueueClusters:
    """Q' slots grouped by (cluster, recording) for vectorised draws.

    Only the newest slot of each utterance counts (the reference looks up the
    last position of the drawn utterance), and slots whose utterance is
    unwritten (-1) or has no cluster are ignored. Each kept slot is stored as
    one int64 ``packed = key << shift | slot`` (key = cluster * n_rec +
    recording, 2^shift >= |Q'|), sorted: the values are unique, so the order
    is (key, slot) whatever the sorting algorithm (torch's default CPU sort
    orders tied keys differently below and above 32,768 elements). This is
    the direct computation; ``QueueIndex`` keeps the same array up to date
    write by write.

    Arguments
    ---------
    slot_utts : (P,) utterance index per Q' slot (-1 = empty).
    recency : (P,) age rank of each slot (larger = newer).
    assignments : (N,) cluster of each utterance (-1 = none).
    recordings : (N,) recording id per utterance, or None (no exclusion).
    """

    def __init__(self, slot_utts, recency, assignments, recordings=None):
        self.n_rec = 1 if recordings is None else int(recordings.max()) + 1
        self.shift = max(int(slot_utts.shape[0] - 1).bit_length(), 1)
        key = slot_keys(slot_utts, assignments, recordings, self.n_rec)
        self.newest = newest_slots(slot_utts, recency)  # (P,) kept for QueueIndex
        keep = self.newest & (key >= 0)
        slots = torch.arange(slot_utts.shape[0], device=slot_utts.device)
        self.packed = ((key << self.shift) | slots)[keep].sort().values  # (L,)

    @property
    def keys(self):
        return self.packed >> self.shift

    @property
    def slots(self):
        return self.packed & ((1 << self.shift) - 1)

    def slot_at(self, pos):
        """Q' slots at positions ``pos`` of the sorted order."""
        return self.packed[pos] & ((1 << self.shift) - 1)

    def _count(self, lo, hi):
        """Start and size of the sorted run of keys in [lo, hi)."""
        start = torch.searchsorted(self.packed, lo << self.shift)
        return start, torch.searchsorted(self.packed, hi << self.shift) - start


def draw_slots(chosen, queue, generator=None, anchor_recordings=None):
    """Uniform draw of one Q' slot in each chosen cluster.

    Arguments
    ---------
    chosen : (b,) cluster per anchor (-1 = none).
    queue : QueueClusters.
    anchor_recordings : (b,) recordings to exclude, or None.

    Returns
    -------
    slots : (b,) Q' slot or -1; pool : (b,) number of candidates.
    """
    n_rec = queue.n_rec
    c = chosen.clamp(min=0)
    start, pool = queue._count(c * n_rec, (c + 1) * n_rec)
    if anchor_recordings is not None:
        own_start, own = queue._count(c * n_rec + anchor_recordings, c * n_rec + anchor_recordings + 1)
    else:
        own_start, own = start, torch.zeros_like(pool)
    pool = torch.where(chosen >= 0, pool - own, torch.zeros_like(pool))
    u = torch.rand(chosen.shape[0], generator=generator, device="cpu").to(chosen.device)
    offset = (u * pool).long().clamp(max=(pool - 1).clamp(min=0))
    offset = offset + (offset >= own_start - start) * own  # jump over own recording
    pos = (start + offset).clamp(max=max(queue.packed.shape[0] - 1, 0))
    if queue.packed.shape[0] == 0:
        return torch.full_like(chosen, -1), pool
    return torch.where(pool > 0, queue.slot_at(pos), -1), pool


def nearest_neighbour_slots(anchor_ref, anchor_utts, ref_queue_emb, ref_queue_utts, k=1, generator=None):
    """SSPS-NN: one of the ``k`` Q-hat slots closest to each anchor's
    reference, never the anchor's own utterance nor an empty slot. With fewer
    than ``k`` valid slots the draw is among the valid ones; -1 if none."""
    sim = anchor_ref @ ref_queue_emb.T  # (b, R)
    invalid = (ref_queue_utts[None, :] == anchor_utts[:, None]) | (ref_queue_utts[None, :] < 0)
    sim = sim.masked_fill(invalid, float("-inf"))
    top = sim.topk(min(k, sim.shape[1]), dim=1)  # (b, k), valid entries first
    n_valid = torch.isfinite(top.values).sum(1)  # (b,)
    u = torch.rand(sim.shape[0], generator=generator, device="cpu").to(sim.device)
    pick = (u * n_valid).long().clamp(max=(n_valid - 1).clamp(min=0))  # uniform in [0, n_valid)
    slot = top.indices.gather(1, pick[:, None])[:, 0]
    return torch.where(n_valid > 0, slot, -1)
