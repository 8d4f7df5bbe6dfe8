"""Per-view noise and reverberation with SpeechBrain's augmentation lobes.

``ViewAugment`` decides per sample (vectorised masks, no per-sample loop)
which augmentations a crop receives, as the reference code does, and applies
SpeechBrain's ``AddReverb`` and ``AddNoise`` to the selected rows:

- strategy ``reverb+noise`` (SimCLR configs): reverberation, then noise;
- ``all`` (DINO configs): uniformly one of {none, reverb, noise, reverb+noise};
- ``reverb|noise``: uniformly one of the two; ``reverb``; ``noise``; ``none``.

``noise`` holds one ``AddNoise`` lobe per noise category (MUSAN speech /
noise / music, each with its own SNR range); a noised sample draws its
category uniformly. ``AddReverb`` uses one RIR per call, so rows are split
into ``reverb_groups`` groups that each get their own RIR. The noise and
RIR files of a call are drawn at that call from the global generator, so the
augmentation of a step depends only on that generator's state.
Call it once per view so the views of one utterance are augmented
independently.
"""

import torch
from speechbrain.augment.time_domain import Resample
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.legacy import ExtendedCSVDataset


class ViewAugment(torch.nn.Module):
    """Random reverberation and additive noise for a batch of crops.

    Arguments
    ---------
    noise : list of speechbrain.augment.time_domain.AddNoise
        One lobe per noise category (may be empty).
    reverb : speechbrain.augment.time_domain.AddReverb or None
    strategy : str
        See the module docstring.
    aug_prob : float
        Probability that a crop is augmented at all.
    reverb_groups : int
        Number of RIRs drawn per call.

    Example
    -------
    >>> aug = ViewAugment(noise=[], reverb=None, strategy="none")
    >>> aug(torch.zeros(3, 100)).shape
    torch.Size([3, 100])
    """

    STRATEGIES = ("reverb+noise", "all", "reverb|noise", "reverb", "noise", "none")

    def __init__(self, noise=(), reverb=None, strategy="reverb+noise", aug_prob=1.0, reverb_groups=8):
        super().__init__()
        if strategy not in self.STRATEGIES:
            raise ValueError(f"augmentation strategy {strategy!r} not in {self.STRATEGIES}")
        if "reverb" in strategy and reverb is None:
            raise ValueError(f"augmentation strategy {strategy!r} needs an AddReverb lobe")
        if "noise" in strategy and len(noise) == 0:
            raise ValueError(f"augmentation strategy {strategy!r} needs AddNoise lobes")
        self.noise = torch.nn.ModuleList(noise)
        self.reverb = reverb
        self.strategy = strategy
        self.aug_prob = aug_prob
        self.reverb_groups = reverb_groups
        self._sources = {}  # id(lobe) -> its file list (ExtendedCSVDataset)

    def reset_sources(self):
        """Forgets the cached noise / RIR file lists (re-read at next use)."""
        self._sources = {}

    def _point_at_fresh_files(self, lobe, batch_size):
        """Makes ``lobe`` read its next files from a new shuffled pass.

        SpeechBrain's lobes stream their noise / RIR files from a loader
        created at first use and kept across calls, a position that no
        checkpoint holds. Here every call starts a new pass over the file
        list, shuffled from the global generator (two draws), so which files
        a call uses depends only on that generator, which checkpoints restore:
        a run resumed in the middle of an epoch augments the rest of it as
        the uninterrupted run does. The file list is read once.
        """
        key = id(lobe)
        if key not in self._sources:
            self._sources[key] = ExtendedCSVDataset(
                csvpath=lobe.csv_file,
                output_keys=getattr(lobe, "csv_keys", None),
                sorting=lobe.sorting if lobe.sorting != "random" else "original",
                replacements=lobe.replacements,
            )
        noise = lobe is not self.reverb  # AddReverb resamples its RIRs itself
        if noise and lobe.noise_sample_rate != lobe.clean_sample_rate and not hasattr(lobe, "resampler"):
            lobe.resampler = Resample(lobe.noise_sample_rate, lobe.clean_sample_rate)
        lobe.data_loader = make_dataloader(
            self._sources[key], batch_size=batch_size, shuffle=lobe.sorting == "random", num_workers=0
        )
        setattr(lobe, "noise_data" if noise else "rir_data", iter(lobe.data_loader))

    def _masks(self, n, device):
        """Boolean (n,) masks: which rows get reverb, which get noise."""
        on = torch.rand(n, device=device) < self.aug_prob
        choice = torch.randint(0, 4, (n,), device=device)  # bit0 reverb, bit1 noise
        s = self.strategy
        if s == "reverb+noise":
            rev, noi = on, on
        elif s == "all":
            rev, noi = on & (choice % 2 == 1), on & (choice >= 2)
        elif s == "reverb|noise":
            rev = on & (choice % 2 == 1)
            rev, noi = rev, on & ~rev
        else:
            rev = on & torch.tensor(s == "reverb", device=device)
            noi = on & torch.tensor(s == "noise", device=device)
        return rev, noi

    def forward(self, wavs):
        """wavs: (N, T) -> augmented (N, T)."""
        if self.strategy == "none":
            return wavs
        rev, noi = self._masks(wavs.shape[0], wavs.device)
        out = wavs.clone()
        rows = rev.nonzero().squeeze(1)
        for group in rows.tensor_split(min(self.reverb_groups, max(1, len(rows)))):
            if len(group):
                self._point_at_fresh_files(self.reverb, 1)
                out[group] = self.reverb(out[group])
        category = torch.randint(0, max(1, len(self.noise)), (wavs.shape[0],), device=wavs.device)
        for c, lobe in enumerate(self.noise):
            rows = (noi & (category == c)).nonzero().squeeze(1)
            if len(rows):
                if lobe.csv_file is not None:
                    self._point_at_fresh_files(lobe, len(rows))
                lengths = torch.ones(len(rows), device=wavs.device)
                out[rows] = lobe(out[rows], lengths)
        return out
