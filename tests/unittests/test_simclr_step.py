"""SimCLRBrain training steps on a fixed batch: the loss goes down."""

import functools

import pytest
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.epoch_loop import EpochCounter

from ssps_ext.brains.simclr import SimCLRBrain
from ssps_ext.losses.ntxent import NTXent


class _Padded:
    def __init__(self, data):
        self.data = data


def test_fixed_batch_loss_decreases_through_fit_batch():
    """Eight utterances, two crops each: 25 full training steps (forward per
    view, symmetric NT-Xent, Adam) must cut the loss on the same batch by
    more than half; with the optimiser's learning rate at 0 it stays put."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    f0 = torch.linspace(100, 240, 8)[:, None]  # 8 "voices"
    clean = torch.sin(2 * torch.pi * f0 * t) + 0.3 * torch.sin(2 * torch.pi * 3.1 * f0 * t)
    views = torch.stack([clean + 0.05 * torch.randn(8, 8000, generator=g) for _ in range(2)], 1)  # (8, 2, T)
    batch = type("B", (), {"views": _Padded(views), "index": _Padded(torch.arange(8)), "id": list("abcdefgh")})

    def brain(lr):
        torch.manual_seed(0)
        modules = {
            "compute_features": Fbank(n_mels=16), "mean_var_norm": InputNormalization(norm_type="sentence"),
            "encoder": ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8, se_channels=8),
        }
        hparams = dict(
            augment=False, view_augment=None, ssps=None, projector=None, emb_dim=16, views_in_one_batch=False,
            loss=NTXent(0.1, symmetric=True), epoch_counter=EpochCounter(1),
            lr_schedule=lambda epoch, position, steps: lr,
        )
        out = SimCLRBrain(modules, functools.partial(torch.optim.Adam, lr=lr), hparams, run_opts={"device": "cpu"})
        out.init_optimizers()
        out.steps_per_epoch, out.step = 25, 0
        out.hparams.epoch_counter.current = 1
        return out

    def losses(lr):
        b = brain(lr)
        out = []
        for _ in range(25):
            b.step += 1
            out.append(float(b.fit_batch(batch)))
        return out

    trained = losses(3e-3)
    assert trained[-1] < 0.5 * trained[0], trained
    frozen = losses(0.0)
    assert abs(frozen[-1] - frozen[0]) < 0.05 * frozen[0], frozen


def ssps_batch(seed):
    """8 utterances: two 0.5-s views and a 1-s reference crop each."""
    g = torch.Generator().manual_seed(seed)
    return type("B", (), {"views": _Padded(0.1 * torch.randn(8, 2, 8000, generator=g)),
                          "ref": _Padded(0.1 * torch.randn(8, 1, 16000, generator=g)),
                          "index": _Padded(torch.arange(8)), "id": list("abcdefgh")})


def ssps_brain(reference, lr=0.0, queue_dtype="float32", precision="fp32", epochs=2):
    """A tiny SimCLR-SSPS Brain at epoch 1 (SSPS writes its queues, from epoch 2 it samples)."""
    from ssps_ext.ssps import SSPS

    torch.manual_seed(0)
    ssps = SSPS(K=2, M=0, start_epoch=2, pos_queue_size=8, seed=0, queue_dtype=queue_dtype)
    ssps.setup(8, 8, 16, 16)
    modules = {
        "compute_features": Fbank(n_mels=16), "mean_var_norm": InputNormalization(norm_type="sentence"),
        "encoder": ECAPA_TDNN(16, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8, se_channels=8),
    }
    hparams = dict(
        augment=False, view_augment=None, ssps=ssps, ssps_reference=reference, projector=None, emb_dim=16,
        views_in_one_batch=False, loss=NTXent(0.1, symmetric=True), epoch_counter=EpochCounter(epochs),
        lr_schedule=lambda epoch, position, steps: lr,
    )
    brain = SimCLRBrain(modules, functools.partial(torch.optim.Adam, lr=lr), hparams,
                        run_opts={"device": "cpu", "precision": precision})
    brain.check_reference()
    brain.init_optimizers()
    brain.steps_per_epoch, brain.step = 1, 1
    brain.hparams.epoch_counter.current = 1
    return brain, ssps


def test_reference_from_the_view_writes_the_anchor_embedding_without_a_ref_forward():
    """ssps_reference: view -> Q-hat receives normalize(z1) of the step and the
    eval-mode reference forward never runs; crop -> the reference crop's."""
    batch = ssps_batch(0)
    written = {}
    for mode in ("view", "crop"):
        brain, ssps = ssps_brain(mode)
        calls = []
        encode_reference = brain.encode_reference
        brain.encode_reference = lambda w: calls.append(w.shape) or encode_reference(w)
        z1, _, _ = brain.compute_forward(batch, None)
        brain.fit_batch(batch)
        written[mode] = ssps.ref_queue.embeddings[0].clone()
        if mode == "view":
            assert calls == []
            assert torch.allclose(written[mode], torch.nn.functional.normalize(z1.detach(), dim=-1), atol=1e-6)
        else:
            assert calls == [(8, 16000), (8, 16000)]  # compute_forward above, then fit_batch
    assert not torch.allclose(written["view"], written["crop"], atol=1e-3)
    brain.hparams.projector = torch.nn.Linear(16, 4)
    brain.hparams.ssps_reference = "view"
    with pytest.raises(ValueError, match="ssps_reference: view"):
        brain.check_reference()


def test_bf16_step_with_float16_queues():
    """--precision=bf16 on CPU: the SimCLR-SSPS step (reference forward
    included) runs under autocast, and float16 queues store its rows."""
    brain, ssps = ssps_brain("crop", lr=1e-3, queue_dtype="float16", precision="bf16")
    seen = []
    encode = brain.encode
    brain.encode = lambda wavs, encoder=None: seen.append(torch.is_autocast_cpu_enabled()) or encode(wavs, encoder)
    loss = brain.fit_batch(ssps_batch(1))
    assert torch.isfinite(loss) and seen == [True, True, True]  # two views + the reference
    assert not torch.is_autocast_enabled("cpu")  # and autocast is off again after the step
    for queue in (ssps.ref_queue, ssps.pos_queue):
        assert queue.embeddings.dtype == torch.float16 and (queue.indices >= 0).all()
        assert torch.isfinite(queue.embeddings).all() and (queue.embeddings.norm(dim=-1) > 0).all()
    assert torch.allclose(ssps.ref_queue.embeddings.float().norm(dim=-1), torch.ones(1, 8), atol=1e-2)  # y-hat is normalised


def test_reference_once_per_epoch_writes_no_reference_in_steps():
    """ssps_reference: epoch -> steps write Q' only (no reference forward);
    an SSPS epoch start runs the reference pass (Q-hat only) once, not again
    on an intra-epoch resume, and the full fill while a queue is unwritten."""
    brain, ssps = ssps_brain("epoch", epochs=3)
    brain.encode_reference = lambda w: pytest.fail("no reference forward in a step")
    brain.fit_batch(ssps_batch(0))
    assert (ssps.ref_queue.indices == -1).all() and (ssps.pos_queue.indices >= 0).all()
    passes = []
    brain.fill_ssps_queues = lambda references_only=False: passes.append(references_only)
    brain.cluster_aware_epoch_start = lambda epoch: None
    ssps.cluster = lambda epoch: ssps.clustered_epoch.fill_(epoch) and {}
    brain.hparams.epoch_counter.current = 2
    brain.on_train_epoch_start(2)  # Q-hat never written: the full fill
    ssps.ref_queue.write(torch.arange(8), torch.ones(1, 8, 16))
    brain.hparams.epoch_counter.current = 3
    brain.on_train_epoch_start(3)  # both written: the reference pass
    brain.on_train_epoch_start(3)  # resumed inside epoch 3: nothing
    assert passes == [False, True]
    before = ssps.ref_queue.embeddings.clone()
    ssps.update(torch.arange(8), None, torch.zeros(1, 8, 16))  # a step: Q' only
    assert torch.equal(ssps.ref_queue.embeddings, before) and (ssps.pos_queue.embeddings == 0).all()
    ssps.update(torch.arange(8), torch.zeros(8, 16), None)  # the reference pass: Q-hat only
    assert (ssps.ref_queue.embeddings == 0).all() and (ssps.pos_queue.embeddings == 0).all()
    ssps.sampling = "nn"
    with pytest.raises(ValueError, match="ssps_reference: epoch"):
        brain.check_reference()
