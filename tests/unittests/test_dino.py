"""DINO: loss, centre, schedules, last-layer freezing, multi-crop, SSPS."""

import functools
import math

import pytest
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.epoch_loop import EpochCounter

from ssps_ext.brains.dino import DINOBrain
from ssps_ext.heads import DINOHead
from ssps_ext.losses.dino import DINOLoss
from ssps_ext.schedulers import CosineMomentum, WarmupCosine
from ssps_ext.ssps import SSPS


def test_loss_matches_hand_computation_and_centre_update():
    g = torch.Generator().manual_seed(0)
    b, K = 3, 5
    student, teacher = torch.randn(4 * b, K, generator=g), torch.randn(2 * b, K, generator=g)
    loss_fn = DINOLoss(out_dim=K, n_global=2, n_crops=4, student_temp=0.1, teacher_temp=0.04)
    loss_fn.center.fill_(0.3)
    loss, stats = loss_fn(student, teacher, epoch=1)
    total, pairs = 0.0, 0
    for t in range(2):
        for s in range(4):
            if s == t:
                continue
            for i in range(b):
                q = torch.softmax((teacher[t * b + i] - 0.3) / 0.04, 0)
                log_p = torch.log_softmax(student[s * b + i] / 0.1, 0)
                total += float(-(q * log_p).sum()) / b
            pairs += 1
    assert pairs == 6 and loss.item() == pytest.approx(total / pairs, rel=1e-5)
    expected_centre = 0.9 * 0.3 + 0.1 * teacher.mean(0)
    assert torch.allclose(loss_fn.center[0], expected_centre, atol=1e-6)
    assert stats["teacher_entropy"] >= 0


def test_teacher_temperature_warmup():
    loss_fn = DINOLoss(out_dim=4, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_epochs=3)
    assert [round(loss_fn.teacher_temperature(e), 4) for e in (1, 2, 3, 4)] == [0.04, 0.05, 0.06, 0.07]


def test_schedules_follow_the_reference():
    momentum = CosineMomentum(0.996, 1.0, total_epochs=100)
    assert momentum(1, 0, 10) == pytest.approx(0.996)
    assert momentum(51, 500, 10) == pytest.approx(0.998)
    assert momentum(100, 1000, 10) == pytest.approx(1.0)
    lr = WarmupCosine(0.2, final=1e-5, warmup_epochs=10, total_epochs=100)
    assert lr(1, 0, 100) == 0.0 and lr(6, 500, 100) == pytest.approx(0.1)
    assert lr(81, 8000, 100) == pytest.approx(0.0412, abs=5e-4)  # first DINO-SSPS epoch
    assert lr(100, 9900, 100) == pytest.approx(0.0059, abs=5e-4)  # never reaches 1e-5


def tiny_brain(storage="logits", ssps=None):
    torch.manual_seed(0)
    encoder = ECAPA_TDNN(8, channels=[8, 8, 8, 8, 24], lin_neurons=8, attention_channels=8, se_channels=8)
    head = DINOHead(8, 16, hidden_dim=8, bottleneck_dim=4)
    modules = {
        # global norm: its running statistics are plain tensor attributes, which the non-finite guard must restore too
        "compute_features": Fbank(n_mels=8), "mean_var_norm": InputNormalization(norm_type="global", std_norm=False),
        "encoder": encoder, "head": head,
        "teacher_encoder": ECAPA_TDNN(8, channels=[8, 8, 8, 8, 24], lin_neurons=8, attention_channels=8, se_channels=8),
        "teacher_head": DINOHead(8, 16, hidden_dim=8, bottleneck_dim=4), "dino_loss": DINOLoss(16, n_crops=6),
    }
    hparams = dict(
        augment=False, view_augment=None, ssps=ssps, ssps_reference="crop", ssps_storage=storage, dino_out_dim=16,
        dino_bottleneck_dim=4,
        emb_dim=8, batch_size=4, freeze_last_layer_epochs=1, clip_grad=3.0, epoch_counter=EpochCounter(10),
        momentum_schedule=CosineMomentum(0.9, 1.0, 10), dino_loss=modules["dino_loss"],
    )
    brain = DINOBrain(
        modules, functools.partial(torch.optim.SGD, lr=0.1), hparams, run_opts={"device": "cpu"}
    )
    for s, t in (("encoder", "teacher_encoder"), ("head", "teacher_head")):
        brain.modules[t].load_state_dict(brain.modules[s].state_dict())
        brain.modules[t].requires_grad_(False)
    brain.init_optimizers()
    brain.steps_per_epoch = 10
    brain.hparams.epoch_counter.current = 1
    return brain


class Batch:
    def __init__(self, b=4, g=2000, loc=1000, ref=None):
        gen = torch.Generator().manual_seed(1)
        self.global_views = type("P", (), {"data": 0.1 * torch.randn(b, 2, g, generator=gen)})
        self.local_views = type("P", (), {"data": 0.1 * torch.randn(b, 4, loc, generator=gen)})
        self.index = type("P", (), {"data": torch.arange(b)})
        if ref:
            self.ref = type("P", (), {"data": 0.1 * torch.randn(b, 1, ref, generator=gen)})


def test_multicrop_shapes_and_last_layer_freezing():
    brain = tiny_brain()
    student, teacher, bottleneck, ref = brain.compute_forward(Batch(), None)
    assert student.shape == (6 * 4, 16) and teacher.shape == (2 * 4, 16) and bottleneck.shape == (8, 4)
    assert ref is None
    last = brain.modules.head.last_layer.parametrizations.weight.original1
    mlp = brain.modules.head.mlp[0].weight
    for epoch, frozen in ((1, True), (2, False)):
        brain.hparams.epoch_counter.current = epoch
        before_last, before_mlp = last.detach().clone(), mlp.detach().clone()
        loss = brain.compute_objectives(brain.compute_forward(Batch(), None), Batch(), None)
        loss.backward()
        brain.optimizers_step()
        assert torch.equal(last, before_last) == frozen
        assert not torch.equal(mlp, before_mlp)
    assert brain.modules.head.last_layer.parametrizations.weight.original0.requires_grad is False


def test_ema_moves_teacher_towards_student():
    brain = tiny_brain()
    with torch.no_grad():
        brain.modules.encoder.blocks[0].conv.conv.weight.add_(1.0)
    t_before = brain.modules.teacher_encoder.blocks[0].conv.conv.weight.clone()
    s_w = brain.modules.encoder.blocks[0].conv.conv.weight
    brain.step = 1  # first batch of epoch 1 (10 steps per epoch), its optimiser step done
    brain.on_fit_batch_end(None, None, None, should_step=True)
    m = 1 - 0.1 * (math.cos(math.pi * 1 / 100) + 1) / 2  # CosineMomentum(0.9, 1, 10 epochs) after 1 of 100 steps
    assert torch.allclose(brain.modules.teacher_encoder.blocks[0].conv.conv.weight, m * t_before + (1 - m) * s_w)


def ssps_for(storage):
    dim = 16 if storage == "logits" else 4
    ssps = SSPS(K=2, M=0, start_epoch=1, pos_queue_size=8, seed=0)
    ssps.setup(8, 4, 8, dim, n_views=2)
    return ssps


def fill_and_cluster(brain, ssps):
    """Clusters 8 identical references (one cluster), then leaves only
    utterances 4..7 in Q' with the teacher outputs of a batch as their rows."""
    refs = torch.nn.functional.normalize(torch.ones(4, 8), dim=1)
    zeros = torch.zeros(2, 4, ssps.pos_queue.embeddings.shape[-1])
    ssps.update(torch.arange(4), refs, zeros)
    ssps.update(torch.arange(4, 8), refs, zeros)
    ssps.cluster(epoch=1)
    bottleneck, teacher = brain.teacher_outputs(brain.augmented(Batch().global_views.data))
    stored = teacher if brain.hparams.ssps_storage == "logits" else bottleneck
    ssps.pos_queue.indices.fill_(-1)
    ssps.pos_queue.write(torch.arange(4, 8), stored.view(2, 4, -1))
    return teacher.view(2, 4, -1)


@pytest.mark.parametrize("storage", ["logits", "bottleneck"])
def test_ssps_replaces_both_teacher_views_from_one_slot(storage):
    ssps = ssps_for(storage)
    brain = tiny_brain(storage, ssps)
    stored_teacher = fill_and_cluster(brain, ssps)
    teacher = torch.randn(8, 16)
    indices = torch.arange(4)
    torch.manual_seed(0)
    out = brain.ssps_step(indices, torch.nn.functional.normalize(torch.ones(4, 8), dim=1), teacher, torch.randn(8, 4))
    assert brain._stats["ssps_coverage"][0] == 1.0
    # every anchor got the two stored outputs of one utterance among 4..7, same slot for both views
    for i in range(4):
        matches = [u for u in range(4) if torch.allclose(out[i], stored_teacher[0, u], atol=1e-5)
                   and torch.allclose(out[4 + i], stored_teacher[1, u], atol=1e-5)]
        assert len(matches) == 1


def test_storage_modes_agree_when_last_layer_unchanged():
    outs = []
    for storage in ("logits", "bottleneck"):
        ssps = ssps_for(storage)
        brain = tiny_brain(storage, ssps)
        fill_and_cluster(brain, ssps)
        ssps.generator.manual_seed(7)
        outs.append(brain.ssps_step(torch.arange(4), torch.ones(4, 8), torch.zeros(8, 16), torch.zeros(8, 4)))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert outs[0].abs().sum() > 0


def test_nonfinite_step_changes_nothing_and_patience_names_the_utterances():
    """A NaN in one crop: parameters, BatchNorm statistics, teacher, centre,
    SSPS queues and generator are exactly as before; a finite step does
    change them; more than nonfinite_patience bad steps in a row stop."""
    ssps = ssps_for("bottleneck")
    brain = tiny_brain("bottleneck", ssps)
    fill_and_cluster(brain, ssps)
    brain.hparams.lr_schedule = lambda epoch, position, steps: 0.1
    brain.step = 1

    def batch(bad):
        out = Batch(ref=3000)
        out.id = [f"spk/rec/{i:05d}" for i in range(4)]
        if bad:
            out.global_views.data[2, 1, 50] = float("nan")
        return out

    def snapshot():
        return (
            {k: v.clone() for k, v in brain.modules.state_dict().items()},
            {k: v.clone() for k, v in ssps.state_dict().items()},
            ssps.generator.get_state().clone(),
        )

    def same(a, b):
        return all(torch.equal(a[i][k], b[i][k]) for i in (0, 1) for k in a[i]) and torch.equal(a[2], b[2])

    before = snapshot()
    brain._stats = {}
    loss = brain.fit_batch(batch(bad=True))
    assert brain._stats == {}  # nothing of the skipped step enters the epoch statistics
    assert not torch.isfinite(loss) and brain.nonfinite_steps == 1 and brain.nonfinite_in_row == 1
    assert same(before, snapshot())
    assert torch.isfinite(brain.fit_batch(batch(bad=False)))
    after = snapshot()
    assert brain.nonfinite_in_row == 0
    changed = [k for k in before[0] if not torch.equal(before[0][k], after[0][k])]
    assert any(k.startswith("teacher_encoder") for k in changed) and "dino_loss.center" in changed
    assert any(k.startswith("encoder") and "running_mean" in k for k in changed)
    assert not torch.equal(before[1]["pos_queue.embeddings"], after[1]["pos_queue.embeddings"])
    brain.nonfinite_patience = 1
    brain.fit_batch(batch(bad=True))
    with pytest.raises(ValueError, match=r"2 steps in a row.*spk/rec/00002"):
        brain.fit_batch(batch(bad=True))


def test_guard_copies_forward_state_but_not_the_queues():
    """The non-finite guard snapshots what a forward pass writes (BatchNorm
    statistics, the DINO centre), not the SSPS queues and tables, which
    change only after a finite step (a 2.1 GiB copy per step at VoxCeleb2 scale)."""
    ssps = ssps_for("bottleneck")
    brain = tiny_brain("bottleneck", ssps)
    fill_and_cluster(brain, ssps)
    brain.modules["ssps"] = ssps  # as the recipe registers it (modules: ssps)
    brain._stats, brain._guarded_slots = {}, None
    copied = {id(b) for b, _ in brain._guarded_state()["buffers"]}
    assert id(brain.modules.dino_loss.center) in copied
    assert any(id(b) in copied for n, b in brain.modules.encoder.named_buffers() if "running_mean" in n)
    assert not any(id(b) in copied for b in ssps.buffers())
