"""``SwAVBrain``: SwAV speaker embeddings, optionally with SSPS.

Per step (SwAV as in the SSPS authors' code; ``ssps_ext.losses.swav``):
  x1, x2   two random 2-s crops of each utterance, augmented independently,
           encoded in separate forward passes -> y1, y2;
  z1, z2   SwAV projector, L2-normalised (``SwAVHead.project``);
  P1, P2   cosines with the unit prototypes (``SwAVHead.scores``);
  loss     swapped prediction of the Sinkhorn-Knopp codes (with the queue of
           earlier z from ``swav_queue_start_epoch``); the prototypes get no
           gradient during the first ``freeze_prototypes_epochs`` epochs;
  queue    z1, z2 (the originals, also with SSPS) appended after the step.
With SSPS (``ssps`` not null) rows of z2 are replaced by pseudo-positives
from Q' (which stores z2), as the reference code replaces Z2, and P2 is
recomputed from them: the *assignment target* Q2 of view 1's prediction is
then the pseudo-positive's code, and view 2's prediction of Q1 is made from
the stored embedding (so it trains the prototypes only). The SSPS reference
and the evaluation embeddings come from the encoder (before the projector).
"""

import torch

from .base import SSLBrain, unwrap


class SwAVBrain(SSLBrain):
    """Brain for SwAV (with SSPS when enabled)."""

    required_crops = {"views": 2}

    def compute_forward(self, batch, stage):
        views = batch.views.data.to(self.device)  # (b, 2, T)
        z1, p1 = self.modules.swav_head(self.encode(self.augment(views[:, 0])))  # (b, D_z), (b, K)
        z2, p2 = self.modules.swav_head(self.encode(self.augment(views[:, 1])))
        return z1, z2, p1, p2, self.reference_representations(batch)

    def compute_objectives(self, predictions, batch, stage):
        z1, z2, p1, p2, ref = predictions
        head = unwrap(self.modules.swav_head)
        if self.ssps_active(write=True):  # ref is None with ssps_reference: epoch
            z2_pos = self.ssps_step(batch.index.data.to(self.device), ref, z1, z2)
            if self.ssps_active():
                p2 = head.scores(z2_pos)  # scores of the pseudo-positives
        loss = self.hparams.loss(p1, p2, self.epoch, head.scores)
        self.after_finite_step(self.hparams.loss.enqueue, z1.detach(), z2.detach())
        self.record(loss=loss)
        return loss

    def ssps_step(self, indices, ref, z1, z2):
        """sample -> substitute rows of z2 -> write the original z2."""
        return self.substitute_positive_view(indices, ref, z2)

    def ssps_layout(self):
        return self.hparams.swav_dim, 1

    def ssps_fill_embeddings(self, batch):
        views = batch.views.data.to(self.device)
        return self.modules.swav_head(self.encode(self.augment(views[:, 1])))[0][None]  # (1, b, D_z)

    def optimizers_step(self):
        """Prototypes frozen (no gradient) during the first epochs, as the reference."""
        if self.epoch <= self.hparams.freeze_prototypes_epochs:
            unwrap(self.modules.swav_head).prototypes.grad = None
        super().optimizers_step()
