#!/usr/bin/env python3
"""What glibc's malloc thresholds cost a CPU training step, measured in one run.

An ECAPA-TDNN step (forward, backward, Adam) on random 2-s crops, at the
SSPS fidelity settings (C = 128, 512-d, 40 mels) by default: the two views
of a batch of 64 as one 128-row batch, and as two 64-row passes (per-view
BatchNorm, the recipe's default). Each case runs in its own process, once
with glibc's defaults (``--malloc_keep_bytes=0``) and once with the
recipe's in-process setting (``ssps_ext/allocator.py``). Prints a markdown
table with seconds per step and the ratio defaults / kept.

Usage: python benchmarks/allocator.py [--steps 6] [--channels 128] [--emb_dim 512]
Nothing here is a test; run it on an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

import torch

from ssps_ext.allocator import USER_SETTINGS

CHILD = """
import json, sys, time
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from ssps_ext.allocator import keep_freed_buffers

keep, rows, passes, steps, channels, emb = (int(v) for v in sys.argv[1:7])
outcome = keep_freed_buffers(keep)
torch.manual_seed(0)
fbank = Fbank(n_mels=40, n_fft=512)
encoder = ECAPA_TDNN(40, channels=[channels] * 4 + [3 * channels], lin_neurons=emb, attention_channels=128)
opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)
wav = torch.randn(passes, rows, 32000)  # (passes, rows, 2 s)
times = []
for step in range(steps + 2):  # the first 2 steps warm up
    start = time.perf_counter()
    opt.zero_grad()
    loss = sum(encoder(fbank(wav[p])).pow(2).mean() for p in range(passes))
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"outcome": outcome, "step_s": sum(times[2:]) / steps}))
"""


def run_case(keep, rows, passes, args):
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    cmd = [sys.executable, "-c", CHILD, str(keep), str(rows), str(passes), str(args.steps), str(args.channels),
           str(args.emb_dim)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--emb_dim", type=int, default=512)
    parser.add_argument("--keep_bytes", type=int, default=2**30)
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ECAPA C = {args.channels}, {args.emb_dim}-d, 40 mels, 2-s crops, {args.steps} steps after 2 warm-up")
    print("\n| batch layout | glibc defaults s/step | thresholds kept s/step | defaults / kept |\n|---|---|---|---|")
    for label, rows, passes in (("both views as one 128-row batch", 128, 1), ("two 64-row passes (per view)", 64, 2)):
        default = run_case(0, rows, passes, args)
        kept = run_case(args.keep_bytes, rows, passes, args)
        if kept["outcome"] != "set":
            print(f"| {label} | {default['step_s']:.3f} | not set ({kept['outcome']}) | - |")
            continue
        print(f"| {label} | {default['step_s']:.3f} | {kept['step_s']:.3f} | {default['step_s'] / kept['step_s']:.2f} |")


if __name__ == "__main__":
    main()
