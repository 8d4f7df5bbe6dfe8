"""The pieces that make a resume inside an epoch exact: keyed crops,
augmentation that depends only on the global generator, and the generator
state of an intra-epoch checkpoint restored at the next step, per rank."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.augment.time_domain import AddNoise, AddReverb
from speechbrain.utils.checkpoints import Checkpointer

from ssps_ext import distributed
from ssps_ext.audio_scan import write_augmentation_csv
from ssps_ext.augment import ViewAugment
from ssps_ext.data import EpochKeyedSampler, KeyedCrops, random_crops
from ssps_ext.rng import RandomState


class Waves(torch.utils.data.Dataset):
    """Item i: two random 50-sample crops of the ramp i * 1000 + arange(400)."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return random_crops(torch.arange(400.0) + 1000 * i, 50, 2)


def test_crops_depend_only_on_seed_epoch_and_utterance():
    data = KeyedCrops(Waves(), seed=7)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = data[(3, 2)]
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is untouched
    torch.rand(100)  # whatever the process drew before
    assert torch.equal(data[(3, 2)], first)
    assert not torch.equal(data[(3, 1)], first)  # another epoch, other crops
    assert not torch.equal(KeyedCrops(Waves(), seed=8)[(3, 2)], first)
    assert torch.equal(first[:, 0] // 1000, torch.tensor([3.0, 3.0]))  # utterance 3's samples


def test_keyed_loader_gives_the_same_batches_with_workers_and_after_skipping():
    """A loader with 2 workers gives the batches of a 0-worker loader; a
    loader started at batch 2 (as SpeechBrain's recovery does) gives the
    same batches 2.. as the full pass."""
    sampler = EpochKeyedSampler(torch.utils.data.RandomSampler(range(6), generator=torch.Generator().manual_seed(1)))
    sampler.set_epoch(4)
    keys = list(sampler)
    assert sorted(keys) == [(i, 4) for i in range(6)]

    def batches(keys, workers):
        loader = torch.utils.data.DataLoader(KeyedCrops(Waves(), 3), batch_size=2, sampler=keys, num_workers=workers)
        return list(loader)

    plain = batches(keys, 0)
    assert len(plain) == 3 and all(torch.equal(a, b) for a, b in zip(plain, batches(keys, 2)))
    assert all(torch.equal(a, b) for a, b in zip(plain[1:], batches(keys[2:], 2)))


@pytest.fixture(scope="module")
def augmenter(tmp_path_factory):
    """ViewAugment with 5 distinct noise files and 3 distinct RIRs."""
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    for kind, n, length in (("noise", 5, 4000), ("rir", 3, 300)):
        os.makedirs(root / kind)
        for i in range(n):
            sig = rng.standard_normal(length) * (np.exp(-np.arange(length) / 50) if kind == "rir" else 0.1)
            sf.write(str(root / kind / f"{kind}{i}.wav"), sig.astype(np.float32), 16000)
        write_augmentation_csv(str(root / kind), str(root / f"{kind}.csv"))
    return lambda: ViewAugment(
        noise=[AddNoise(csv_file=str(root / "noise.csv"), snr_low=0, snr_high=5)],
        reverb=AddReverb(csv_file=str(root / "rir.csv")), strategy="all", aug_prob=1.0, reverb_groups=2,
    )


def test_augmentation_depends_only_on_the_global_generator(augmenter):
    """The same generator state gives the same augmented batch whatever the
    augmenter did before (SpeechBrain's lobes alone would continue their file
    streams), so a resumed run augments as the uninterrupted one."""
    wavs = torch.randn(6, 2000)
    fresh, used = augmenter(), augmenter()
    for _ in range(3):
        used(torch.randn(7, 2000))
    torch.manual_seed(5)
    expected = fresh(wavs)
    torch.manual_seed(5)
    assert torch.equal(used(wavs), expected)
    assert not torch.equal(expected, wavs)
    torch.manual_seed(6)
    assert not torch.equal(used(wavs), expected)


def test_intra_epoch_generator_state_waits_for_the_next_step(tmp_path):
    """An end-of-epoch checkpoint's state is restored on load; an intra-epoch
    one only by apply_pending (the first resumed step), once."""
    torch.manual_seed(0)
    Checkpointer(str(tmp_path / "a"), {"rng": RandomState()}).save_checkpoint(end_of_epoch=False)
    expected = torch.rand(4)
    state = RandomState()
    torch.manual_seed(99)
    Checkpointer(str(tmp_path / "a"), {"rng": state}).recover_if_possible()  # the restart's own draws
    assert not torch.equal(torch.rand(4), expected)  # loading restored nothing yet
    assert state.apply_pending() and torch.equal(torch.rand(4), expected)
    assert not state.apply_pending()  # only once

    torch.manual_seed(0)
    Checkpointer(str(tmp_path / "b"), {"rng": RandomState()}).save_checkpoint(end_of_epoch=True)
    expected = torch.rand(4)
    torch.manual_seed(99)
    Checkpointer(str(tmp_path / "b"), {"rng": RandomState()}).recover_if_possible()
    assert torch.equal(torch.rand(4), expected)


def test_each_rank_restores_its_own_global_generators(tmp_path, monkeypatch):
    """Rank 0 writes every rank's torch / numpy / random states; rank 1
    restores rank 1's. Ranks are simulated: the gather returns the two
    ranks' states as all_gather_object would."""
    import random

    states = []
    for seed in (0, 1):
        torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
        states.append(RandomState._capture())
    expected = (torch.rand(2), np.random.rand(2), random.random())  # rank 1's next draws
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "gather_objects", lambda x: states)
    saver = RandomState()
    saver.gather_rank_states()
    Checkpointer(str(tmp_path), {"rng": saver}).save_checkpoint()
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    torch.manual_seed(42), np.random.seed(42), random.seed(42)
    Checkpointer(str(tmp_path), {"rng": RandomState()}).recover_if_possible()
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
