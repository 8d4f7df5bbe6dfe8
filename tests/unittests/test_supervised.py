"""Supervised baseline: speaker-label mapping (ssps_ext/labels.py), the
classifier sized from the manifest, the AAM loss of supervised.yaml, and
SupervisedBrain training steps on a fixed batch."""

import functools
import math
import os

import pytest
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from ssps_ext.brains.supervised import SupervisedBrain
from ssps_ext.hparams import load_hparams
from ssps_ext.labels import add_speaker_labels, speaker_encoder

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams")


def manifest_rows(speakers):
    """DynamicItemDataset rows as train.csv gives them (strings), one per utterance."""
    return {f"utt{i}": {"spk_id": spk, "utt_index": str(i), "wav": f"/x/{spk}/{i}.wav"} for i, spk in enumerate(speakers)}


# ---------------------------------------------------------------- labels
def test_speaker_labels_follow_the_sorted_speaker_names():
    data = DynamicItemDataset(manifest_rows(["id10270", "id00012", "id10270", "id05000", "id00012"]))
    data.set_output_keys(["id", "utt_index"])
    encoder = add_speaker_labels(data)
    assert len(encoder) == 3
    assert [data[i]["spk_label"] for i in range(5)] == [2, 0, 2, 1, 0]
    assert data[0] == {"id": "utt0", "utt_index": "0", "spk_label": 2}  # other output keys kept
    assert encoder.decode_ndim([0, 1, 2]) == ["id00012", "id05000", "id10270"]


def test_speaker_count_must_match_the_yaml_value_and_the_column_must_exist():
    data = DynamicItemDataset(manifest_rows(["a", "b", "c", "a"]))
    assert len(speaker_encoder(data, expected=3)) == 3
    with pytest.raises(ValueError, match="n_speakers = 5 but the training manifest has 3 speakers"):
        speaker_encoder(data, expected=5)
    no_column = DynamicItemDataset({"u": {"wav": "x.wav"}})
    with pytest.raises(KeyError, match="no 'spk_id' column"):
        speaker_encoder(no_column)


# ---------------------------------------------------------------- yaml
def test_yaml_aam_loss_is_margin_02_scale_30_on_hand_built_cosines():
    """supervised.yaml's loss on cosines (2 samples, 3 speakers) equals
    -mean log softmax with the target cosine replaced by cos(theta + 0.2),
    all scaled by 30."""
    hparams, _ = load_hparams(os.path.join(HPARAMS, "supervised.yaml"),
                              {"data_folder": "/nonexistent", "test_data_folder": "/nonexistent"})
    loss = hparams["loss"]
    assert isinstance(loss, LogSoftmaxWrapper) and isinstance(loss.loss_fn, AdditiveAngularMargin)
    assert (loss.loss_fn.margin, loss.loss_fn.scale) == (0.2, 30)
    assert hparams["crops"] == {"views": [1, 2.0]} and hparams["n_speakers"] is None
    cos = torch.tensor([[0.8, 0.1, -0.2], [0.3, 0.5, 0.4]])
    targets = torch.tensor([0, 2])
    expected = 0.0
    for row, t in zip(cos, targets):
        logits = 30 * row.clone()
        logits[t] = 30 * math.cos(math.acos(float(row[t])) + 0.2)
        expected -= float(torch.log_softmax(logits, dim=0)[t]) / 2
    assert float(loss(cos.unsqueeze(1), targets.unsqueeze(1))) == pytest.approx(expected, rel=1e-5)
    classifier = hparams["classifier"](out_neurons=7)
    assert isinstance(classifier, Classifier) and classifier.weight.shape == (7, hparams["emb_dim"])


# ---------------------------------------------------------------- Brain
class _Padded:
    def __init__(self, data):
        self.data = data


def tiny_brain(lr, n_speakers=None, checkpointer=None):
    torch.manual_seed(0)
    modules = {
        "compute_features": Fbank(n_mels=16), "mean_var_norm": InputNormalization(norm_type="sentence"),
        "encoder": ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8, se_channels=8),
    }
    hparams = dict(
        augment=False, view_augment=None, ssps=None, cluster_aware=None, emb_dim=16, crops={"views": [1, 0.5]},
        n_speakers=n_speakers, classifier=functools.partial(Classifier, input_size=16),
        loss=LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30)), epoch_counter=EpochCounter(1),
        lr_schedule=lambda epoch, position, steps: lr,
    )
    return SupervisedBrain(modules, functools.partial(torch.optim.Adam, lr=lr), hparams,
                           run_opts={"device": "cpu"}, checkpointer=checkpointer)


def test_prepare_training_sizes_and_registers_the_classifier(tmp_path):
    data = DynamicItemDataset(manifest_rows(["s3", "s1", "s2", "s1", "s4"]))
    data.set_output_keys(["id"])
    brain = tiny_brain(1e-3, checkpointer=Checkpointer(str(tmp_path)))
    encoder = brain.prepare_training(data)
    assert len(encoder) == 4 and brain.modules.classifier.weight.shape == (4, 16)
    assert brain.checkpointer.recoverables["classifier"] is brain.modules.classifier
    assert [data[i]["spk_label"] for i in range(5)] == [2, 0, 1, 0, 3]
    with pytest.raises(ValueError, match="n_speakers = 3"):
        tiny_brain(1e-3, n_speakers=3).prepare_training(DynamicItemDataset(manifest_rows(["a", "b"])))
    bad_crops = tiny_brain(1e-3)
    bad_crops.hparams.crops = {"views": [2, 2.0]}
    with pytest.raises(ValueError, match="'views' with 1 crop"):
        bad_crops.prepare_training(DynamicItemDataset(manifest_rows(["a", "b"])))


def test_fixed_batch_aam_loss_decreases_through_fit_batch():
    """Eight utterances of four "voices" (two each), one crop each: 30 full
    training steps (forward, AAM-softmax, Adam on encoder and classifier)
    cut the loss on the same batch by more than half and reach full accuracy
    on it; with the learning rate at 0 the loss stays put."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    f0 = torch.tensor([100.0, 100.0, 150.0, 150.0, 200.0, 200.0, 260.0, 260.0])[:, None]
    clean = torch.sin(2 * torch.pi * f0 * t) + 0.3 * torch.sin(2 * torch.pi * 3.1 * f0 * t)
    views = (clean + 0.05 * torch.randn(8, 8000, generator=g))[:, None]  # (8, 1, T)
    speakers = ["v1", "v1", "v2", "v2", "v3", "v3", "v4", "v4"]
    data = DynamicItemDataset(manifest_rows(speakers))
    data.set_output_keys(["id"])

    def run(lr):
        brain = tiny_brain(lr)
        brain.prepare_training(data)
        labels = torch.tensor([data[i]["spk_label"] for i in range(8)])
        assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        batch = type("B", (), {"views": _Padded(views), "spk_label": labels, "id": list("abcdefgh")})
        brain.init_optimizers()
        brain.steps_per_epoch, brain.step = 30, 0
        brain.hparams.epoch_counter.current = 1
        losses = []
        for _ in range(30):
            brain.step += 1
            losses.append(float(brain.fit_batch(batch)))
        with torch.no_grad():  # training mode, as the steps
            predicted = brain.compute_forward(batch, None).squeeze(1).argmax(dim=-1)  # (8, 1, C) -> (8,)
        return losses, brain.epoch_stats(), predicted, labels

    trained, stats, predicted, labels = run(3e-3)
    assert trained[-1] < 0.5 * trained[0], trained
    assert set(stats) == {"loss", "accuracy"} and stats["loss"] == pytest.approx(sum(trained) / 30, rel=1e-5)
    assert predicted.tolist() == labels.tolist()
    frozen, _, _, _ = run(0.0)
    assert abs(frozen[-1] - frozen[0]) < 0.05 * frozen[0], frozen


def test_run_mini_supervised_system_loads_with_its_mini_settings():
    """run_mini.py's `supervised` system: supervised.yaml with mini_cpu.yaml's
    `common` and `supervised` sections, no parent run."""
    import run_mini

    assert run_mini.SYSTEMS["supervised"] == ("supervised.yaml", None, ["supervised"])
    assert run_mini.selection(["supervised"]) == ["supervised"]
    overrides = run_mini.mini_overrides("supervised")
    assert (overrides["number_of_epochs"], overrides["aug_prob"], overrides["emb_dim"]) == (12, 0.5, 128)
    hparams, _ = load_hparams(os.path.join(HPARAMS, "supervised.yaml"),
                              {"data_folder": "/nonexistent", "test_data_folder": "/nonexistent", **overrides})
    assert hparams["classifier"](out_neurons=48).weight.shape == (48, 128)
    assert hparams["brain_class"] is SupervisedBrain
