"""Audio loading, random crops and SpeechBrain datasets for SSL training.

Training items carry groups of random crops taken from one utterance, e.g.
SimCLR ``{"views": (2, 2.0)}`` (two 2-s crops), DINO ``{"global_views":
(2, 4.0), "local_views": (4, 2.0)}``, plus the clean SSPS reference
``{"ref": (1, 4.0)}``. Each crop starts uniformly at random, independently of
the others. An utterance shorter than the longest crop is wrap-padded
(repeated from its start), as in the reference code and VoxCeleb practice.

The crops of an utterance in an epoch are a function of (``seed``, epoch,
utterance) only (``KeyedCrops``, ``EpochKeyedSampler``): not of the loader
worker that reads it, of the batches read before it or of the number of
processes. A run resumed in the middle of an epoch therefore draws the same
crops for the rest of that epoch as the uninterrupted run.
"""

import logging

import speechbrain as sb
import torch
from speechbrain.dataio import audio_io

logger = logging.getLogger(__name__)


def load_utterance(path, sample_rate=16000, start=0, frames=-1):
    """Reads a mono wav (or ``frames`` samples of it from ``start``) as a
    float32 tensor (T,), with checks that name the file.

    Raises
    ------
    RuntimeError if the file is missing or unreadable; ValueError if it is not
    mono or not at ``sample_rate`` (no silent resampling or down-mixing), or
    holds fewer samples than the manifest's ``stop`` says.
    """
    wav, sr = audio_io.load(path, dtype=torch.float32, frame_offset=start, num_frames=frames)  # (C, T)
    if sr != sample_rate:
        raise ValueError(
            f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz; "
            "resample the corpus first (e.g. sox in.wav -r 16000 out.wav)"
        )
    if wav.shape[0] != 1:
        raise ValueError(
            f"{path}: {wav.shape[0]} channels, expected mono; "
            "down-mix the corpus first (e.g. sox in.wav -c 1 out.wav)"
        )
    if frames > 0 and wav.shape[1] != frames:
        raise ValueError(
            f"{path}: {wav.shape[1]} samples from {start}, expected {frames}: "
            "the file is shorter than the manifest's stop; re-run data preparation"
        )
    if wav.shape[1] == 0:
        raise ValueError(f"{path}: empty audio file")
    return wav[0]


def wrap_pad(wav, length):
    """Repeats ``wav`` (T,) from its start until it has at least ``length``."""
    if wav.shape[0] >= length:
        return wav
    reps = -(-length // wav.shape[0])  # ceil division
    return wav.repeat(reps)[:length]


def random_crops(wav, length, n):
    """``n`` independent uniformly placed crops of ``length`` samples: (n, length)."""
    wav = wrap_pad(wav, length)
    starts = torch.randint(0, wav.shape[0] - length + 1, (n,))
    return torch.stack([wav[s : s + length] for s in starts.tolist()])  # (n, length): n slices, no index tensor


def crop_pipeline(crops, sample_rate=16000):
    """Builds ``(wav, start, stop) -> (crop groups...)`` for ``DynamicItemDataset``.

    The utterance is samples [start, stop) of ``wav`` (SpeechBrain's VoxCeleb
    manifest columns). When the crops cover less than half of it, only the
    cropped samples are read (one seek-and-read per crop); a shorter
    utterance is read once (measured on the development machine: 0.3 ms for
    a 6-s wav against 2 ms for three crop reads; 6.5 ms against 2.5 ms for
    a 60-s one). Both ways draw the same starts from the generator, so the
    crops are the same.

    Arguments
    ---------
    crops : dict
        group name -> (number of crops, seconds).

    Returns
    -------
    func, provides : the pipeline function and the list of group names.
    """
    groups = [(k, int(n), int(round(s * sample_rate))) for k, (n, s) in crops.items()]
    covered = sum(n * length for _, n, length in groups)

    def pipeline(wav, start=0, stop=-1):
        start, stop = int(start), int(stop)
        frames = stop - start if stop > 0 else -1
        if frames < 2 * covered:
            sig = load_utterance(wav, sample_rate, start, frames)
            out = [random_crops(sig, length, n) for _, n, length in groups]
        else:
            out = []
            for _, n, length in groups:
                offsets = torch.randint(0, frames - length + 1, (n,))  # as random_crops on the whole utterance
                out.append(torch.stack([load_utterance(wav, sample_rate, start + int(o), length) for o in offsets]))
        return out[0] if len(out) == 1 else tuple(out)

    return pipeline, [k for k, _, _ in groups]


def train_dataset(csv_path, crops, sample_rate=16000):
    """Training set with crop groups and the integer utterance index."""
    data = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path)
    func, provides = crop_pipeline(crops, sample_rate)
    sb.dataio.dataset.add_dynamic_item([data], func, takes=["wav", "start", "stop"], provides=provides)
    sb.dataio.dataset.add_dynamic_item(
        [data], lambda i: int(i), takes="utt_index", provides="index"
    )
    data.set_output_keys(["id", "index", *provides])
    return data


def item_seed(seed, epoch, index):
    """63-bit seed of utterance ``index``'s crops in ``epoch`` (splitmix64 of the three)."""
    mask = (1 << 64) - 1
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index)) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1


class EpochKeyedSampler(torch.utils.data.Sampler):
    """Wraps an index sampler and yields ``(index, epoch)`` keys for
    ``KeyedCrops``; ``set_epoch`` is passed on to the wrapped sampler."""

    def __init__(self, sampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((int(i), self.epoch) for i in self.sampler)

    def __len__(self):
        return len(self.sampler)


class KeyedCrops(torch.utils.data.Dataset):
    """A training dataset read with ``(index, epoch)`` keys: the item's random
    crops are drawn from the CPU generator seeded with ``item_seed(seed, epoch, index)``
    inside ``fork_rng``, so they do not depend on, nor change, the global
    generator of the process that reads them.

    ``partners`` ((N,) dataset positions, or None) makes the crop groups
    ``partner_groups`` of item i come from item ``partners[i]`` (CA-DINO's
    cross-utterance positives, ``ssps_ext.ssps.cluster_aware``); set it
    before the epoch's loader starts (workers copy the dataset then).
    """

    def __init__(self, data, seed):
        self.data, self.seed = data, int(seed)
        self.partners, self.partner_groups = None, ()

    def __len__(self):
        return len(self.data)

    def _draw(self, index, seed):
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues a seed for
            # every lazily initialised accelerator, recording a stack trace
            # each time (0.45 ms of the 1.5 ms an item took)
            torch.default_generator.manual_seed(seed)
            return self.data[index]

    def __getitem__(self, key):
        index, epoch = key
        item = self._draw(index, item_seed(self.seed, epoch, index))
        partner = index if self.partners is None else int(self.partners[index])
        if partner != index:
            other = self._draw(partner, item_seed(self.seed + 1, epoch, index))
            item.update({group: other[group] for group in self.partner_groups})
        return item


def utterance_dataset(csv_paths, sample_rate=16000):
    """Full-length utterances (for embedding extraction), one row per ID.

    Several CSVs (e.g. enrol and test) are merged and de-duplicated by ID.
    """
    rows = {}
    for path in csv_paths:
        data = sb.dataio.dataio.load_data_csv(path)
        rows.update(data)
    data = sb.dataio.dataset.DynamicItemDataset(rows)
    sb.dataio.dataset.add_dynamic_item(
        [data],
        lambda wav: load_utterance(wav, sample_rate),
        takes="wav",
        provides="sig",
    )
    data.set_output_keys(["id", "sig"])
    return data
