"""train.py under torchrun, dumping every rank's SSPS state before evaluation.

Used by test_ddp_recipe.py: ``torchrun --nproc_per_node=2 ddp_train_and_dump.py DUMP_DIR hparams.yaml ...``
"""

import os
import sys

import torch

from conftest import RECIPE  # noqa: F401  (puts the recipe folder on sys.path)

import train  # noqa: E402
from ssps_ext.brains.base import SSLBrain  # noqa: E402

dump_dir = sys.argv.pop(1)
evaluate = SSLBrain.evaluate_verification


def dump_then_evaluate(self, *args, **kwargs):
    rank = int(os.environ["RANK"])
    torch.save({k: v.cpu() for k, v in self.ssps.state_dict().items()}, os.path.join(dump_dir, f"rank{rank}.pt"))
    return evaluate(self, *args, **kwargs)


SSLBrain.evaluate_verification = dump_then_evaluate
train.main(sys.argv[1:])
