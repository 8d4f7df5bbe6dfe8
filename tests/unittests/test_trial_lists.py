"""Several trial lists scored from one extraction (ssps_ext.verification)."""

import json
import os

import pytest
import speechbrain as sb
import torch

from ssps_ext.verification import evaluate_lists, read_trials, trial_id, trial_lists

SPEAKERS = {"a": 0, "b": 0, "c": 1, "d": 1}  # speaker -> group (H-like lists pair within a group)


def utterance_set():
    """Utterances ``spk/rec/n`` whose signal is a noisy copy of a speaker vector."""
    g = torch.Generator().manual_seed(0)
    voice = {s: torch.randn(16, generator=g) for s in SPEAKERS}
    data, sigs = {}, {}
    for s in SPEAKERS:
        for rec in ("r1", "r2"):
            for n in (1, 2, 3):
                uid = f"{s}/{rec}/{n}"
                sigs[uid] = voice[s] + 2.0 * torch.randn(16, generator=g)
                data[uid] = {"duration": 1.0 + n / 10}
    dataset = sb.dataio.dataset.DynamicItemDataset(data)
    sb.dataio.dataset.add_dynamic_item([dataset], lambda i: sigs[i], takes="id", provides="sig")
    dataset.set_output_keys(["id", "sig"])
    return dataset


class CountingEmbedder:
    """The identity embedding, recording every utterance it is given."""

    def __init__(self):
        self.calls = 0
        self.seen = []

    def __call__(self, wavs, lengths):
        self.calls += 1
        self.seen.append(wavs.clone())
        return wavs


def write_list(path, pairs):
    with open(path, "w") as f:
        for e, t in pairs:
            label = int(e.split("/")[0] == t.split("/")[0])
            f.write(f"{label} {e}.wav {t}.wav\n")
    return str(path)


@pytest.fixture
def lists(tmp_path):
    """O-like (speakers a, c), E-like (all), H-like (within-group non-targets)."""
    o = [("a/r1/1", "a/r2/1"), ("c/r1/1", "c/r2/2"), ("a/r1/2", "c/r2/1"), ("c/r1/3", "a/r2/3")]
    e = o + [("b/r1/1", "b/r2/2"), ("d/r1/2", "d/r2/1"), ("b/r1/3", "d/r2/3"), ("a/r2/2", "d/r1/1"),
             ("b/r2/1", "c/r1/2")]
    h = [("a/r1/1", "a/r2/1"), ("d/r1/2", "d/r2/1"), ("a/r1/3", "b/r2/1"), ("c/r2/2", "d/r1/3")]
    return {name: write_list(tmp_path / f"{name}.txt", pairs) for name, pairs in (("O", o), ("E", e), ("H", h))}


def union_ids(lists):
    return {trial_id(p) for f in lists.values() for t in read_trials(f) for p in t[1:]}


def no_plots(monkeypatch):
    monkeypatch.setattr("ssps_ext.verification.write_plots", lambda *args: None)


def test_one_extraction_for_the_union_and_per_list_results(lists, tmp_path, monkeypatch):
    dataset, embed = utterance_set(), CountingEmbedder()
    out = tmp_path / "run" / "verification.json"
    result = evaluate_lists(embed, dataset, lists, str(out), "cpu", extra={"checkpoint": "x"}, progressbar=False)
    assert embed.calls == len(union_ids(lists))  # each utterance of the union embedded once
    assert len(union_ids(lists)) < sum(len(read_trials(f)) * 2 for f in lists.values())  # the lists overlap
    seen = torch.stack(embed.seen).squeeze(1)
    assert len({tuple(r.tolist()) for r in seen}) == embed.calls
    saved = json.load(open(out))
    assert list(saved["lists"]) == ["O", "E", "H"] and saved["checkpoint"] == "x"
    for key in ("EER", "EER_threshold", "minDCF_0.01", "minDCF_0.05", "n_trials", "trials_file"):
        assert saved[key] == saved["lists"]["O"][key]  # top level = the first list (existing readers)
    assert saved["lists"]["E"]["n_trials"] == 9 and saved["lists"]["H"]["trials_file"] == os.path.abspath(lists["H"])
    run = out.parent
    assert {"scores.txt", "det.png", "scores.png", "tsne.png"} <= set(os.listdir(run))
    for name in ("E", "H"):
        assert sorted(os.listdir(run / name)) == ["det.png", "scores.png", "scores.txt"]  # t-SNE once
        rows = [line.split() for line in open(run / name / "scores.txt")]
        assert [(r[0], r[1], int(r[2])) for r in rows] == [(e, t, lab) for lab, e, t in read_trials(lists[name])]
    # each list alone gives exactly the same metrics
    no_plots(monkeypatch)
    for name, path in lists.items():
        alone = evaluate_lists(CountingEmbedder(), dataset, {name: path}, str(tmp_path / name / "v.json"), "cpu",
                               progressbar=False)
        for key in ("EER", "EER_threshold", "minDCF_0.01", "minDCF_0.05", "n_trials"):
            assert alone[key] == result["lists"][name][key], (name, key)
    assert len({r["EER"] for r in result["lists"].values()}) > 1  # not one list three times


def test_cohort_normalisation_per_list(lists, tmp_path, monkeypatch):
    no_plots(monkeypatch)
    dataset = utterance_set()
    cohort_ids = sorted(i for i in dataset.data if i.endswith("/3"))
    result = evaluate_lists(CountingEmbedder(), dataset, lists, str(tmp_path / "v.json"), "cpu",
                            cohort=(dataset, cohort_ids), top_k=3, progressbar=False)
    for name in lists:
        norm = result["lists"][name]["score_norm"]
        assert (norm["cohort"], norm["top_k"]) == (len(cohort_ids), 3)
        assert norm["as"]["n_trials"] == result["lists"][name]["n_trials"]
    assert result["score_norm"] == result["lists"]["O"]["score_norm"]


def test_missing_utterance_names_the_trial_file(lists, tmp_path):
    bad = write_list(tmp_path / "bad.txt", [("a/r1/1", "z/r9/9")])
    with pytest.raises(KeyError, match=r"bad.txt names 1 utterance\(s\) missing .* z/r9/9"):
        evaluate_lists(CountingEmbedder(), utterance_set(), {**lists, "bad": bad}, str(tmp_path / "v.json"), "cpu",
                       progressbar=False)


def test_list_setting_checks():
    assert trial_lists({"O": "/o.txt", "E": None, "H": "/h.txt"}) == {"O": "/o.txt", "H": "/h.txt"}
    assert trial_lists("/data/veri_test2.txt") == {"veri_test2": "/data/veri_test2.txt"}
    with pytest.raises(ValueError, match="names no trial file"):
        trial_lists({"O": None})
    with pytest.raises(ValueError, match="not a usable list name"):
        trial_lists({"../up": "/x.txt"})


def test_command_line_adds_or_drops_lists_of_the_recipe():
    from ssps_ext.hparams import load_hparams

    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "VoxCeleb", "SSPS", "hparams", "simclr.yaml")
    base = "data_folder: /d\ntest_data_folder: /t\n"
    h, _ = load_hparams(recipe, base)
    assert trial_lists(h["verification_lists"]) == {"VoxCeleb1-O": "/t/veri_test2.txt"}  # the default
    h, _ = load_hparams(recipe, base + "verification_lists: {VoxCeleb1-H: !ref <test_data_folder>/list_test_hard2.txt}")
    assert trial_lists(h["verification_lists"]) == {"VoxCeleb1-O": "/t/veri_test2.txt",
                                                    "VoxCeleb1-H": "/t/list_test_hard2.txt"}
    h, _ = load_hparams(recipe, base + "verification_lists: {VoxCeleb1-O: null, VoxCeleb1-E: /e.txt}")
    assert trial_lists(h["verification_lists"]) == {"VoxCeleb1-E": "/e.txt"}
