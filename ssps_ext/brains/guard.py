"""``FiniteStepGuard``: a training step whose loss is not finite changes nothing.

SpeechBrain counts non-finite losses (``nonfinite_patience``) but still runs
the backward pass and everything a step writes besides the parameters:
BatchNorm statistics, the DINO centre, the EMA teacher, and here the SSPS
queues and sampling generator. One NaN batch would then poison the queues
that every later pseudo-positive is drawn from. This mixin of ``SSLBrain``
makes such a step a no-op, counted and logged with its utterances.
"""

import logging

import speechbrain as sb
import torch

from .. import distributed as dist

logger = logging.getLogger(__name__)


class FiniteStepGuard:
    """``fit_batch`` that skips, without side effects, non-finite steps."""

    _deferred = None  # queued writes of the current step, None outside fit_batch
    nonfinite_in_row = 0
    nonfinite_steps = 0

    def fit_batch(self, batch):
        """One training step; a step whose loss is not finite (on any rank)
        changes nothing.

        Before the forward pass the module buffers (BatchNorm statistics, the
        DINO centre) and the SSPS generator are saved; queue writes are
        deferred (``after_finite_step``). If the loss is NaN or Inf, they are
        put back, no backward, optimiser step or teacher update happens, and
        the step is counted and logged with its utterances; more than
        ``nonfinite_patience`` such steps in a row stop the run.
        """
        self._deferred = []
        saved = self._guarded_state()
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            if not self._finite_everywhere(loss):
                self._restore(saved)
                self._deferred = None
                self._skip_nonfinite(batch)
                return loss.detach().cpu()
            self.nonfinite_in_row = 0
            self.scaler.scale(loss / self.grad_accumulation_factor).backward()
        deferred, self._deferred = self._deferred, None
        for fn, args in deferred:
            fn(*args)
        if should_step:
            self.optimizers_step()
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return loss.detach().cpu()

    def after_finite_step(self, fn, *args):
        """Calls ``fn(*args)`` once this step's loss is known to be finite
        (at once outside ``fit_batch``): for state written during the
        forward pass, such as the SSPS queues."""
        if self._deferred is None:
            fn(*args)
        else:
            self._deferred.append((fn, args))

    def _guarded_state(self):
        """Buffers, plain tensor / number attributes (e.g. the running
        statistics of a global ``InputNormalization``, which are not buffers)
        and the SSPS generator: what a forward pass may change in place.

        Modules whose class sets ``guard_snapshot = False`` (the SSPS queues
        and tables, the MoCo / SwAV queues, the DLG-LC state) are written
        only through ``after_finite_step`` or between epochs, so they are not
        copied: at VoxCeleb2 scale Q-hat alone is 2.1 GiB per step."""
        if getattr(self, "_guarded_slots", None) is None:  # found once: the modules do not change
            deferred = [m for m in self.modules.modules() if not getattr(m, "guard_snapshot", True)]
            self._unguarded = [m for d in deferred for m in d.modules()]
            self._guarded_slots = [
                (m, name)
                for m in self.modules.modules()
                if all(m is not u for u in self._unguarded)
                for name, value in vars(m).items()
                if not name.startswith("_") and (torch.is_tensor(value) or type(value) in (int, float))
            ]
        skip = {id(b) for m in self._unguarded for b in m.buffers()}
        buffers = {id(b): b for b in self.modules.buffers() if id(b) not in skip}
        attributes = []
        for m, name in self._guarded_slots:
            value = getattr(m, name)
            attributes.append((m, name, value.detach().clone() if torch.is_tensor(value) else value))
        state = {"buffers": [(b, b.detach().clone()) for b in buffers.values()], "attributes": attributes,
                 "stats": dict(self._stats)}  # record() makes new tuples: a shallow copy is a snapshot
        if self.hparams.ssps is not None:
            state["generator"] = self.ssps.generator.get_state()
        return state

    def _restore(self, state):
        with torch.no_grad():
            for buffer, value in state["buffers"]:
                buffer.copy_(value)
        for module, name, value in state["attributes"]:
            setattr(module, name, value)
        self._stats = state["stats"]  # the skipped step's loss does not enter the epoch means
        if "generator" in state:
            self.ssps.generator.set_state(state["generator"])

    @staticmethod
    def _finite_everywhere(loss):
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        return float(dist.all_reduce_sum(bad)) == 0.0

    def _skip_nonfinite(self, batch):
        self.nonfinite_in_row += 1
        self.nonfinite_steps += 1
        ids = list(getattr(batch, "id", []) or [])
        logger.warning(
            "non-finite loss at epoch %d, batch %d: step skipped (%d in a row, %d this run); utterances: %s",
            self.epoch, self.step, self.nonfinite_in_row, self.nonfinite_steps, " ".join(map(str, ids)),
        )
        if self.nonfinite_in_row > self.nonfinite_patience:
            raise ValueError(
                f"{self.nonfinite_in_row} steps in a row had a non-finite loss (nonfinite_patience = "
                f"{self.nonfinite_patience}); last batch: {' '.join(map(str, ids))}"
            )

