"""EER during training: the first trial list scored every few epochs.

With ``eval_interval_epochs: N`` (> 0), the end of every N-th training epoch
embeds the utterances of the first ``verification_lists`` entry with the
*current* weights (eval mode, no gradient; not the checkpoint average used
for the final evaluation) and adds ``EER`` (%) and ``minDCF_0.01`` to that
epoch's line of ``train_log.txt`` and to the TensorBoard curves, so a long
run shows whether SSPS is helping while it trains. Nothing is written
besides the log; the random number generators and the modules' train/eval
modes are left as they were, so a run with it ends with the same weights as
a run without it.
"""

import torch

from .metrics import verification_metrics
from .verification import _check_known, extract_embeddings, read_trials, score_trials, trial_id


class PeriodicEER:
    """Scores one trial list with a Brain's current encoder.

    Arguments
    ---------
    dataset : DynamicItemDataset of the enrol/test utterances (``sig`` item).
    trials_file : str, the list to score (checked against ``dataset`` now,
        so a bad list fails before training).
    interval : int, epochs between evaluations (0 = never).
    batch_size : int, utterances per embedding batch (1 is exact).
    """

    def __init__(self, dataset, trials_file, interval, batch_size=1):
        if int(interval) < 0:
            raise ValueError(f"eval_interval_epochs must be >= 0, got {interval}")
        self.dataset, self.interval, self.batch_size = dataset, int(interval), batch_size
        self.trials = read_trials(trials_file)
        _check_known(self.trials, trials_file, dataset)
        self.ids = sorted({trial_id(p) for t in self.trials for p in t[1:]})
        self.labels = [t[0] for t in self.trials]

    def due(self, epoch):
        return self.interval > 0 and int(epoch) % self.interval == 0

    @torch.no_grad()
    def __call__(self, brain, progressbar=False):
        """{"EER": percent, "minDCF_0.01": cost} of ``brain``'s current encoder."""
        modules = list(brain.modules.modules())
        modes = [m.training for m in modules]
        encoder = brain.embedding_encoder()
        brain.modules.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                emb = extract_embeddings(
                    lambda wavs, lengths: brain.encode(wavs, encoder, lengths),
                    self.dataset, self.ids, brain.device, self.batch_size, progressbar,
                )
        finally:
            for module, mode in zip(modules, modes):
                module.training = mode
        metrics = verification_metrics(score_trials(self.ids, emb, self.trials), self.labels)
        return {"EER": round(metrics["EER"], 3), "minDCF_0.01": round(metrics["minDCF_0.01"], 4)}
