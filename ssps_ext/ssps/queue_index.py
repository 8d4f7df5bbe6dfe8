"""``QueueIndex``: the (cluster, recording) index of Q', kept up to date
write by write instead of re-sorted every step.

SSPS draws pos(i) uniformly among the members of cluster c-hat_i currently
in Q' (paper Eq. 6, restricted to Q' as in the reference code). ``draw_slots``
needs Q''s valid slots sorted by key = cluster * n_rec + recording; the
direct computation (``QueueClusters``) sorts all |Q'| slots, twice, at every
step: 9 ms at |Q'| = 24,832 on the 2-core development CPU. Between two
k-means runs the clusters do not change, and a step only overwrites B slots,
so the sorted arrays change by at most 2B entries:

- the B overwritten slots leave the index;
- a written utterance whose older copy is still in Q' makes that copy stale
  (only the newest copy of an utterance counts), so it leaves too;
- the newest copy of each written utterance with a cluster enters, merged
  into place by ``searchsorted``.

The index is a ``QueueClusters`` (sorted unique ``key << shift | slot``
values, the canonical (key, slot) order) whose array is updated in place of
being rebuilt: the two give identical arrays, hence identical draws for the
same generator state (tests/unittests/test_queue_index.py). Cost per step:
a few O(|Q'|) vectorised passes, no sort of Q'.
"""

import numpy as np
import torch

from .sampling import QueueClusters


class QueueIndex(QueueClusters):
    """Incrementally maintained ``QueueClusters`` of a ``RingQueue`` (same
    ``packed`` array, ``keys``, ``slots``, ``slot_at`` and ``_count``).

    Arguments
    ---------
    queue : RingQueue, the Q' it indexes (its ``indices`` and ``recency``).
    assignments : (N,) cluster of each utterance (-1 = none).
    recordings : (N,) recording ids, or None (no exclusion).

    The state lives in host memory as numpy arrays: on this CPU torch's
    indexing of a 25k-element array (gather, boolean mask) costs 100-240 us
    per call, numpy's 20-40 us. ``_count`` and ``slot_at`` take and return
    tensors on the caller's device (on a GPU: two small copies per step).
    The index stays valid while ``assignments`` and the queue's indices only
    change through ``write``; ``current`` tells whether that holds (tensor
    version counters), so a caller rebuilds after k-means or a checkpoint load.
    """

    def __init__(self, queue, assignments, recordings=None):
        slot_utts = queue.indices
        direct = QueueClusters(slot_utts, queue.recency(), assignments, recordings)
        self.n_rec, self.shift, self.P = direct.n_rec, direct.shift, slot_utts.shape[0]
        self.packed_np = direct.packed.cpu().numpy()  # (L,) sorted key << shift | slot
        self.assignments = assignments
        self.assign_np = assignments.cpu().numpy()
        self.rec_np = None if recordings is None else recordings.cpu().numpy()
        # newest slot of every written utterance (-1: not in Q')
        newest = direct.newest.cpu().numpy()
        self.utt_slot = np.full(assignments.shape[0], -1, dtype=np.int64)
        self.utt_slot[slot_utts.cpu().numpy()[newest]] = np.flatnonzero(newest)
        self._stamp = self._versions(queue)

    def _versions(self, queue):
        return (queue.indices._version, id(queue.indices), self.assignments._version)

    def current(self, queue, assignments):
        """True if the index still describes ``queue`` and ``assignments``."""
        return assignments is self.assignments and self._versions(queue) == self._stamp

    @property
    def packed(self):
        return torch.from_numpy(self.packed_np)

    def slot_at(self, pos):
        """Q' slots at positions ``pos`` of the sorted order."""
        return (self.packed[pos.cpu()] & ((1 << self.shift) - 1)).to(pos.device)

    def _count(self, lo, hi):
        """Start and size of the sorted run of keys in [lo, hi)."""
        bounds = np.searchsorted(self.packed_np, torch.stack([lo, hi]).cpu().numpy() << self.shift)
        bounds = torch.from_numpy(bounds).to(lo.device)  # (2, b)
        return bounds[0], bounds[1] - bounds[0]

    def _keys_of(self, utts):
        cluster = self.assign_np[utts]
        key = cluster * self.n_rec + (0 if self.rec_np is None else self.rec_np[utts])
        return np.where(cluster >= 0, key, -1)

    @torch.no_grad()
    def write(self, queue, utts, embeddings):
        """``queue.write(utts, embeddings)`` with the index updated to match.

        ``utts`` (n,) go to the slots ``queue.write_slots(n)`` names, in
        order (the last is the newest). Returns the slots written.
        """
        written = utts
        pos = queue.write_slots(utts.shape[0])
        new_utts = utts[utts.shape[0] - pos.shape[0] :].cpu().numpy()
        old = queue.indices[pos].cpu().numpy()
        pos_np = pos.cpu().numpy()
        # 1. overwritten utterances whose newest copy was here leave Q'
        hit = (old >= 0) & (self.utt_slot[np.maximum(old, 0)] == pos_np)
        gone_old = (self._keys_of(old[hit]) << self.shift) | pos_np[hit]
        self.utt_slot[old[hit]] = -1
        # 2. the newest copy of each written utterance (its last occurrence
        # in write order when it repeats); its older copy becomes stale
        order = np.argsort(new_utts, kind="stable")
        last = np.ones(new_utts.shape[0], dtype=bool)
        last[order[:-1]] = new_utts[order[:-1]] != new_utts[order[1:]]
        last &= new_utts >= 0
        utts_last, pos_last = new_utts[last], pos_np[last]
        stale = self.utt_slot[utts_last]
        was = stale >= 0
        gone_stale = (self._keys_of(utts_last[was]) << self.shift) | stale[was]
        self.utt_slot[utts_last] = pos_last
        # 3. drop the entries of overwritten and stale slots (those with a
        # cluster are in the sorted array, at their packed value)
        gone = np.concatenate([gone_old, gone_stale])
        gone = gone[gone >= 0]
        kept = np.delete(self.packed_np, np.searchsorted(self.packed_np, gone))
        # 4. merge the new entries (those with a cluster) into place
        key = self._keys_of(utts_last)
        new = np.sort(((key << self.shift) | pos_last)[key >= 0])  # (m,) unique
        self.packed_np = np.insert(kept, np.searchsorted(kept, new), new)
        queue.write(written, embeddings)
        self._stamp = self._versions(queue)
        return pos
