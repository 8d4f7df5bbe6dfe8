"""The DLG-LC training objective on one batch: per-sample AAM-softmax
cross-entropy, the dynamic loss gate and label correction.

"Self-Supervised Speaker Verification Using Dynamic Loss-Gate and Label
Correction", Han, Chen & Qian (arXiv:2208.01928); details of the public
re-implementation (../shared/docs/peers.md section 5a, wavlm_ssl_sv
``loss/aamsoftmax.py``). With s, m the AAM scale and margin, cos_ic the
cosine between sample i and class c, y_i its pseudo-label:

    CE_i = -log( e^{s cos(theta_i,y_i + m)} / (e^{s cos(theta_i,y_i + m)} + sum_{c != y_i} e^{s cos_ic}) )
    reliable_i = log(CE_i) <= tau                                (``gate.reliable_mask``)
    gate only  : L = sum_{i reliable} CE_i / |reliable|
    gate + LC  : L = sum_{i kept} CE_i(y'_i) / b,  y'_i = y_i if reliable, the
                 corrected label if confident (``gate.correct_labels``), else dropped

Gated (gate only) and dropped (LC) samples contribute nothing to L, so no
gradient reaches them. Everything is vectorised over the batch.
"""

import torch
import torch.nn.functional as F

from .gate import DROPPED, correct_labels


def per_sample_ce(loss, cosines, labels):
    """Per-sample CE_i (b,) of SpeechBrain's ``LogSoftmaxWrapper(AdditiveAngularMargin)``.

    The wrapper returns only the batch mean; this applies its margin
    function (``loss.loss_fn``) to the same one-hot targets, then
    log_softmax and a gather of the target column, so that
    ``per_sample_ce(...).mean() == loss(cosines, labels[:, None])``.

    Arguments
    ---------
    loss : LogSoftmaxWrapper around a margin function (outputs, one-hot) -> logits.
    cosines : (b, C) or (b, 1, C) classifier cosines.
    labels : (b,) long, in [0, C).

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    >>> cos, y = torch.tensor([[0.9, 0.1], [0.2, 0.3]]), torch.tensor([0, 0])
    >>> ce = per_sample_ce(loss, cos, y)
    >>> ce.shape, torch.allclose(ce.mean(), loss(cos[:, None], y[:, None]))
    (torch.Size([2]), True)
    """
    cosines = cosines.reshape(cosines.shape[0], -1)  # (b, 1, C) -> (b, C)
    onehot = F.one_hot(labels.long(), cosines.shape[1]).float()  # (b, C)
    logits = loss.loss_fn(cosines, onehot)  # (b, C), s * cos with the margin on the target
    return -F.log_softmax(logits, dim=1).gather(1, labels.long()[:, None]).squeeze(1)  # (b,)


@torch.no_grad()
def gate_ce(loss, cosines, labels):
    """CE_i (b,) in float64 without underflow, for the gate: with z the
    margin logits and L_i = logsumexp_{c != y_i} (z_ic - z_iy_i),

        CE_i = log(1 + e^{L_i}) = softplus(L_i)

    which stays positive down to L_i ~ -745, where ``per_sample_ce`` (float32
    log_softmax) returns exactly 0 once L_i < ~ -17: with s = 30 a well-fitted
    sample gets there, and a population of zeros (log-loss at the floor)
    made the GMM put the gate on that spike (measured on the tiny corpus:
    tau = log(1e-12), 0-11 % of the samples kept).

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    >>> cos, y = torch.tensor([[1.0, -0.9], [0.9, 0.1]]), torch.tensor([0, 0])
    >>> per_sample_ce(loss, cos, y)[0].item() == 0, gate_ce(loss, cos, y)[0].item() > 0
    (True, True)
    """
    cosines = cosines.reshape(cosines.shape[0], -1)  # (b, C)
    onehot = F.one_hot(labels.long(), cosines.shape[1])  # (b, C)
    logits = loss.loss_fn(cosines.float(), onehot.float()).double()  # (b, C)
    target = logits.gather(1, labels.long()[:, None])  # (b, 1)
    others = (logits - target).masked_fill(onehot.bool(), float("-inf"))  # (b, C), target column excluded
    return F.softplus(torch.logsumexp(others, dim=1))  # (b,)


def dlg_lc_objective(loss, cosines, labels, reliable, clean_cosines=None, temperature=0.1, confidence=0.5,
                     gate_losses=None):
    """Batch loss of DLG (and LC when ``clean_cosines`` is given).

    Arguments
    ---------
    loss : LogSoftmaxWrapper (AAM-softmax), see ``per_sample_ce``.
    cosines : (b, C) cosines of the augmented crops (with gradient).
    labels : (b,) long pseudo-labels y_i.
    reliable : (b,) bool, the gate's verdict (all True before the gate starts).
    clean_cosines : (b, C) cosines of the clean crops (no gradient), or None
        for gate-only epochs.
    temperature, confidence : LC sharpening temperature T and threshold.
    gate_losses : (b,) ``gate_ce`` of this batch when the caller has it
        already (the gate on this step's loss needs it first), else computed.

    Returns
    -------
    loss : 0-d tensor (connected to ``cosines`` even when every sample is
        excluded, so every rank runs the same backward).
    ce : (b,) float64 CE_i with respect to y_i (``gate_ce``: what the gate models next epoch).
    counts : dict of 0-d long tensors ``reliable``, ``corrected``, ``changed``, ``dropped``.

    Example
    -------
    >>> from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
    >>> loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    >>> cos = torch.tensor([[0.9, 0.1], [0.1, 0.9]], requires_grad=True)
    >>> total, ce, counts = dlg_lc_objective(loss, cos, torch.tensor([0, 0]), torch.tensor([True, False]))
    >>> total.backward(); cos.grad[1].abs().sum().item(), int(counts["dropped"])
    (0.0, 1)
    """
    cosines = cosines.reshape(cosines.shape[0], -1)  # (b, C)
    ce = per_sample_ce(loss, cosines, labels)  # (b,) w.r.t. the pseudo-labels
    reliable = reliable.to(torch.bool)
    if clean_cosines is None:  # gate only: mean over the reliable samples
        used = torch.where(reliable, labels, torch.full_like(labels, DROPPED))
        counts = {"reliable": reliable.sum(), "corrected": torch.zeros_like(reliable.sum()),
                  "changed": torch.zeros_like(reliable.sum()), "dropped": (~reliable).sum()}
        kept_ce = ce
        denominator = reliable.sum().clamp_min(1)
    else:  # gate + LC: mean over the whole batch, dropped samples count 0
        used, counts = correct_labels(labels, clean_cosines.reshape(cosines.shape[0], -1), reliable,
                                      temperature, confidence)
        kept_ce = per_sample_ce(loss, cosines, used.clamp_min(0))  # (b,) w.r.t. y'_i
        denominator = torch.tensor(cosines.shape[0], device=cosines.device)
    kept = used != DROPPED  # (b,)
    # where (not a product): an excluded sample's gradient is exactly 0, even for an infinite CE
    total = torch.where(kept, kept_ce, torch.zeros_like(kept_ce)).sum() / denominator
    if gate_losses is None:
        gate_losses = gate_ce(loss, cosines.detach(), labels)
    return total, gate_losses, counts
