#!/usr/bin/env python3
"""Training throughput of SimCLR, SimCLR-SSPS, DINO and DINO-SSPS, measured in one run.

Each system's Brain is built from its hparams file exactly as ``train.py``
builds it (``run_mini.py``'s mini-CPU sections with the ``fidelity`` preset's
encoder: ECAPA-TDNN C = 128, 512-d, 40 mels, batch 64, no augmentation; the
SSPS systems sample from their first epoch) on the mini corpus (corpus seed 0,
1,440 training utterances), each in its own process. Per system it measures:

- loader alone: utterances/s of one epoch of the training loader with the
  configured workers (crops + SSPS reference when the system has one);
- step, loading excluded: ``fit_batch`` on batches read beforehand;
- step, loading included: the loader and ``fit_batch`` together, as ``fit``;
- for SSPS: the reference forward (eval-mode encoder on the clean crop), the
  k-means of Q-hat (per epoch, and amortised over the epoch's steps), the
  fill pass, and sample + substitute + update at the run's sizes and at
  VoxCeleb2's (batch 256, K = 25,000, |Q'| = 24,832, 1,092,009 utterances);
- the allocator effect: SimCLR and DINO steps again with glibc's default
  malloc thresholds (``malloc_keep_bytes=0``), beside the recipe's setting.

Times are medians of ``--steps`` steps after 2 warm-up steps; every case
runs ``--rounds`` times, all cases in turn, and the table keeps each case's
best round (the development host's speed drifts by up to 30 % within minutes).

Usage: python benchmarks/throughput.py [--out DIR] [--steps 5] [--rounds 2] [--systems ...] [--key=value ...]
(``--key=value`` are hparams overrides for every system, e.g. ``--precision=bf16``).
Prints a markdown table and writes OUT/throughput.json. Nothing here is a
test; run it on an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSPS")
SSPS_SYSTEMS = ("simclr_ssps", "dino_ssps")
SSPS_FROM_START = {"ssps_start_epoch": 1, "number_of_epochs": 2, "init_from": None}  # random init: timing only


def overrides_for(system, out, keep, extra):
    sys.path.insert(0, RECIPE)
    from run_mini import mini_overrides, trial_list_overrides

    data = os.path.join(out, "corpus")
    ov = {
        "data_folder": data, "test_data_folder": data, "noise_folder": os.path.join(data, "noise"),
        "rir_folder": os.path.join(data, "rir"), "manifest_folder": os.path.join(out, "manifests"),
        "output_folder": os.path.join(out, "work", f"{system}_{keep}"), "verification_lists": trial_list_overrides(data),
        **mini_overrides(system, "fidelity"), "malloc_keep_bytes": keep, "num_workers": 2,
    }
    if system in SSPS_SYSTEMS:
        ov.update(SSPS_FROM_START)
    ov.update(extra)
    return ov


def median(values):
    return sorted(values)[len(values) // 2]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def worker(system, out, keep, steps, extra):
    """One system in this process; prints one JSON line."""
    sys.path.insert(0, RECIPE)
    import speechbrain as sb
    from train import prepare_data

    from ssps_ext.allocator import keep_freed_buffers
    from ssps_ext.data import train_dataset
    from ssps_ext.hparams import load_hparams
    from ssps_ext.verification import trial_lists

    from run_mini import SYSTEMS, as_cli

    _, run_opts, overrides = sb.parse_arguments([os.path.join(RECIPE, "hparams", SYSTEMS[system][0]),
                                                 *as_cli(overrides_for(system, out, keep, extra))])
    hparams, _ = load_hparams(os.path.join(RECIPE, "hparams", SYSTEMS[system][0]), overrides)
    malloc = keep_freed_buffers(hparams["malloc_keep_bytes"])
    prepare_data(hparams, trial_lists(hparams["verification_lists"]))
    train = train_dataset(os.path.join(hparams["manifest_folder"], "train.csv"), hparams["crops"], hparams["sample_rate"])
    brain = hparams["brain_class"](modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
                                   run_opts=run_opts, checkpointer=None)
    brain.prepare_training(train)
    brain.on_fit_start()
    loader = brain.make_dataloader(train, stage=sb.Stage.TRAIN, **hparams["dataloader_options"])
    batch_size, n_utts = hparams["batch_size"], len(train)
    result = {"system": system, "malloc": malloc, "batch": batch_size, "utterances": n_utts,
              "threads": torch.get_num_threads(), "precision": brain.precision}

    load_s, batches = timed(lambda: list(loader))  # one epoch of the loader alone
    result["loader_utt_s"] = sum(len(b.id) for b in batches) / load_s
    hparams["epoch_counter"].current = 1
    start_s, _ = timed(brain.on_stage_start, sb.Stage.TRAIN, 1)  # SSPS: fill pass + k-means
    brain.modules.train()

    def step(batch):
        brain.step += 1
        return brain.fit_batch(batch)

    times = [timed(step, b)[0] for b in batches[: steps + 2]]  # loading excluded, 2 warm-up steps
    result["step_s"] = median(times[2:])
    tick, times = time.perf_counter(), []
    for i, batch in enumerate(loader):  # loading included: the loader feeds the steps, as in fit
        step(batch)
        times.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        if i == steps + 1:
            break
    result["step_loaded_s"] = median(times[2:])
    if brain.ssps is not None:
        ssps = brain.ssps
        result["fill_kmeans_s"] = start_s
        ssps.clustered_epoch.fill_(-1)
        result["kmeans_s"] = timed(ssps.cluster, 1)[0]
        result["steps_per_epoch"] = n_utts // batch_size
        refs = [b.ref.data[:, 0] for b in batches[: steps + 1]]
        times = [timed(brain.encode_reference, r)[0] for r in refs]
        result["reference_s"] = median(times[1:])
        result["sampler_s"] = sampler_step(ssps, batch_size, steps=20)
    print(json.dumps(result), flush=True)


def sampler_step(ssps, batch, steps):
    """Median seconds of sample + substitute + update on ``ssps``'s own state."""
    g = torch.Generator().manual_seed(0)
    n, dim, views = ssps.assignments.shape[0], ssps.pos_queue.embeddings.shape[2], ssps.pos_queue.embeddings.shape[0]
    repr_dim = ssps.ref_queue.embeddings.shape[2]
    z = torch.randn(views, batch, dim, generator=g)
    ref = torch.nn.functional.normalize(torch.randn(batch, repr_dim, generator=g), dim=1)
    anchors = [torch.randint(0, n, (batch,), generator=g) for _ in range(steps + 3)]
    times = []
    for idx in anchors:
        start = time.perf_counter()
        slots, _ = ssps.sample(idx, ref)
        for v in range(views):
            ssps.substitute(z[v], slots, view=v)
        ssps.update(idx, ref, z)
        times.append(time.perf_counter() - start)
    return median(times[3:])  # robust to the host's bursts of other load


def voxceleb_sampler(steps=200):
    """sample + substitute + update at VoxCeleb2 sizes (random clustered state)."""
    from ssps_ext.ssps import SSPS

    n, batch, dim, K = 1_092_009, 256, 512, 25_000
    g = torch.Generator().manual_seed(0)
    ssps = SSPS(K=K, M=1, start_epoch=1, seed=0)
    ssps.setup(n, batch, dim, dim, 1, speakers=torch.randint(0, 5994, (n,), generator=g),
               recordings=torch.randint(0, 145_569, (n,), generator=g))
    ssps.assignments.copy_(torch.randint(0, K, (n,), generator=g))
    ssps.nearby.copy_(torch.randint(0, K, (K, 1), generator=g))
    ssps.pos_queue.write(torch.randperm(n, generator=g)[: ssps.pos_queue.size],
                         torch.randn(1, ssps.pos_queue.size, dim, generator=g))
    return {"sampler_s": sampler_step(ssps, batch, steps), "pos_queue": ssps.pos_queue.size}


def queue_memory(n=1_092_009, K=25_000):
    """MiB of Q-hat and Q' at VoxCeleb2 scale, from the buffers SSPS.setup
    allocates on the meta device (nothing is allocated)."""
    from ssps_ext.ssps import SSPS

    rows = []
    cases = [("SimCLR-SSPS", 256, 512, 1), ("DINO-SSPS, Q' of bottlenecks", 128, 256, 2),
             ("DINO-SSPS, Q' of logits (reference code)", 128, 65_536, 2)]
    for label, batch, dim, views in cases:
        for dtype in ("float32", "float16"):
            ssps = SSPS(K=K, M=1, queue_dtype=dtype)
            with torch.device("meta"):
                ssps.setup(n, batch, 512, dim, n_views=views)
            size = [q.embeddings.numel() * q.embeddings.element_size() / 2**20 for q in (ssps.ref_queue, ssps.pos_queue)]
            rows.append((label, batch, dtype, tuple(ssps.ref_queue.embeddings.shape), size[0],
                         tuple(ssps.pos_queue.embeddings.shape), size[1]))
    return rows


def best(results):
    """The least disturbed of repeated measurements: the smallest times and
    the highest loader rate; other fields from the first."""
    out = dict(results[0])
    for key, value in out.items():
        if key.endswith("_s") and isinstance(value, float):
            out[key] = min(r[key] for r in results)
        elif key == "loader_utt_s":
            out[key] = max(r[key] for r in results)
    return out


def run_worker(system, args, keep, extra):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", system, "--out", args.out, "--steps", str(args.steps),
           "--keep", str(keep), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def table(rows, vox, args):
    print(f"# Training throughput, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {rows[0]['threads']} threads, precision {rows[0]['precision']}\n")
    print(f"ECAPA-TDNN C = 128, 512-d, 40 mels, batch {rows[0]['batch']}, mini corpus ({rows[0]['utterances']} "
          f"utterances), 2 loader workers; median of {args.steps} steps, best of {args.rounds} rounds; "
          "utterances/s = batch / seconds per step\n")
    print("| system | malloc thresholds | loader alone, utt/s | step, loading excluded | utt/s | "
          "step, loading included | utt/s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        b = r["batch"]
        print(f"| {r['system']} | {'kept' if r['keep'] else 'glibc defaults'} ({r['malloc']}) | {r['loader_utt_s']:.0f} | "
              f"{r['step_s']:.2f} s | {b / r['step_s']:.1f} | {r['step_loaded_s']:.2f} s | {b / r['step_loaded_s']:.1f} |")
    kept = {r["system"]: r for r in rows if r["keep"]}
    print("\n| allocator effect | step, glibc defaults / kept |\n|---|---|")
    for r in rows:
        if not r["keep"] and r["system"] in kept:
            print(f"| {r['system']} | {r['step_s'] / kept[r['system']]['step_s']:.2f} |")
    print("\n| SSPS overhead per step | simclr_ssps | dino_ssps |\n|---|---|---|")
    ssps = [kept.get(s) for s in SSPS_SYSTEMS]

    def row(label, fn):
        print(f"| {label} | " + " | ".join(fn(r) if r else "-" for r in ssps) + " |")

    base = {"simclr_ssps": kept.get("simclr"), "dino_ssps": kept.get("dino")}
    row("step, SSPS system / its base (loading excluded)",
        lambda r: f"{r['step_s'] / base[r['system']]['step_s']:.2f}" if base[r["system"]] else "-")
    row("reference forward (clean crop, eval mode)", lambda r: f"{ms(r['reference_s'])}")
    row("k-means of Q-hat per epoch", lambda r: f"{r['kmeans_s']:.2f} s")
    row("k-means amortised per step", lambda r: ms(r["kmeans_s"] / r["steps_per_epoch"]))
    row("fill pass + k-means (first SSPS epoch only)", lambda r: f"{r['fill_kmeans_s']:.1f} s")
    row("sample + substitute + update, this run's sizes", lambda r: ms(r["sampler_s"]))
    print(f"| sample + substitute + update, VoxCeleb2 sizes (batch 256, K 25k, |Q'| {vox['pos_queue']:,}, "
          f"1.09M utterances), best round (all rounds) | {ms(vox['sampler_s'])} "
          f"({', '.join(f'{t * 1000:.1f}' for t in vox['rounds'])}) | |")
    print("\n| queues at VoxCeleb2 scale (N 1,092,009, K 25,000) | batch | storage | Q-hat | MiB | Q' | MiB |"
          "\n|---|---|---|---|---|---|---|")
    for label, batch, dtype, ref_shape, ref_mib, pos_shape, pos_mib in queue_memory():
        print(f"| {label} | {batch} | {dtype} | {ref_shape} | {ref_mib:,.0f} | {pos_shape} | {pos_mib:,.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "throughput"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="every case this many times, in turn; the best is kept")
    parser.add_argument("--systems", default="simclr,simclr_ssps,dino,dino_ssps")
    parser.add_argument("--glibc_defaults", default="simclr,dino", help="systems also run with malloc_keep_bytes=0")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=int, default=None, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.worker == "voxceleb_sampler":
        from ssps_ext.allocator import keep_freed_buffers

        keep_freed_buffers(args.keep)  # as in training
        print(json.dumps(voxceleb_sampler()), flush=True)
        return
    if args.worker:
        overrides = dict(a[2:].split("=", 1) for a in extra)
        return worker(args.worker, args.out, args.keep, args.steps, overrides)
    sys.path.insert(0, RECIPE)
    from run_mini import build_data

    build_data(argparse.Namespace(data_folder=None, out=args.out, corpus_profile="channel", preset=None, seed=0))
    keep = 1 << 30
    cases = [(system, k) for system in filter(None, args.systems.split(","))
             for k in ((keep, 0) if system in args.glibc_defaults.split(",") else (keep,))]
    runs = {}
    for round_ in range(args.rounds):  # all cases in turn, then again: a drift of the host's speed hits every case
        for system, k in cases:
            runs.setdefault((system, k), []).append(dict(run_worker(system, args, k, extra), keep=k))
            print(f"[throughput] round {round_} {system} malloc_keep_bytes={k}: {runs[system, k][-1]}",
                  file=sys.stderr, flush=True)
    rows = [best(runs[case]) for case in cases]
    voxes = [run_worker("voxceleb_sampler", args, keep, []) for _ in range(args.rounds)]
    vox = dict(best(voxes), rounds=[v["sampler_s"] for v in voxes])
    if rows:
        table(rows, vox, args)
    else:  # --systems= : the VoxCeleb2-size sampler only
        print(f"sample + substitute + update, VoxCeleb2 sizes, median step per round: "
              f"{', '.join(f'{t * 1000:.2f} ms' for t in vox['rounds'])} ({time.strftime('%Y-%m-%d')}, "
              f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    with open(os.path.join(args.out, "throughput.json"), "w") as f:
        json.dump({"rows": rows, "voxceleb_sampler": vox, "date": time.strftime("%Y-%m-%d")}, f, indent=1)


if __name__ == "__main__":
    main()
