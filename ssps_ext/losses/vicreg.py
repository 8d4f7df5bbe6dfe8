"""VICReg loss: "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", Bardes, Ponce & LeCun, ICLR 2022 (arXiv:2105.04906),
with the weights of the SSPS authors' speaker configs.

For the expander outputs Z, Z' (b x D per process; statistics over the
global batch of B rows gathered from every process):

    s(Z)   = 1/D sum_d max(0, 1 - sqrt(Var(Z_:,d) + eps))          (variance)
    c(Z)   = 1/D sum_{d != e} C(Z)_{d,e}^2,  C(Z) = (Z - mean)^T (Z - mean) / (B - 1)
    L      = lambda ||Z - Z'||^2 / (b D) + mu [s(Z) + s(Z')] + nu [c(Z) + c(Z')]

with lambda = 1, mu = 1, nu = 0.04 (the paper's 25 / 25 / 1 up to a factor),
eps = 1e-4. The invariance term is this process's mean squared error.
"""

import torch
import torch.nn.functional as F

from ..distributed import gather_with_grad


def variance_term(z, eps=1e-4):
    """s(Z): hinge on the standard deviation of each dimension, (B, D) -> ()."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z):
    """c(Z): squared off-diagonal covariances over D, (B, D) -> ()."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)  # (D, D)
    off = ~torch.eye(d, dtype=torch.bool, device=z.device)
    return cov[off].pow(2).sum() / d


class VICRegLoss(torch.nn.Module):
    """Variance-invariance-covariance loss of two views' expander outputs.

    Example
    -------
    >>> loss = VICRegLoss()
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> loss(z1, z2).shape, sorted(loss.stats(z1, z2))
    (torch.Size([]), ['vicreg_cov', 'vicreg_inv', 'vicreg_var'])
    """

    def __init__(self, inv_weight=1.0, var_weight=1.0, cov_weight=0.04, eps=1e-4):
        super().__init__()
        self.inv_weight, self.var_weight, self.cov_weight, self.eps = inv_weight, var_weight, cov_weight, eps

    def terms(self, z1, z2):
        """(invariance, variance, covariance) of local (b, D) views."""
        inv = F.mse_loss(z1, z2)
        g1, g2 = gather_with_grad(z1), gather_with_grad(z2)  # (B, D) each
        var = variance_term(g1, self.eps) + variance_term(g2, self.eps)
        cov = covariance_term(g1) + covariance_term(g2)
        return inv, var, cov

    def forward(self, z1, z2):
        inv, var, cov = self.terms(z1, z2)
        return self.inv_weight * inv + self.var_weight * var + self.cov_weight * cov

    @torch.no_grad()
    def stats(self, z1, z2):
        """The three unweighted terms, for the train log."""
        inv, var, cov = self.terms(z1, z2)
        return {"vicreg_inv": inv, "vicreg_var": var, "vicreg_cov": cov}
