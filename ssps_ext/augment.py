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
into ``reverb_groups`` groups that each get their own RIR.
Call it once per view so the views of one utterance are augmented
independently.
"""

import torch


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

    def reset_sources(self):
        """Restarts the noise / RIR file streams of the SpeechBrain lobes
        (rebuilt, reshuffled from the global RNG, at their next use), so an
        epoch's augmentation depends only on the RNG state at its start and
        a resumed run continues exactly."""
        for lobe in [*self.noise, self.reverb]:
            for attr in ("data_loader", "noise_data", "rir_data"):
                if lobe is not None and hasattr(lobe, attr):
                    delattr(lobe, attr)

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
                out[group] = self.reverb(out[group])
        category = torch.randint(0, max(1, len(self.noise)), (wavs.shape[0],), device=wavs.device)
        for c, lobe in enumerate(self.noise):
            rows = (noi & (category == c)).nonzero().squeeze(1)
            if len(rows):
                lengths = torch.ones(len(rows), device=wavs.device)
                out[rows] = lobe(out[rows], lengths)
        return out
