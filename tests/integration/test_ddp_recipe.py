"""SimCLR then SimCLR-SSPS with 2 gloo processes (torchrun, CPU): both ranks
end with the same queues, cluster table and centroids."""

import os
import subprocess
import sys

import torch

from conftest import RECIPE

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--channels=16", "--emb_dim=16", "--batch_size=4", "--num_workers=0", "--prep_workers=1",
        "--noprogressbar", "--lr=0.003", "--distributed_backend=gloo", "--device=cpu"]


def torchrun(script, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.path.dirname(HERE), RECIPE])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_ssps_state_identical_on_both_ranks(tiny_corpus, tmp_path):
    common = [f"--data_folder={tiny_corpus}", f"--manifest_folder={tmp_path}/manifests", *TINY]
    torchrun(os.path.join(RECIPE, "train.py"), os.path.join(RECIPE, "hparams", "simclr.yaml"), *common,
             f"--output_folder={tmp_path}/simclr", "--number_of_epochs=1", "--crops={views: [2, 1.0]}")
    torchrun(os.path.join(HERE, "ddp_train_and_dump.py"), str(tmp_path), os.path.join(RECIPE, "hparams", "simclr_ssps.yaml"),
             *common, f"--output_folder={tmp_path}/ssps", f"--init_from={tmp_path}/simclr/save", "--number_of_epochs=3",
             "--ssps_start_epoch=2", "--ssps_K=4", "--ssps_pos_queue_size=8", "--crops={views: [2, 1.0], ref: [1, 1.5]}")
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys()
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    assert (r0["assignments"] >= 0).sum() >= 8 and int(r0["clustered_epoch"]) == 3
    assert int(r0["pos_queue.n_written"]) > 0
    assert os.path.isfile(tmp_path / "ssps" / "verification.json")
