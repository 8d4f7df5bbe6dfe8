"""Training curves (``tensorboard: True``): the epoch-end hook writes the
train-log statistics as TensorBoard scalars, step = epoch; off, nothing of
TensorBoard is imported or written."""

import os
import sys
import time

import pytest
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from speechbrain.utils.train_logger import FileTrainLogger

from ssps_ext.brains.base import SSLBrain
from ssps_ext.curves import tensorboard_logger
from ssps_ext.hparams import load_hparams

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams")


def brain(tmp_path, on):
    """An SSLBrain with the recipe's logging keys and a one-layer encoder."""
    encoder = torch.nn.Linear(2, 2)
    hparams = dict(
        tensorboard=on, tensorboard_folder=str(tmp_path / "tensorboard"),
        train_logger=FileTrainLogger(str(tmp_path / "train_log.txt")),
        epoch_counter=EpochCounter(3), keep_checkpoints=1, eval_average_last=1, init_from=None, ssps=None,
    )
    checkpointer = Checkpointer(str(tmp_path / "save"), {"encoder": encoder})
    return SSLBrain({"encoder": encoder}, None, hparams, run_opts={"device": "cpu"}, checkpointer=checkpointer)


def end_epoch(b, epoch, lr, **steps):
    """The TRAIN stage end of ``epoch`` after steps recording ``steps`` (lists)."""
    b._stats, b.lr = {}, lr
    b._epoch_clock, b.epoch_start_s = time.time(), 0.3
    for values in zip(*steps.values()):
        b.record(**{name: torch.tensor(v) for name, v in zip(steps, values)})
    b.on_stage_end(sb.Stage.TRAIN, 0.0, epoch=epoch)


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder)
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_epoch_end_writes_the_train_log_stats(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install -e '.[tensorboard]')")
    b = brain(tmp_path, True)
    b.on_fit_start()
    end_epoch(b, 1, 0.5, loss=[2.0, 4.0], accuracy=[0.25, 0.75])
    # epoch 2: SSPS statistics appear (as at ssps_start_epoch), a skipped step, no lr
    b.nonfinite_steps = 3
    end_epoch(b, 2, None, loss=[1.0], accuracy=[0.5], ssps_speaker_acc=[0.125])
    got = scalars(str(tmp_path / "tensorboard"))
    assert sorted(got) == sorted([
        "epoch", "lr", "epoch_s", "start_s", "nonfinite_steps",
        "loss/train", "accuracy/train", "ssps_speaker_acc/train",
    ])
    assert got["epoch"] == [(1, 1.0), (2, 2.0)]
    assert got["lr"] == [(1, 0.5)]
    assert got["start_s"] == [(1, 0.3), (2, 0.3)]
    assert [step for step, _ in got["epoch_s"]] == [1, 2]
    assert got["nonfinite_steps"] == [(2, 3.0)]
    assert got["loss/train"] == [(1, 3.0), (2, 1.0)]
    assert got["accuracy/train"] == [(1, 0.5), (2, 0.5)]
    assert got["ssps_speaker_acc/train"] == [(2, 0.125)]
    log = (tmp_path / "train_log.txt").read_text().splitlines()
    assert len(log) == 2 and "train loss: 3.00" in log[0] and "train ssps_speaker_acc: 1.25e-01" in log[1]

    # A resumed run (new process, new logger) continues at its epoch, not at 1.
    b = brain(tmp_path, True)
    b.on_fit_start()
    end_epoch(b, 3, 0.25, loss=[0.5])
    got = scalars(str(tmp_path / "tensorboard"))
    assert got["loss/train"] == [(1, 3.0), (2, 1.0), (3, 0.5)]
    assert got["lr"] == [(1, 0.5), (3, 0.25)]


def test_yaml_keys_build_the_logger(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install -e '.[tensorboard]')")
    required = {"data_folder": "/data", "test_data_folder": "/t", "output_folder": str(tmp_path)}
    h, _ = load_hparams(os.path.join(HPARAMS, "simclr.yaml"), required)
    assert h["tensorboard"] is False and h["tensorboard_folder"] == str(tmp_path / "tensorboard")
    assert tensorboard_logger(h["tensorboard"], h["tensorboard_folder"]) is None
    h, _ = load_hparams(os.path.join(HPARAMS, "dino.yaml"), {**required, "tensorboard": True})
    logger = tensorboard_logger(h["tensorboard"], h["tensorboard_folder"])
    logger.log_stats({"epoch": 7, "lr": 0.125}, train_stats={"teacher_momentum": 0.996})
    assert scalars(h["tensorboard_folder"]) == {"epoch": [(7, 7.0)], "lr": [(7, 0.125)],
                                                "teacher_momentum/train": [(7, 0.996)]}


def test_off_imports_and_writes_nothing(tmp_path, monkeypatch):
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them now raises
    b = brain(tmp_path, False)
    b.on_fit_start()
    end_epoch(b, 1, 0.5, loss=[2.0])
    assert b.tensorboard_logger is None
    assert not (tmp_path / "tensorboard").exists()
    assert "train loss: 2.00" in (tmp_path / "train_log.txt").read_text()


def test_on_without_the_package_is_a_clear_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    b = brain(tmp_path, True)
    with pytest.raises(ImportError, match=r"tensorboard: True needs the 'tensorboard' package.*pip install tensorboard"):
        b.on_fit_start()
    assert not (tmp_path / "tensorboard").exists()
