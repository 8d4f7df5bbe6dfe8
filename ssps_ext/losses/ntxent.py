"""NT-Xent (SimCLR) and NT-Xent-AM (additive margin) contrastive losses.

SimCLR: "A Simple Framework for Contrastive Learning of Visual
Representations", Chen et al., 2020 (arXiv:2002.05709).
NT-Xent-AM: "Additive Margin in Contrastive Self-Supervised Frameworks to
Learn Discriminative Speaker Representations", Lepage & Dehak, Odyssey 2024
(arXiv:2404.14913).

For an anchor z_i with positive z'_i and candidates z'_j (cosines, scale
s = 1/tau, margin m):

    L = -1/B sum_i log( e^{s(cos(z_i, z'_i) - m)}
                        / (e^{s(cos(z_i, z'_i) - m)} + sum_{j!=i} e^{s cos(z_i, z'_j)}) )

``symmetric=False`` is this one-directional form (paper Eq. 1 with m = 0):
view-1 anchors against all view-2 candidates of the global batch.
``symmetric=True`` is the 2N-anchor form used by the reference code: both
views are anchors, every other row of the global batch (either view, except
the anchor itself) is a candidate, i.e. 2B - 2 negatives per anchor.
Candidates are gathered from all processes with gradient.
"""

import torch
import torch.nn.functional as F

from ..distributed import gather_with_grad, rank


class NTXent(torch.nn.Module):
    """NT-Xent / NT-Xent-AM loss.

    Arguments
    ---------
    temperature : float
        tau; the logits are cosines scaled by 1/tau (paper: 0.03).
    margin : float
        Additive margin m subtracted from the positive cosine (0 = NT-Xent).
    symmetric : bool
        2N-anchor loss over both views (True) or view-1 anchors only.

    Example
    -------
    >>> loss = NTXent(temperature=0.1, margin=0.1)
    >>> z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> loss(z1, z2).shape
    torch.Size([])
    """

    def __init__(self, temperature=0.03, margin=0.0, symmetric=True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NTXent temperature must be > 0, got {temperature}")
        self.scale = 1.0 / temperature
        self.margin = margin
        self.symmetric = symmetric

    def logits(self, z1, z2):
        """Scaled, margined logits and the positive column of each anchor.

        Arguments
        ---------
        z1, z2 : (b, D) local embeddings of views 1 and 2 (row i = sample i).

        Returns
        -------
        logits : (n_anchors, n_candidates); the anchor's own column is -inf.
        target : (n_anchors,) column of each anchor's positive.
        """
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        b = z1.shape[0]
        rows = torch.arange(b, device=z1.device)
        if self.symmetric:
            z = torch.cat([z1, z2])  # (2b, D): [view 1 | view 2]
            z_all = gather_with_grad(z)  # (2B, D), rank-major
            cos = z @ z_all.T  # (2b, 2B)
            own = rank() * 2 * b + torch.cat([rows, rows + b])
            target = rank() * 2 * b + torch.cat([rows + b, rows])
        else:
            z2_all = gather_with_grad(z2)  # (B, D)
            cos = z1 @ z2_all.T  # (b, B)
            own, target = None, rank() * b + rows
        anchors = torch.arange(cos.shape[0], device=cos.device)
        margin = torch.zeros_like(cos)
        margin[anchors, target] = self.margin
        logits = self.scale * (cos - margin)
        if own is not None:
            logits[anchors, own] = float("-inf")
        return logits, target

    def forward(self, z1, z2):
        """Mean loss over local anchors."""
        logits, target = self.logits(z1, z2)
        return F.cross_entropy(logits, target)

    @torch.no_grad()
    def accuracy(self, z1, z2):
        """Share of anchors whose positive has the largest logit."""
        logits, target = self.logits(z1, z2)
        return (logits.argmax(dim=-1) == target).float().mean()

    def stats(self, z1, z2):
        """What the train log shows besides the loss."""
        return {"accuracy": self.accuracy(z1, z2)}
