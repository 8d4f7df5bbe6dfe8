#!/usr/bin/env python3
"""SimCLR epoch time against the authors' code (sslsv), alternated on one machine.

Settings: those the fidelity study compares at (``run_mini.py --preset
fidelity``): ECAPA-TDNN C = 128 -> 512-d, 40 mels, batch 64, two 2-s crops,
no augmentation, NT-Xent tau = 0.03, no projector, Adam 1e-3, 2 loader
workers, on that preset's mini corpus (corpus seed 0, 1,440 utterances,
22 steps per epoch). The authors' code gets the same settings in its own
config format (``sslsv_config``).

Each round runs, one after the other, every ``--variants`` entry of ours
(``eager``: train.py as is; ``compile``: SpeechBrain's ``--compile
--compile_module_keys encoder``; ``bf16``: ``--precision=bf16``) and the
authors' ``train.py``, each in a fresh process for ``--epochs`` epochs.
An epoch's time is our ``epoch_s`` (train_log.txt) and, for the authors'
code, the time from the start of its epoch loop to its end-of-epoch log.
The first epoch of every process is left out (start-up, compilation).
Printed: per round, each system's mean epoch time and its ratio to the
authors' code of the same round; then the median and range of the ratios.
Alternating in rounds is what makes the ratio hold on a host whose speed
drifts (the development host: up to 30 % within minutes).

The authors' code is not a dependency of this project. Clone
github.com/theolepage/sslsv and install what it imports besides torch,
torchaudio, pandas, soundfile, ruamel.yaml and tensorboard, e.g.
``pip install --target DIR dacite prettyprinter colorful wandb``, then pass
``--sslsv CLONE --sslsv_pythonpath DIR``. Its code runs unchanged; the
wrapper (``RUNNER``) only prints the epoch time to 10 ms, starts wandb
disabled without asking it for a run URL (recent wandb returns a run
without ``get_url()`` there), and stubs ``s3prl`` when it is not installed
(imported for the S3PRL encoder, which is not used).

Usage: python benchmarks/reference_epoch.py --sslsv CLONE [--sslsv_pythonpath DIR]
       [--rounds 3] [--epochs 4] [--variants eager,compile] [--out DIR]
Nothing here is a test; run it on an otherwise idle machine.
"""

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSPS")
VARIANTS = {"eager": [], "compile": ["--compile", "--compile_module_keys", "encoder"], "bf16": ["--precision=bf16"]}

RUNNER = '''"""Runs the authors' sslsv/bin/train.py unchanged (see benchmarks/reference_epoch.py)."""
import importlib.util, os, runpy, sys, types
from datetime import datetime
clone = sys.argv[1]
sys.path.insert(0, clone)
if importlib.util.find_spec("s3prl") is None:  # imported for the unused S3PRL encoder
    stub = types.ModuleType("s3prl"); stub.nn = types.ModuleType("s3prl.nn")
    stub.nn.S3PRLUpstream = stub.nn.Featurizer = object
    sys.modules["s3prl"], sys.modules["s3prl.nn"] = stub, stub.nn
import wandb
from sslsv.trainer import Trainer as T
log_end_epoch = T.Trainer._log_end_epoch
def timed_log_end_epoch(self, metrics):
    seconds = (datetime.now() - self.epoch_start_time).total_seconds()
    print(f"EPOCH_S {self.epoch} {seconds:.2f}", flush=True)
    return log_end_epoch(self, metrics)
def init_wandb(self):
    wandb.init(mode="disabled")
    self.wandb_url = None
T.Trainer._log_end_epoch, T.Trainer._init_wandb = timed_log_end_epoch, init_wandb
sys.argv = ["train.py", sys.argv[2]]
runpy.run_path(os.path.join(clone, "sslsv", "bin", "train.py"), run_name="__main__")
'''


def sslsv_config(epochs):
    """The fidelity settings in the authors' config format."""
    return f"""encoder:
  type: 'ecapatdnn'
  encoder_dim: 512
  mel_n_mels: 40
  channels: [128, 128, 128, 128, 384]
  attention_channels: 128
method:
  type: 'simclr'
  temperature: 0.03
  enable_projector: false
trainer:
  epochs: {epochs}
  batch_size: 64
  learning_rate: 0.001
  tracked_metric: 'train/loss'
dataset:
  ssl: true
  frame_length: 32000
  train: 'train.csv'
  num_workers: 2
evaluation:
  validation: []
  test: []
"""


def prepare_sslsv(out, epochs):
    """Run folder of the authors' code: ./data/train.csv (File, Speaker) from
    our training manifest, the config, and the wrapper."""
    folder = os.path.join(out, "sslsv_run")
    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    with open(os.path.join(out, "manifests", "train.csv")) as src, \
            open(os.path.join(folder, "data", "train.csv"), "w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["File", "Speaker"])
        for row in csv.DictReader(src):
            writer.writerow([row["wav"], row["spk_id"]])
    model = os.path.join(folder, "models", "simclr")
    os.makedirs(model, exist_ok=True)
    with open(os.path.join(model, "config.yml"), "w") as f:
        f.write(sslsv_config(epochs))
    with open(os.path.join(folder, "run_sslsv.py"), "w") as f:
        f.write(RUNNER)
    return folder, model


def run_sslsv(args, folder, model):
    shutil.rmtree(os.path.join(model, "checkpoints"), ignore_errors=True)  # it would resume
    env = dict(os.environ, WANDB_MODE="disabled")
    if args.sslsv_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.sslsv_pythonpath, env.get("PYTHONPATH")]))
    log = os.path.join(folder, "train.log")
    with open(log, "w") as f:
        subprocess.run([sys.executable, "run_sslsv.py", os.path.abspath(args.sslsv), "models/simclr/config.yml"],
                       cwd=folder, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    with open(log) as f:
        return [float(s) for s in re.findall(r"^EPOCH_S \d+ ([0-9.]+)$", f.read(), re.M)]


def run_ours(args, variant, round_):
    from run_mini import as_cli, mini_overrides, trial_list_overrides

    data, out = os.path.join(args.out, "corpus"), os.path.join(args.out, "ours", f"{variant}_{round_}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    ov = {**mini_overrides("simclr", "fidelity"), "data_folder": data, "test_data_folder": data,
          "noise_folder": os.path.join(data, "noise"), "rir_folder": os.path.join(data, "rir"),
          "manifest_folder": os.path.join(args.out, "manifests"), "output_folder": out,
          "verification_lists": trial_list_overrides(data), "number_of_epochs": args.epochs,
          "num_workers": 2, "score_norm_cohort": 0}
    cmd = [sys.executable, os.path.join(RECIPE, "train.py"), os.path.join(RECIPE, "hparams", "simclr.yaml"),
           *as_cli(ov), "--noprogressbar", *VARIANTS[variant]]
    with open(out + ".log", "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    with open(os.path.join(out, "train_log.txt")) as f:
        return [float(s) for s in re.findall(r"epoch_s: ([0-9.e+-]+)", f.read())]


def mean(values):
    return sum(values) / len(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sslsv", required=True, help="clone of github.com/theolepage/sslsv")
    parser.add_argument("--sslsv_pythonpath", default=None, help="folder with its extra packages")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "reference_epoch"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="per process; the first is left out")
    parser.add_argument("--variants", default="eager,compile", help=f"of ours: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or args.epochs < 2:
        raise SystemExit(f"--variants must be among {sorted(VARIANTS)} (got {unknown}); --epochs >= 2")
    if not os.path.isfile(os.path.join(args.sslsv, "sslsv", "bin", "train.py")):
        raise SystemExit(f"--sslsv {args.sslsv}: no sslsv/bin/train.py there (clone github.com/theolepage/sslsv)")
    args.out = os.path.abspath(args.out)
    sys.path.insert(0, RECIPE)
    from run_mini import build_data

    build_data(argparse.Namespace(data_folder=None, out=args.out, corpus_profile="channel", preset=None, seed=0))
    rounds = []
    for round_ in range(args.rounds):
        row = {}
        for variant in variants:
            row[variant] = run_ours(args, variant, round_)
            print(f"[reference_epoch] round {round_} ours {variant}: {row[variant]}", file=sys.stderr, flush=True)
        if round_ == 0:  # our first run wrote the training manifest
            folder, model = prepare_sslsv(args.out, args.epochs)
        row["authors"] = run_sslsv(args, folder, model)
        print(f"[reference_epoch] round {round_} authors: {row['authors']}", file=sys.stderr, flush=True)
        rounds.append(row)
    print(f"SimCLR epoch (s), epochs 2-{args.epochs} of each process, at the fidelity settings; "
          f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("| round | authors | " + " | ".join(f"ours {v} (ratio)" for v in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    ratios = {v: [] for v in variants}
    for i, row in enumerate(rounds):
        theirs = mean(row["authors"][1:])
        cells = []
        for v in variants:
            ratios[v].append(mean(row[v][1:]) / theirs)
            cells.append(f"{mean(row[v][1:]):.1f} ({ratios[v][-1]:.2f})")
        print(f"| {i} | {theirs:.1f} | " + " | ".join(cells) + " |")
    for v in variants:
        r = sorted(ratios[v])
        print(f"ours {v} / authors: median {r[len(r) // 2]:.2f}, range {r[0]:.2f}-{r[-1]:.2f} over {len(r)} rounds")
    with open(os.path.join(args.out, "reference_epoch.json"), "w") as f:
        json.dump({"rounds": rounds, "ratios": ratios, "date": time.strftime("%Y-%m-%d")}, f, indent=1)


if __name__ == "__main__":
    main()
