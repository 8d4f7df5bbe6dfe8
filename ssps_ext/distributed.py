"""Collective helpers that are the identity when no process group exists.

Every loss, queue and sampler calls these, so the whole package runs in CPU
unit tests without ``torch.distributed`` and unchanged under DDP (torchrun).
All gathers assume the same leading size on every rank (``drop_last``).
"""

import torch
import torch.distributed as dist


def is_distributed():
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def rank():
    return dist.get_rank() if is_distributed() else 0


def gather(x):
    """All-gathers ``x`` along dim 0 without gradient (rank order)."""
    if not is_distributed():
        return x
    x = x.detach().contiguous()
    out = torch.empty(
        (world_size() * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device
    )
    dist.all_gather_into_tensor(out, x)
    return out


def gather_objects(obj):
    """List of every rank's picklable ``obj`` (rank order); ``[obj]`` on one
    process. Works with gloo and NCCL (CPU tensors included), for small
    state such as generator states."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def shuffled_forward(fn, x):
    """``fn(x)`` with the rows of the global batch shuffled across processes
    (MoCo's shuffle-BN): each process encodes a random share of every
    process's rows, so a key encoder's BatchNorm statistics never come from
    the same process's queries; returns this process's rows of the result, in
    order. ``fn(x)`` on one process."""
    if not is_distributed():
        return fn(x)
    b = x.shape[0]
    x_all = gather(x)  # (B, ...)
    perm = broadcast(torch.randperm(x_all.shape[0], device=x.device))  # same on every rank
    mine = perm[rank() * b : (rank() + 1) * b]
    out_all = gather(fn(x_all[mine]))  # (B, ...) in permuted order
    inverse = torch.argsort(perm)
    return out_all[inverse][rank() * b : (rank() + 1) * b]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank's loss and
    returns this rank's slice, so cross-rank negatives receive gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        return gather(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.n
        return grad[start : start + ctx.n]


def gather_with_grad(x):
    """All-gathers ``x`` along dim 0, differentiably (identity on 1 process).

    With DDP averaging parameter gradients over W ranks, a loss averaged over
    each rank's local rows then has the gradient of the global mean loss.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x):
    """In-place sum over ranks; returns ``x``."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast(x, src=0):
    """In-place broadcast of a tensor from ``src``; returns ``x``."""
    if is_distributed():
        dist.broadcast(x, src=src)
    return x
