"""CA-DINO glue for ``SSLBrain``: at each round's first epoch, embed every
full training utterance with the evaluation encoder (DINO: the teacher) and
cluster them; at every epoch, draw each anchor's partner and hand the
partners to the training dataset (``ssps_ext.ssps.cluster_aware``).

A Brain supports it by naming the crop groups a partner provides
(``cluster_aware_groups``; DINO: the global, teacher views).
"""

import os

import torch

from ..data import utterance_dataset
from ..ssps.kmeans import resolve_backend
from ..verification import extract_embeddings


def label_codes(rows, column):
    """(N,) integer codes of a manifest column (rows in utterance order), or None."""
    if not rows or column not in rows[0]:
        return None
    names = {}
    return torch.tensor([names.setdefault(r[column], len(names)) for r in rows])


class ClusterAwareHooks:
    """Mixin of ``SSLBrain``; inactive when ``cluster_aware`` is null."""

    cluster_aware_groups = ()  # crop groups taken from the partner

    @property
    def cluster_aware(self):
        return self.hparams.cluster_aware

    def prepare_cluster_aware(self, train_set):
        """Checks the settings and sizes the assignments (before fit)."""
        ca = self.cluster_aware
        if ca is None:
            return
        if not self.cluster_aware_groups:
            raise TypeError(f"{type(self).__name__} does not support cluster_aware (CA-DINO)")
        if ca.start_epoch > self.hparams.number_of_epochs:
            raise ValueError(
                f"cluster_aware start_epoch = {ca.start_epoch} is after the last epoch "
                f"(number_of_epochs = {self.hparams.number_of_epochs}): no partner would ever be drawn"
            )
        if self.hparams.dataloader_options.get("persistent_workers", False):
            raise ValueError("cluster_aware needs dataloader_options persistent_workers: False (partners change per epoch)")
        resolve_backend(ca.kmeans_backend, self.device)
        ca.setup(len(train_set))
        ids = list(train_set.data_ids)
        self._ca_utt = torch.tensor([int(train_set.data[i]["utt_index"]) for i in ids])  # dataset position -> utt
        self._ca_pos = torch.empty_like(self._ca_utt)
        self._ca_pos[self._ca_utt] = torch.arange(len(ids))  # utt -> dataset position
        rows = [train_set.data[ids[p]] for p in self._ca_pos.tolist()]  # in utterance order
        self._ca_ids = [ids[p] for p in self._ca_pos.tolist()]
        self._ca_labels = {"speakers": label_codes(rows, "spk_id"), "recordings": label_codes(rows, "rec_id")}

    @torch.no_grad()
    def embed_training_set(self):
        """(N, D) L2-normalised full-utterance embeddings in utterance order."""
        encoder = self.embedding_encoder()
        mode = encoder.training
        encoder.eval()
        data = utterance_dataset([os.path.join(self.hparams.manifest_folder, "train.csv")], self.hparams.sample_rate)
        emb = extract_embeddings(
            lambda wavs, lengths: self.encode(wavs, encoder, lengths), data, self._ca_ids, self.device,
            batch_size=self.hparams.eval_batch_size, progressbar=not self.noprogressbar, desc="CA-DINO embeddings",
        )
        encoder.train(mode)
        return emb

    def cluster_aware_epoch_start(self, epoch):
        """Clusters when a round starts, then sets this epoch's partners."""
        ca = self.cluster_aware
        if ca is None:
            return
        if not ca.active(epoch):
            self.train_crops.partners = None
            return
        if ca.due(epoch):
            self.record(**ca.cluster(self.embed_training_set().to(self.device), epoch, **self._ca_labels))
        partners, stats = ca.partners(epoch, **self._ca_labels)  # utterance indices
        self.record(**stats)
        self.train_crops.partners = self._ca_pos[partners[self._ca_utt]]  # dataset positions
        self.train_crops.partner_groups = tuple(self.cluster_aware_groups)
