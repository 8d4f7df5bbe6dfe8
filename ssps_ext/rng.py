"""Checkpointable random-number-generator state (torch, CUDA, numpy, random).

SpeechBrain's Checkpointer restores models, optimisers and counters but not
the global RNGs, so a resumed run draws other crops and augmentations than
the uninterrupted one would have. Registering ``RandomState`` as a
recoverable makes a resume continue exactly; under DDP every rank's state is
saved (``gather_rank_states``) and each rank restores its own.

An end-of-epoch checkpoint's state is restored when it is loaded. An
intra-epoch checkpoint is written between two steps, and what a resumed run
does before its first step (the epoch start, the loader catching up) is not
what the uninterrupted run did between those steps: its state is kept
pending and restored by ``apply_pending`` at the start of the next step.
"""

import logging
import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from . import distributed as dist

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class RandomState:
    """Saves and restores the global random generators."""

    pending = None  # state of an intra-epoch checkpoint, restored at the next step

    _rank_states = None  # every rank's state, gathered before a save

    @staticmethod
    def _capture():
        state = {
            "torch": torch.get_rng_state(),
            "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
            "numpy_pos": int(np.random.get_state()[2]),
            "python": repr(random.getstate()),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def gather_rank_states(self):
        """Collects every rank's generator states into rank 0's next
        checkpoint (call on all ranks before a save: only rank 0 writes)."""
        self._rank_states = dist.gather_objects(self._capture())

    @mark_as_saver
    def save(self, path):
        ranks = self._rank_states
        if ranks is None or len(ranks) != dist.world_size():
            ranks = [self._capture()]
        self._rank_states = None
        torch.save({**ranks[0], "ranks": ranks}, path)  # top level: rank 0 (older readers)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        saved = torch.load(path, weights_only=True)
        ranks = saved.get("ranks", [saved])
        if len(ranks) == dist.world_size():
            state = ranks[dist.rank()]
        else:  # another process count: every rank continues rank 0's stream
            state = ranks[0]
            if dist.rank() > 0:
                logger.warning("%s holds %d ranks' generator states: rank %d takes rank 0's", path, len(ranks), dist.rank())
        if end_of_epoch:
            self._restore(state)
        else:
            self.pending = state

    def apply_pending(self):
        """Restores an intra-epoch checkpoint's state (once); True if there was one."""
        state, self.pending = self.pending, None
        if state is not None:
            self._restore(state)
        return state is not None

    @staticmethod
    def _restore(state):
        torch.set_rng_state(state["torch"])
        keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
        np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
        random.setstate(_literal(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _literal(text):
    import ast

    return ast.literal_eval(text)
