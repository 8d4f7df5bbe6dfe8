"""``SimCLRBrain``: SimCLR / NT-Xent-AM (and VICReg) speaker embeddings, optionally with SSPS.

Per step (paper section 2.1.1 and Fig. 1):
  x, x'   two random 2-s crops of each utterance, augmented independently
          and encoded in separate forward passes (``views_in_one_batch``);
  y, y'   ECAPA-TDNN representations (512-d); z = g(y) if a projector is
          configured (the paper uses none, so z = y);
  loss    NT-Xent(-AM) between Z and Z'.
With SSPS (``ssps`` not null), Z' rows are replaced by pseudo-positives drawn
from the memory queue Q' before the loss (see ``ssps_ext.ssps``).

The Brain serves every two-view joint-embedding loss ``loss(Z, Z')`` with a
``stats(Z, Z')`` dict for the train log: NT-Xent(-AM), and VICReg
(``vicreg.yaml``: the projector is VICReg's expander, Z = g(y); SSPS
replaces rows of the second view's expander output Z', as the reference
code's siamese methods do, so that the invariance term pulls Z towards the
pseudo-positive and the variance / covariance terms see it as a sample).
"""

import torch

from .base import SSLBrain


class SimCLRBrain(SSLBrain):
    """Brain for SimCLR-style contrastive training (with SSPS when enabled)."""

    required_crops = {"views": 2}

    def compute_forward(self, batch, stage):
        views = batch.views.data.to(self.device)  # (b, 2, T)
        b = views.shape[0]
        x1, x2 = self.augment(views[:, 0]), self.augment(views[:, 1])  # (b, T) each
        if self.hparams.views_in_one_batch:
            z = self.embed(torch.cat([x1, x2]))  # (2b, D_emb)
            z1, z2 = z[:b], z[b:]  # (b, D_emb) each
        else:  # per-view BatchNorm statistics (reference code)
            z1, z2 = self.embed(x1), self.embed(x2)  # (b, D_emb) each
        return z1, z2, self.reference_representations(batch, view=z1)

    def embed(self, x):
        """(N, T) augmented crops -> Z (N, D_emb): y, or g(y) with a projector."""
        y = self.encode(x)  # (N, D_repr)
        return y if self.hparams.projector is None else self.modules.projector(y)

    def reference_view_supported(self):
        return self.hparams.projector is None  # z1 = y1, the representation Q-hat holds

    def ssps_layout(self):
        emb = self.hparams.emb_dim if self.hparams.projector is None else self.hparams.projector_dim
        return emb, 1

    def ssps_fill_embeddings(self, batch):
        return self.embed(self.augment(batch.views.data.to(self.device)[:, 1]))[None]  # (1, b, D_emb)

    def ssps_step(self, indices, ref, z1, z2):
        """sample -> substitute view 2 -> write the originals (paper Fig. 1)."""
        return self.substitute_positive_view(indices, ref, z2)

    def compute_objectives(self, predictions, batch, stage):
        z1, z2, ref = predictions
        z2_pos = z2
        if self.ssps_active(write=True):  # ref is None with ssps_reference: epoch
            z2_pos = self.ssps_step(batch.index.data.to(self.device), ref, z1, z2)
        loss = self.hparams.loss(z1, z2_pos)
        self.record(loss=loss, **self.hparams.loss.stats(z1.detach(), z2_pos.detach()))
        return loss
