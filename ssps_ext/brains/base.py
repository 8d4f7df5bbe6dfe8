"""``SSLBrain``: what SimCLR and DINO share on top of ``speechbrain.Brain``.

- features (Fbank + sentence mean normalisation) and the ECAPA encoder,
  its kernel-size-1 convolutions without SpeechBrain's empty padding copy
  (``conv_padding``: bit-identical, faster);
- per-view augmentation switched by the ``augment`` boolean;
- schedules recomputed every step from the restored training clock;
- per-epoch statistics (all-reduced), train log (and TensorBoard curves with
  ``tensorboard: True``), end-of-epoch and intra-epoch checkpoints, a resume
  inside an epoch continuing exactly (``MidEpochResume``);
- a step with a non-finite loss changes nothing (``FiniteStepGuard``);
- warm start from another run's checkpoint (``init_from``), which is how an
  SSPS run resumes a base SSL run with its schedules continuing;
- verification on one or several trial lists (``VerificationEvaluation``).

Subclasses implement ``compute_forward`` / ``compute_objectives`` and
``embedding_encoder`` (the network whose output is the speaker embedding).
"""

import logging
import time

import speechbrain as sb
import torch
from speechbrain.nnet.schedulers import update_learning_rate

from .. import distributed as dist
from ..checkpoints import AtomicCheckpointer
from ..conv_padding import skip_empty_padding
from ..curves import tensorboard_logger
from .ca_hooks import ClusterAwareHooks
from .evaluation import VerificationEvaluation
from .guard import FiniteStepGuard
from .resume import MidEpochResume
from .ssps_hooks import SSPSHooks, unwrap

logger = logging.getLogger(__name__)


class SSLBrain(MidEpochResume, VerificationEvaluation, ClusterAwareHooks, SSPSHooks, FiniteStepGuard, sb.Brain):
    """Base Brain for self-supervised speaker-embedding training."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        skip_empty_padding(self.modules)  # every network: encoder, momentum copies, heads
        self._stats, self.lr, self.steps_per_epoch = {}, None, None
        self.tensorboard_logger = None  # tensorboard: True -> built in on_fit_start
        self.periodic_eer = None  # ssps_ext.periodic_eval.PeriodicEER, set by train.py
        self.register_progress()

    # ---------------------------------------------------------------- model
    def encode(self, wavs, encoder=None, lengths=None):
        """(N, T) waveforms -> (N, D) representations.

        ``lengths`` are relative (SpeechBrain convention); None = all full.
        """
        if lengths is None:
            lengths = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.modules.compute_features(wavs)  # (N, frames, mels)
        feats = self.modules.mean_var_norm(feats, lengths)
        encoder = self.modules.encoder if encoder is None else encoder
        return encoder(feats, lengths).squeeze(1)  # ECAPA: (N, 1, D) -> (N, D)

    def augment(self, wavs):
        """Augments one view (N, T) when the ``augment`` key is True."""
        return self.hparams.view_augment(wavs) if self.hparams.augment else wavs

    eval_encoder_key = "encoder"  # module (and recoverable) giving the embeddings

    def embedding_encoder(self):
        """Unwrapped encoder that produces evaluation embeddings."""
        return unwrap(self.modules[self.eval_encoder_key])

    def prepare_training(self, train_set):
        """Settings checks and state sizing before fit (train.py): crops and
        SSPS (``SSPSHooks``), CA-DINO (``ClusterAwareHooks``)."""
        super().prepare_training(train_set)
        self.prepare_cluster_aware(train_set)

    # ---------------------------------------------------------------- clock
    @property
    def epoch(self):
        return self.hparams.epoch_counter.current

    def schedule(self, scheduler, after_step=False):
        """Value of a schedule at the current batch (``after_step``: once its
        optimiser step is done, e.g. for the EMA teacher update).

        The position on the schedule is (epoch - 1) * steps_per_epoch + the
        batches done in this epoch, i.e. a number of epochs expressed in this
        run's steps. It depends on the epoch and the fraction of the epoch
        only, so a base run on 1 process resumed under ``torchrun`` on 4
        (4x fewer steps per epoch) continues the same learning-rate and
        momentum curves; a per-process step counter would jump 4x ahead.
        """
        done = max(self.step - 1, 0) + int(after_step)  # self.step is 1-based during a batch
        position = max(self.epoch - 1, 0) * self.steps_per_epoch + done
        return scheduler(self.epoch, position, self.steps_per_epoch)

    def on_fit_batch_start(self, batch, should_step):
        self.lr = self.schedule(self.hparams.lr_schedule)
        update_learning_rate(self.optimizer, self.lr)

    # ---------------------------------------------------------------- start
    def on_fit_start(self):
        if self.hparams.keep_checkpoints < self.hparams.eval_average_last:
            raise ValueError(
                f"eval_average_last = {self.hparams.eval_average_last} checkpoints are averaged for evaluation "
                f"but keep_checkpoints = {self.hparams.keep_checkpoints}: raise keep_checkpoints"
            )
        # Before any work, so a missing tensorboard package fails at once.
        self.tensorboard_logger = tensorboard_logger(self.hparams.tensorboard, self.hparams.tensorboard_folder)
        fresh = self.checkpointer is None or self.checkpointer.find_checkpoint() is None
        super().on_fit_start()
        if fresh and self.hparams.init_from:
            self.warm_start(self.hparams.init_from)

    def warm_start(self, folder):
        """Loads the latest end-of-epoch checkpoint of another run.

        Everything registered with this run's Checkpointer is restored
        (modules, optimizer, epoch counter, step counters...) except the
        training data-loader position and the state listed in
        ``warm_start_exclude`` (e.g. SSPS queues, whose sizes belong to the
        new run), so learning-rate and EMA schedules continue.
        """
        skip = {"dataloader-TRAIN", *self.hparams.warm_start_exclude}
        recoverables = {k: v for k, v in self.checkpointer.recoverables.items() if k not in skip}
        ckpt = AtomicCheckpointer(folder, recoverables).recover_if_possible(
            ckpt_predicate=lambda c: c.meta.get("end-of-epoch", True)
        )
        if ckpt is None:
            raise FileNotFoundError(f"init_from: no checkpoint in {folder}")
        self.step = 0  # an epoch boundary (checkpoints written before this fix hold the batch count)
        logger.info("warm start from %s (epoch %d)", ckpt.path, self.epoch)

    # ---------------------------------------------------------------- stats
    def record(self, **stats):
        """Accumulates detached per-step statistics (tensors, no sync)."""
        for name, value in stats.items():
            total, count = self._stats.get(name, (0.0, 0))
            self._stats[name] = (total + value.detach().float(), count + 1)

    def epoch_stats(self):
        """Means of the recorded statistics over the epoch and all ranks."""
        names = sorted(self._stats)
        if not names:
            return {}
        sums = torch.stack([torch.as_tensor(self._stats[n][0], device=self.device) for n in names])
        counts = torch.tensor([self._stats[n][1] for n in names], device=self.device, dtype=torch.float)
        sums, counts = dist.all_reduce_sum(sums), dist.all_reduce_sum(counts)
        return {n: float(s / max(c, 1)) for n, s, c in zip(names, sums, counts)}

    def on_stage_start(self, stage, epoch=None):
        self._stats, self.lr = {}, None
        if stage == sb.Stage.TRAIN:
            start = time.time()
            self.on_train_epoch_start(epoch)  # SSPS; skipped work on an intra-epoch resume
            self.cluster_aware_epoch_start(epoch)  # CA-DINO
            self.epoch_start_s = time.time() - start  # fill pass + k-means
            self._epoch_clock = time.time() - self.resume_progress()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage != sb.Stage.TRAIN:
            return
        stats = self.epoch_stats()
        times = {"epoch_s": round(time.time() - self._epoch_clock, 1), "start_s": round(self.epoch_start_s, 1)}
        if self.nonfinite_steps:
            times["nonfinite_steps"] = self.nonfinite_steps
        meta = {"epoch": epoch, "lr": self.lr, **times}
        if self.periodic_eer is not None and self.periodic_eer.due(epoch):  # eval_interval_epochs
            meta.update(self.periodic_eer(self, progressbar=not self.noprogressbar))
        self.hparams.train_logger.log_stats(stats_meta=meta, train_stats=stats)
        if self.tensorboard_logger is not None:
            self.tensorboard_logger.log_stats(stats_meta=meta, train_stats=stats)
        # The epoch is done: no batch of it is left to skip on resume.
        # (SpeechBrain zeroes ``step`` only after this hook, so an end-of-epoch
        # checkpoint would otherwise carry the epoch's batch count into the
        # next epoch's clock and loss average.)
        self.step = 0
        self.before_checkpoint()
        self.save_epoch_checkpoint({"epoch": int(epoch), "loss": float(stats.get("loss", stage_loss))},
                                   self.hparams.keep_checkpoints)

    def before_checkpoint(self):
        """Collective work every rank does before rank 0 writes a checkpoint."""
        if self.ssps is not None:
            self.ssps.gather_generator_states()
        if self.random_state() is not None:
            self.random_state().gather_rank_states()

    def _save_intra_epoch_ckpt(self):
        self.before_checkpoint()
        super()._save_intra_epoch_ckpt()

    # ---------------------------------------------------------------- DDP
    def _wrap_distributed(self):
        """SpeechBrain's DDP wrapping, with SyncBatchNorm only on CUDA
        (it cannot run on CPU, where gloo is used for tests)."""
        if self.distributed_launch and not str(self.device).startswith("cuda"):
            for name, module in self.modules.items():
                if any(p.requires_grad for p in module.parameters()):
                    self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                        module, find_unused_parameters=self.find_unused_parameters
                    )
            return
        super()._wrap_distributed()
