"""Pseudo-label training (CA-DINO + DLG-LC): the dynamic loss gate and label correction."""

from .gate import correct_labels, fit_loss_gate, log_losses, loss_gate_threshold, reliable_mask  # noqa: F401
