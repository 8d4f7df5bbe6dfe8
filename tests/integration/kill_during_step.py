"""Runs train.py and SIGKILLs the process from inside a training step.

Usage: python kill_during_step.py EPOCH STEP train.py-arguments...
The process kills itself with SIGKILL (no clean-up of any kind) at the start
of batch STEP of epoch EPOCH, as a preempted or OOM-killed job would die.
"""

import os
import signal
import sys

import train  # recipes/VoxCeleb/SSPS/train.py (on PYTHONPATH)
from ssps_ext.brains.base import SSLBrain

EPOCH, STEP = int(sys.argv[1]), int(sys.argv[2])
original = SSLBrain.fit_batch


def fit_batch(self, batch):
    if self.epoch == EPOCH and self.step == STEP:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, batch)


SSLBrain.fit_batch = fit_batch
if __name__ == "__main__":
    train.main(sys.argv[3:])
