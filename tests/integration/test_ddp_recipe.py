"""torchrun with 2 gloo processes on the CPU: SimCLR then SimCLR-SSPS end with
the same queues, cluster table and centroids on both ranks; a 1-process DINO
run resumed on 2 processes continues its lr and momentum schedules."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import RECIPE
from ssps_ext.schedulers import CosineMomentum, WarmupCosine

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--channels=16", "--emb_dim=16", "--batch_size=4", "--num_workers=0", "--prep_workers=1",
        "--noprogressbar", "--lr=0.003", "--distributed_backend=gloo", "--device=cpu"]


def torchrun(script, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.path.dirname(HERE), RECIPE])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_ssps_state_identical_on_both_ranks(tiny_corpus, tmp_path):
    common = [f"--data_folder={tiny_corpus}", f"--test_data_folder={tiny_corpus}", f"--manifest_folder={tmp_path}/manifests", *TINY]
    torchrun(os.path.join(RECIPE, "train.py"), os.path.join(RECIPE, "hparams", "simclr.yaml"), *common,
             f"--output_folder={tmp_path}/simclr", "--number_of_epochs=1", "--crops={views: [2, 1.0]}")
    torchrun(os.path.join(HERE, "ddp_train_and_dump.py"), str(tmp_path), os.path.join(RECIPE, "hparams", "simclr_ssps.yaml"),
             *common, f"--output_folder={tmp_path}/ssps", f"--init_from={tmp_path}/simclr/save", "--number_of_epochs=3",
             "--ssps_start_epoch=2", "--ssps_K=4", "--ssps_pos_queue_size=8", "--crops={views: [2, 1.0], ref: [1, 1.5]}")
    r0, r1 = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    assert (r0["assignments"] >= 0).sum() >= 8 and int(r0["clustered_epoch"]) == 3
    assert int(r0["pos_queue.n_written"]) > 0
    assert os.path.isfile(tmp_path / "ssps" / "verification.json")


DINO_TINY = ["--dino_out_dim=64", "--dino_hidden_dim=32", "--dino_bottleneck_dim=16", "--schedule_epochs=4",
             "--lr_schedule={warmup_epochs: 1}", "--lr=0.05", "--crops={global_views: [2, 1.0], local_views: [2, 0.5]}",
             "--dino_loss={n_crops: 4}", "--augment=False"]


def test_one_process_base_resumed_on_two_continues_schedules(tiny_corpus, tmp_path):
    """The README's example: a base run on 1 process, SSPS (here: more DINO)
    under torchrun. Schedule positions follow epochs, not per-process steps:
    resumed at epoch 2 with half the steps per epoch, lr and EMA momentum
    continue from 1 epoch (a step counter would put them at ~2 epochs)."""
    options = [f"--data_folder={tiny_corpus}", f"--test_data_folder={tiny_corpus}",
               f"--manifest_folder={tmp_path}/manifests", *TINY, *DINO_TINY]
    common = list({a.split("=", 1)[0]: a for a in options}.values())  # later --key=value wins
    single = [arg for arg in common if not arg.startswith("--distributed_backend")]
    base = subprocess.run(
        [sys.executable, os.path.join(RECIPE, "train.py"), os.path.join(RECIPE, "hparams", "dino.yaml"), *single,
         f"--output_folder={tmp_path}/base", "--number_of_epochs=1"], capture_output=True, text=True)
    assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-3000:]
    torchrun(os.path.join(HERE, "ddp_train_and_dump.py"), str(tmp_path), os.path.join(RECIPE, "hparams", "dino.yaml"),
             *common, f"--output_folder={tmp_path}/resumed", f"--init_from={tmp_path}/base/save", "--number_of_epochs=2")
    lr_at = WarmupCosine(0.05, final=1e-5, warmup_epochs=1, total_epochs=4)
    m_at = CosineMomentum(0.996, 1.0, total_epochs=4)
    for rank in (0, 1):
        calls = torch.load(tmp_path / f"schedules{rank}.pt", weights_only=True)
        assert calls and {epoch for epoch, *_ in calls} == {2}
        for epoch, batch, spe, name, value in calls:
            epochs_done = 1 + (batch - 1) / spe  # at the start of this batch
            if name == "WarmupCosine":
                assert value == pytest.approx(lr_at(2, epochs_done * spe, spe), rel=1e-9)
            else:
                assert value == pytest.approx(m_at(2, epochs_done * spe + 1, spe), rel=1e-12)
        first_lr = next(v for _, b, _, n, v in calls if n == "WarmupCosine" and b == 1)
        assert first_lr == pytest.approx(0.05)  # end of the 1-epoch warm-up, not further down the cosine
