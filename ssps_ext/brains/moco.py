"""``MoCoBrain``: MoCo / MoCo + NT-Xent-AM speaker embeddings, optionally with SSPS.

Per step (NT-Xent-AM paper, MoCo v2+ with a symmetric loss, as the
reference code's ``MoCo``):
  x1, x2   two random 2-s crops of each utterance, augmented independently;
  q1, q2   queries: online encoder, each view in its own forward pass;
  k1, k2   keys: momentum encoder (EMA of the online one, no gradient), rows
           shuffled across processes (shuffle-BN, ``shuffled_forward``);
  loss     ``MoCoLoss``: 1/2 [l(q1, k2, queue_2) + l(q2, k1, queue_1)] with
           the additive margin on the positive, then the keys are appended
           to the queues;
  update   optimiser step on the online encoder, then key encoder <- EMA
           (constant 0.999 by default, or a cosine schedule).
With SSPS (``ssps`` not null) both keys of an anchor are replaced by the two
stored keys of one Q' slot (the pseudo-positive utterance), and the
substituted keys are what the negative queues receive (reference code).
The SSPS reference is encoded by the online encoder, which also gives the
evaluation embeddings.
"""

import torch

from .. import distributed as dist
from .base import SSLBrain
from .momentum import copy_into_momentum, ema_update


class MoCoBrain(SSLBrain):
    """Brain for MoCo contrastive training with key queues (with SSPS when enabled)."""

    required_crops = {"views": 2}
    momentum_pairs = (("encoder", "key_encoder"),)

    def prepare_training(self, train_set):
        """Settings SimCLR has and MoCo does not, rejected before training."""
        if self.hparams.projector is not None or self.hparams.views_in_one_batch:
            raise ValueError(
                "MoCoBrain encodes each view in its own pass and has no projector "
                "(as the reference configs): set projector: null and views_in_one_batch: False"
            )
        super().prepare_training(train_set)

    def keys(self, x):
        """(b, T) augmented crops -> momentum-encoder keys (b, D), no gradient."""
        return dist.shuffled_forward(lambda rows: self.encode(rows, self.modules.key_encoder), x)

    def compute_forward(self, batch, stage):
        views = batch.views.data.to(self.device)  # (b, 2, T)
        x1, x2 = self.augment(views[:, 0]), self.augment(views[:, 1])  # (b, T) each
        q1, q2 = self.encode(x1), self.encode(x2)  # (b, D) each, separate passes
        k1, k2 = self.keys(x1), self.keys(x2)
        return q1, q2, k1, k2, self.reference_representations(batch)

    def compute_objectives(self, predictions, batch, stage):
        q1, q2, k1, k2, ref = predictions
        if self.ssps_active(write=True):  # ref is None with ssps_reference: epoch
            k1, k2 = self.ssps_step(batch.index.data.to(self.device), ref, k1, k2)
        loss, accuracy = self.hparams.loss(q1, q2, k1, k2)
        self.after_finite_step(self.hparams.loss.enqueue, k1, k2)
        self.record(loss=loss, accuracy=accuracy)
        return loss

    def ssps_step(self, indices, ref, k1, k2):
        """sample -> replace both keys from one Q' slot -> write the originals."""
        stored = torch.stack([k1, k2]).detach()  # (2, b, D)
        if self.ssps_active():
            slots, stats = self.ssps.sample(indices, ref)
            self.record(**stats)
            k1, k2 = self.ssps.substitute(k1, slots, view=0), self.ssps.substitute(k2, slots, view=1)
        self.after_finite_step(self.ssps.update, indices, ref, stored)
        return k1, k2

    def ssps_layout(self):
        return self.hparams.emb_dim, 2

    def ssps_fill_embeddings(self, batch):
        views = batch.views.data.to(self.device)  # (b, 2, T)
        return torch.stack([self.keys(self.augment(views[:, v])) for v in range(2)])  # (2, b, D)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Key encoder <- m key encoder + (1 - m) online encoder."""
        if not should_step:
            return
        m = self.schedule(self.hparams.momentum_schedule, after_step=True)
        ema_update(self.modules, self.momentum_pairs, m)
        self.record(key_momentum=torch.tensor(m))

    def on_fit_start(self):
        """The key encoder starts as a copy of the online encoder (then the
        checkpoint, if any, overwrites both); the optimiser never trains it."""
        copy_into_momentum(self.modules, self.momentum_pairs)
        super().on_fit_start()
