"""ssps_ext.flatten: the flat file builds what load_hparams builds."""

import functools
import os

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from ssps_ext.flatten import main
from ssps_ext.hparams import load_hparams

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams")
SMALL = {  # narrower networks keep the test fast; the merge does not care
    "simclr_ssps.yaml": {"channels": 32, "attention_channels": 8, "emb_dim": 16},
    "dino_ssps.yaml": {"channels": 32, "attention_channels": 8, "emb_dim": 16,
                       "dino_hidden_dim": 24, "dino_bottleneck_dim": 8, "dino_out_dim": 40},
}


def placeholder_values(tmp_path):
    folders = {k: tmp_path / k for k in ("data_folder", "test_data_folder", "init_from")}
    for folder in folders.values():
        folder.mkdir()
    return {**{k: str(v) for k, v in folders.items()}, "ssps_start_epoch": 3}


def cli(mapping):
    return [f"--{k}={v}" for k, v in mapping.items()]


def load(loader, *args):
    torch.manual_seed(0)  # the same global state before each load (the yaml also seeds)
    return loader(*args)


def assert_same(a, b, where):
    """Same classes everywhere, equal plain values, bit-equal module weights."""
    assert type(a) is type(b), where
    if isinstance(a, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb), where
        for k in sa:
            assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), f"{where}.{k}"
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, functools.partial):
        assert a.func is b.func, where
        assert_same(list(a.args), list(b.args), where)
        assert_same(a.keywords, b.keywords, where)
    elif isinstance(a, (str, int, float, bool, type(None))):
        assert a == b, where


@pytest.mark.parametrize("name", ["simclr_ssps.yaml", "dino_ssps.yaml"])
@pytest.mark.parametrize("bake_placeholders", [False, True])
def test_flat_file_builds_the_same_objects(tmp_path, name, bake_placeholders):
    path = os.path.join(HPARAMS, name)
    placeholders = placeholder_values(tmp_path)
    overrides = {**SMALL[name], **placeholders}
    out = str(tmp_path / "flat.yaml")
    main([path, *cli(SMALL[name]), *(cli(placeholders) if bake_placeholders else []), "--out", out])
    text = open(out).read()
    assert "\nextends:" not in text and ("!PLACEHOLDER" in text) != bake_placeholders
    assert f"from {os.path.abspath(path)}" in text.splitlines()[0] and "#   channels: 32" in text

    expected, _ = load(load_hparams, path, overrides)
    with open(out) as f:
        flat = load(load_hyperpyyaml, f, None if bake_placeholders else placeholders)
    assert set(flat) == set(expected)
    assert flat["channels"] == 32 and flat["data_folder"] == placeholders["data_folder"]
    for key in expected:
        assert_same(flat[key], expected[key], key)
    assert set(flat["modules"]) == set(expected["modules"]) and "encoder" in flat["modules"]
    assert sum(p.numel() for p in flat["encoder"].parameters()) > 0


def test_unset_placeholders_stay_and_are_named(tmp_path, capsys):
    out = str(tmp_path / "flat.yaml")
    main([os.path.join(HPARAMS, "simclr_ssps.yaml"), "--data_folder=/d", "--out", out])
    text = open(out).read()
    assert "# Still !PLACEHOLDER, set them as overrides: test_data_folder, init_from\n" in text
    assert "test_data_folder: !PLACEHOLDER" in text and "data_folder: /d" in text
    assert "still !PLACEHOLDER: test_data_folder, init_from" in capsys.readouterr().err
    with open(out) as f, pytest.raises(ValueError, match="'test_data_folder' is a !PLACEHOLDER"):
        load_hyperpyyaml(f)


def test_unknown_override_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="Override 'not_a_key' not found"):
        main([os.path.join(HPARAMS, "simclr.yaml"), "--not_a_key=1", "--out", str(tmp_path / "f.yaml")])


def test_tagged_override_keeps_its_reference(tmp_path):
    out = str(tmp_path / "flat.yaml")
    main([os.path.join(HPARAMS, "simclr.yaml"), "--output_folder=!ref <data_folder>/run<seed>", "--out", out])
    assert "output_folder: !ref <data_folder>/run<seed>" in open(out).read()
    with open(out) as f:
        h = load_hyperpyyaml(f, {"data_folder": "/d", "test_data_folder": "/t", "seed": 7})
    assert h["output_folder"] == "/d/run7" and h["save_folder"] == "/d/run7/save"
