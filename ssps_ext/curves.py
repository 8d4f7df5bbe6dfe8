"""Training curves in TensorBoard (``tensorboard: True``).

Each epoch, what ``train_log.txt`` gets is also written with SpeechBrain's
``TensorboardLogger``, under its tags: the ``stats_meta`` as they are
(``epoch``, ``lr``, ``epoch_s``, ``start_s``, ``nonfinite_steps``) and the
epoch means of the recorded statistics as ``<name>/train`` (``loss/train``,
``accuracy/train``, ``teacher_momentum/train``, ``ssps_speaker_acc/train``...).
The step of every curve is the epoch, so a resumed or warm-started run
continues its curves in the same folder. The ``tensorboard`` package is
imported only when the option is on.
"""

from speechbrain.utils.train_logger import TensorboardLogger


class EpochTensorboardLogger(TensorboardLogger):
    """``TensorboardLogger`` whose step is ``stats_meta["epoch"]``.

    SpeechBrain's counts its own calls per curve, which start again at 1 when
    a run resumes, and starts a curve that appears late (SSPS statistics) at
    1. None values (no ``lr`` in an epoch without a batch) are left out, and
    the events are flushed at once (the writer's thread would otherwise hold
    them up to two minutes and lose them if the process ends).
    """

    def log_stats(self, stats_meta, train_stats=None, valid_stats=None, test_stats=None, verbose=False):
        """See ``TrainLogger.log_stats``; one value per statistic."""
        step = int(stats_meta["epoch"]) - 1  # SpeechBrain adds 1 before writing
        self.global_step["meta"] = step
        stats = {"train": train_stats, "valid": valid_stats, "test": test_stats}
        for dataset, values in stats.items():
            if values is not None:
                stats[dataset] = {k: v for k, v in values.items() if v is not None}
                self.global_step[dataset].update(dict.fromkeys(stats[dataset], step))
        meta = {k: v for k, v in stats_meta.items() if v is not None}
        super().log_stats(meta, stats["train"], stats["valid"], stats["test"], verbose)
        if self.writer is not None:  # main process
            self.writer.flush()


def tensorboard_logger(enabled, folder):
    """The logger for the ``tensorboard`` setting (None when it is False).

    A missing ``tensorboard`` package is an ImportError that names the
    setting and the package, raised before training starts.
    """
    if not enabled:
        return None
    try:
        return EpochTensorboardLogger(folder)
    except ImportError as err:
        raise ImportError(
            f"tensorboard: True needs the 'tensorboard' package ({err}): "
            "pip install tensorboard (or this project's [tensorboard] extra), or set tensorboard: False"
        ) from err
