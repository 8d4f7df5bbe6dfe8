"""Cluster-aware positives for DINO (CA-DINO; Han, Chen & Qian, "Self-Supervised
Learning with Cluster-Aware-DINO for High-Performance Robust Speaker
Verification", arXiv 2304.05754).

Two crops of one short utterance share its channel and content; CA-DINO
crops the positive (teacher, global) views of an anchor from *another
utterance of its cluster* instead, clusters being k-means of full-utterance
teacher embeddings of the whole training set with K close to the number of
speakers, recomputed every ``interval`` epochs (a "round"), with a fixed K
or one K per round ("progressive clustering").

Per round r (first epoch e_r):
  y_u      teacher embedding of every full training utterance u, L2-normalised;
  c_u      spherical k-means of {y_u} into K_r = K[min(r, len(K) - 1)] clusters;
Per epoch e (partners drawn once, vectorised, from a generator seeded by (seed, e)):
  p_u      with probability ``prob``: a uniformly drawn other utterance of
           cluster c_u (u itself when c_u has no other member); else u;
  crops    the global views of anchor u are cropped from p_u, its local views
           from u (``KeyedCrops.partners``).

How this differs from SSPS with M = 0 (same-cluster sampling): SSPS replaces
the teacher *outputs* with ones stored in the queue Q' (earlier crops, encoded
by an earlier teacher), clustered from the 4-s clean reference queue Q-hat;
CA-DINO loads, augments and encodes *new audio* of the partner with the
current teacher, clusters full utterances offline once per round, and keeps
no queue. SSPS with M = 0 is thus the queue-based, memory-cheap version of
the same positive choice; SSPS M = 1 adds neighbouring clusters.
"""

import logging

import torch

from .. import distributed as dist
from .diagnostics import kmeans_nmi
from .kmeans import spherical_kmeans

logger = logging.getLogger(__name__)


def draw_partners(assignments, prob, generator):
    """Partner utterance of each utterance: another member of its cluster with
    probability ``prob`` (itself in a singleton cluster), else itself.

    Arguments
    ---------
    assignments : (N,) long cluster ids (>= 0).
    prob : float in [0, 1].
    generator : torch.Generator (CPU).

    Returns
    -------
    (N,) long partner indices.

    Example
    -------
    >>> p = draw_partners(torch.tensor([0, 0, 1, 1, 1, 2]), 1.0, torch.Generator().manual_seed(0))
    >>> bool((p[:2] == torch.tensor([1, 0])).all()), int(p[5]), set(p[2:5].tolist()) <= {2, 3, 4}
    (True, 5, True)
    """
    n = assignments.shape[0]
    order = torch.argsort(assignments, stable=True)  # (N,) utterances grouped by cluster
    sizes = torch.bincount(assignments)  # (C,)
    starts = torch.cumsum(sizes, 0) - sizes  # (C,) first sorted position of each cluster
    position = torch.empty(n, dtype=torch.long)
    position[order] = torch.arange(n)  # sorted position of each utterance
    own, size = starts[assignments], sizes[assignments]  # (N,)
    # uniform among the size - 1 others: draw in [0, size - 1), skip one's own slot
    offset = (torch.rand(n, generator=generator) * (size - 1).clamp(min=1)).long()
    slot = own + offset
    slot = slot + (slot >= position).long()
    other = torch.where(size > 1, order[slot.clamp(max=n - 1)], torch.arange(n))
    cross = torch.rand(n, generator=generator) < prob
    return torch.where(cross, other, torch.arange(n))


class ClusterAware(torch.nn.Module):
    """Rounds of offline clustering and the per-epoch partner draw.

    Arguments
    ---------
    K : list of int
        Clusters per round (the last value is kept for later rounds); one
        value = fixed K.
    prob : float
        Probability that an anchor's global views come from a partner.
    start_epoch : int
        First CA-DINO epoch (the first round).
    interval : int
        Epochs per round.
    kmeans_iters, kmeans_backend, seed : k-means settings (``spherical_kmeans``).
    """

    def __init__(self, K, prob=1.0, start_epoch=1, interval=1, kmeans_iters=20, kmeans_backend="auto", seed=0):
        super().__init__()
        self.K = [int(k) for k in (K if isinstance(K, (list, tuple)) else [K])]
        if not self.K or min(self.K) < 1:
            raise ValueError(f"cluster_aware K must be positive cluster counts, got {K}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"cluster_aware prob must be in [0, 1], got {prob}")
        if interval < 1 or start_epoch < 1:
            raise ValueError(f"cluster_aware interval and start_epoch must be >= 1, got {interval}, {start_epoch}")
        self.prob, self.start_epoch, self.interval = float(prob), int(start_epoch), int(interval)
        self.kmeans_iters, self.kmeans_backend, self.seed = int(kmeans_iters), kmeans_backend, int(seed)
        self.register_buffer("assignments", torch.zeros(0, dtype=torch.long))
        self.register_buffer("clustered_epoch", torch.tensor(-1))

    def setup(self, n_utterances):
        """Sizes the assignments for ``n_utterances`` (before a checkpoint
        loads); ValueError when a round's K exceeds the training set."""
        if max(self.K) > n_utterances:
            raise ValueError(f"cluster_aware K = {max(self.K)} clusters but the training set has {n_utterances} utterances")
        self.assignments = torch.zeros(n_utterances, dtype=torch.long)

    def active(self, epoch):
        return epoch >= self.start_epoch

    def round_of(self, epoch):
        return (epoch - self.start_epoch) // self.interval

    def due(self, epoch):
        """The round of ``epoch`` has not been clustered yet (True at a
        round's first epoch, or when starting inside a round from a
        checkpoint that never clustered; False on a resume inside the round)."""
        round_start = self.start_epoch + self.round_of(epoch) * self.interval
        return self.active(epoch) and int(self.clustered_epoch) < round_start

    @torch.no_grad()
    def cluster(self, embeddings, epoch, speakers=None, recordings=None):
        """k-means of the (N, D) full-utterance embeddings for the round of
        ``epoch``; returns diagnostics (K, NMI with the labels if known)."""
        k = self.K[min(self.round_of(epoch), len(self.K) - 1)]
        _, labels = spherical_kmeans(embeddings, k, self.kmeans_iters, seed=self.seed + epoch, backend=self.kmeans_backend)
        dist.broadcast(labels)  # identical on every rank
        self.assignments.copy_(labels.long().cpu())
        self.clustered_epoch.fill_(epoch)
        stats = {"ca_K": torch.tensor(float(k))}
        stats.update({k.replace("ssps_kmeans", "ca"): v for k, v in kmeans_nmi(self.assignments, speakers, recordings).items()})
        logger.info("CA-DINO round %d: %d clusters of %d utterances", self.round_of(epoch), k, embeddings.shape[0])
        return stats

    def partners(self, epoch, speakers=None, recordings=None):
        """(N,) partners for ``epoch`` (a function of seed, epoch and the
        assignments) and diagnostics: share of anchors with a partner, and
        among those the share of the same speaker / recording."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        partners = draw_partners(self.assignments, self.prob, generator)
        cross = partners != torch.arange(partners.shape[0])
        stats = {"ca_cross_share": cross.float().mean()}
        for name, labels in (("speaker", speakers), ("recording", recordings)):
            if labels is not None and bool(cross.any()):
                labels = labels.cpu()
                stats[f"ca_partner_{name}_acc"] = (labels[partners] == labels)[cross].float().mean()
        return partners, stats
