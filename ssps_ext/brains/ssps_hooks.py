"""SSPS glue shared by the SimCLR and DINO Brains.

Sizes the queues from the training manifest, encodes the clean reference
crop (eval mode, no gradient), fills the queues with one no-grad pass when
SSPS starts from a checkpoint that never wrote them, and runs k-means at the
start of every SSPS epoch. The method-specific part (which embeddings go to
Q' and what they replace) lives in each Brain: ``ssps_layout``,
``ssps_fill_embeddings`` and ``ssps_step``.
"""

import contextlib
import logging

import speechbrain as sb
import torch
from tqdm import tqdm

from .. import distributed as dist
from ..ssps.kmeans import resolve_backend

logger = logging.getLogger(__name__)
REFERENCES = ("crop", "view", "epoch")


def unwrap(module):
    """The module inside DDP / DataParallel and ``torch.compile`` wrappers
    (SpeechBrain's ``--compile``), or the module itself: the one whose
    ``state_dict`` keys are the checkpoint's."""
    while True:
        if hasattr(module, "_orig_mod"):  # torch.compile's OptimizedModule
            module = module._orig_mod
        elif isinstance(getattr(module, "module", None), torch.nn.Module):  # DDP / DataParallel
            module = module.module
        else:
            return module


class SSPSHooks:
    """Mixin for ``SSLBrain``; inactive when the ``ssps`` hyperparameter is null."""

    @property
    def ssps(self):
        return self.hparams.ssps

    def ssps_layout(self):
        """(D_emb, V) of the Q' rows; subclasses define their positive branch."""
        raise TypeError(f"{type(self).__name__} does not support SSPS")

    # crop groups each Brain reads: {group: exact count, or None for >= 1}
    required_crops = {}

    def check_crops(self):
        """ValueError naming the ``crops`` setting when a group this Brain
        (or SSPS: ``ref``) reads is missing or has the wrong count."""
        crops = dict(self.hparams.crops)
        required = dict(self.required_crops, **({"ref": None} if self.ssps is not None else {}))
        for group, count in required.items():
            have = crops.get(group, [0])[0]
            if have < 1 or (count is not None and have != count):
                raise ValueError(
                    f"crops: {type(self).__name__} needs the group {group!r} with "
                    f"{count if count is not None else 'at least 1'} crop(s), got {crops}"
                )

    def prepare_training(self, train_set):
        """Checks the crop groups, then sizes the SSPS queues from the
        training set (train.py, before fit).

        Speaker and recording labels are read from the manifest for the
        diagnostics only.
        """
        self.check_crops()
        if self.ssps is None:
            return
        if self.ssps.start_epoch > self.hparams.number_of_epochs:
            raise ValueError(
                f"ssps_start_epoch = {self.ssps.start_epoch} is after the last epoch "
                f"(number_of_epochs = {self.hparams.number_of_epochs}): SSPS would never sample"
            )
        self.check_reference()
        # an unavailable backend (or one without the k-means dtype) fails now, not after the fill
        resolve_backend(self.ssps.kmeans_backend, self.device, sim_dtype=self.ssps.kmeans_dtype)
        rows = sorted(train_set.data.values(), key=lambda r: int(r["utt_index"]))
        if [int(r["utt_index"]) for r in rows] != list(range(len(rows))):
            raise ValueError("train.csv: utt_index must number the utterances 0..N-1; re-run data preparation")

        def codes(column):
            if column not in rows[0]:
                return None
            names = {}
            return torch.tensor([names.setdefault(r[column], len(names)) for r in rows])

        emb_dim, views = self.ssps_layout()
        self.ssps.setup(
            n_utterances=len(rows),
            global_batch=self.hparams.batch_size * dist.world_size(),
            repr_dim=self.hparams.emb_dim, emb_dim=emb_dim, n_views=views,
            speakers=codes("spk_id"), recordings=codes("rec_id"),
        )
        self.ssps.to(self.device)

    def ssps_active(self, write=False):
        """SSPS writes its queues (``write``) / samples during this epoch."""
        if self.ssps is None:
            return False
        return self.ssps.writes(self.epoch) if write else self.ssps.samples(self.epoch)

    def reference_encoder(self):
        """Network that encodes the SSPS reference: the evaluation encoder
        (SimCLR: the online encoder; DINO: the teacher)."""
        return self.embedding_encoder()

    def step_precision(self):
        """The step's autocast (``--precision``) outside a step (fill and
        reference passes), nothing inside one: SpeechBrain's ``training_ctx``
        is one ``torch.autocast`` object, and entering it again inside itself
        would leave autocast switched on after the step."""
        if torch.is_autocast_enabled(torch.device(self.device).type):
            return contextlib.nullcontext()
        return self.training_ctx

    @torch.no_grad()
    def encode_reference(self, wavs):
        """Clean reference crops (b, T) -> L2-normalised y-hat (b, D_repr),
        encoded in eval mode (BatchNorm running statistics), no gradient."""
        encoder = self.reference_encoder()
        mode = encoder.training
        encoder.eval()
        with self.step_precision():
            y = self.encode(wavs, encoder).float()
        encoder.train(mode)
        return torch.nn.functional.normalize(y, dim=-1)

    def reference_representations(self, batch, view=None):
        """y-hat (b, D_repr) while SSPS writes its queues, else None.

        ``ssps_reference: crop`` (the paper): the batch's clean reference
        crop, encoded in eval mode without gradient (one more forward pass
        per step). ``view``: the anchor view's representation the step has
        already computed (``view``, detached; train-mode BatchNorm, the
        augmented crop), no extra forward; only where the Brain passes it.
        ``epoch``: None; Q-hat is rewritten by one no-grad pass over the
        training set at the start of each SSPS epoch
        (``fill_ssps_queues(references_only=True)``).
        """
        if not self.ssps_active(write=True) or self.hparams.ssps_reference == "epoch":
            return None
        if self.hparams.ssps_reference == "view":
            return torch.nn.functional.normalize(view.detach(), dim=-1)
        return self.encode_reference(batch.ref.data.to(self.device)[:, 0])

    def reference_view_supported(self):
        """True where ``compute_forward`` passes a view representation."""
        return False

    def check_reference(self):
        """ValueError naming ``ssps_reference`` when this Brain cannot use it."""
        mode = self.hparams.ssps_reference
        if mode not in REFERENCES:
            raise ValueError(f"ssps_reference {mode!r} not in {REFERENCES}")
        if mode == "view" and not self.reference_view_supported():
            raise ValueError(
                f"ssps_reference: view takes the anchor view's representation, which {type(self).__name__} "
                "does not pass (SimCLR without a projector does); use ssps_reference: crop"
            )
        if mode == "epoch" and self.ssps.sampling == "nn":
            raise ValueError("ssps_reference: epoch gives no per-step reference, which ssps_sampling: nn needs")

    @torch.no_grad()
    def fill_ssps_queues(self, references_only=False):
        """One eval-mode, no-grad pass over the training set that writes both
        queues (the reference code's buffer-snapshot step), used when SSPS
        starts from a checkpoint whose queues were never written; with
        ``references_only`` (``ssps_reference: epoch``), Q-hat only, in
        batches of ``ssps_ref_pass_batch_size``."""
        kwargs = dict(self.train_loader_kwargs)
        if references_only:
            kwargs["batch_size"] = self.hparams.ssps_ref_pass_batch_size
        if dist.is_distributed():
            kwargs.pop("shuffle", None)
            kwargs["sampler"] = torch.utils.data.DistributedSampler(self.train_set, shuffle=True, drop_last=True)
        loader = sb.dataio.dataloader.make_dataloader(self.train_set, **kwargs)
        self.modules.eval()
        desc = "SSPS reference pass" if references_only else "SSPS queue fill"
        for batch in tqdm(loader, desc=desc, disable=self.noprogressbar or dist.rank() != 0):
            ref = self.encode_reference(batch.ref.data.to(self.device)[:, 0])
            stored = None
            if not references_only:
                with self.step_precision():
                    stored = self.ssps_fill_embeddings(batch)
            self.ssps.update(batch.index.data.to(self.device), ref, stored)
        self.modules.train()
        logger.info("SSPS: %s: Q-hat (%d rows)%s", desc, self.ssps.ref_queue.size,
                    "" if references_only else f" and Q' ({self.ssps.pos_queue.size} rows)")

    def substitute_positive_view(self, indices, ref, positive):
        """The one-view ``ssps_step`` (SimCLR, VICReg, SwAV): sample ->
        replace the sampled rows of ``positive`` (b, D) -> write the originals."""
        replaced = positive
        if self.ssps_active():
            slots, stats = self.ssps.sample(indices, ref)
            replaced = self.ssps.substitute(positive, slots)
            self.record(**stats)
        self.after_finite_step(self.ssps.update, indices, ref, positive.detach()[None])
        return replaced

    def ssps_fill_embeddings(self, batch):
        """(V, b, D_emb) positive-branch embeddings of a batch, eval mode."""
        raise TypeError(f"{type(self).__name__} does not support SSPS")

    def on_train_epoch_start(self, epoch):
        """SSPS epochs start with k-means on Q-hat (after a fill pass if the
        queues were never written, e.g. resuming a plain SSL checkpoint)."""
        if not self.ssps_active():
            return
        if not self.ssps.pos_queue.filled or not self.ssps.ref_queue.filled:
            self.fill_ssps_queues()
        elif self.hparams.ssps_reference == "epoch" and int(self.ssps.clustered_epoch) != epoch:
            self.fill_ssps_queues(references_only=True)  # not again on an intra-epoch resume
        self.record(**self.ssps.cluster(epoch))
