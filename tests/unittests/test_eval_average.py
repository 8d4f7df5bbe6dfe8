"""Evaluation on the parameter average of the last epoch checkpoints."""

import logging
import types

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from ssps_ext.brains.base import SSLBrain


def saved_run(tmp_path, values=(1.0, 2.0, 4.0, 8.0)):
    """A save folder with one end-of-epoch checkpoint per value (weights = value)
    plus, after the second, an intra-epoch one (weights = 100)."""
    net = torch.nn.Linear(2, 2)
    ckpt = Checkpointer(tmp_path / "save", {"encoder": net})
    paths = []
    for epoch, value in enumerate(values, 1):
        torch.nn.init.constant_(net.weight, value), torch.nn.init.constant_(net.bias, -value)
        paths.append(ckpt.save_checkpoint(meta={"epoch": epoch}).path)
        if epoch == 2:
            torch.nn.init.constant_(net.weight, 100.0)
            ckpt.save_checkpoint(meta={"epoch": epoch}, end_of_epoch=False)
    return ckpt, paths


def fake_brain(checkpointer, n):
    net = torch.nn.Linear(2, 2)
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(eval_average_last=n), checkpointer=checkpointer,
        eval_encoder_key="encoder", embedding_encoder=lambda: net,
    )
    return brain, net


def test_average_of_the_last_n_end_of_epoch_checkpoints(tmp_path):
    ckpt, paths = saved_run(tmp_path)
    brain, net = fake_brain(ckpt, 2)
    used = SSLBrain.load_for_evaluation(brain)
    assert used == [str(p) for p in paths[-2:]]
    assert torch.equal(net.weight, torch.full((2, 2), 6.0)) and torch.equal(net.bias, torch.full((2,), -6.0))


def test_average_up_to_a_given_checkpoint_skips_intra_epoch_ones(tmp_path):
    ckpt, paths = saved_run(tmp_path)
    brain, net = fake_brain(ckpt, 2)
    used = SSLBrain.load_for_evaluation(brain, checkpoint=str(paths[2]))
    assert used == [str(p) for p in paths[1:3]]
    assert torch.equal(net.weight, torch.full((2, 2), 3.0))  # (2 + 4) / 2, not the intra-epoch 100


def test_one_means_that_checkpoint_and_too_few_warns(tmp_path, caplog):
    ckpt, paths = saved_run(tmp_path)
    brain, net = fake_brain(ckpt, 1)
    assert SSLBrain.load_for_evaluation(brain, checkpoint=str(paths[0])) == [str(paths[0])]
    assert torch.equal(net.weight, torch.full((2, 2), 1.0))
    brain, net = fake_brain(ckpt, 10)
    with caplog.at_level(logging.WARNING):
        assert len(SSLBrain.load_for_evaluation(brain)) == 4
    assert "eval_average_last = 10 but only 4 checkpoints" in caplog.text
    assert torch.allclose(net.weight, torch.full((2, 2), 15 / 4))


def test_bad_settings_are_clear_errors(tmp_path):
    ckpt, _ = saved_run(tmp_path)
    with pytest.raises(ValueError, match="eval_average_last must be >= 1"):
        SSLBrain.load_for_evaluation(fake_brain(ckpt, 0)[0])
    other = Checkpointer(tmp_path / "other", {"teacher": torch.nn.Linear(2, 2)})
    path = other.save_checkpoint(meta={"epoch": 1}).path
    with pytest.raises(KeyError, match="holds no 'encoder'"):
        SSLBrain.load_for_evaluation(fake_brain(ckpt, 1)[0], checkpoint=str(path))


def test_training_refuses_to_keep_fewer_checkpoints_than_it_averages():
    brain = types.SimpleNamespace(hparams=types.SimpleNamespace(keep_checkpoints=3, eval_average_last=10))
    with pytest.raises(ValueError, match="eval_average_last = 10 .* keep_checkpoints = 3"):
        SSLBrain.on_fit_start(brain)


def test_evaluation_loads_into_an_encoder_wrapped_by_speechbrains_compile(tmp_path):
    """``--compile --compile_module_keys encoder`` puts a torch.compile
    wrapper in ``modules``; the checkpoint's keys are the plain module's."""
    from ssps_ext.brains.ssps_hooks import unwrap

    ckpt, paths = saved_run(tmp_path)
    net = torch.nn.Linear(2, 2)
    compiled = torch.compile(net)  # lazy: nothing is compiled until called
    wrapped = torch.nn.parallel.DataParallel(compiled)  # compiled inside DDP / DataParallel
    assert unwrap(compiled) is net and unwrap(wrapped) is net and unwrap(net) is net
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(eval_average_last=1), checkpointer=ckpt,
        eval_encoder_key="encoder", modules={"encoder": compiled},
    )
    brain.embedding_encoder = lambda: SSLBrain.embedding_encoder(brain)
    assert SSLBrain.load_for_evaluation(brain) == [str(paths[-1])]
    assert torch.equal(net.weight, torch.full((2, 2), 8.0))
