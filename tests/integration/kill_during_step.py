"""Runs train.py and SIGKILLs the process from inside a training step.

Usage: python kill_during_step.py EPOCH STEP train.py-arguments...
The process kills itself with SIGKILL (no clean-up of any kind) at the start
of batch STEP of epoch EPOCH, as a preempted or OOM-killed job would die.
"""

import os
import signal
import sys

from ssps_ext.brains.base import SSLBrain


def kill_at(epoch, step):
    """Makes SSLBrain.fit_batch SIGKILL the process at (epoch, step)."""
    original = SSLBrain.fit_batch

    def fit_batch(self, batch):
        if self.epoch == epoch and self.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, batch)

    SSLBrain.fit_batch = fit_batch


if __name__ == "__main__":
    import train  # recipes/VoxCeleb/SSPS/train.py (on PYTHONPATH)

    kill_at(int(sys.argv[1]), int(sys.argv[2]))
    train.main(sys.argv[3:])
