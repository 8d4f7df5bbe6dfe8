"""DLG-LC pseudo-label rounds: per-sample AAM loss, the gated objective,
PseudoLabelBrain's per-utterance losses, gate and label correction, the
round helpers (K checks, NMI) and the run_mini `dlg_lc` system."""

import functools
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from ssps_ext.brains.pseudo_label import PseudoLabelBrain, PseudoLabelState
from ssps_ext.hparams import load_hparams
from ssps_ext.pseudo_labels.gate import OPEN_GATE
from ssps_ext.pseudo_labels.objective import dlg_lc_objective, gate_ce, per_sample_ce
from ssps_ext.pseudo_labels.rounds import (
    check_cluster_count, class_centroids, cluster_pseudo_labels, label_nmi, round_clusters,
)

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams")
AAM = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))


def random_cosines(b, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, generator=g) * 1.8 - 0.9, torch.randint(0, c, (b,), generator=g)


# ---------------------------------------------------------------- objective
def test_per_sample_losses_are_the_components_of_the_batch_mean():
    cos, labels = random_cosines(7, 5)
    ce = per_sample_ce(AAM, cos.unsqueeze(1), labels)
    assert ce.shape == (7,)
    assert float(ce.mean()) == pytest.approx(float(AAM(cos.unsqueeze(1), labels.unsqueeze(1))), rel=1e-6)
    for i in range(7):  # each term by hand: target cosine -> cos(theta + m), all x 30
        logits = 30 * cos[i].clone()
        logits[labels[i]] = 30 * math.cos(math.acos(float(cos[i, labels[i]])) + 0.2)
        assert float(ce[i]) == pytest.approx(-float(torch.log_softmax(logits, 0)[labels[i]]), rel=1e-5)
    # one sample alone gives its own term
    assert float(AAM(cos[3:4].unsqueeze(1), labels[3:4, None])) == pytest.approx(float(ce[3]), rel=1e-6)


def test_gated_samples_get_no_gradient_and_the_rest_average_over_the_reliable():
    cos, labels = random_cosines(6, 4, seed=1)
    cos.requires_grad_(True)
    reliable = torch.tensor([True, False, True, True, False, True])
    loss, ce, counts = dlg_lc_objective(AAM, cos, labels, reliable)
    loss.backward()
    grad_norm = cos.grad.abs().sum(dim=1)
    assert (grad_norm[~reliable] == 0).all() and (grad_norm[reliable] > 0).all()
    assert float(loss) == pytest.approx(float(ce[reliable].mean()), rel=1e-6)
    assert {k: int(v) for k, v in counts.items()} == {"reliable": 4, "corrected": 0, "changed": 0, "dropped": 2}
    # nobody reliable: loss 0, still a graph (every rank runs the same backward)
    cos.grad = None
    loss, _, _ = dlg_lc_objective(AAM, cos, labels, torch.zeros(6, dtype=torch.bool))
    loss.backward()
    assert float(loss) == 0.0 and float(cos.grad.abs().sum()) == 0.0


def test_gate_ce_does_not_underflow_for_well_fitted_samples():
    """float32 log_softmax gives CE = 0 for samples fitted with s = 30; the
    gate's CE (float64 softplus of the log-sum of the other classes) keeps
    them positive, distinct and by hand, and equals the float32 CE where
    that one resolves it."""
    cos = torch.tensor([[1.0, -0.9, -0.8], [0.95, -0.5, -0.9], [0.9, 0.1, 0.0], [0.2, 0.3, 0.1]])
    labels = torch.zeros(4, dtype=torch.long)
    naive, stable = per_sample_ce(AAM, cos, labels), gate_ce(AAM, cos, labels)
    assert naive[:2].tolist() == [0.0, 0.0]  # underflow in float32
    assert stable.dtype == torch.float64 and (stable > 0).all() and stable[0] < stable[1]

    def by_hand(row):
        c = [float(v) for v in row]
        target = 30 * math.cos(math.acos(c[0]) + 0.2)  # AAM: s cos(theta + m) on the target
        return math.log1p(sum(math.exp(30 * v - target) for v in c[1:]))

    for i in range(4):
        assert float(stable[i]) == pytest.approx(by_hand(cos[i]), rel=1e-5)
    assert torch.allclose(stable[2:], naive[2:].double(), rtol=1e-4)


def test_label_correction_trains_on_the_corrected_label_and_drops_the_unconfident():
    cos = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.1, 0.0], [0.1, 0.2, 0.9]], requires_grad=True)
    labels = torch.tensor([0, 2, 0])
    reliable = torch.tensor([True, False, False])
    clean = torch.tensor([[0.9, 0.0, 0.0], [0.9, 0.0, 0.0], [0.5, 0.0, 0.5]])  # sample 2: tie -> p = 0.5, dropped
    loss, ce, counts = dlg_lc_objective(AAM, cos, labels, reliable, clean_cosines=clean)
    loss.backward()
    assert {k: int(v) for k, v in counts.items()} == {"reliable": 1, "corrected": 1, "changed": 1, "dropped": 1}
    expected = (per_sample_ce(AAM, cos[:2].detach(), torch.tensor([0, 0])).sum()) / 3  # whole-batch mean
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(cos.grad[2].abs().sum()) == 0.0 and float(cos.grad[1].abs().sum()) > 0
    assert torch.allclose(ce, per_sample_ce(AAM, cos.detach(), labels).double())  # the gate models CE w.r.t. y_i


# ---------------------------------------------------------------- Brain
def tiny_brain(lr=3e-3, checkpointer=None, **extra):
    torch.manual_seed(0)
    modules = {
        "compute_features": Fbank(n_mels=16), "mean_var_norm": InputNormalization(norm_type="sentence"),
        "encoder": ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8, se_channels=8),
    }
    hparams = dict(
        augment=False, view_augment=None, ssps=None, cluster_aware=None, emb_dim=16, crops={"views": [1, 0.5]}, seed=0,
        classifier=functools.partial(Classifier, input_size=16), loss=AAM, epoch_counter=EpochCounter(3),
        lr_schedule=lambda epoch, position, steps: lr, gate_start_epoch=2, lc_start_epoch=3, gate_on="current",
        lc_temperature=0.1, lc_confidence=0.5, init_encoder_key="encoder", classifier_init="random",
    )
    hparams.update(extra)
    return PseudoLabelBrain(modules, functools.partial(torch.optim.Adam, lr=lr), hparams,
                            run_opts={"device": "cpu"}, checkpointer=checkpointer)


def manifest(n):
    data = DynamicItemDataset({f"u{i}": {"utt_index": str(i), "spk_id": f"s{i % 4}", "wav": "x"} for i in range(n)})
    data.set_output_keys(["id", "index"])
    return data


def batches():
    """Two batches of 4 crops (8 utterances, 4 "voices"), by utterance index."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    f0 = torch.tensor([100.0, 150.0, 200.0, 260.0] * 2)[:, None]
    wav = torch.sin(2 * torch.pi * f0 * t) + 0.3 * torch.sin(2 * torch.pi * 3.1 * f0 * t)
    wav = (wav + 0.05 * torch.randn(8, 8000, generator=g))[:, None]  # (8, 1, T)

    def batch(rows):
        views = type("P", (), {"data": wav[rows]})
        return type("B", (), {"views": views, "index": torch.tensor(rows), "id": [f"u{i}" for i in rows]})

    return [batch([5, 0, 3, 6]), batch([1, 7, 2, 4])]


def run_epoch(brain, epoch, data):
    brain.hparams.epoch_counter.current = epoch
    brain.on_stage_start(__import__("speechbrain").Stage.TRAIN, epoch)
    for brain.step, batch in enumerate(data, 1):
        brain.fit_batch(batch)
    stats = brain.epoch_stats()
    brain.state.end_epoch()
    return stats


def test_brain_keeps_every_utterances_loss_by_index_then_gates_and_corrects(tmp_path):
    """Epoch 1: per-sample CE of each utterance stored at its index (equal
    to the loss recomputed on the stored weights before the step); epoch 2
    fits the gate on epoch 1's losses; epoch 3 adds label correction; shares
    sum to 1; the state is a checkpoint recoverable."""
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    brain = tiny_brain(checkpointer=Checkpointer(str(tmp_path)))
    brain.prepare_training(manifest(8), labels, 4)
    assert brain.modules.classifier.weight.shape == (4, 16)
    assert brain.checkpointer.recoverables["pseudo_labels"] is brain.state
    brain.init_optimizers()
    brain.steps_per_epoch = 2
    data = batches()
    with torch.no_grad():  # the loss of batch 0 before any step (the first step sees these weights)
        cos, _ = brain.compute_forward(data[0], None)
        first = per_sample_ce(AAM, cos, labels[data[0].index])
    stats = run_epoch(brain, 1, data)
    assert torch.isfinite(brain.state.previous).all()
    assert torch.allclose(brain.state.previous[data[0].index], first.double(), rtol=1e-4)
    assert stats["reliable"] == 1.0 and "gate_threshold" not in stats
    stats = run_epoch(brain, 2, data)
    assert int(brain.state.gate_epoch) == 2 and "gate_threshold" in stats
    assert stats["reliable"] + stats["dropped"] == pytest.approx(1.0) and stats["corrected"] == 0
    stats = run_epoch(brain, 3, data)
    assert stats["reliable"] + stats["corrected"] + stats["dropped"] == pytest.approx(1.0)


def test_gate_fit_uses_the_previous_epochs_losses_and_falls_back_when_unfittable():
    brain = tiny_brain()
    brain.prepare_training(manifest(400), torch.arange(400) % 4, 4)
    brain.hparams.epoch_counter.current = 1
    brain.on_train_epoch_start(1)  # before E_g: open gate, nothing logged
    assert float(brain.state.threshold) == OPEN_GATE and brain._stats == {}
    g = torch.Generator().manual_seed(0)  # log-losses: 60 % around -3, 40 % around +1 (crossing in (-2, 0))
    logs = torch.cat([torch.randn(240, generator=g) * 0.5 - 3, torch.randn(160, generator=g) * 0.5 + 1])
    brain.state.previous.copy_(logs.exp())
    brain.state.previous[7] = math.nan  # an utterance not seen last epoch is left out of the fit
    brain.hparams.epoch_counter.current = 2
    brain.on_train_epoch_start(2)
    tau = float(brain.state.threshold)
    assert -2.0 < tau < 0.0 and int(brain.state.gate_epoch) == 2
    cos, labels = random_cosines(4, 4)
    reliable = brain.reliable(cos, labels, torch.arange(4))
    assert torch.equal(reliable, torch.log(gate_ce(AAM, cos, labels)) <= tau)
    brain.hparams.gate_on = "previous"  # the previous epoch's loss decides instead
    assert brain.reliable(cos, labels, torch.tensor([0, 300, 7])).tolist() == [True, False, True]
    # all losses equal: no GMM; the previous threshold is kept and the fallback logged
    brain.state.previous.fill_(0.7)
    brain.hparams.epoch_counter.current = 3
    brain._stats = {}
    brain.on_train_epoch_start(3)
    assert float(brain.state.threshold) == pytest.approx(tau) and brain.epoch_stats()["gate_fallback"] == 1.0


def test_state_end_epoch_averages_what_was_seen_and_marks_the_rest_nan():
    state = PseudoLabelState(5)
    state.store(torch.tensor([3, 0]), torch.tensor([2.0, 0.5]))
    state.end_epoch()
    assert state.previous[[0, 3]].tolist() == [0.5, 2.0] and torch.isnan(state.previous[[1, 2, 4]]).all()
    assert state.epoch_seen.sum() == 0 and state.epoch_sum.sum() == 0


def test_prepare_training_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels in \[0, 4\)"):
        tiny_brain().prepare_training(manifest(8), torch.arange(8), 4)
    with pytest.raises(ValueError, match="gate_on"):
        tiny_brain(gate_on="both").prepare_training(manifest(8), torch.zeros(8, dtype=torch.long), 4)


def test_classifier_starts_at_the_class_centroids():
    """classifier_init: centroids: the new class weights are the normalised
    class means of the clustered embeddings; a class without members keeps
    its random row; without centroids, or with an unknown mode, an error."""
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(8, 16, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # class 3 is empty
    centroids = class_centroids(emb, labels, 4)
    unit = torch.nn.functional.normalize(emb, dim=1)
    assert torch.allclose(centroids[0], torch.nn.functional.normalize(unit[[0, 3, 6]].sum(0), dim=0), atol=1e-6)
    assert float(centroids[3].abs().sum()) == 0.0
    random_rows = tiny_brain(classifier_init="random")
    random_rows.prepare_training(manifest(8), labels, 4, centroids)
    brain = tiny_brain(classifier_init="centroids")
    brain.prepare_training(manifest(8), labels, 4, centroids)
    weight = brain.modules.classifier.weight.detach()
    assert torch.equal(weight[:3], centroids[:3])
    assert torch.equal(weight[3], random_rows.modules.classifier.weight.detach()[3])  # same seed, untouched row
    assert not torch.equal(random_rows.modules.classifier.weight.detach()[:3], centroids[:3])
    with pytest.raises(ValueError, match="needs the class centroids"):
        tiny_brain(classifier_init="centroids").prepare_training(manifest(8), labels, 4)
    with pytest.raises(ValueError, match="classifier_init"):
        tiny_brain(classifier_init="kmeans").prepare_training(manifest(8), labels, 4, centroids)


def test_warm_start_reads_only_the_named_encoder(tmp_path):
    """A round starts from another run's encoder (here its "teacher_encoder"):
    that is loaded; its classifier (another K), optimiser and epoch counter
    are not read, so the round's new classifier and epoch 0 stay."""
    source = tiny_brain()
    torch.manual_seed(5)
    teacher = ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8, se_channels=8)
    counter = EpochCounter(10)
    counter.current = 7
    Checkpointer(str(tmp_path), {"teacher_encoder": teacher, "encoder": source.modules.encoder, "counter": counter,
                                 "classifier": Classifier(16, out_neurons=9)}).save_checkpoint()
    brain = tiny_brain(checkpointer=Checkpointer(str(tmp_path / "round")), init_encoder_key="teacher_encoder")
    brain.prepare_training(manifest(8), torch.arange(8) % 4, 4)
    classifier = brain.modules.classifier.weight.detach().clone()
    brain.warm_start(str(tmp_path))
    for got, want in zip(brain.modules.encoder.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(got, want)
    assert torch.equal(brain.modules.classifier.weight, classifier) and brain.hparams.epoch_counter.current == 0
    brain.hparams.init_encoder_key = "student"
    with pytest.raises(FileNotFoundError, match="'student'"):
        brain.warm_start(str(tmp_path))


def ddp_worker(rank, folder):
    """Rank 0 sees only low-loss utterances, rank 1 only high-loss ones."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    brain = tiny_brain()
    brain.prepare_training(manifest(400), torch.arange(400) % 4, 4)
    g = torch.Generator().manual_seed(0)
    logs = torch.cat([torch.randn(200, generator=g) * 0.5 - 3, torch.randn(200, generator=g) * 0.5 + 1])
    mine = torch.arange(rank * 200, (rank + 1) * 200)
    brain.state.store(mine, logs[mine].exp())
    brain.state.end_epoch()
    brain.hparams.epoch_counter.current = 2
    brain.on_train_epoch_start(2)
    torch.save({"previous": brain.state.previous, "tau": brain.state.threshold, "logs": logs},
               os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_ranks_gather_the_losses_and_share_one_threshold(tmp_path):
    mp.spawn(ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.allclose(r0["previous"], r0["logs"].exp().double()) and torch.equal(r0["previous"], r1["previous"])
    assert float(r0["tau"]) == float(r1["tau"]) and -2.0 < float(r0["tau"]) < 0.0


# ---------------------------------------------------------------- rounds
def test_cluster_count_errors_and_per_round_k():
    with pytest.raises(ValueError, match="K = 10 clusters but train.csv has only 8 utterances"):
        check_cluster_count(8, 10)
    with pytest.raises(ValueError, match="only 3 utterances"):
        cluster_pseudo_labels(torch.randn(3, 4), 5)
    assert round_clusters(6, 2) == 6 and round_clusters([8, 6], 1) == 8
    with pytest.raises(ValueError, match="round 3"):
        round_clusters([8, 6], 3)


def test_clusters_of_separated_speakers_have_nmi_1_and_nmi_reads_the_column():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    x = centres.repeat_interleave(10, 0) + 0.01 * torch.randn(40, 16, generator=g)
    rows = [{"spk_id": f"s{i // 10}"} for i in range(40)]
    labels = cluster_pseudo_labels(x, 4, seed=1)
    assert label_nmi(labels, rows, "spk_id") == pytest.approx(1.0)
    assert label_nmi(torch.arange(40) % 2, rows, "spk_id") < 0.1
    assert label_nmi(labels, rows, "rec_id") is None


def test_run_mini_dlg_lc_system_resumes_dino_with_its_driver():
    import run_mini

    assert run_mini.SYSTEMS["dlg_lc"][:2] == ("dlg_lc.yaml", "dino")
    assert run_mini.selection(["dlg_lc"]) == ["dino", "dlg_lc"]
    overrides = run_mini.mini_overrides("dlg_lc")
    hparams, _ = load_hparams(os.path.join(HPARAMS, "dlg_lc.yaml"),
                              {"data_folder": "/x", "test_data_folder": "/x", "init_from": "/y", **overrides})
    assert hparams["brain_class"] is PseudoLabelBrain and hparams["init_encoder_key"] == "teacher_encoder"
    assert 2 <= hparams["gate_start_epoch"] <= hparams["lc_start_epoch"] <= hparams["number_of_epochs"]
    assert hparams["crops"]["views"][0] == 1 and hparams["emb_dim"] == 128


def test_agglomerative_merge_recovers_well_separated_groups():
    """k-means into 12 clusters, merged into 4 by agglomerative clustering:
    each of 4 tight groups of points becomes one pseudo-label."""
    from sklearn.metrics import normalized_mutual_info_score

    from ssps_ext.pseudo_labels.rounds import cluster_pseudo_labels

    g = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:4]  # 4 orthogonal directions
    groups = torch.arange(4).repeat_interleave(30)
    x = torch.nn.functional.normalize(centres[groups] + 0.05 * torch.randn(120, 8, generator=g), dim=1)
    labels = cluster_pseudo_labels(x, 4, n_iter=10, seed=0, backend="torch", ahc_from=12)
    assert normalized_mutual_info_score(groups.numpy(), labels.numpy()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ahc_from = 4 must exceed n_clusters = 4"):
        cluster_pseudo_labels(x, 4, ahc_from=4)
