"""run_mini.py helpers: system selection, overrides, data folders."""

import argparse
import json
import os

import pytest
import run_mini


def test_selection_brings_the_resumed_system_first():
    assert run_mini.selection(["simclr_ssps"]) == ["simclr", "simclr_ssps"]
    assert run_mini.selection(["dino_ssps", "simclr"]) == ["dino", "dino_ssps", "simclr"]
    # a chain: DLG-LC from SimCLR-SSPS brings SimCLR-SSPS and SimCLR, once each
    assert run_mini.selection(["dlg_lc_simclr_ssps", "simclr"]) == ["simclr", "simclr_ssps", "dlg_lc_simclr_ssps"]
    with pytest.raises(SystemExit, match="unknown system"):
        run_mini.selection(["nope"])


def test_mini_overrides_layering():
    common = run_mini.mini_overrides("simclr")
    ssps = run_mini.mini_overrides("simclr_ssps")
    assert common["channels"] == ssps["channels"]
    assert ssps["number_of_epochs"] > common["number_of_epochs"] and ssps["ssps_start_epoch"] == common["number_of_epochs"] + 1
    long = run_mini.mini_overrides("simclr_ssps", "long")
    assert long["number_of_epochs"] > ssps["number_of_epochs"] and long["channels"] == ssps["channels"]
    assert run_mini.mini_overrides("simclr_cont", "long")["number_of_epochs"] == long["number_of_epochs"]
    with pytest.raises(SystemExit, match="unknown preset"):
        run_mini.mini_overrides("simclr", "nope")
    assert run_mini.as_cli({"a": 1, "b": "x", "c": {"d": [1, 2]}}) == ["--a=1", "--b=x", '--c={"d": [1, 2]}']


def test_existing_data_folder_gets_generated_noise_and_rirs(tiny_corpus, tmp_path):
    args = type("A", (), {"data_folder": tiny_corpus, "out": str(tmp_path), "seed": 0, "corpus_profile": None, "preset": None})
    data, noise, rir = run_mini.build_data(args)
    assert data == tiny_corpus and noise.startswith(str(tmp_path)) and rir.startswith(str(tmp_path))
    assert sorted(os.listdir(noise)) == ["music", "noise", "speech"] and os.listdir(rir)
    args.data_folder = str(tmp_path / "missing")
    with pytest.raises(SystemExit, match="has no wav"):
        run_mini.build_data(args)


def test_fidelity_preset_is_the_studied_setting():
    """The settings at which the authors' code and ours were compared (fidelity issue)."""
    base, ssps, cont = (run_mini.mini_overrides(s, "fidelity") for s in ("simclr", "simclr_ssps", "simclr_cont"))
    for o in (base, ssps, cont):
        assert (o["channels"], o["attention_channels"], o["emb_dim"], o["batch_size"], o["augment"]) == (128, 128, 512, 64, False)
    assert base["number_of_epochs"] == 24 and ssps["ssps_start_epoch"] == 25
    assert ssps["number_of_epochs"] == cont["number_of_epochs"] == 34  # same compute
    assert (ssps["ssps_K"], ssps["ssps_M"], ssps["ssps_pos_queue_size"], ssps["ssps_ref_seconds"]) == (120, 1, 128, 4.0)
    assert run_mini.SYSTEMS["simclr_cont"][0] == "simclr_cont.yaml"


def test_corpus_profile_from_flag_preset_or_default():
    args = type("A", (), {"corpus_profile": None, "preset": None})
    assert run_mini.corpus_profile(args) == "channel"
    args.preset = "long"
    assert run_mini.corpus_profile(args) == "default"
    args.corpus_profile = "channel"
    assert run_mini.corpus_profile(args) == "channel"


def test_trial_lists_of_the_data_folder_and_added_to_an_older_corpus(tiny_corpus, tmp_path):
    """Every system is scored on the lists of mini_cpu.yaml's trial_lists that
    the data folder holds; a synthetic corpus built before the E-/H-like lists
    existed gets them (its other files untouched)."""
    assert run_mini.trial_list_overrides(tiny_corpus) == {
        "VoxCeleb1-O": os.path.join(tiny_corpus, "veri_test2.txt"),
        "VoxCeleb1-E": os.path.join(tiny_corpus, "list_test_all2.txt"),
        "VoxCeleb1-H": os.path.join(tiny_corpus, "list_test_hard2.txt"),
    }
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "profile.json").write_text('{"profile": "channel", "seed": 0}')
    (corpus / "veri_test2.txt").write_text(open(os.path.join(tiny_corpus, "veri_test2.txt")).read())
    os.symlink(os.path.join(tiny_corpus, "wav"), corpus / "wav")
    assert list(run_mini.trial_list_overrides(str(corpus))) == ["VoxCeleb1-O"]
    args = type("A", (), {"data_folder": None, "out": str(tmp_path), "seed": 0, "corpus_profile": None, "preset": None})
    assert run_mini.build_data(args)[0] == str(corpus)
    assert list(run_mini.trial_list_overrides(str(corpus))) == ["VoxCeleb1-O", "VoxCeleb1-E", "VoxCeleb1-H"]


def test_run_one_writes_the_generated_results_table(tmp_path, monkeypatch, capsys):
    """The main job's table is ssps_ext.results_table's, printed and kept as results.md / .csv."""
    eers = {"simclr": 12.5, "simclr_ssps": 9.25, "simclr_cont": 11.75}

    def fake_system(name, data, noise, rir, args, passthrough):
        result = {"EER": eers[name], "EER_threshold": 0.5, "minDCF_0.01": 0.8, "minDCF_0.05": 0.6,
                  "n_trials": 40, "trials_file": "/c/veri_test2.txt"}
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / "verification.json", "w") as f:
            json.dump(result, f)
        return {**result, "minutes": 1.0}

    monkeypatch.setattr(run_mini, "build_data", lambda args: ("d", "n", "r"))
    monkeypatch.setattr(run_mini, "run_system", fake_system)
    args = argparse.Namespace(out=str(tmp_path), systems="simclr_ssps,simclr_cont")
    run_mini.run_one(args, {})
    md = (tmp_path / "results.md").read_text().splitlines()
    assert md[2:] == [
        "| simclr | veri_test2.txt | 12.50 | 0.800 | 0.600 | 40 |",
        "| simclr_ssps | veri_test2.txt | 9.25 | 0.800 | 0.600 | 40 |",
        "| simclr_cont | veri_test2.txt | 11.75 | 0.800 | 0.600 | 40 |",
    ]
    assert "\n".join(md) in capsys.readouterr().out
    assert (tmp_path / "results.csv").read_text().splitlines()[2].startswith("simclr_ssps,veri_test2.txt,9.25,")
