"""SwAV swapped-prediction loss with Sinkhorn-Knopp codes and a feature queue.

"Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", Caron et al., NeurIPS 2020 (arXiv:2006.09882), with the
settings of the SSPS authors' speaker configs (tau 0.1, 3,000 prototypes,
3 Sinkhorn-Knopp iterations, epsilon 0.05, a queue of 3,840 embeddings per
view from epoch 15).

Scores P_v = z_v . c_k of each view v with the unit prototypes c_k. Codes
Q_v = SK(P_v): the equipartition of Q = exp(P / epsilon) over the global
batch (rows of the batch and, once it is used, the queue), alternately
normalising the prototype sums to 1/K and the sample sums to 1/B
(``sinkhorn_knopp``), then taken for the batch rows only. Loss:

    L = 1/2 [ l(Q_1, P_2) + l(Q_2, P_1) ],  l(Q, P) = -1/b sum_i sum_k Q_ik log softmax(P_i / tau)_k
"""

import torch
import torch.nn.functional as F

from .. import distributed as dist


@torch.no_grad()
def sinkhorn_knopp(scores, n_iters=3, epsilon=0.05):
    """Codes (b, K) whose rows sum to 1 and whose prototype marginals over
    the global batch are equal (1/K of the total), from scores (b, K)."""
    q = torch.exp(scores.double() / epsilon).T  # (K, b)
    K, b = q.shape
    B = b * dist.world_size()
    q /= dist.all_reduce_sum(q.sum())
    for _ in range(n_iters):
        q /= dist.all_reduce_sum(q.sum(dim=1, keepdim=True))  # each prototype: total 1/K
        q /= K
        q /= q.sum(dim=0, keepdim=True)  # each sample: total 1/B
        q /= B
    return (q * B).T.float()  # (b, K), rows sum to 1


class SwAVLoss(torch.nn.Module):
    """Swapped prediction of Sinkhorn-Knopp codes, with a queue of past z.

    Arguments
    ---------
    dim : int, embedding size; temperature : tau;
    n_iters, epsilon : Sinkhorn-Knopp settings;
    queue_size : embeddings kept per view and process (0 = no queue);
    queue_start_epoch : first epoch whose codes also use the queue.
    """

    guard_snapshot = False  # buffers change only after a finite step or between epochs (guard.py)

    def __init__(self, dim, temperature=0.1, n_iters=3, epsilon=0.05, queue_size=3840, queue_start_epoch=15):
        super().__init__()
        self.temperature, self.n_iters, self.epsilon = temperature, n_iters, epsilon
        self.queue_start_epoch = queue_start_epoch
        self.register_buffer("queue", torch.zeros(2, max(queue_size, 0), dim))

    def codes(self, scores, view, epoch, score_fn):
        """Q_view (b, K) for the batch scores (b, K), with the queue's rows
        in the equipartition from ``queue_start_epoch`` on."""
        b = scores.shape[0]
        if self.queue.shape[1] > 0 and epoch >= self.queue_start_epoch:
            scores = torch.cat([scores, score_fn(self.queue[view])])
        return sinkhorn_knopp(scores.detach(), self.n_iters, self.epsilon)[:b]

    def forward(self, p1, p2, epoch, score_fn):
        """Mean loss over local rows; ``score_fn`` maps queued z to scores."""
        q1, q2 = self.codes(p1, 0, epoch, score_fn), self.codes(p2, 1, epoch, score_fn)

        def swapped(q, p):
            return -(q * F.log_softmax(p / self.temperature, dim=1)).sum(dim=1).mean()

        return 0.5 * (swapped(q1, p2) + swapped(q2, p1))

    @torch.no_grad()
    def enqueue(self, z1, z2):
        """Newest embeddings first; the oldest fall off the end."""
        n = min(z1.shape[0], self.queue.shape[1])
        if n == 0:
            return
        self.queue[:, n:] = self.queue[:, :-n].clone()
        self.queue[:, :n] = torch.stack([z1[:n], z2[:n]]).detach().to(self.queue)
