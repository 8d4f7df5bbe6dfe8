"""MoCo loss with key queues, and its additive-margin form (MoCo + NT-Xent-AM).

MoCo: "Momentum Contrast for Unsupervised Visual Representation Learning",
He et al., 2020 (arXiv:1911.05722), in the v2+ form with a symmetric loss
used by the reference code; margin: "Additive Margin in Contrastive
Self-Supervised Frameworks to Learn Discriminative Speaker
Representations", Lepage & Dehak, Odyssey 2024 (arXiv:2404.14913).

For a query q (online encoder), its positive key k+ (momentum encoder) and
the queue of earlier keys {k_j} (all L2-normalised), scale s = 1/tau,
margin m:

    l(q, k+, queue) = -log( e^{s(q.k+ - m)} / (e^{s(q.k+ - m)} + sum_j e^{s q.k_j}) )

``symmetric=True`` (reference code): L = 1/2 [l(Q1, K2, queue_2) + l(Q2, K1, queue_1)],
one FIFO queue of keys per view; ``symmetric=False``: L = l(Q1, K2, queue_2).
After a step the keys of every process are appended to their view's queue
(``enqueue``; with SSPS, the substituted keys, as the reference code does).
"""

import torch
import torch.nn.functional as F

from .. import distributed as dist


class MoCoLoss(torch.nn.Module):
    """InfoNCE of queries against their key and a queue of negative keys.

    Arguments
    ---------
    dim : int
        Key dimension.
    queue_size : int
        Keys kept per view (paper scale: 65,536).
    temperature : float
        tau (0.03 in the SSPS configs).
    margin : float
        Additive margin on the positive cosine (0 = MoCo).
    symmetric : bool
        Both query views against the other view's key (two queues).

    Example
    -------
    >>> loss = MoCoLoss(dim=8, queue_size=16, temperature=0.1)
    >>> q1, q2, k1, k2 = torch.randn(4, 4, 8).unbind()
    >>> loss(q1, q2, k1, k2)[0].shape
    torch.Size([])
    """

    guard_snapshot = False  # buffers change only after a finite step or between epochs (guard.py)

    def __init__(self, dim, queue_size=65536, temperature=0.03, margin=0.0, symmetric=True):
        super().__init__()
        if temperature <= 0 or queue_size < 1:
            raise ValueError(f"MoCo needs temperature > 0 and queue_size >= 1, got {temperature}, {queue_size}")
        self.scale, self.margin, self.symmetric = 1.0 / temperature, float(margin), bool(symmetric)
        # random unit keys until the first queue_size keys are written (MoCo's initialisation)
        self.register_buffer("queue", F.normalize(torch.randn(2 if symmetric else 1, queue_size, dim), dim=-1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def term(self, q, k, queue):
        """l(q, k+, queue) averaged over rows, and the top-1 accuracy.

        q, k : (b, D) normalised; queue : (Q, D) normalised.
        """
        pos = (q * k).sum(-1, keepdim=True) - self.margin  # (b, 1)
        logits = self.scale * torch.cat([pos, q @ queue.T], dim=1)  # (b, 1 + Q)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target), (logits.detach().argmax(1) == 0).float().mean()

    def forward(self, q1, q2, k1, k2):
        """Mean loss over local queries, and the accuracy (key ranked first)."""
        q1, q2 = F.normalize(q1, dim=-1), F.normalize(q2, dim=-1)
        k1, k2 = F.normalize(k1.detach(), dim=-1), F.normalize(k2.detach(), dim=-1)
        if not self.symmetric:
            return self.term(q1, k2, self.queue[0])
        (l12, a12), (l21, a21) = self.term(q1, k2, self.queue[1]), self.term(q2, k1, self.queue[0])
        return 0.5 * (l12 + l21), 0.5 * (a12 + a21)

    @torch.no_grad()
    def enqueue(self, k1, k2):
        """Appends every process's keys (view v to queue v), oldest overwritten."""
        keys = torch.stack([k1, k2] if self.symmetric else [k2])  # (V, b, D)
        keys = torch.stack([dist.gather(F.normalize(k, dim=-1)) for k in keys])  # (V, B, D)
        size, n = self.queue.shape[1], keys.shape[1]
        if n > size:  # only the newest fit
            keys = keys[:, -size:]
            self.ptr += n - size
            n = size
        pos = (self.ptr + torch.arange(n, device=self.queue.device)) % size
        self.queue[:, pos] = keys.to(self.queue)
        self.ptr.copy_((self.ptr + n) % size)
