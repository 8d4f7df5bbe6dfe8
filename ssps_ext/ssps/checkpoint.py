"""Saving and restoring an ``SSPS`` module: its buffers plus every rank's
sampling generator (see ``SSPS.gather_generator_states``)."""

import logging

import torch

from .. import distributed as dist

logger = logging.getLogger(__name__)


def save(ssps, path):
    """Buffers and generator states (all ranks' when gathered, else this rank's)."""
    gens = getattr(ssps, "_rank_generators", None)
    if gens is None or gens.shape[0] != dist.world_size():
        gens = ssps.generator.get_state()[None]  # (1, S): this rank only
    torch.save({"state": ssps.state_dict(), "generator": gens[0], "rank_generators": gens}, path)
    ssps._rank_generators = None


def load(ssps, path):
    """Restores ``save``'s file; a ValueError names what no longer fits this run.

    Each rank continues its own draws when the file holds one generator per
    rank of this run; otherwise ranks > 0 are reseeded (logged).
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    mine = ssps.state_dict()
    wrong = [
        f"{name} {tuple(tensor.shape)} vs {tuple(mine[name].shape)}"
        for name, tensor in saved["state"].items()
        if name in mine and mine[name].shape != tensor.shape
    ]
    if wrong:
        raise ValueError(
            f"SSPS checkpoint {path} does not fit this run (saved vs needed: {'; '.join(wrong)}): "
            "the training set, batch size, K or embedding size changed; start SSPS from the "
            "base run with init_from instead of resuming this checkpoint"
        )
    ssps.load_state_dict(saved["state"])
    gens = saved.get("rank_generators")
    if gens is not None and gens.shape[0] == dist.world_size():
        ssps.generator.set_state(gens[dist.rank()].clone())  # each rank continues its own draws
        return
    ssps.generator.set_state(saved["generator"])
    if dist.rank() > 0:  # saved with another process count: ranks > 0 draw afresh
        logger.warning("SSPS checkpoint %s holds no generator state for rank %d: reseeding it", path, dist.rank())
        ssps.generator.manual_seed(ssps.seed + dist.rank() + int(ssps.pos_queue.n_written))
