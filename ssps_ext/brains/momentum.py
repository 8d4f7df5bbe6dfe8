"""Exponential moving average of online networks into momentum networks
(DINO teacher, MoCo key encoder): theta_m <- m theta_m + (1 - m) theta, on
parameters only (a momentum network's BatchNorm statistics come from its own
forward passes)."""

import torch

from .ssps_hooks import unwrap


@torch.no_grad()
def ema_update(modules, pairs, m):
    """``pairs``: (online module key, momentum module key) of ``modules``."""
    for online, momentum in pairs:
        o_params = list(unwrap(modules[online]).parameters())
        m_params = list(unwrap(modules[momentum]).parameters())
        torch._foreach_mul_(m_params, m)
        torch._foreach_add_(m_params, [p.detach() for p in o_params], alpha=1 - m)


def copy_into_momentum(modules, pairs):
    """Momentum networks start as copies of the online ones, never trained."""
    for online, momentum in pairs:
        unwrap(modules[momentum]).load_state_dict(unwrap(modules[online]).state_dict())
        unwrap(modules[momentum]).requires_grad_(False)
