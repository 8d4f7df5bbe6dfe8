#!/usr/bin/env python3
"""The whole pipeline on CPU: corpus, prep, training, evaluation, results table.

Usage::

    python recipes/VoxCeleb/SSPS/run_mini.py --out results/mini
    python recipes/VoxCeleb/SSPS/run_mini.py --out OUT --systems simclr,dino
    python recipes/VoxCeleb/SSPS/run_mini.py --out OUT --data_folder /data/vox1  # any VoxCeleb-layout folder
    python recipes/VoxCeleb/SSPS/run_mini.py --out OUT --augment=False --batch_size=32
    python recipes/VoxCeleb/SSPS/run_mini.py --out OUT --preset fidelity --seeds 0,1,2   # SSPS fidelity study

Without ``--data_folder`` the synthetic mini corpus is built in ``OUT/corpus``
(``python -m ssps_ext.mini_corpus``; its shape is ``--corpus_profile`` or the
preset's ``corpus_profile``); with it, only the synthetic noise and
RIR sets are generated into ``OUT/augment``. Every system runs
``train.py hparams/<system>.yaml`` with the small CPU settings of
``hparams/mini_cpu.yaml`` into ``OUT/<system>/``, whose
``verification.json`` holds its EER and minDCF on the trial lists of
``trial_lists`` in mini_cpu.yaml (those the data folder holds; the synthetic
corpus has VoxCeleb1-O, -E and -H-like lists, added to a corpus built
before they existed). Extra ``--key=value``
arguments are passed to every selected system as hyperparameter overrides.
A system that resumes another one (``simclr_ssps`` from ``simclr``) brings
it along. Re-running resumes from the checkpoints.

The training processes keep freed activation buffers instead of handing
them back to the system after every step (``malloc_keep_bytes`` of
common.yaml, ``ssps_ext/allocator.py``): with glibc's defaults that made a
CPU training step up to 1.9x slower here.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import ruamel.yaml

import seed_summary

from ssps_ext import results_table

HERE = os.path.dirname(os.path.abspath(__file__))
# system -> (hparams file, system whose save folder it resumes or None,
#            sections of mini_cpu.yaml applied after `common`, in order)
SYSTEMS = {
    "simclr": ("simclr.yaml", None, ["simclr"]),
    "simclr_ssps": ("simclr_ssps.yaml", "simclr", ["simclr", "simclr_ssps"]),
    # control: SimCLR resumed for as many epochs as SimCLR-SSPS, same-utterance positives
    "simclr_cont": ("simclr_cont.yaml", "simclr", ["simclr", "simclr_cont"]),
    # supervised positive sampling: SSPS's queues with the true speakers as clusters
    "simclr_suppos": ("simclr_ssps.yaml", "simclr", ["simclr", "simclr_ssps", "suppos"]),
    "simclr_am": ("simclr.yaml", None, ["simclr", "simclr_am"]),
    "vicreg": ("vicreg.yaml", None, ["simclr", "vicreg"]),
    "vicreg_ssps": ("vicreg_ssps.yaml", "vicreg", ["simclr", "vicreg", "vicreg_ssps"]),
    "vicreg_cont": ("vicreg_cont.yaml", "vicreg", ["simclr", "vicreg", "vicreg_cont"]),
    "swav": ("swav.yaml", None, ["simclr", "swav"]),
    "swav_ssps": ("swav_ssps.yaml", "swav", ["simclr", "swav", "swav_ssps"]),
    "swav_cont": ("swav_cont.yaml", "swav", ["simclr", "swav", "swav_cont"]),
    "moco": ("moco.yaml", None, ["simclr", "moco"]),
    "moco_ssps": ("moco_ssps.yaml", "moco", ["simclr", "moco", "moco_ssps"]),
    # control: MoCo resumed for as many epochs as MoCo-SSPS
    "moco_cont": ("moco_cont.yaml", "moco", ["simclr", "moco", "moco_cont"]),
    "dino": ("dino.yaml", None, ["dino"]),
    "dino_ssps": ("dino_ssps.yaml", "dino", ["dino", "dino_ssps"]),
    "dino_suppos": ("dino_ssps.yaml", "dino", ["dino", "dino_ssps", "suppos"]),
    # DINO-SSPS storing the 65,536-d teacher logits in Q' (reference code) instead of the bottleneck
    "dino_ssps_logits": ("dino_ssps.yaml", "dino", ["dino", "dino_ssps", "dino_ssps_logits"]),
    # control: DINO resumed for as many epochs as DINO-SSPS / CA-DINO
    "dino_cont": ("dino_cont.yaml", "dino", ["dino", "dino_cont"]),
    # CA-DINO: DINO resumed with cluster-aware global crops
    "dino_cadino": ("dino_cadino.yaml", "dino", ["dino", "dino_cadino"]),
    # supervised baseline: AAM-softmax on the speaker labels (the upper bound)
    "supervised": ("supervised.yaml", None, ["supervised"]),
    # DLG-LC pseudo-label rounds from the DINO run (CA-DINO stage II), run by dlg_lc.py
    "dlg_lc": ("dlg_lc.yaml", "dino", ["dlg_lc"]),
    # the same rounds from the SimCLR-SSPS run (its encoder, 40 mels): a stage I whose clusters follow the speakers
    "dlg_lc_simclr_ssps": ("dlg_lc.yaml", "simclr_ssps", ["dlg_lc", "dlg_lc_simclr"]),
}
SCRIPTS = {"dlg_lc": "dlg_lc.py", "dlg_lc_simclr_ssps": "dlg_lc.py"}  # system -> its script (default train.py)
DEFAULT_SYSTEMS = "simclr,simclr_ssps,simclr_cont"


def mini_overrides(system, preset=None):
    """Overrides from hparams/mini_cpu.yaml for ``system``: ``common``, then
    the system's sections in order (later ones win), then ``common`` and the
    same sections of ``presets[preset]``."""
    table, presets = _mini_table()
    out = dict(table["common"])
    for section in SYSTEMS[system][2]:
        out.update(table.get(section) or {})
    for section in ["common", *SYSTEMS[system][2]] if preset else ():
        out.update(_preset(presets, preset).get(section) or {})
    return out


def trial_list_overrides(data):
    """``verification_lists`` of mini_cpu.yaml's ``trial_lists`` that ``data`` holds."""
    table, _ = _mini_table()
    return {name: os.path.join(data, file) for name, file in table["trial_lists"].items()
            if os.path.isfile(os.path.join(data, file))}


def _mini_table():
    with open(os.path.join(HERE, "hparams", "mini_cpu.yaml")) as f:
        table = ruamel.yaml.YAML(typ="safe").load(f)
    return table, table.pop("presets", {})


def _preset(presets, name):
    if name not in presets:
        raise SystemExit(f"unknown preset {name!r}; choose from {', '.join(presets)}")
    return presets[name]


def corpus_profile(args):
    """--corpus_profile, else the preset's ``corpus_profile``, else mini_cpu.yaml's."""
    if args.corpus_profile:
        return args.corpus_profile
    table, presets = _mini_table()
    if args.preset and "corpus_profile" in _preset(presets, args.preset):
        return _preset(presets, args.preset)["corpus_profile"]
    return table["corpus_profile"]


def as_cli(overrides):
    """{key: value} -> ['--key=value'] with YAML/JSON flow values."""
    return [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]


def selection(names):
    """Requested systems plus the ones they resume, in dependency order."""
    ordered = []
    for name in names:
        if name not in SYSTEMS:
            raise SystemExit(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
        chain = [name]  # the system, its parent, the parent's parent...
        while SYSTEMS[chain[-1]][1]:
            chain.append(SYSTEMS[chain[-1]][1])
        ordered += [s for s in reversed(chain) if s not in ordered]
    return ordered


def build_data(args):
    """Data folder plus noise/RIR folders (generated when missing)."""
    from ssps_ext.mini_corpus import PROFILES, build_mini_corpus
    from ssps_ext.mini_corpus.augment_sets import write_noise_set, write_rir_set
    from ssps_ext.mini_corpus.trial_lists import E_LIST, H_LIST, write_extra_trial_lists

    if args.data_folder is None:
        corpus = os.path.join(args.out, "corpus")
        profile = corpus_profile(args)
        if profile not in PROFILES:
            raise SystemExit(f"unknown corpus profile {profile!r}; choose from {', '.join(PROFILES)}")
        stamp = os.path.join(corpus, "profile.json")
        wanted = {"profile": profile, "seed": args.seed}
        if os.path.isfile(stamp):
            with open(stamp) as f:
                made = json.load(f)
            if made != wanted:
                raise SystemExit(f"{corpus} holds the corpus {made}, not {wanted}: use another --out")
        if not os.path.isfile(os.path.join(corpus, "veri_test2.txt")):
            start = time.time()
            stats = build_mini_corpus(corpus, seed=args.seed, config=PROFILES[profile])
            with open(stamp, "w") as f:
                json.dump(wanted, f)
            print(f"[run_mini] mini corpus: {stats} in {time.time() - start:.0f} s", flush=True)
        elif not all(os.path.isfile(os.path.join(corpus, f)) for f in (E_LIST, H_LIST)):
            added = write_extra_trial_lists(corpus, args.seed, PROFILES[profile].max_target_trials)
            print(f"[run_mini] trial lists added to the corpus built before them: {added}", flush=True)
        return corpus, os.path.join(corpus, "noise"), os.path.join(corpus, "rir")
    for needed in ("wav", "veri_test2.txt"):
        if not os.path.exists(os.path.join(args.data_folder, needed)):
            raise SystemExit(f"--data_folder {args.data_folder} has no {needed}")
    aug = os.path.join(args.out, "augment")
    if not os.path.isdir(os.path.join(aug, "rir")):
        write_noise_set(os.path.join(aug, "noise"), args.seed)
        write_rir_set(os.path.join(aug, "rir"), args.seed)
    return args.data_folder, os.path.join(aug, "noise"), os.path.join(aug, "rir")


def run_system(name, data, noise, rir, args, passthrough):
    yaml_file, parent, _ = SYSTEMS[name]
    folder = os.path.join(args.out, name)
    overrides = {
        "data_folder": data,
        "test_data_folder": data,
        "noise_folder": noise,
        "rir_folder": rir,
        "output_folder": folder,
        "manifest_folder": os.path.join(args.out, "manifests"),
        "verification_lists": trial_list_overrides(data),
        **mini_overrides(name, args.preset),
    }
    if parent:
        overrides["init_from"] = os.path.join(args.out, parent, "save")
    overrides.update(passthrough)  # the user's --key=value win over the mini settings
    script = os.path.join(HERE, SCRIPTS.get(name, "train.py"))
    cmd = [sys.executable, script, os.path.join(HERE, "hparams", yaml_file)]
    cmd += as_cli(overrides)
    if args.noprogressbar:
        cmd.append("--noprogressbar")
    print(f"[run_mini] {name}: {' '.join(cmd)}", flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=args.out)
    with open(os.path.join(folder, "verification.json")) as f:
        result = json.load(f)
    result["minutes"] = (time.time() - start) / 60
    return result


def run_one(args, passthrough):
    """Corpus + every selected system into ``args.out``; prints the table."""
    os.makedirs(args.out, exist_ok=True)
    data, noise, rir = build_data(args)
    results = {}
    for name in selection(args.systems.split(",")):
        results[name] = run_system(name, data, noise, rir, args, passthrough)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    # the table of ssps_ext.results_table, also as OUT/results.md and OUT/results.csv
    rows = results_table.read_rows([os.path.join(args.out, name) for name in results], list(results))
    markdown = results_table.to_markdown(rows)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown + "\n")
    results_table.write_csv(rows, os.path.join(args.out, "results.csv"))
    print("\n" + markdown)
    print("minutes: " + ", ".join(f"{name} {r['minutes']:.1f}" for name, r in results.items()))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_folder", default=None)
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS)
    parser.add_argument("--seed", type=int, default=0, help="mini-corpus seed")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated corpus seeds: one run each in OUT/seed<N>, then mean and spread")
    parser.add_argument("--preset", default=None, help="a preset of hparams/mini_cpu.yaml, e.g. fidelity")
    parser.add_argument("--corpus_profile", default=None, help="mini-corpus shape (ssps_ext.mini_corpus.PROFILES)")
    parser.add_argument("--noprogressbar", action="store_true")
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if not a.startswith("--") or "=" not in a]
    if bad:
        raise SystemExit(f"extra arguments must be --key=value overrides, got {bad}")
    passthrough = dict(a[2:].split("=", 1) for a in extra)
    args.out = os.path.abspath(args.out)
    if args.seeds is None:
        return run_one(args, passthrough)
    if args.data_folder is not None:
        raise SystemExit("--seeds varies the synthetic corpus: it cannot be combined with --data_folder")
    top = args.out
    for seed in [int(s) for s in args.seeds.split(",")]:
        args.seed, args.out = seed, os.path.join(top, f"seed{seed}")
        run_one(args, passthrough)
    print()
    return seed_summary.main([top])


if __name__ == "__main__":
    main()
