#!/usr/bin/env python3
"""Per-seed results of run_mini.py runs, their mean and spread, and SSPS
against its same-compute control.

Usage::

    python recipes/VoxCeleb/SSPS/seed_summary.py results/fidelity   # reads results/fidelity/seed*/

Reads ``<out>/seed<N>/<system>/verification.json`` and, for SSPS systems,
the per-epoch diagnostics of ``train_log.txt``. Prints markdown tables:
EER / minDCF per seed and system, mean and sample standard deviation over
seeds, the relative EER change of each ``<x>_ssps`` system against its
control ``<x>_cont`` (negative = SSPS better), and the pseudo-positives'
speaker accuracy over the SSPS epochs. Also writes ``<out>/summary.json``.
"""

import glob
import json
import os
import re
import statistics
import sys


def read_log(path):
    """{epoch: {stat: value}} from a SpeechBrain train_log.txt."""
    stats = {}
    for line in open(path):
        epoch = int(re.search(r"epoch: (\d+)", line).group(1))
        stats[epoch] = {k: float(v) for k, v in re.findall(r"train (\w+): ([-0-9.e+]+)", line)}
    return stats


def collect(out):
    """{seed: {system: {"EER", "minDCF_0.01", ..., "speaker_acc": [...]}}}."""
    results = {}
    for folder in sorted(glob.glob(os.path.join(out, "seed*"))):
        seed = int(os.path.basename(folder)[4:])
        for result in sorted(glob.glob(os.path.join(folder, "*", "verification.json"))):
            system = os.path.basename(os.path.dirname(result))
            with open(result) as f:
                entry = {k: v for k, v in json.load(f).items() if k in ("EER", "minDCF_0.01", "minDCF_0.05")}
            log = read_log(os.path.join(os.path.dirname(result), "train_log.txt"))
            ssps_epochs = [e for e in sorted(log) if "ssps_speaker_acc" in log[e]]
            for name in ("ssps_speaker_acc", "ssps_kmeans_nmi_speaker", "ssps_coverage"):
                if ssps_epochs:
                    entry[name] = [log[e][name] for e in ssps_epochs if name in log[e]]
            results.setdefault(seed, {})[system] = entry
    if not results:
        raise SystemExit(f"no {out}/seed*/<system>/verification.json found")
    return results


def relative_gains(results):
    """{(seed, ssps_system): relative EER change vs its _cont control}."""
    gains = {}
    for seed, systems in results.items():
        for name in systems:
            control = name.replace("_ssps", "_cont")
            if name.endswith("_ssps") and control in systems:
                gains[(seed, name)] = systems[name]["EER"] / systems[control]["EER"] - 1
    return gains


def spread(values):
    mean = statistics.mean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_tables(results):
    seeds = sorted(results)
    systems = sorted({s for r in results.values() for s in r})
    lines = ["| seed | " + " | ".join(f"{s} EER % (minDCF0.01)" for s in systems) + " |",
             "|---" * (len(systems) + 1) + "|"]
    for seed in seeds:
        cells = [f"{results[seed][s]['EER']:.2f} ({results[seed][s]['minDCF_0.01']:.3f})" if s in results[seed] else "-"
                 for s in systems]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    cells = []
    for s in systems:
        values = [results[seed][s]["EER"] for seed in seeds if s in results[seed]]
        mean, sd = spread(values)
        cells.append(f"{mean:.2f} +- {sd:.2f}")
    lines.append(f"| mean +- sd ({len(seeds)} seeds) | " + " | ".join(cells) + " |")
    gains = relative_gains(results)
    if gains:
        lines += ["", "| seed | system | EER change vs its same-compute control | speaker accuracy of pseudo-positives, first -> last SSPS epoch |",
                  "|---|---|---|---|"]
        for (seed, name), gain in sorted(gains.items()):
            acc = results[seed][name].get("ssps_speaker_acc", [])
            lines.append(f"| {seed} | {name} | {100 * gain:+.1f} % | {', '.join(f'{a:.2f}' for a in acc)} |")
        for name in sorted({n for _, n in gains}):
            mean, sd = spread([100 * g for (_, n), g in gains.items() if n == name])
            lines.append(f"| mean +- sd | {name} | {mean:+.1f} +- {sd:.1f} % | |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: seed_summary.py OUT (the --out of run_mini.py --seeds ...)")
    results = collect(argv[0])
    with open(os.path.join(argv[0], "summary.json"), "w") as f:
        json.dump({str(k): v for k, v in results.items()}, f, indent=1)
    print(summary_tables(results))
    return results


if __name__ == "__main__":
    main()
