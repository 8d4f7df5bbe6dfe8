"""``SSPS``: Self-Supervised Positive Sampling (Lepage & Dehak, Interspeech 2025).

"SSPS: Self-Supervised Positive Sampling for Robust Self-Supervised Speaker
Verification" (arXiv:2505.14561). For an anchor utterance i, instead of a
second crop of u_i, the positive is the stored embedding q'_pos(i) of another
utterance of (presumably) the same speaker but another recording:

    c-hat_i = c_i (M = 0)  or  sample(C_{c_i}), C_k = top-M_{j != k} sim(m_k, m_j)
    pos(i)  = sample(S_{c-hat_i} restricted to Q'), else fall back to z'_i

State (all buffers, checkpointed, outside DDP): Q-hat (``ref_queue``), Q'
(``pos_queue``), the utterance -> cluster table from the last k-means, the
centroids and the nearby-cluster table. A step is sample -> substitute ->
update (the originals go into the queues, all-gathered over ranks).
"""

import logging

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from .. import distributed as dist
from . import checkpoint
from .diagnostics import kmeans_nmi, sampling_stats
from .kmeans import BACKENDS, check_sim_dtype, spherical_kmeans
from .queue import RingQueue
from .queue_index import QueueIndex
from .sampling import choose_clusters, draw_slots, nearby_clusters, nearest_neighbour_slots

logger = logging.getLogger(__name__)
SAMPLINGS = ("kmeans-repr", "kmeans-centroid", "nn", "supervised")
SAME_RECORDING = ("allow", "exclude", "prefer_other")
CLUSTER_PROBS = ("uniform", "exp")
QUEUE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@register_checkpoint_hooks
class SSPS(torch.nn.Module):
    """Pseudo-positive sampler with its memory queues and clustering.

    Arguments
    ---------
    K : int
        Number of k-means clusters (paper: 25,000 with M = 1, 6,000 with M = 0).
    M : int
        Neighbouring clusters to sample from; 0 = the anchor's own cluster.
    start_epoch : int
        First epoch that samples pseudo-positives (1-based, SpeechBrain's
        epoch counter). The queues are written from ``start_epoch - 1``.
    sampling : str
        "kmeans-repr" (the paper's SSPS), "kmeans-centroid" (the positive is
        the centroid of c-hat), "nn" (SSPS-NN: one of ``nn_k`` nearest
        references) or "supervised" (SSPS paper Table 1, "supervised"
        positives: the clusters are the true speakers, read from ``spk_id``,
        with M = 0; with ``same_recording: exclude`` or ``prefer_other`` the
        positive is another recording of the anchor's speaker: the
        label-quality upper bound of SSPS on the same data).
    pos_queue_size : int or None
        |Q'| before rounding down to a multiple of the global batch; None = K.
    kmeans_iters : int
        Lloyd iterations (paper: 10).
    kmeans_backend : str
        "auto", "faiss-gpu", "faiss-cpu" or "torch".
    kmeans_dtype : str
        E-step similarities in "float32", "bfloat16" (torch) or "float16"
        (torch, faiss-gpu); centroids and M-step stay float32.
    cluster_prob : str
        "uniform" or "exp" weighting of the M candidate clusters.
    exp_lambda : float
        Decay of the "exp" weighting.
    nn_k : int
        Neighbours considered by "nn".
    same_recording : str
        Whether a pseudo-positive may come from the anchor's recording:
        "allow" (the paper), "exclude" (never; anchors whose cluster has no
        other recording in Q' keep their own positive) or "prefer_other"
        (another recording when Q' has one in the cluster, else any slot of
        it). The last two need the ``rec_id`` column; an extension.
    seed : int
        Seeds k-means initialisation and the draws.
    queue_dtype : str
        "float32" or "float16": storage of Q-hat and Q' (float16 halves their
        memory, e.g. Q-hat at VoxCeleb2 scale 2.1 -> 1.1 GiB; k-means and
        the substituted rows are computed in float32 / the step's type).
    """

    guard_snapshot = False  # buffers change only after a finite step or between epochs (guard.py)

    def __init__(
        self, K=25000, M=1, start_epoch=101, sampling="kmeans-repr", pos_queue_size=None,
        kmeans_iters=10, kmeans_backend="auto", cluster_prob="uniform", exp_lambda=0.7,
        nn_k=1, same_recording="allow", seed=0, queue_dtype="float32", kmeans_dtype="float32",
    ):
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"SSPS sampling {sampling!r} not in {SAMPLINGS}")
        if K < 1 or M < 0:
            raise ValueError(f"SSPS needs K >= 1 and M >= 0, got K={K}, M={M}")
        if sampling == "supervised" and M != 0:
            raise ValueError(f"SSPS supervised sampling draws from the anchor's own speaker: M must be 0, got {M}")
        if sampling != "nn" and M >= K:
            raise ValueError(f"SSPS: M = {M} neighbouring clusters needs M < K = {K}")
        if cluster_prob not in CLUSTER_PROBS:
            raise ValueError(f"SSPS cluster_prob {cluster_prob!r} not in {CLUSTER_PROBS}")
        if same_recording not in SAME_RECORDING:
            raise ValueError(f"SSPS same_recording {same_recording!r} not in {SAME_RECORDING}")
        if queue_dtype not in QUEUE_DTYPES:
            raise ValueError(f"SSPS queue_dtype {queue_dtype!r} not in {tuple(QUEUE_DTYPES)}")
        self.queue_dtype = QUEUE_DTYPES[queue_dtype]
        if kmeans_backend not in BACKENDS:
            raise ValueError(f"SSPS kmeans_backend {kmeans_backend!r} not in {BACKENDS}")
        check_sim_dtype(kmeans_backend, kmeans_dtype)
        self.K, self.M, self.start_epoch, self.sampling = K, M, start_epoch, sampling
        self.pos_queue_size = pos_queue_size or K
        self.kmeans_iters, self.kmeans_backend, self.kmeans_dtype = kmeans_iters, kmeans_backend, kmeans_dtype
        self.cluster_prob, self.exp_lambda, self.nn_k = cluster_prob, exp_lambda, nn_k
        self.same_recording, self.seed = same_recording, seed
        self.generator = torch.Generator().manual_seed(seed + dist.rank())
        self.ready = False
        self._index = None

    # ------------------------------------------------------------ set-up
    def setup(self, n_utterances, global_batch, repr_dim, emb_dim, n_views=1, speakers=None, recordings=None):
        """Allocates the queues for a training set (called before ``fit``).

        Arguments
        ---------
        n_utterances : int, N (utterance indices are 0..N-1).
        global_batch : int, B (batch size x processes): queue sizes are
            rounded down to multiples of B, as in the reference code.
        repr_dim, emb_dim : dimensions of y-hat (Q-hat) and z' (Q').
        n_views : embeddings stored per Q' row (SimCLR 1, DINO 2).
        speakers, recordings : optional (N,) int labels, diagnostics only
            (``recordings`` is also what ``same_recording`` uses).
        """
        if self.sampling == "supervised":
            if speakers is None:
                raise ValueError("SSPS supervised sampling needs the spk_id column in train.csv")
            self.K = int(torch.as_tensor(speakers).max()) + 1  # one "cluster" per speaker
        if self.K > n_utterances:
            raise ValueError(f"SSPS: K = {self.K} clusters but the training set has only {n_utterances} utterances")
        if self.same_recording != "allow" and recordings is None:
            raise ValueError(f"SSPS same_recording: {self.same_recording} needs the rec_id column in train.csv")
        if self.sampling == "kmeans-centroid" and emb_dim != repr_dim:
            raise ValueError(
                f"SSPS kmeans-centroid substitutes centroids ({repr_dim}-d) for embeddings ({emb_dim}-d); "
                "it only works without a projector"
            )
        pos = self.pos_queue_size - self.pos_queue_size % global_batch
        ref = n_utterances - n_utterances % global_batch
        if self.sampling == "nn":
            ref = pos  # Q-hat and Q' are written in lockstep, slot for slot
        if pos <= 0 or ref <= 0:
            raise ValueError(f"SSPS queues would be empty: |Q'| = {pos}, |Q-hat| = {ref} with global batch {global_batch}")
        if self.sampling != "nn" and self.K > ref:
            raise ValueError(
                f"SSPS: K = {self.K} clusters but Q-hat holds {ref} references "
                f"({n_utterances} utterances rounded down to a multiple of the global batch {global_batch})"
            )
        self.ref_queue = RingQueue(ref, repr_dim, dtype=self.queue_dtype)
        self.pos_queue = RingQueue(pos, emb_dim, n_views, dtype=self.queue_dtype)
        self.register_buffer("assignments", torch.full((n_utterances,), -1, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(self.K, repr_dim))
        self.register_buffer("nearby", torch.zeros(self.K, max(self.M, 1), dtype=torch.long))
        self.register_buffer("clustered_epoch", torch.tensor(-1))
        for name, labels in (("speakers", speakers), ("recordings", recordings)):
            self.register_buffer(name, None if labels is None else torch.as_tensor(labels).long(), persistent=False)
        self.ready = True
        logger.info("SSPS queues: |Q-hat| = %d x %d, |Q'| = %d x %d x %d", ref, repr_dim, n_views, pos, emb_dim)

    def writes(self, epoch):
        """Queues are written from epoch start_epoch - 1."""
        return self.ready and epoch >= self.start_epoch - 1

    def samples(self, epoch):
        return self.ready and epoch >= self.start_epoch

    # ------------------------------------------------------------ epoch
    @torch.no_grad()
    def cluster(self, epoch):
        """k-means on Q-hat (once per epoch, skipped on an intra-epoch resume).

        Returns diagnostics (NMI with speaker / recording labels, if any).
        """
        if self.sampling == "nn" or int(self.clustered_epoch) == epoch:
            return {}
        if self.sampling == "supervised":  # the true speakers are the clusters
            self.assignments.copy_(self.speakers)
            self.nearby.copy_(nearby_clusters(self.centroids, 0))
            self.clustered_epoch.fill_(epoch)
            return {}
        written = self.ref_queue.indices >= 0
        if int(written.sum()) < self.K:
            raise ValueError(f"SSPS: K = {self.K} clusters but Q-hat holds only {int(written.sum())} references")
        utts = self.ref_queue.indices[written]
        centroids, labels = spherical_kmeans(
            self.ref_queue.embeddings[0][written].float(), self.K, self.kmeans_iters,
            seed=self.seed + epoch, backend=self.kmeans_backend, sim_dtype=self.kmeans_dtype,
        )
        dist.broadcast(centroids), dist.broadcast(labels)  # identical on every rank
        # scatter in write order (oldest first) so a duplicate keeps its newest label
        order = torch.argsort(self.ref_queue.recency()[written])
        self.assignments.fill_(-1)
        self.assignments[utts[order]] = labels[order]
        self.centroids.copy_(centroids)
        self.nearby.copy_(nearby_clusters(centroids, self.M))
        self.clustered_epoch.fill_(epoch)
        return kmeans_nmi(self.assignments, self.speakers, self.recordings)

    # ------------------------------------------------------------ step
    @torch.no_grad()
    def sample(self, indices, ref=None):
        """Pseudo-positive Q' slot per anchor (-1: keep own positive).

        Arguments
        ---------
        indices : (b,) utterance indices of the anchors.
        ref : (b, D_repr) reference representations (used by "nn").

        Returns
        -------
        slots : (b,) long; stats : dict of 0-d tensors (diagnostics).
        """
        if self.sampling == "nn":
            slots = nearest_neighbour_slots(
                ref, indices, self.ref_queue.embeddings[0].to(ref.dtype), self.ref_queue.indices, self.nn_k, self.generator
            )
            pool = (slots >= 0).long() * self.nn_k
        else:
            chosen = choose_clusters(
                self.assignments[indices], self.nearby, self.cluster_prob, self.exp_lambda, self.generator
            )
            if self.sampling == "kmeans-centroid":
                return chosen, {"ssps_coverage": (chosen >= 0).float().mean()}
            exclude = self.recordings if self.same_recording != "allow" else None
            queue = self.queue_index()
            anchor_rec = None if exclude is None else exclude[indices]
            slots, pool = draw_slots(chosen, queue, self.generator, anchor_rec)
            if self.same_recording == "prefer_other":  # no other recording in the cluster: any slot of it
                any_slots, any_pool = draw_slots(chosen, queue, self.generator)
                slots, pool = torch.where(pool > 0, slots, any_slots), torch.where(pool > 0, pool, any_pool)
        partner = torch.where(slots >= 0, self.pos_queue.indices[slots.clamp(min=0)], -1)
        return slots, sampling_stats(indices, partner, pool, self.speakers, self.recordings)

    def substitute(self, embeddings, slots, view=0):
        """Rows with a slot take the stored Q' embedding (a detached copy).

        Arguments
        ---------
        embeddings : (b, D_emb) positive-branch embeddings of one view.
        slots : (b,) from ``sample`` (cluster ids for "kmeans-centroid").
        view : which stored view of the Q' row to use.
        """
        table = self.centroids if self.sampling == "kmeans-centroid" else self.pos_queue.embeddings[view]
        stored = table.index_select(0, slots.clamp(min=0)).to(embeddings.dtype)
        # lerp with weights 0 / 1 returns the rows of ``embeddings`` / ``stored``
        # exactly (torch computes end - (end - start) * (1 - w) for w >= 0.5)
        # and is about 3x faster than torch.where on this CPU
        return torch.lerp(embeddings, stored, (slots >= 0)[:, None].to(embeddings.dtype))

    @torch.no_grad()
    def update(self, indices, ref, embeddings):
        """Writes the global batch into both queues (after sampling).

        Arguments
        ---------
        indices : (b,) utterance indices; ref : (b, D_repr) normalised y-hat,
        or None (Q-hat not written); embeddings : (V, b, D_emb) original
        positive-branch embeddings, or None (Q' not written).
        """
        indices = dist.gather(indices)
        if ref is not None:  # None: the step has no reference (ssps_reference: epoch)
            self.ref_queue.write(indices, dist.gather(ref)[None])
        if embeddings is None:  # the reference pass of ssps_reference: epoch
            return
        gathered = embeddings.detach()  # (V, b, D)
        if dist.is_distributed():
            gathered = torch.stack([dist.gather(e) for e in gathered])  # (V, B, D)
        if self._index is not None and self._index.current(self.pos_queue, self.assignments):
            self._index.write(self.pos_queue, indices, gathered)
        else:
            self.pos_queue.write(indices, gathered)

    def queue_index(self):
        """The (cluster, recording) index of Q' (``QueueIndex``), rebuilt
        only when k-means, a checkpoint load or a write outside ``update``
        changed what it describes; ``update`` keeps it current otherwise."""
        if self._index is None or not self._index.current(self.pos_queue, self.assignments):
            exclude = self.recordings if self.same_recording != "allow" else None
            self._index = QueueIndex(self.pos_queue, self.assignments, exclude)
        return self._index

    # ------------------------------------------------------------ checkpoint
    def gather_generator_states(self):
        """Collects every rank's sampling-generator state into this rank's
        next checkpoint (call on all ranks before a save: only rank 0 writes)."""
        self._rank_generators = torch.stack(dist.gather_objects(self.generator.get_state()))  # (world, S) uint8

    @mark_as_saver
    def _save(self, path):
        checkpoint.save(self, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=True):
        checkpoint.load(self, path)
