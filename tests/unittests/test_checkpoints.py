"""AtomicCheckpointer: a checkpoint is complete or absent; unreadable -> previous."""

import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from ssps_ext.checkpoints import AtomicCheckpointer


def _net(value):
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def _save(folder, value, **extra):
    return AtomicCheckpointer(folder, {"net": _net(value), **extra}).save_checkpoint(meta={"value": value})


def test_saved_checkpoint_is_complete_and_loads(tmp_path):
    ckpt = _save(tmp_path, 1.5)
    assert ckpt.path.name.startswith("CKPT+") and ckpt.path.is_dir()
    assert sorted(p.name for p in ckpt.path.iterdir()) == ["CKPT.yaml", "net.ckpt"]
    assert ckpt.paramfiles["net"] == ckpt.path / "net.ckpt"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("partial-")]
    net = _net(0.0)
    found = AtomicCheckpointer(tmp_path, {"net": net}).recover_if_possible()
    assert found.path == ckpt.path and found.meta["value"] == 1.5
    assert torch.equal(net.weight, torch.full((2, 3), 1.5))


def test_truncated_newest_falls_back_to_previous(tmp_path, caplog):
    _save(tmp_path, 1.0)
    newest = _save(tmp_path, 2.0)
    data = (newest.path / "net.ckpt").read_bytes()
    (newest.path / "net.ckpt").write_bytes(data[: len(data) // 2])  # as a kill during a copy leaves it
    net = _net(0.0)
    with caplog.at_level(logging.WARNING):
        found = AtomicCheckpointer(tmp_path, {"net": net}).recover_if_possible()
    assert found.meta["value"] == 1.0
    assert torch.equal(net.weight, torch.full((2, 3), 1.0))
    assert newest.path.name in caplog.text and "cannot be loaded" in caplog.text


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    only = _save(tmp_path, 1.0)
    (only.path / "net.ckpt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=re.escape(only.path.name)):
        AtomicCheckpointer(tmp_path, {"net": _net(0.0)}).recover_if_possible()


class _Failing:
    """A recoverable whose save fails (stands for a process killed mid-save)."""


def test_failed_save_leaves_previous_checkpoint_newest(tmp_path):
    first = _save(tmp_path, 1.0)

    def boom(obj, path):
        open(path, "w").write("half")
        raise OSError("disk full")

    ckpt = AtomicCheckpointer(tmp_path, {"net": _net(2.0)})
    ckpt.add_recoverable("late", _Failing(), custom_save_hook=boom, custom_load_hook=lambda o, p, e: None)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(meta={"value": 2.0})
    listed = AtomicCheckpointer(tmp_path).list_checkpoints()
    assert [c.path for c in listed] == [first.path]
    partials = [p for p in tmp_path.iterdir() if p.name.startswith("partial-CKPT")]
    assert len(partials) == 1 and not (partials[0] / "CKPT.yaml").exists()
    _save(tmp_path, 3.0)  # the next save clears what the failed one left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("partial-")]


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    """A real SIGKILL while the second recoverable is being written."""
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from ssps_ext.checkpoints import AtomicCheckpointer
        net = torch.nn.Linear(3, 2)
        AtomicCheckpointer({str(tmp_path)!r}, {{"net": net}}).save_checkpoint(meta={{"value": 1}})
        def killed(obj, path):
            torch.save(net.state_dict(), path)
            os.kill(os.getpid(), signal.SIGKILL)
        c = AtomicCheckpointer({str(tmp_path)!r}, {{"net": net}})
        c.add_recoverable("z", object(), custom_save_hook=killed, custom_load_hook=lambda o, p, e: None)
        c.save_checkpoint(meta={{"value": 2}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    listed = AtomicCheckpointer(tmp_path).list_checkpoints()
    assert [c.meta["value"] for c in listed] == [1]
    assert AtomicCheckpointer(tmp_path, {"net": torch.nn.Linear(3, 2)}).recover_if_possible().meta["value"] == 1
    assert any(p.name.startswith("partial-CKPT") for p in os.scandir(tmp_path))
