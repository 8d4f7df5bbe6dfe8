"""Ring-buffer memory queue of (utterance index, embedding) rows.

SSPS keeps two of them (paper section 2.2.1):
- Q-hat: one clean reference representation y-hat per training utterance
  (size N - N mod B, so one epoch of global batches refills it exactly);
- Q': the most recent positive-branch embeddings z' (size about K), with
  V stored views per row (1 for SimCLR, 2 teacher outputs for DINO).

Rows are written in arrival order at a pointer that wraps around, so the
queue always holds the latest ``size`` rows. Unwritten slots have index -1.
The queue is an ``nn.Module`` of buffers, saved and restored by the
Checkpointer, and lives outside DDP-wrapped modules.
"""

import torch


class RingQueue(torch.nn.Module):
    """Fixed-size ring buffer.

    Arguments
    ---------
    size : int
        Number of rows.
    dim : int
        Embedding dimension.
    views : int
        Embeddings stored per row (all written and read together).
    dtype : torch.dtype
        Storage type of the embeddings (float16 halves the memory; rows are
        cast on write, readers cast back).

    Example
    -------
    >>> q = RingQueue(size=4, dim=2)
    >>> q.write(torch.tensor([7, 8, 9]), torch.ones(1, 3, 2)).tolist()  # the slots written
    [0, 1, 2]
    >>> q.write(torch.tensor([10, 11]), torch.zeros(1, 2, 2)).tolist()
    [3, 0]
    >>> q.indices.tolist()
    [11, 8, 9, 10]
    """

    guard_snapshot = False  # buffers change only after a finite step or between epochs (guard.py)

    def __init__(self, size, dim, views=1, dtype=torch.float32):
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("indices", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("embeddings", torch.zeros(views, size, dim, dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("n_written", torch.zeros((), dtype=torch.long))

    @property
    def size(self):
        return self.indices.shape[0]

    @property
    def filled(self):
        """True once every slot has been written at least once."""
        return bool(self.n_written >= self.size)

    def write_slots(self, n):
        """(min(n, size),) slots the next ``write`` of n rows fills, oldest
        row first (with n > size only the newest ``size`` rows are kept)."""
        start = self.ptr + max(n - self.size, 0)
        return (start + torch.arange(min(n, self.size), device=self.ptr.device)) % self.size

    @torch.no_grad()
    def write(self, indices, embeddings):
        """Appends rows; returns the slots written (``write_slots``).

        Arguments
        ---------
        indices : (n,) utterance indices.
        embeddings : (views, n, dim) embeddings (detached copies are stored).
        """
        n = indices.shape[0]
        pos = self.write_slots(n)
        indices, embeddings = indices[n - pos.shape[0] :], embeddings[:, n - pos.shape[0] :]
        self.indices.index_copy_(0, pos, indices.to(self.indices.device))
        self.embeddings.index_copy_(1, pos, embeddings.to(self.embeddings))
        self.ptr.copy_((self.ptr + n) % self.size)
        self.n_written += n
        return pos

    def recency(self):
        """(size,) age rank of each slot: 0 = oldest ... size-1 = newest."""
        slots = torch.arange(self.size, device=self.indices.device)
        return (slots - self.ptr) % self.size
