"""Learning-rate and momentum schedules as pure functions of the training clock.

They hold no state: the value is recomputed from the epoch counter and
Brain's ``optimizer_step``, both of which the Checkpointer restores, so a
resumed run (or an SSPS run resumed from a base checkpoint) continues the
schedule exactly instead of restarting it.
"""

import math


class StepDecay:
    """lr(epoch) = base * factor ** floor((epoch - 1) / every), epochs from 1.

    SimCLR in the paper: Adam 1e-3, x0.95 every 5 epochs; epoch 101 (the first
    SSPS epoch) gives 1e-3 * 0.95**20 = 3.585e-4.

    Example
    -------
    >>> sched = StepDecay(1e-3, factor=0.95, every=5)
    >>> round(sched(epoch=101), 7)
    0.0003585
    """

    def __init__(self, base, factor=0.95, every=5):
        self.base, self.factor, self.every = base, factor, every

    def __call__(self, epoch, step=None, steps_per_epoch=None):
        return self.base * self.factor ** ((epoch - 1) // self.every)


class WarmupCosine:
    """Linear warm-up from 0 to ``base`` over ``warmup_epochs``, then cosine
    decay towards ``final``.

    Evaluated per optimiser step: ``step`` counts steps from 0 over the whole
    schedule (DINO: 10 warm-up epochs, 100-epoch horizon, lr 0.2 -> 1e-5).
    As in the reference DINO code, the cosine phase is (step - warmup) / total,
    so it never quite reaches ``final``: lr ~ 0.0412 at epoch 80 and ~ 0.0059
    at epoch 99 of the paper's schedule.

    Example
    -------
    >>> sched = WarmupCosine(0.2, final=1e-5, warmup_epochs=10, total_epochs=100)
    >>> sched(epoch=1, step=500, steps_per_epoch=100)
    0.1
    """

    def __init__(self, base, final=1e-5, warmup_epochs=10, total_epochs=100):
        self.base, self.final = base, final
        self.warmup_epochs, self.total_epochs = warmup_epochs, total_epochs

    def __call__(self, epoch, step, steps_per_epoch):
        warmup = self.warmup_epochs * steps_per_epoch
        total = self.total_epochs * steps_per_epoch
        if step < warmup:
            return self.base * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total))
        return self.final + 0.5 * (self.base - self.final) * (
            1 + math.cos(math.pi * progress)
        )


class CosineMomentum:
    """Teacher EMA momentum: cosine from ``start`` (0.996) to ``end`` (1.0)
    over the whole schedule (``total_epochs`` x steps per epoch)."""

    def __init__(self, start=0.996, end=1.0, total_epochs=100):
        self.start, self.end, self.total_epochs = start, end, total_epochs

    def __call__(self, epoch, step, steps_per_epoch):
        progress = min(1.0, step / max(1, self.total_epochs * steps_per_epoch))
        return self.end - (self.end - self.start) * (
            math.cos(math.pi * progress) + 1
        ) / 2
