"""``MidEpochResume``: a run killed inside an epoch resumes at the same batch
and continues exactly as if it had not stopped.

SpeechBrain writes intra-epoch checkpoints (``ckpt_interval_minutes`` or
``ckpt_interval_steps``) and its data loader skips the batches already done,
but the rest of that epoch would still differ from the uninterrupted run:

- loader workers draw crops from per-worker generators seeded when the
  epoch's loader starts, so the same batch gets other crops. Here the crops of
  an utterance are a function of (seed, epoch, utterance) (``KeyedCrops``);
- the global generator state saved between two steps would be consumed by
  the restart itself. ``RandomState`` keeps it pending and this class
  restores it at the start of the first resumed step;
- the epoch's running statistics, the non-finite step counters and the time
  spent would restart from zero; ``EpochProgress`` checkpoints them;
- the SSPS epoch start (queue fill, k-means) is not redone: the SSPS state
  records the epoch it clustered for (``SSPS.cluster``).

What "exact" means: on CPU, weights, optimiser, queues, teacher, centre and
generators end bit-identical to an uninterrupted run (tests). On GPU, kernels
such as atomics-based reductions and cuDNN algorithm choices may differ
between two runs even without interruption, so a resumed run is as close to
the uninterrupted one as two uninterrupted runs are.
"""

import logging
import time

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from ..data import EpochKeyedSampler, KeyedCrops
from ..rng import RandomState

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class EpochProgress:
    """The current epoch's running statistics and step counters, saved in
    intra-epoch checkpoints (an end-of-epoch checkpoint has none to keep)."""

    FIELDS = ("_stats", "nonfinite_steps", "nonfinite_in_row")

    def __init__(self, brain):
        self.brain = brain

    @mark_as_saver
    def save(self, path):
        b = self.brain
        state = {name: getattr(b, name) for name in self.FIELDS}
        state["_stats"] = {k: (torch.as_tensor(t).cpu(), int(n)) for k, (t, n) in b._stats.items()}
        state["elapsed_s"] = float(time.time() - getattr(b, "_epoch_clock", time.time()))
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        if not end_of_epoch:
            self.brain._resumed_progress = torch.load(path, weights_only=True)


class MidEpochResume:
    """Mixin of ``SSLBrain``: keyed crops, pending RNG restore, epoch progress."""

    _resumed_progress = None  # EpochProgress state of an intra-epoch checkpoint
    train_crops = None  # the KeyedCrops the training loader reads

    def register_progress(self):
        """Adds ``EpochProgress`` to the checkpointer (optional: checkpoints
        written before it existed still load)."""
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("epoch_progress", EpochProgress(self), optional_load=True)

    def random_state(self):
        """The checkpointed ``RandomState`` (None if not registered)."""
        if self.checkpointer is None:
            return None
        return next((r for r in self.checkpointer.recoverables.values() if isinstance(r, RandomState)), None)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """The training loader reads ``KeyedCrops`` through SpeechBrain's
        sampler (shuffled per epoch, or distributed) wrapped in an
        ``EpochKeyedSampler``; other stages are SpeechBrain's."""
        if stage != sb.Stage.TRAIN or ckpt_prefix is None:
            return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if "batch_sampler" in loader_kwargs:
            raise ValueError("dataloader_options: batch_sampler is not supported (crops are keyed per utterance)")
        self.train_set, self.train_loader_kwargs = dataset, dict(loader_kwargs)
        kwargs = self._train_loader_specifics(dataset, dict(loader_kwargs))
        kwargs.pop("shuffle", None)
        sampler = kwargs.pop("sampler", None) or torch.utils.data.SequentialSampler(dataset)
        self.train_sampler = EpochKeyedSampler(sampler)
        kwargs.setdefault("collate_fn", PaddedBatch)
        self.train_crops = KeyedCrops(dataset, self.hparams.seed)
        loader = sb.dataio.dataloader.make_dataloader(self.train_crops, sampler=self.train_sampler, **kwargs)
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(ckpt_prefix + stage.name, loader)
        self.steps_per_epoch = len(loader)
        return loader

    def fit_batch(self, batch):
        state = self.random_state()
        if state is not None and state.apply_pending():
            logger.info("resumed inside epoch %d after batch %d", self.epoch, self.step - 1)
        return super().fit_batch(batch)

    def resume_progress(self):
        """Puts back the epoch's statistics after an intra-epoch resume;
        returns the seconds the epoch had already run (0 otherwise)."""
        saved, self._resumed_progress = self._resumed_progress, None
        if saved is None:
            return 0.0
        self._stats = {k: (t.to(self.device), n) for k, (t, n) in saved["_stats"].items()}
        self.nonfinite_steps, self.nonfinite_in_row = saved["nonfinite_steps"], saved["nonfinite_in_row"]
        return saved["elapsed_s"]

    def save_epoch_checkpoint(self, meta, keep):
        """End-of-epoch checkpoint; keeps the ``keep`` latest of them and
        removes the epoch's intra-epoch checkpoints, now superseded."""
        self.checkpointer.save_and_keep_only(
            meta=meta, num_to_keep=keep, ckpt_predicate=lambda c: c.meta.get("end-of-epoch", True)
        )
        self.checkpointer.delete_checkpoints(
            num_to_keep=0, ckpt_predicate=lambda c: not c.meta.get("end-of-epoch", True), verbosity=logging.DEBUG
        )
