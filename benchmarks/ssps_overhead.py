#!/usr/bin/env python3
"""What SSPS costs, measured in one run on this machine.

(The per-step sampler cost at VoxCeleb2 sizes and the queue memory table
are in ``benchmarks/throughput.py``.)

1. k-means on 100,000 x 512 points into 5,000 clusters (10 iterations) with
   every backend available here (faiss-gpu, faiss-cpu, torch), and with the
   E-step similarities in each lower precision the backend offers
   (``sim_dtype``), with the share of points whose final cluster equals the
   float32 run's (same init; the points are random, without cluster
   structure: the worst case for near ties).
2. The epoch-time ratio SimCLR-SSPS / SimCLR on the mini corpus with the
   run_mini CPU settings (SSPS epochs after the fill pass; k-means excluded
   from the epoch time and reported separately).

Usage: python benchmarks/ssps_overhead.py [--out DIR] [--skip_epochs]
Prints a markdown table; nothing here is a test.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import torch

from ssps_ext.ssps import available_backends, spherical_kmeans
from ssps_ext.ssps.kmeans import _BACKEND_DTYPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSPS")


def kmeans_cost(backend, device, sim_dtype="float32"):
    """Seconds and final labels of the k-means."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(100_000, 512, generator=g), dim=1).to(device)
    start = time.perf_counter()
    _, labels = spherical_kmeans(x, 5000, n_iter=10, seed=0, backend=backend, sim_dtype=sim_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, labels.cpu()


def epoch_times(out):
    """Mean epoch seconds of SimCLR and of SimCLR-SSPS on the mini corpus."""
    from ssps_ext.mini_corpus import build_mini_corpus

    corpus = os.path.join(out, "corpus")
    if not os.path.isfile(os.path.join(corpus, "veri_test2.txt")):
        build_mini_corpus(corpus, seed=0)
    common = [f"--data_folder={corpus}", f"--manifest_folder={out}/manifests", "--channels=64", "--emb_dim=128",
              "--batch_size=64", "--num_workers=2", "--noprogressbar", "--eval_batch_size=1"]
    runs = {
        "simclr": ["simclr.yaml", "--number_of_epochs=3"],
        "simclr_ssps": ["simclr_ssps.yaml", "--number_of_epochs=6", "--ssps_start_epoch=4", "--ssps_K=160",
                        f"--init_from={out}/simclr/save"],
    }
    result = {}
    for name, (yaml_file, *extra) in runs.items():
        folder = os.path.join(out, name)
        cmd = [sys.executable, os.path.join(RECIPE, "train.py"), os.path.join(RECIPE, "hparams", yaml_file),
               f"--output_folder={folder}", *common, *extra]
        subprocess.run(cmd, check=True, capture_output=True)
        lines = open(os.path.join(folder, "train_log.txt")).read().splitlines()
        epochs = [float(re.search(r"epoch_s: ([0-9.]+)", line).group(1)) for line in lines]
        starts = [float(re.search(r"start_s: ([0-9.]+)", line).group(1)) for line in lines]
        result[name] = {"epoch_s": epochs[1:] if name == "simclr" else epochs, "start_s": starts}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmark"))
    parser.add_argument("--skip_epochs", action="store_true", help="skip the mini-corpus epoch timing")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# SSPS overhead, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}, torch {torch.__version__}\n")
    print("| measurement | value |\n|---|---|")
    timings = {}
    for backend in available_backends():
        dev = torch.device("cpu") if backend == "faiss-cpu" else device
        seconds, full = kmeans_cost(backend, dev)
        timings[f"kmeans_{backend}_s"] = seconds
        print(f"| k-means 100k x 512 -> 5000, 10 it, {backend} ({dev.type}) | {seconds:.1f} s |")
        for sim_dtype in _BACKEND_DTYPES[backend][1:]:
            if sim_dtype == "float16" and dev.type == "cpu":
                continue  # no fast float16 GEMM on CPU
            seconds, labels = kmeans_cost(backend, dev, sim_dtype)
            same = float((labels == full).float().mean())
            timings[f"kmeans_{backend}_{sim_dtype}_s"], timings[f"kmeans_{backend}_{sim_dtype}_same"] = seconds, same
            print(f"| k-means 100k x 512 -> 5000, 10 it, {backend} ({dev.type}), {sim_dtype} similarities | "
                  f"{seconds:.1f} s; {same:.1%} of points in the float32 run's cluster |")
    if not args.skip_epochs:
        epochs = epoch_times(args.out)
        base = sum(epochs["simclr"]["epoch_s"]) / len(epochs["simclr"]["epoch_s"])
        ssps = epochs["simclr_ssps"]["epoch_s"][1:]  # first SSPS epoch: after the fill pass
        ratio = (sum(ssps) / len(ssps)) / base
        fill_kmeans, kmeans = epochs["simclr_ssps"]["start_s"][0], epochs["simclr_ssps"]["start_s"][1:]
        print(f"| mini corpus epoch, SimCLR | {base:.1f} s |")
        print(f"| mini corpus epoch, SimCLR-SSPS | {sum(ssps) / len(ssps):.1f} s |")
        print(f"| **epoch-time ratio SimCLR-SSPS / SimCLR** | **{ratio:.2f}** |")
        print(f"| mini corpus fill pass + k-means (first SSPS epoch) | {fill_kmeans:.1f} s |")
        print(f"| mini corpus k-means per later epoch | {sum(kmeans) / len(kmeans):.2f} s |")
        timings.update(epochs=epochs, ratio=ratio)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ssps_overhead.json"), "w") as f:
        json.dump(timings, f, indent=1)


if __name__ == "__main__":
    main()
