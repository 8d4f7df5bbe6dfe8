"""``PseudoLabelBrain``: one DLG-LC round, an AAM classifier on cluster pseudo-labels.

Stage II of "Self-Supervised Learning with Cluster-Aware-DINO for
High-Performance Robust Speaker Verification" (Han, Chen & Qian,
arXiv:2304.05754) with the dynamic loss gate and label correction of
arXiv:2208.01928 (``ssps_ext.pseudo_labels``; spec ../shared/docs/peers.md
5c, item 3). The supervised baseline's step (``SupervisedBrain``: one crop,
ECAPA-TDNN, AAM-softmax m = 0.2, s = 30) on pseudo-labels y_i held in
``PseudoLabelState.labels``, indexed by the utterance index ``batch.index``:

- every epoch the per-sample CE_i (w.r.t. y_i) of every utterance is kept
  (summed over DDP ranks at the end of the epoch);
- from epoch ``gate_start_epoch`` (E_g) on, the gate threshold tau is fitted
  at the start of the epoch on log(CE_i) of the previous epoch (rank 0,
  ``gate.fit_loss_gate``; broadcast); a sample is unreliable when its log-loss
  is above tau: the loss of this step (``gate_on: current``, as the public
  re-implementation) or of the previous epoch (``previous``);
- from epoch ``lc_start_epoch`` (E_lc) on, an unreliable sample takes the
  arg-max of the sharpened posterior softmax(cos / T) of its clean crop
  (same crop, not augmented, encoder in eval mode, no gradient) when that
  probability exceeds 0.5, else it is dropped (``objective.dlg_lc_objective``).

Logged per epoch (train_log.txt): ``gate_threshold`` and ``gate_fallback``
(1 when the GMM gave no single crossing or could not be fitted and the
previous threshold was kept), and the shares ``reliable``, ``corrected``
and ``dropped`` of the epoch's samples.

The round driver (recipes/VoxCeleb/SSPS/dlg_lc.py) builds one Brain per
round, with a new classifier of K classes; ``init_from`` then names the
run whose encoder starts the round (``init_encoder_key``: the DINO teacher,
or the previous round's ``encoder``); only that encoder is read from it
(``warm_start``), not the classifier, optimiser or epoch counter.
"""

import logging
import math

import speechbrain as sb
import torch

from .. import distributed as dist
from ..checkpoints import AtomicCheckpointer
from ..pseudo_labels.gate import OPEN_GATE, fit_loss_gate, log_losses
from ..pseudo_labels.objective import dlg_lc_objective, gate_ce
from .supervised import SupervisedBrain

logger = logging.getLogger(__name__)
GATE_ON = ("current", "previous")
CLASSIFIER_INIT = ("centroids", "random")


class PseudoLabelState(torch.nn.Module):
    """Checkpointed state of a round (buffers, so the Checkpointer saves it).

    labels : (N,) long, pseudo-label y_i of utterance i.
    epoch_sum, epoch_seen : (N,) CE_i summed over this epoch's steps, and
        how many times i was seen (0 or 1 per epoch, per rank).
    previous : (N,) CE_i of the previous epoch, NaN where not seen.
    threshold : () float64 tau (``OPEN_GATE`` = inf until the gate starts).
    gate_epoch : () long, the epoch tau was fitted for (0: none).
    """

    guard_snapshot = False  # buffers change only after a finite step or between epochs (guard.py)

    def __init__(self, n_utterances):
        super().__init__()
        self.register_buffer("labels", torch.zeros(n_utterances, dtype=torch.long))
        self.register_buffer("epoch_sum", torch.zeros(n_utterances, dtype=torch.float64))  # CE down to ~1e-300
        self.register_buffer("epoch_seen", torch.zeros(n_utterances))
        self.register_buffer("previous", torch.full((n_utterances,), math.nan, dtype=torch.float64))
        self.register_buffer("threshold", torch.tensor(OPEN_GATE, dtype=torch.float64))
        self.register_buffer("gate_epoch", torch.tensor(0))

    def store(self, index, ce):
        """Adds this step's CE_i (b,) of utterances ``index`` (b,)."""
        self.epoch_sum.index_add_(0, index, ce.to(self.epoch_sum.dtype))
        self.epoch_seen.index_add_(0, index, torch.ones_like(ce, dtype=self.epoch_seen.dtype))

    def end_epoch(self):
        """Sums the epoch's losses over ranks into ``previous`` (collective)."""
        total = dist.all_reduce_sum(self.epoch_sum.clone())
        seen = dist.all_reduce_sum(self.epoch_seen.clone())
        self.previous.copy_(torch.where(seen > 0, total / seen.clamp_min(1), torch.full_like(total, math.nan)))
        self.epoch_sum.zero_()
        self.epoch_seen.zero_()


class PseudoLabelBrain(SupervisedBrain):
    """AAM classifier on pseudo-labels with the dynamic loss gate and label correction."""

    state = None  # PseudoLabelState, built in prepare_training

    def prepare_training(self, train_set, labels, n_classes, centroids=None):
        """Checks the crops and the utterance indices, sets the pseudo-labels
        (N,) (cluster index in [0, K) of each utterance, by ``utt_index``)
        and builds a new classifier with ``n_classes`` = K outputs. Before ``fit``.

        ``classifier_init: centroids`` starts the class weights at
        ``centroids`` (K, D), the normalised class means of the clustered
        embeddings (``rounds.class_centroids``): the new classifier then
        agrees with the encoder from the first step instead of sending it
        the gradients of random class directions (measured on a 72-utterance
        corpus from a supervised start: pseudo-label NMI 0.957 -> 0.930 in one
        round, 0.957 -> 0.692 with random weights). ``random``: SpeechBrain's init."""
        super(SupervisedBrain, self).prepare_training(train_set)  # SSLBrain's checks; no speaker labels
        if self.hparams.gate_on not in GATE_ON:
            raise ValueError(f"gate_on must be one of {GATE_ON}, got {self.hparams.gate_on!r}")
        if self.hparams.classifier_init not in CLASSIFIER_INIT:
            raise ValueError(f"classifier_init must be one of {CLASSIFIER_INIT}, got {self.hparams.classifier_init!r}")
        n = len(train_set)
        indices = sorted(int(r["utt_index"]) for r in train_set.data.values())
        if indices != list(range(n)):
            raise ValueError("train.csv: utt_index must number the utterances 0..N-1; re-run data preparation")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= n_classes:
            raise ValueError(f"pseudo-labels: expected {n} labels in [0, {n_classes}), got shape "
                             f"{tuple(labels.shape)}, range [{int(labels.min())}, {int(labels.max())}]")
        self.state = PseudoLabelState(n).to(self.device)
        self.state.labels.copy_(labels.to(self.device))
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("pseudo_labels", self.state)
        self.build_classifier(int(n_classes))
        if self.hparams.classifier_init == "centroids":
            if centroids is None:
                raise ValueError("classifier_init: centroids needs the class centroids of the pseudo-labels")
            self.init_classifier(torch.as_tensor(centroids))

    @torch.no_grad()
    def init_classifier(self, centroids):
        """Class weights <- ``centroids`` (K, D) where a row is non-zero (an
        empty class keeps its random weights)."""
        weight = self.modules.classifier.weight  # (K, D): cosines with normalised rows
        if centroids.shape != weight.shape:
            raise ValueError(f"class centroids of shape {tuple(centroids.shape)} for a classifier of {tuple(weight.shape)}")
        filled = centroids.norm(dim=1) > 0  # (K,)
        weight[filled] = centroids[filled].to(weight)

    def warm_start(self, folder):
        """Loads only the ``init_encoder_key`` encoder of the latest
        end-of-epoch checkpoint in ``folder`` into this run's encoder (the
        classifier, optimiser and counters of that run are not read)."""
        key = self.hparams.init_encoder_key
        ckpt = AtomicCheckpointer(folder, {key: self.modules.encoder}).recover_if_possible(
            ckpt_predicate=lambda c: c.meta.get("end-of-epoch", True) and key in c.paramfiles
        )
        if ckpt is None:
            raise FileNotFoundError(f"init_from: no checkpoint holding {key!r} in {folder}")
        logger.info("round encoder initialised from %s (%s)", ckpt.path, key)

    # ------------------------------------------------------------ schedule
    def gating(self):
        return self.epoch >= int(self.hparams.gate_start_epoch)

    def correcting(self):
        return self.epoch >= int(self.hparams.lc_start_epoch)

    def on_train_epoch_start(self, epoch):
        """From E_g on: tau from the previous epoch's log-losses, fitted on
        rank 0 and broadcast (skipped when an intra-epoch resume finds it)."""
        if not self.gating() or int(self.state.gate_epoch) == int(epoch):
            return
        fit = torch.zeros(2, dtype=torch.float64, device=self.device)  # (tau, fallback)
        if dist.rank() == 0:
            seen = self.state.previous[torch.isfinite(self.state.previous)]
            result = fit_loss_gate(log_losses(seen.cpu()), previous=float(self.state.threshold),
                                   random_state=int(self.hparams.seed))
            fit[0], fit[1] = result.threshold, float(result.fallback)
        dist.broadcast(fit)
        self.state.threshold.fill_(float(fit[0]))
        self.state.gate_epoch.fill_(int(epoch))
        self.record(gate_threshold=fit[0].float(), gate_fallback=fit[1].float())

    # ------------------------------------------------------------ step
    @torch.no_grad()
    def classify_clean(self, crop):
        """Cosines (b, C) of the clean crops, encoder in eval mode, no gradient."""
        encoder = self.modules.encoder
        mode = encoder.training
        encoder.eval()
        cosines = self.modules.classifier(self.encode(crop).unsqueeze(1)).squeeze(1)  # (b, 1, C) -> (b, C)
        encoder.train(mode)
        return cosines

    def compute_forward(self, batch, stage):
        cosines = super().compute_forward(batch, stage).squeeze(1)  # augmented crop: (b, C)
        clean = self.classify_clean(batch.views.data.to(self.device)[:, 0]) if self.correcting() else None
        return cosines, clean

    def compute_objectives(self, predictions, batch, stage):
        cosines, clean = predictions
        index = batch.index.to(self.device)  # (b,) utterance indices
        labels = self.state.labels[index]  # (b,)
        ce = gate_ce(self.hparams.loss, cosines.detach(), labels)  # (b,) float64, once per step
        reliable = self.reliable(cosines, labels, index, ce)
        loss, ce, counts = dlg_lc_objective(
            self.hparams.loss, cosines, labels, reliable, clean,
            self.hparams.lc_temperature, self.hparams.lc_confidence, gate_losses=ce,
        )
        self.after_finite_step(self.state.store, index, ce)
        b = float(index.shape[0])
        accuracy = (cosines.detach().argmax(dim=-1) == labels).float().mean()
        self.record(loss=loss, accuracy=accuracy, **{k: counts[k] / b for k in ("reliable", "corrected", "dropped")})
        return loss

    def reliable(self, cosines, labels, index, losses=None):
        """(b,) bool: log-loss <= tau (all True before E_g); the loss of this
        step (``gate_on: current``; ``losses``: its ``gate_ce`` when already
        computed) or of the previous epoch (``previous``, a sample not seen
        then counts as reliable)."""
        if not self.gating():
            return torch.ones_like(index, dtype=torch.bool)
        tau = self.state.threshold
        if self.hparams.gate_on == "previous":
            loss = self.state.previous[index]
            return ~(log_losses(loss) > tau)  # NaN (not seen) compares False: reliable
        with torch.no_grad():
            if losses is None:
                losses = gate_ce(self.hparams.loss, cosines.detach(), labels)
            return log_losses(losses) <= tau

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.state.end_epoch()  # before the end-of-epoch checkpoint that saves it
        super().on_stage_end(stage, stage_loss, epoch)
