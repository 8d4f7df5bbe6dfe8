"""The score-normalisation cohort embeddings are cached per evaluated weights."""

import glob
import json
import os
import types

import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import Checkpointer

from ssps_ext.brains.base import SSLBrain
from ssps_ext.score_norm import cached_cohort_embeddings, cohort_cache_file, state_digest


def test_cache_reused_rewritten_and_keyed(tmp_path):
    counter = {"n": 0}

    def compute():
        counter["n"] += 1
        return torch.full((3, 2), float(counter["n"]))

    folder = str(tmp_path)
    path = cohort_cache_file(folder, ["a", "b", "c"], {"encoder": "w1"})
    assert os.path.basename(path).startswith("cohort_3_")
    first = cached_cohort_embeddings(path, ["a", "b", "c"], compute)
    again = cached_cohort_embeddings(path, ["a", "b", "c"], compute)
    assert counter["n"] == 1 and torch.equal(first, again)
    assert os.listdir(folder) == [os.path.basename(path)]  # no temporary file left
    assert cohort_cache_file(folder, ["a", "b", "c"], {"encoder": "w2"}) != path
    assert cohort_cache_file(folder, ["a", "b", "d"], {"encoder": "w1"}) != path
    with open(path, "wb") as f:
        f.write(b"truncated")
    assert torch.equal(cached_cohort_embeddings(path, ["a", "b", "c"], compute), torch.full((3, 2), 2.0))
    assert counter["n"] == 2


def test_state_digest_follows_the_values():
    net = torch.nn.Linear(3, 2)
    before = state_digest(net.state_dict())
    assert state_digest(torch.nn.Linear(3, 2).state_dict()) != before
    with torch.no_grad():
        net.bias[0] += 1e-6
    assert state_digest(net.state_dict()) != before


def dataset(prefix, n):
    data = {f"{prefix}/r/{k}": {"duration": 1.0, "wav": f"/x/{prefix}{k}.wav"} for k in range(n)}
    out = sb.dataio.dataset.DynamicItemDataset(data)
    sb.dataio.dataset.add_dynamic_item(
        [out], lambda i: torch.randn(8, generator=torch.Generator().manual_seed(sum(map(ord, i)))),
        takes="id", provides="sig",
    )
    out.set_output_keys(["id", "sig"])
    return out


def fake_brain(save, net, average=1):
    """What SSLBrain.evaluate_verification uses of a Brain; counts embeddings."""
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(eval_average_last=average, score_norm_cohort=6, score_norm_top_k=3,
                                      eval_batch_size=1, sample_rate=16000),
        checkpointer=Checkpointer(save, {"encoder": net}), eval_encoder_key="encoder",
        embedding_encoder=lambda: net, modules=torch.nn.ModuleDict({"encoder": net}),
        device="cpu", noprogressbar=True, cohort_cache_settings=SSLBrain.cohort_cache_settings, embedded=[],
    )
    brain.load_for_evaluation = lambda checkpoint=None: SSLBrain.load_for_evaluation(brain, checkpoint)

    def encode(wavs, encoder, lengths):
        brain.embedded.append(len(wavs))
        return encoder(wavs)

    brain.encode = encode
    return brain


def test_second_evaluation_reuses_cohort_changed_checkpoint_recomputes(tmp_path, monkeypatch):
    monkeypatch.setattr("ssps_ext.verification.write_plots", lambda *args: None)
    trials = tmp_path / "trials.txt"
    trials.write_text("1 t/r/0.wav t/r/1.wav\n0 t/r/2.wav t/r/3.wav\n0 t/r/0.wav t/r/3.wav\n")
    utterances, cohort = dataset("t", 4), dataset("c", 10)
    net = torch.nn.Linear(8, 4)
    brain = fake_brain(tmp_path / "save", net)
    brain.checkpointer.save_checkpoint(meta={"epoch": 1})

    def evaluate(b):
        b.embedded.clear()
        out = str(tmp_path / "out" / "verification.json")
        SSLBrain.evaluate_verification(b, utterances, {"O": str(trials)}, out, cohort=cohort)
        return sum(b.embedded), json.load(open(out))

    count, first = evaluate(brain)
    assert count == 4 + 6  # trial utterances + the cohort
    ckpt = first["checkpoint"]
    assert len(glob.glob(os.path.join(ckpt, "cohort_6_*.pt"))) == 1
    count, again = evaluate(brain)
    assert count == 4 and again["score_norm"] == first["score_norm"]  # cohort from the cache
    with torch.no_grad():  # a new epoch: other weights, other checkpoint
        net.weight.mul_(-1.5)
    brain.checkpointer.save_checkpoint(meta={"epoch": 2})
    count, later = evaluate(brain)
    assert count == 10 and later["checkpoint"] != ckpt
    averaged = fake_brain(tmp_path / "save", net, average=2)  # same latest checkpoint, averaged with the first
    count, _ = evaluate(averaged)
    assert count == 10 and len(glob.glob(os.path.join(later["checkpoint"], "cohort_6_*.pt"))) == 2
    count, _ = evaluate(averaged)
    assert count == 4


def test_unwritable_place_only_costs_the_reuse(tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    out = cached_cohort_embeddings(str(not_a_folder / "c.pt"), ["a"], lambda: torch.ones(1, 2))
    assert torch.equal(out, torch.ones(1, 2)) and "could not cache" in caplog.text
