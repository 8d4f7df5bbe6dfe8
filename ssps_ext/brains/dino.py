"""``DINOBrain``: DINO speaker embeddings (student / EMA teacher), optionally with SSPS.

Per step (SSPS paper section 2.1.2, 3.2.2; reference-code behaviour, with
its accidental deviations fixed):
  crops    2 global (4 s) + 4 local (2 s) crops per utterance, each augmented
           independently; the SSPS reference crop never reaches the student;
  student  encoder + DINO head on all 6 crops -> S (6b, K);
  teacher  EMA encoder + head on the 2 global crops -> T (2b, K), no gradient;
  SSPS     T_1, T_2 replaced by the two stored teacher outputs of the same Q'
           slot: the 256-d bottleneck projected through the *current* teacher
           last layer (``ssps_storage: bottleneck``, default) or the raw
           65,536-d logits (``logits``, as the reference code);
  loss     DINO cross-entropy, centre updated with the (substituted) T;
  update   SGD (weight decay on weights only), per-parameter gradient
           clipping, last layer frozen during the first epoch(s), then the
           teacher EMA with a cosine momentum schedule.
Evaluation embeddings come from the teacher encoder.
"""

import torch

from .base import SSLBrain, unwrap
from .momentum import copy_into_momentum, ema_update

STORAGES = ("logits", "bottleneck")


class DINOBrain(SSLBrain):
    """Brain for DINO self-distillation (with SSPS when enabled)."""

    # ------------------------------------------------------------ networks
    eval_encoder_key = "teacher_encoder"
    required_crops = {"global_views": 2, "local_views": None}
    cluster_aware_groups = ("global_views",)  # CA-DINO: teacher views from a cluster mate

    def check_crops(self):
        """The crop groups, and the loss's view count against them."""
        super().check_crops()
        views = self.hparams.crops["global_views"][0] + self.hparams.crops["local_views"][0]
        if self.hparams.dino_loss.n_crops != views:
            raise ValueError(
                f"dino_loss n_crops = {self.hparams.dino_loss.n_crops} but crops give {views} student views "
                f"({self.hparams.crops}): set both together"
            )

    def augmented(self, crops):
        """(b, n, T) crops -> (n * b, T) augmented, view-major (view 0 rows first)."""
        b, n, length = crops.shape
        return self.augment(crops.transpose(0, 1).reshape(n * b, length))

    @torch.no_grad()
    def teacher_outputs(self, x):
        """(2b, T) augmented global crops -> bottleneck (2b, d) and logits (2b, K)."""
        head = self.modules.teacher_head
        h = head.bottleneck(self.encode(x, self.modules.teacher_encoder))
        return h, head.last_layer(h)

    # ------------------------------------------------------------ step
    def compute_forward(self, batch, stage):
        x_global = self.augmented(batch.global_views.data.to(self.device))  # (2b, T_g)
        x_local = self.augmented(batch.local_views.data.to(self.device))  # (4b, T_l)
        head = self.modules.head
        student = torch.cat([head(self.encode(x_global)), head(self.encode(x_local))])  # (6b, K)
        bottleneck, teacher = self.teacher_outputs(x_global)  # same augmented globals
        return student, teacher, bottleneck, self.reference_representations(batch)

    def compute_objectives(self, predictions, batch, stage):
        student, teacher, bottleneck, ref = predictions
        if self.ssps_active(write=True):  # ref is None with ssps_reference: epoch
            teacher = self.ssps_step(batch.index.data.to(self.device), ref, teacher, bottleneck)
        loss, stats = self.hparams.dino_loss(student, teacher, self.epoch)
        self.record(loss=loss, **stats)
        return loss

    def ssps_step(self, indices, ref, teacher, bottleneck):
        """sample -> replace T_1, T_2 from one Q' slot -> write the originals."""
        stored = self.q_rows(teacher, bottleneck)  # (2, b, D_store)
        substituted = teacher
        if self.ssps_active():
            slots, stats = self.ssps.sample(indices, ref)
            self.record(**stats)
            rows = torch.cat([self.ssps.substitute(stored[v], slots, view=v) for v in range(2)])  # (2b, D_store)
            if self.hparams.ssps_storage == "bottleneck":  # through the current teacher last layer
                rows = self.modules.teacher_head.last_layer(rows)
            substituted = rows
        self.after_finite_step(self.ssps.update, indices, ref, stored)
        return substituted

    def q_rows(self, teacher, bottleneck):
        """What Q' stores of the two teacher views: (2b, D) -> (2, b, D_store)."""
        stored = teacher if self.hparams.ssps_storage == "logits" else bottleneck
        return stored.view(2, stored.shape[0] // 2, -1)

    # ------------------------------------------------------------ SSPS set-up
    def ssps_layout(self):
        if self.hparams.ssps_storage not in STORAGES:
            raise ValueError(f"ssps_storage {self.hparams.ssps_storage!r} not in {STORAGES}")
        if self.hparams.ssps_storage == "logits":
            return self.hparams.dino_out_dim, 2
        return self.hparams.dino_bottleneck_dim, 2

    def ssps_fill_embeddings(self, batch):
        bottleneck, teacher = self.teacher_outputs(self.augmented(batch.global_views.data.to(self.device)))
        return self.q_rows(teacher, bottleneck)

    # ------------------------------------------------------------ optimisation
    def init_optimizers(self):
        """SGD on the student only; weight decay on weights, not biases/norms."""
        params = [p for name in ("encoder", "head") for p in self.modules[name].parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.optimizer = self.opt_class([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def optimizers_step(self):
        """Unscale, drop last-layer gradients while frozen, clip each
        parameter's gradient norm to ``clip_grad``, step (reference code)."""
        self.scaler.unscale_(self.optimizer)
        if self.epoch <= self.hparams.freeze_last_layer_epochs:
            for p in unwrap(self.modules.head).last_layer.parameters():
                p.grad = None
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norms = torch.stack(torch._foreach_norm(grads))  # (n_params,)
            scales = (self.hparams.clip_grad / (norms + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, list(scales.unbind()))
        if not self.scaler.is_enabled() and self.skip_nonfinite_grads:
            self.check_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    momentum_pairs = (("encoder", "teacher_encoder"), ("head", "teacher_head"))

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Teacher <- m teacher + (1 - m) student, parameters only."""
        if not should_step:
            return
        m = self.schedule(self.hparams.momentum_schedule, after_step=True)
        ema_update(self.modules, self.momentum_pairs, m)
        self.record(teacher_momentum=torch.tensor(m))

    def on_fit_start(self):
        """Teacher starts as a copy of the student (then the checkpoint, if
        any, overwrites both); it is never trained by the optimiser."""
        copy_into_momentum(self.modules, self.momentum_pairs)
        super().on_fit_start()
