"""Checkpointable random-number-generator state (torch, CUDA, numpy, random).

SpeechBrain's Checkpointer restores models, optimisers and counters but not
the global RNGs, so a resumed run draws other crops and augmentations than
the uninterrupted one would have. Registering ``RandomState`` as a
recoverable makes an end-of-epoch resume continue exactly.
"""

import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


@register_checkpoint_hooks
class RandomState:
    """Saves and restores the global random generators."""

    @mark_as_saver
    def save(self, path):
        state = {
            "torch": torch.get_rng_state(),
            "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
            "numpy_pos": int(np.random.get_state()[2]),
            "python": repr(random.getstate()),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        state = torch.load(path, weights_only=True)
        torch.set_rng_state(state["torch"])
        keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
        np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
        random.setstate(_literal(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _literal(text):
    import ast

    return ast.literal_eval(text)
