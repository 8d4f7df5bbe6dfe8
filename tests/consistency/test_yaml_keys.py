"""Every top-level key of every recipe hparams file is used: referenced by
another key or read by train.py / the ssps_ext package (as SpeechBrain's
tests/consistency/test_yaml.py checks for its recipes)."""

import glob
import os
import re

import pytest
import ruamel.yaml

from ssps_ext.hparams import _load_tree, _references

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
HPARAMS = os.path.join(ROOT, "recipes", "VoxCeleb", "SSPS", "hparams")
RUN_OPTIONS = {"max_grad_norm", "optimizer_step_limit", "ckpt_interval_minutes", "precision"}
EXPERIMENTS = [
    "simclr.yaml", "simclr_ssps.yaml", "simclr_cont.yaml", "dino.yaml", "dino_ssps.yaml", "dino_cont.yaml",
    "supervised.yaml", "dlg_lc.yaml", "dino_cadino.yaml",
    "moco.yaml", "moco_ssps.yaml", "moco_cont.yaml", "vicreg.yaml", "vicreg_ssps.yaml", "vicreg_cont.yaml",
    "swav.yaml", "swav_ssps.yaml", "swav_cont.yaml",
]


def code_text():
    files = [os.path.join(ROOT, "recipes", "VoxCeleb", "SSPS", name) for name in ("train.py", "dlg_lc.py")]
    files += glob.glob(os.path.join(ROOT, "ssps_ext", "**", "*.py"), recursive=True)
    return "\n".join(open(f).read() for f in files)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_key_is_used(name):
    tree = _load_tree(os.path.join(HPARAMS, name))
    referenced = {k for key, value in tree.items() for k in _references(value)}
    code = code_text()
    unused = [
        key for key in tree
        if key not in referenced and key not in RUN_OPTIONS and not key.startswith("__")
        and not re.search(rf"hparams(\.|\[\"){key}\b", code)
    ]
    assert not unused, f"{name}: unused keys {unused}"


def test_mini_overrides_name_existing_keys():
    with open(os.path.join(HPARAMS, "mini_cpu.yaml")) as f:
        table = ruamel.yaml.YAML(typ="safe").load(f)
    keys = {k for name in EXPERIMENTS for k in _load_tree(os.path.join(HPARAMS, name))}
    presets = table.pop("presets")
    table.pop("corpus_profile")  # run_mini.py's own settings, not overrides
    lists = table.pop("trial_lists")  # names of common.yaml's verification_lists
    assert set(lists) <= set(_load_tree(os.path.join(HPARAMS, "common.yaml"))["verification_lists"])
    sections = list(table.items()) + [
        (f"{p}.{s}", o) for p, group in presets.items() for s, o in group.items() if s != "corpus_profile"
    ]
    for section, overrides in sections:
        assert set(overrides) <= keys, (section, set(overrides) - keys)
