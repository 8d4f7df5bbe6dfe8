"""``extends`` chains of HyperPyYAML files and the recipe's files."""

import os
import textwrap

import pytest

from ssps_ext.hparams import flatten_hparams, load_hparams

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams")


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def test_child_overrides_merge_and_late_keys_resolve(tmp_path):
    write(tmp_path, "base.yaml", """
        n: 2
        name: !ref base-<n>
        thing: null
        group: {a: 1, b: 2}
        counter: !new:collections.Counter
            x: !ref <n>
        """)
    child = write(tmp_path, "child.yaml", """
        extends: base.yaml
        n: 5
        group: {b: 3}
        thing: !new:collections.Counter
            y: !ref <size>
        size: !ref <n> * 2
        """)
    h, text = load_hparams(child)
    assert h["name"] == "base-5" and h["counter"]["x"] == 5
    assert h["group"] == {"a": 1, "b": 3}
    assert h["thing"]["y"] == 10  # chained reference to a key defined later
    assert "extends" not in text
    h, _ = load_hparams(child, {"n": 1})
    assert h["thing"]["y"] == 2
    with pytest.raises(KeyError):
        load_hparams(child, {"not_a_key": 1})


def test_circular_extends_is_reported(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\nx: 1\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\ny: 1\n")
    with pytest.raises(ValueError, match="circular"):
        flatten_hparams(os.path.join(tmp_path, "a.yaml"))


@pytest.mark.parametrize("name", ["simclr.yaml", "simclr_ssps.yaml", "simclr_cont.yaml"])
def test_recipe_files_load(name):
    h, _ = load_hparams(os.path.join(HPARAMS, name), {"data_folder": "/data", "test_data_folder": "/t", "init_from": "/x"} if "ssps" in name or "cont" in name else {"data_folder": "/data", "test_data_folder": "/t"})
    assert h["batch_size"] == 256 and h["channels"] == 1024 and h["emb_dim"] == 512
    if "ssps" in name:
        assert h["ssps"].K == 25000 and h["ssps"].M == 1 and h["ssps"].start_epoch == 101
        assert h["number_of_epochs"] == 120 and h["crops"]["ref"] == [1, 4.0]
        assert "ssps" in h["checkpointer"].recoverables and "encoder" in h["checkpointer"].recoverables
    if "cont" in name:  # the same-compute control: as long as SimCLR-SSPS, no SSPS
        assert h["number_of_epochs"] == 120 and h["ssps"] is None and h["init_from"] == "/x"


def test_nested_override_with_unknown_key_is_an_error(tmp_path):
    path = write(tmp_path, "f.yaml", """
        crops: {views: [2, 2.0], ref: [1, 4.0]}
        other: 1
        """)
    h, _ = load_hparams(path, {"crops": {"ref": [1, 3.0]}})
    assert h["crops"] == {"views": [2, 2.0], "ref": [1, 3.0]}
    with pytest.raises(KeyError, match="crops.reff"):
        load_hparams(path, {"crops": {"reff": [1, 3.0]}})
    with pytest.raises(KeyError, match="reff"):
        load_hparams(path, "crops: {reff: [1, 3.0]}")  # as sb.parse_arguments passes them
