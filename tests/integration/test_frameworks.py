"""End-to-end runs of the other joint-embedding frameworks on the tiny corpus:
MoCo, VICReg and their SSPS variants (train.py, CPU)."""

import json
import os

import torch

from test_recipe import assert_same_tensors, epoch_stats, latest_state, train


def test_moco_then_moco_ssps(tiny_corpus, tmp_path):
    """MoCo trains 2 epochs with a key queue smaller than an epoch; MoCo-SSPS
    resumes it, samples pseudo-positive keys, and checkpoints the queues."""
    base, ssps = str(tmp_path / "moco"), str(tmp_path / "moco_ssps")
    train("moco.yaml", tiny_corpus, base, "--number_of_epochs=2", "--moco_queue_size=24", "--temperature=0.1")
    stats = epoch_stats(base)
    assert sorted(stats) == [1, 2] and stats[2]["key_momentum"] == 0.999
    queue = latest_state(base, "loss")
    n_train = sum(1 for _ in open(os.path.join(tmp_path, "manifests", "train.csv"))) - 1
    per_epoch = n_train // 8 * 8  # batches of 8, the last partial one dropped
    assert queue["queue"].shape == (2, 24, 16) and int(queue["ptr"]) == (2 * per_epoch) % 24
    assert not torch.equal(queue["queue"][0], queue["queue"][1])  # one queue per view
    train("moco_ssps.yaml", tiny_corpus, ssps, f"--init_from={base}/save", "--number_of_epochs=4",
          "--ssps_start_epoch=3", "--ssps_K=6", "--ssps_pos_queue_size=16", "--moco_queue_size=24",
          "--temperature=0.1", crops="{views: [2, 1.0], ref: [1, 1.5]}")
    stats = epoch_stats(ssps)
    assert sorted(stats) == [3, 4] and stats[4]["ssps_coverage"] > 0 and "ssps_speaker_acc" in stats[4]
    state = latest_state(ssps, "ssps")["state"]
    assert state["pos_queue.embeddings"].shape == (2, 16, 16)  # both keys stored per Q' row
    assert os.path.isfile(os.path.join(ssps, "verification.json"))
    assert json.load(open(os.path.join(ssps, "verification.json")))["n_trials"] == 80
    assert_same_tensors(latest_state(ssps, "key_encoder").keys(), latest_state(base, "key_encoder").keys())


def test_vicreg_then_vicreg_ssps(tiny_corpus, tmp_path):
    """VICReg (expander 32-32-32) trains, logs its three terms; VICReg-SSPS
    resumes it and stores the expander outputs in Q'."""
    base, ssps = str(tmp_path / "vicreg"), str(tmp_path / "vicreg_ssps")
    train("vicreg.yaml", tiny_corpus, base, "--number_of_epochs=2", "--expander_dim=32")
    stats = epoch_stats(base)
    assert sorted(stats) == [1, 2] and {"vicreg_inv", "vicreg_var", "vicreg_cov"} <= set(stats[2])
    assert latest_state(base, "projector")["net.6.weight"].shape == (32, 32)
    train("vicreg_ssps.yaml", tiny_corpus, ssps, f"--init_from={base}/save", "--number_of_epochs=4",
          "--ssps_start_epoch=3", "--ssps_K=6", "--ssps_pos_queue_size=16", "--expander_dim=32",
          crops="{views: [2, 1.0], ref: [1, 1.5]}")
    stats = epoch_stats(ssps)
    assert sorted(stats) == [3, 4] and stats[4]["ssps_coverage"] > 0
    assert latest_state(ssps, "ssps")["state"]["pos_queue.embeddings"].shape == (1, 16, 32)


def test_swav_then_swav_ssps(tiny_corpus, tmp_path):
    """SwAV (queue from epoch 2) trains; SwAV-SSPS resumes it, samples and
    stores z2 in Q'; the queue is checkpointed."""
    base, ssps = str(tmp_path / "swav"), str(tmp_path / "swav_ssps")
    small = ["--swav_hidden_dim=32", "--swav_dim=8", "--swav_prototypes=12", "--swav_queue_size=16",
             "--swav_queue_start_epoch=2"]
    train("swav.yaml", tiny_corpus, base, "--number_of_epochs=2", *small)
    stats = epoch_stats(base)
    assert sorted(stats) == [1, 2] and stats[2]["loss"] > 0
    queue = latest_state(base, "loss")["queue"]
    assert queue.shape == (2, 16, 8) and torch.allclose(queue.norm(dim=-1), torch.ones(2, 16), atol=1e-5)
    train("swav_ssps.yaml", tiny_corpus, ssps, f"--init_from={base}/save", "--number_of_epochs=4",
          "--ssps_start_epoch=3", "--ssps_K=6", "--ssps_pos_queue_size=16", *small,
          crops="{views: [2, 1.0], ref: [1, 1.5]}")
    stats = epoch_stats(ssps)
    assert sorted(stats) == [3, 4] and stats[4]["ssps_coverage"] > 0
    assert latest_state(ssps, "ssps")["state"]["pos_queue.embeddings"].shape == (1, 16, 8)
