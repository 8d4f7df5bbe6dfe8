"""DINO self-distillation loss with centring and sharpening.

"Emerging Properties in Self-Supervised Vision Transformers", Caron et al.,
2021 (arXiv:2104.14294); SSPS paper Eq. 2:

    L = 1/B sum_i sum_{t=1..2} sum_{s != t, s=1..6} H( softmax((z'_{i,t} - c) / tau_t),
                                                        log_softmax(z_{i,s} / tau_s) ) / n_pairs

with n_pairs = 2 x 6 - 2 = 10, the centre c <- m c + (1 - m) mean_i z'_i
(m = 0.9, mean over the global batch of teacher outputs) updated after the
loss, tau_s = 0.1 and tau_t = 0.04 (optionally warmed up linearly from
``warmup_teacher_temp`` over ``warmup_teacher_epochs``).
"""

import torch
import torch.nn.functional as F

from .. import distributed as dist


class DINOLoss(torch.nn.Module):
    """Cross-entropy between sharpened, centred teacher and student outputs.

    Arguments
    ---------
    out_dim : int, number of prototypes (size of the centre).
    n_global, n_crops : int, teacher views (2) and student views (2 + 4).
    student_temp, teacher_temp : float, 0.1 and 0.04.
    warmup_teacher_temp, warmup_teacher_epochs : linear teacher-temperature
        warm-up (the reference uses 0.04 -> 0.04, i.e. none).
    center_momentum : float, 0.9.

    Example
    -------
    >>> loss = DINOLoss(out_dim=8, n_global=2, n_crops=3)
    >>> value, stats = loss(torch.randn(3 * 4, 8), torch.randn(2 * 4, 8), epoch=1)
    >>> value.shape
    torch.Size([])
    """

    def __init__(
        self, out_dim=65536, n_global=2, n_crops=6, student_temp=0.1, teacher_temp=0.04,
        warmup_teacher_temp=0.04, warmup_teacher_epochs=0, center_momentum=0.9,
    ):
        super().__init__()
        self.n_global, self.n_crops = n_global, n_crops
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.warmup_teacher_temp, self.warmup_teacher_epochs = warmup_teacher_temp, warmup_teacher_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch):
        """tau_t at a 1-based epoch (linear warm-up, then constant)."""
        if epoch > self.warmup_teacher_epochs:
            return self.teacher_temp
        frac = (epoch - 1) / max(1, self.warmup_teacher_epochs)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(self, student, teacher, epoch):
        """Loss over all (teacher view t, student view s != t) pairs.

        Arguments
        ---------
        student : (n_crops * b, K) student logits, view-major (all of view 0, then view 1...).
        teacher : (n_global * b, K) teacher logits, view-major.
        epoch : int, for the teacher-temperature warm-up.

        Returns
        -------
        loss (0-d), stats dict (teacher entropy, KL to the student...).
        """
        tau_t = self.teacher_temperature(epoch)
        b = teacher.shape[0] // self.n_global
        log_p = F.log_softmax(student / self.student_temp, dim=-1).view(self.n_crops, b, -1)  # (S, b, K)
        q = F.softmax((teacher.detach() - self.center) / tau_t, dim=-1).view(self.n_global, b, -1)  # (T, b, K)
        cross = -torch.einsum("tbk,sbk->ts", q, log_p) / b  # (T, S): mean H(q_t, p_s) per pair of views
        other_view = ~torch.eye(self.n_global, self.n_crops, dtype=torch.bool, device=cross.device)
        loss = cross[other_view].mean()  # the same view is not its own target
        with torch.no_grad():
            entropy = -(q * torch.log(q + 1e-12)).sum(-1).mean()
            stats = {"teacher_entropy": entropy, "kl_div": loss - entropy}
        self.update_center(teacher)
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher):
        """c <- m c + (1 - m) mean of the teacher logits over the global batch."""
        total = dist.all_reduce_sum(teacher.sum(dim=0, keepdim=True))
        count = teacher.shape[0] * dist.world_size()
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)
