"""End-to-end runs of recipes/VoxCeleb/SSPS/train.py on the tiny corpus (CPU)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import seed_summary
from conftest import RECIPE

TINY = [
    "--channels=16", "--emb_dim=16", "--batch_size=8", "--num_workers=0", "--prep_workers=1",
    "--noprogressbar", "--lr=0.003",
]


def train(hparams, corpus, out, *extra, crops="{views: [2, 1.0]}", launcher=None, returncode=0):
    """Runs train.py (or ``launcher`` + its arguments) and checks its exit status."""
    args = [f"--data_folder={corpus}", f"--test_data_folder={corpus}", f"--output_folder={out}", f"--manifest_folder={out}/../manifests",
            *TINY, *extra, f"--crops={crops}"]
    options = {a.split("=", 1)[0]: a for a in args}  # a later --key=value replaces an earlier one
    cmd = [sys.executable, *(launcher or [os.path.join(RECIPE, "train.py")]),
           os.path.join(RECIPE, "hparams", hparams), *options.values()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([RECIPE, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == returncode, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def epoch_stats(out):
    """{epoch: {stat: value}} parsed from train_log.txt."""
    return seed_summary.read_log(os.path.join(out, "train_log.txt"))


@pytest.fixture(scope="module")
def simclr_run(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "simclr")
    train("simclr.yaml", tiny_corpus, out, "--number_of_epochs=4")
    return out


def test_simclr_verification_json(simclr_run):
    losses = [s["loss"] for _, s in sorted(epoch_stats(simclr_run).items())]
    assert len(losses) == 4  # four epochs logged
    result = json.load(open(os.path.join(simclr_run, "verification.json")))
    assert set(result) >= {"EER", "minDCF_0.01", "minDCF_0.05", "n_trials", "trials_file", "checkpoint"}
    assert 0 <= result["EER"] <= 100 and result["n_trials"] == 80 and "CKPT+" in result["checkpoint"]
    assert list(result["lists"]) == ["VoxCeleb1-O"] and result["lists"]["VoxCeleb1-O"]["EER"] == result["EER"]
    assert os.path.isfile(os.path.join(simclr_run, "hyperparams.yaml"))
    for picture in ("det.png", "scores.png", "tsne.png"):
        assert open(os.path.join(simclr_run, picture), "rb").read(4) == b"\x89PNG"


def test_exported_model_works_with_speechbrain_inference(simclr_run, tiny_corpus, tmp_path):
    """The exported folder, copied elsewhere and loaded from there by
    SpeechBrain's SpeakerRecognition, scores the first trials exactly as the
    training-time evaluation did."""
    from speechbrain.inference.speaker import SpeakerRecognition

    moved = str(tmp_path / "elsewhere" / "model")
    shutil.copytree(os.path.join(simclr_run, "inference"), moved)
    hidden = os.path.join(simclr_run, "inference.hidden")
    os.rename(os.path.join(simclr_run, "inference"), hidden)  # the original is gone while the copy loads
    try:
        model = SpeakerRecognition.from_hparams(source=moved, savedir=str(tmp_path / "savedir"))
    finally:
        os.rename(hidden, os.path.join(simclr_run, "inference"))
    settings = [line for line in open(os.path.join(moved, "hyperparams.yaml")) if not line.startswith("#")]
    assert not [line for line in settings if "/" in line]  # no path of any kind outside the comments
    rows = [line.split() for line in open(os.path.join(simclr_run, "scores.txt"))][:6]
    for first, second, _, expected in rows:
        score, _ = model.verify_files(os.path.join(tiny_corpus, "wav", first), os.path.join(tiny_corpus, "wav", second))
        assert float(score) == pytest.approx(float(expected), abs=1e-4), (first, second)
    assert len({round(float(r[3]), 3) for r in rows}) > 1  # the scores differ from pair to pair
    result = json.load(open(os.path.join(simclr_run, "verification.json")))
    threshold = model.hparams.eer_threshold
    assert threshold == pytest.approx(result["EER_threshold"], abs=1e-6)
    from ssps_ext.inference import SSLSpeakerRecognition

    calibrated = SSLSpeakerRecognition.from_hparams(source=moved, savedir=str(tmp_path / "savedir2"))
    decisions = []
    for first, second, _, expected in rows:
        score, decision = calibrated.verify_files(
            os.path.join(tiny_corpus, "wav", first), os.path.join(tiny_corpus, "wav", second)
        )
        assert float(score) == pytest.approx(float(expected), abs=1e-4)
        if abs(float(expected) - threshold) > 1e-4:  # the trial that sets the threshold may round either way
            decisions.append(bool(decision) == (float(expected) > threshold))
    assert len(decisions) >= 5 and all(decisions)
    card = open(os.path.join(moved, "README.md")).read()
    assert f"| {result['EER']:.2f} |" in card and "veri_test2.txt" in card and "train.py" in card
    assert model.encode_batch(torch.zeros(1, 16000) + 0.01).shape == (1, 1, 16)


def test_standalone_evaluation_of_a_checkpoint(simclr_run, tiny_corpus):
    ckpt = json.load(open(os.path.join(simclr_run, "verification.json")))["checkpoint"]
    out = simclr_run + "_eval"
    train("simclr.yaml", tiny_corpus, out, "--test_only", f"--eval_checkpoint={ckpt}",
          "--score_norm_cohort=20", "--score_norm_top_k=5")
    again = json.load(open(os.path.join(out, "verification.json")))
    first = json.load(open(os.path.join(simclr_run, "verification.json")))
    assert again["EER"] == pytest.approx(first["EER"]) and again["checkpoint"] == ckpt
    norm = again["score_norm"]  # reported next to the raw scores
    assert (norm["cohort"], norm["top_k"]) == (20, 5)
    assert set(norm) == {"cohort", "top_k", "mean", "z", "t", "s", "as"}
    assert all(norm[v]["n_trials"] == again["n_trials"] for v in ("mean", "z", "t", "s", "as"))
    assert "score_norm" not in first


def test_test_only_on_a_finished_run_scores_every_list_without_training(simclr_run, tiny_corpus, tmp_path):
    """``--test_only`` in a finished run's folder (copied), asking for more
    epochs and three trial lists: no training, no new checkpoint; the lists
    are embedded once and scored; the cohort embeddings are cached in the
    checkpoint folder and reused by the next evaluation."""
    run = str(tmp_path / "run")
    shutil.copytree(simclr_run, run, ignore=shutil.ignore_patterns("inference"))
    ckpts = sorted(os.listdir(os.path.join(run, "save")))
    log = open(os.path.join(run, "train_log.txt")).read()
    lists = (f"--verification_lists={{VoxCeleb1-E: {tiny_corpus}/list_test_all2.txt, "
             f"VoxCeleb1-H: {tiny_corpus}/list_test_hard2.txt}}")
    args = ["--test_only", "--number_of_epochs=6", lists, "--score_norm_cohort=12", "--score_norm_top_k=4"]
    train("simclr.yaml", tiny_corpus, run, *args)
    saved = sorted(os.listdir(os.path.join(run, "save")))
    assert [c for c in saved if c.startswith("CKPT+")] == ckpts  # nothing trained, nothing saved
    assert open(os.path.join(run, "train_log.txt")).read() == log
    result = json.load(open(os.path.join(run, "verification.json")))
    first = json.load(open(os.path.join(simclr_run, "verification.json")))
    assert list(result["lists"]) == ["VoxCeleb1-O", "VoxCeleb1-E", "VoxCeleb1-H"]
    assert result["EER"] == pytest.approx(first["EER"]) and result["checkpoint"].startswith(run)
    for name, file in (("VoxCeleb1-E", "list_test_all2.txt"), ("VoxCeleb1-H", "list_test_hard2.txt")):
        n_lines = sum(1 for _ in open(os.path.join(tiny_corpus, file)))
        assert result["lists"][name]["n_trials"] == n_lines and "score_norm" in result["lists"][name]
        assert sorted(os.listdir(os.path.join(run, name))) == ["det.png", "scores.png", "scores.txt"]
    assert os.path.isfile(os.path.join(run, "inference", "embedding_model.ckpt"))  # exported again
    cache = glob.glob(os.path.join(result["checkpoint"], "cohort_12_*.pt"))
    assert len(cache) == 1
    train("simclr.yaml", tiny_corpus, run, *args)
    again = json.load(open(os.path.join(run, "verification.json")))
    assert again["lists"] == result["lists"]
    assert "cohort embeddings from" in open(os.path.join(run, "log.txt")).read()


def test_simclr_ssps_resumes_with_schedule_and_diagnostics(simclr_run, tiny_corpus):
    out = simclr_run + "_ssps"
    train(
        "simclr_ssps.yaml", tiny_corpus, out, f"--init_from={simclr_run}/save", "--number_of_epochs=6",
        "--ssps_start_epoch=5", "--ssps_K=6", "--ssps_pos_queue_size=16",
        crops="{views: [2, 1.0], ref: [1, 1.5]}",
    )
    stats = epoch_stats(out)
    assert sorted(stats) == [5, 6]  # continues the epoch counter of the SimCLR run
    for epoch in (5, 6):
        for key in ("ssps_coverage", "ssps_speaker_acc", "ssps_recording_acc",
                    "ssps_kmeans_nmi_speaker", "ssps_kmeans_nmi_recording"):
            assert key in stats[epoch], key
    assert stats[6]["ssps_coverage"] > 0
    assert os.path.isfile(os.path.join(out, "verification.json"))


def test_resume_continues_exactly(tiny_corpus, tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train("simclr.yaml", tiny_corpus, straight, "--number_of_epochs=2")
    train("simclr.yaml", tiny_corpus, split, "--number_of_epochs=1")
    train("simclr.yaml", tiny_corpus, split, "--number_of_epochs=2")  # resumes after epoch 1
    a, b = epoch_stats(straight), epoch_stats(split)
    assert a[1]["loss"] == b[1]["loss"]
    assert a[2]["loss"] == pytest.approx(b[2]["loss"], rel=1e-6)


def latest_state(out, name):
    ckpts = sorted(glob.glob(os.path.join(out, "save", "CKPT+*")), key=os.path.getmtime)
    return torch.load(os.path.join(ckpts[-1], f"{name}.ckpt"), weights_only=True)


def assert_same_tensors(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{k}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def newest_checkpoint(out):
    """(meta of CKPT.yaml, the Brain's counters) of the newest checkpoint."""
    import yaml

    path = sorted(glob.glob(os.path.join(out, "save", "CKPT+*")), key=os.path.getmtime)[-1]
    return yaml.safe_load(open(os.path.join(path, "CKPT.yaml"))), yaml.safe_load(open(os.path.join(path, "brain.ckpt")))


def assert_sigkill_resume_is_exact(hparams, corpus, tmp_path, args, crops, first, last, states):
    """Runs ``hparams`` straight through epochs ``first``..``last`` with an
    intra-epoch checkpoint after every step and 2 loader workers, and again
    SIGKILLed inside step 3 of epoch ``first + 1``, then restarted with the
    same command: the restart resumes after batch 2 of that epoch, and the
    checkpoints ``states``, every epoch's logged statistics (the interrupted
    epoch's included) must be bit-equal; no intra-epoch checkpoint is left."""
    args = [*args, "--ckpt_interval_minutes=0", "--ckpt_interval_steps=1", "--num_workers=2"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train(hparams, corpus, straight, *args, crops=crops)
    kill = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_during_step.py"), str(first + 1), "3"]
    train(hparams, corpus, killed, *args, crops=crops, launcher=kill, returncode=-9)
    assert sorted(epoch_stats(killed)) == [first]  # died during epoch first + 1
    meta, brain = newest_checkpoint(killed)
    assert meta["end-of-epoch"] is False and brain["step"] == 2  # saved after batch 2
    train(hparams, corpus, killed, *args, crops=crops)
    assert "resumed inside epoch %d after batch 2" % (first + 1) in open(os.path.join(killed, "log.txt")).read()
    assert sorted(epoch_stats(killed)) == list(range(first, last + 1))
    for name in states:
        assert_same_tensors(latest_state(straight, name), latest_state(killed, name), name)
    drop = ("epoch_s", "start_s")  # wall-clock times
    for epoch in range(first, last + 1):
        a, b = epoch_stats(straight)[epoch], epoch_stats(killed)[epoch]
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}, epoch
    for out in (straight, killed):
        assert newest_checkpoint(out)[0]["end-of-epoch"] is True
        for path in glob.glob(os.path.join(out, "save", "CKPT+*")):
            assert yaml_meta(path)["end-of-epoch"] is True, path


def yaml_meta(ckpt):
    import yaml

    return yaml.safe_load(open(os.path.join(ckpt, "CKPT.yaml")))


def test_simclr_sigkill_mid_epoch_resumes_at_the_same_batch(simclr_run, tiny_corpus, tmp_path):
    """Plain SimCLR with augmentation, killed inside a step and resumed from
    its intra-epoch checkpoint, ends bit-identical to an uninterrupted run."""
    args = [f"--init_from={simclr_run}/save", "--number_of_epochs=6"]
    assert_sigkill_resume_is_exact("simclr.yaml", tiny_corpus, tmp_path, args, "{views: [2, 1.0]}",
                                   5, 6, ("encoder", "optimizer", "rng"))


def test_sigkill_mid_epoch_then_resume_is_bit_identical(simclr_run, tiny_corpus, tmp_path):
    """SimCLR-SSPS with augmentation, killed with SIGKILL inside a step of its
    second epoch and restarted with the same command (from the intra-epoch
    checkpoint), ends with the same encoder, optimiser, SSPS queues /
    assignments / generator and RNG state, bit for bit, as an uninterrupted
    run."""
    args = [f"--init_from={simclr_run}/save", "--number_of_epochs=7", "--ssps_start_epoch=5", "--ssps_K=6",
            "--ssps_pos_queue_size=16"]
    assert_sigkill_resume_is_exact("simclr_ssps.yaml", tiny_corpus, tmp_path, args, "{views: [2, 1.0], ref: [1, 1.5]}",
                                   5, 7, ("encoder", "optimizer", "ssps", "rng"))


DINO_TINY = [
    "--dino_out_dim=64", "--dino_hidden_dim=32", "--dino_bottleneck_dim=16", "--schedule_epochs=4",
    "--lr_schedule={warmup_epochs: 1}", "--lr=0.05",
]


DINO_SSPS_CROPS = "{global_views: [2, 1.0], local_views: [4, 0.5], ref: [1, 1.5]}"


@pytest.fixture(scope="module")
def dino_run(tiny_corpus, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("runs") / "dino")
    crops = "{global_views: [2, 1.0], local_views: [4, 0.5]}"
    train("dino.yaml", tiny_corpus, base, "--number_of_epochs=2", *DINO_TINY, crops=crops)
    return base


def test_dino_then_dino_ssps(dino_run, tiny_corpus, tmp_path):
    base, ssps = dino_run, str(tmp_path / "dino_ssps")
    stats = epoch_stats(base)
    assert sorted(stats) == [1, 2] and all(s["loss"] > 0 for s in stats.values())
    assert stats[2]["teacher_momentum"] > 0.996
    train(
        "dino_ssps.yaml", tiny_corpus, ssps, f"--init_from={base}/save", "--number_of_epochs=4",
        "--ssps_start_epoch=3", "--ssps_K=6", "--ssps_pos_queue_size=16", "--ssps_storage=bottleneck", *DINO_TINY,
        crops=DINO_SSPS_CROPS,
    )
    stats = epoch_stats(ssps)
    assert sorted(stats) == [3, 4] and stats[4]["ssps_coverage"] > 0
    result = json.load(open(os.path.join(ssps, "verification.json")))
    assert 0 <= result["EER"] <= 100


def test_dino_cadino_rounds(dino_run, tiny_corpus, tmp_path):
    """CA-DINO from the DINO run: a clustering round at epochs 3 and 4 (K = 6,
    the tiny corpus's speakers), global crops from cluster mates."""
    out = str(tmp_path / "cadino")
    train("dino_cadino.yaml", tiny_corpus, out, f"--init_from={dino_run}/save", "--number_of_epochs=4",
          "--cadino_start_epoch=3", "--cadino_K=[6]", "--cadino_interval=1", *DINO_TINY,
          crops="{global_views: [2, 1.0], local_views: [4, 0.5]}")
    stats = epoch_stats(out)
    assert sorted(stats) == [3, 4]
    for epoch in (3, 4):
        assert stats[epoch]["ca_K"] == 6 and stats[epoch]["ca_cross_share"] == 1.0
        assert "ca_partner_speaker_acc" in stats[epoch] and "ca_nmi_speaker" in stats[epoch]
    assert os.path.isfile(os.path.join(out, "verification.json"))


def test_periodic_eer_is_logged_and_changes_no_weight(simclr_run, tiny_corpus, tmp_path):
    """eval_interval_epochs: 2 puts the current weights' EER in the train log
    at epochs 2 and 4; training is untouched (same weights as the run
    without it), and at the last epoch it is the final evaluation's EER."""
    out = str(tmp_path / "periodic")
    train("simclr.yaml", tiny_corpus, out, "--number_of_epochs=4", "--eval_interval_epochs=2", "--eval_average_last=1")
    logged = {}
    for line in open(os.path.join(out, "train_log.txt")):
        epoch = int(line.split("epoch: ")[1].split(",")[0])
        logged[epoch] = float(line.split("EER: ")[1].split(",")[0]) if "EER: " in line else None
    assert [e for e, v in sorted(logged.items()) if v is not None] == [2, 4]
    result = json.load(open(os.path.join(out, "verification.json")))
    assert logged[4] == pytest.approx(result["EER"], abs=0.0051)  # the log prints 2 decimals
    assert_same_tensors(latest_state(out, "encoder"), latest_state(simclr_run, "encoder"), "encoder")


def test_dino_ssps_sigkill_mid_epoch_then_resume_is_bit_identical(dino_run, tiny_corpus, tmp_path):
    """DINO-SSPS killed with SIGKILL inside a step of its second SSPS epoch and
    restarted ends with the same student, head, teacher, centre, optimiser,
    SSPS state and RNG state, bit for bit, as an uninterrupted run."""
    args = [f"--init_from={dino_run}/save", "--number_of_epochs=5", "--ssps_start_epoch=3", "--ssps_K=6",
            "--ssps_pos_queue_size=16", "--ssps_storage=bottleneck", *DINO_TINY]
    assert_sigkill_resume_is_exact("dino_ssps.yaml", tiny_corpus, tmp_path, args, DINO_SSPS_CROPS, 3, 5, (
        "encoder", "head", "teacher_encoder", "teacher_head", "dino_loss", "optimizer", "ssps", "rng"))
