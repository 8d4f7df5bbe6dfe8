"""Projection heads: the DINO head and an optional SimCLR projector.

DINO head ("Emerging Properties in Self-Supervised Vision Transformers",
Caron et al., 2021, arXiv:2104.14294; SSPS paper section 3.2.2):

    h = MLP(y): Linear(D, 2048)-BN-GELU-Linear(2048, 2048)-BN-GELU-Linear(2048, 256)
    z = W_last (h / ||h||),  W_last weight-normalised (256 -> 65,536, no bias)
        with its gain g fixed to 1 (not trained).
"""

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _mlp(in_dim, hidden_dim, out_dim, n_layers, batchnorm):
    layers, dim = [], in_dim
    for _ in range(n_layers - 1):
        layers += [nn.Linear(dim, hidden_dim)]
        layers += [nn.BatchNorm1d(hidden_dim)] if batchnorm else []
        layers += [nn.GELU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """MLP -> L2-normalisation -> weight-normalised last layer.

    Arguments
    ---------
    in_dim : int, encoder output size (512).
    out_dim : int, number of prototypes (65,536).
    hidden_dim, bottleneck_dim : int, MLP sizes (2048, 256).
    n_layers : int, linear layers in the MLP (3).
    batchnorm : bool, BN after the hidden layers (as in the paper's head).

    Example
    -------
    >>> head = DINOHead(16, 32, hidden_dim=8, bottleneck_dim=4)
    >>> head(torch.randn(5, 16)).shape
    torch.Size([5, 32])
    """

    def __init__(self, in_dim=512, out_dim=65536, hidden_dim=2048, bottleneck_dim=256, n_layers=3, batchnorm=True):
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, n_layers, batchnorm)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad = False

    def bottleneck(self, y):
        """(N, D) -> (N, bottleneck_dim) unit-norm features before the last layer."""
        return nn.functional.normalize(self.mlp(y), dim=-1)

    def forward(self, y):
        """(N, D) -> (N, out_dim) logits."""
        return self.last_layer(self.bottleneck(y))


class Projector(nn.Module):
    """SimCLR projector g: Linear-BN-ReLU-Linear-BN-ReLU-Linear (off in the paper)."""

    def __init__(self, in_dim=512, hidden_dim=2048, out_dim=128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, y):
        return self.net(y)


class SwAVHead(nn.Module):
    """SwAV projector (Linear-BN-ReLU-Linear) and prototypes.

    ``forward`` / ``project``: y (N, D_repr) -> z (N, D_out), L2-normalised;
    ``scores``: z -> cosines with the K prototypes (N, K). The prototypes are
    unit vectors (the reference's weight-normalised layer with its norm fixed
    at 1), so a score is a cosine whatever the raw weights' scale.
    """

    def __init__(self, in_dim=512, hidden_dim=2048, out_dim=128, n_prototypes=3000):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim),
        )
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, out_dim) / out_dim**0.5)

    def project(self, y):
        return nn.functional.normalize(self.projector(y), dim=-1)

    def scores(self, z):
        return z @ nn.functional.normalize(self.prototypes, dim=-1).T  # (N, K)

    def forward(self, y):
        """y (N, D_repr) -> z (N, D_out), scores (N, K) (one call, for DDP)."""
        z = self.project(y)
        return z, self.scores(z)
