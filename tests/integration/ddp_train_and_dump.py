"""train.py under torchrun, dumping every rank's SSPS state (when SSPS is on)
and every schedule value it used, before evaluation.

Used by test_ddp_recipe.py: ``torchrun --nproc_per_node=2 ddp_train_and_dump.py DUMP_DIR hparams.yaml ...``
"""

import os
import sys

import torch

from conftest import RECIPE  # noqa: F401  (puts the recipe folder on sys.path)

import train  # noqa: E402
from ssps_ext.brains.base import SSLBrain  # noqa: E402



def main(argv):
    """Patch the brain so every rank dumps its SSPS state and schedule values
    (``schedules{rank}.pt``: (epoch, batch, steps_per_epoch, schedule class,
    value) per call), then run train.py."""
    dump_dir = argv[0]
    evaluate, schedule = SSLBrain.evaluate_verification, SSLBrain.schedule
    calls = []

    def recorded_schedule(self, scheduler, *args, **kwargs):
        value = schedule(self, scheduler, *args, **kwargs)
        calls.append((self.epoch, self.step, self.steps_per_epoch, type(scheduler).__name__, value))
        return value

    def dump_then_evaluate(self, *args, **kwargs):
        rank = int(os.environ["RANK"])
        if self.ssps is not None:
            state = {k: v.cpu() for k, v in self.ssps.state_dict().items()}
            torch.save(state, os.path.join(dump_dir, f"rank{rank}.pt"))
        torch.save(calls, os.path.join(dump_dir, f"schedules{rank}.pt"))
        return evaluate(self, *args, **kwargs)

    SSLBrain.schedule = recorded_schedule
    SSLBrain.evaluate_verification = dump_then_evaluate
    train.main(argv[1:])


if __name__ == "__main__":  # pytest's doctest collection imports this file
    main(sys.argv[1:])
