"""``VerificationEvaluation``: the evaluation half of ``SSLBrain``.

The evaluation encoder is the parameter average of the last
``eval_average_last`` end-of-epoch checkpoints (the paper averages 10), and
all ``verification_lists`` are scored from one extraction, with optional
score normalisation whose cohort embeddings are cached next to the
checkpoint.
"""

import logging
import os
from functools import partial

import torch
from speechbrain.utils.checkpoints import Checkpointer, average_checkpoints

from ..score_norm import cohort_cache_file, state_digest
from ..verification import evaluate_lists

logger = logging.getLogger(__name__)


class VerificationEvaluation:
    """Mixin of ``SSLBrain``: evaluation encoder and trial-list scoring."""

    def load_for_evaluation(self, checkpoint=None):
        """Loads the evaluation encoder and returns the checkpoints it came from.

        The encoder is the parameter average (BatchNorm statistics included)
        of the ``eval_average_last`` latest epoch checkpoints, up to and
        including ``checkpoint`` (a ``CKPT+...`` folder of any run with this
        encoder), or up to this run's latest one. The paper averages the last
        10; 1 takes the checkpoint as it is. Only the encoder is read, so
        optimiser, queue or RNG state of that run do not matter.
        """
        n = int(self.hparams.eval_average_last)
        if n < 1:
            raise ValueError(f"eval_average_last must be >= 1, got {n}")
        folder = self.checkpointer.checkpoints_dir
        if checkpoint:
            if not os.path.isfile(os.path.join(checkpoint, "CKPT.yaml")):
                raise FileNotFoundError(f"eval_checkpoint {checkpoint} is not a CKPT+... checkpoint folder")
            folder = os.path.dirname(os.path.abspath(checkpoint))
        every = Checkpointer(folder).list_checkpoints()
        ckpts = [c for c in every if c.meta.get("end-of-epoch", True)]
        if checkpoint:  # it and the end-of-epoch checkpoints before it
            target = next(c for c in every if os.path.samefile(c.path, checkpoint))
            ckpts = [c for c in ckpts if c.meta["unixtime"] < target.meta["unixtime"]] + [target]
        ckpts.sort(key=lambda c: c.meta["unixtime"])
        if not ckpts:
            raise FileNotFoundError(f"no checkpoint to evaluate in {folder}")
        chosen = ckpts[-n:]
        missing = [c.path for c in chosen if self.eval_encoder_key not in c.paramfiles]
        if missing:
            raise KeyError(f"checkpoint {missing[0]} holds no {self.eval_encoder_key!r} to evaluate")
        if len(chosen) < n:
            logger.warning(
                "eval_average_last = %d but only %d checkpoints in %s: averaging those "
                "(keep_checkpoints sets how many a run keeps)", n, len(chosen), folder,
            )
        state = average_checkpoints(
            chosen, self.eval_encoder_key, parameter_loader=partial(torch.load, map_location="cpu", weights_only=True)
        )
        self.embedding_encoder().load_state_dict(state)
        return [str(c.path) for c in chosen]

    # settings besides the weights and the cohort that change cohort embeddings
    cohort_cache_settings = ("sample_rate", "n_mels", "n_fft", "feature_std_norm", "eval_batch_size")

    def evaluate_verification(self, utterances, lists, out_json, checkpoint=None, cohort=None):
        """Scores the trial lists ``lists`` ({name: trial file}, the
        ``verification_lists`` setting; or one file) with full-utterance
        cosine similarity, from one extraction (``evaluate_lists``).

        Writes ``out_json`` (the first list's EER %, minDCF_0.01, minDCF_0.05,
        n_trials, trials_file; checkpoint: the latest averaged,
        averaged_checkpoints; ``lists``: the metrics of every list) and the
        scores and pictures; returns the dict. With ``cohort`` (a dataset of
        training utterances), ``score_norm_cohort`` of them drawn at random
        (seeded) are embedded and the normalised scores' metrics are added
        under ``score_norm``. Those embeddings are cached in the evaluated
        checkpoint's folder, keyed by the averaged weights, the cohort and
        ``cohort_cache_settings``, and reused by the next evaluation.
        """
        ckpt_paths = self.load_for_evaluation(checkpoint)
        encoder = self.embedding_encoder()
        self.modules.eval()

        def embed(wavs, lengths):
            return self.encode(wavs, encoder, lengths)

        cohort_ids = cache = None
        if cohort is not None:
            ids = sorted(cohort.data)
            size = min(int(self.hparams.score_norm_cohort), len(ids))
            pick = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))[:size]
            cohort_ids = [ids[i] for i in sorted(pick.tolist())]
            cache = cohort_cache_file(ckpt_paths[-1], cohort_ids, {
                "encoder": state_digest(encoder.state_dict()),
                "checkpoints": [os.path.basename(p) for p in ckpt_paths],
                "wavs": [cohort.data[i]["wav"] for i in cohort_ids],
                "settings": {k: getattr(self.hparams, k, None) for k in self.cohort_cache_settings},
            })
        return evaluate_lists(
            embed, utterances, lists, out_json, self.device,
            batch_size=self.hparams.eval_batch_size,
            cohort=(cohort, cohort_ids) if cohort is not None else None,
            top_k=self.hparams.score_norm_top_k, cohort_cache=cache,
            extra={"checkpoint": ckpt_paths[-1], "averaged_checkpoints": len(ckpt_paths)},
            progressbar=not self.noprogressbar,
        )
