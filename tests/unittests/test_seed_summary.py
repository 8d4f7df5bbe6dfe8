"""seed_summary.py on hand-written run folders: means, spread, SSPS vs control."""

import json
import os

import pytest
import seed_summary


def fake_run(out, seed, system, eer, speaker_acc=()):
    folder = os.path.join(out, f"seed{seed}", system)
    os.makedirs(folder)
    with open(os.path.join(folder, "verification.json"), "w") as f:
        json.dump({"EER": eer, "minDCF_0.01": 0.5, "minDCF_0.05": 0.4, "n_trials": 10}, f)
    with open(os.path.join(folder, "train_log.txt"), "w") as f:
        f.write("epoch: 1, lr: 1.00e-03 - train accuracy: 9.0e-01, train loss: 2.0e-01\n")
        for k, acc in enumerate(speaker_acc, 2):
            f.write(f"epoch: {k}, lr: 1.00e-03 - train loss: 3.0, train ssps_coverage: 6.0e-01, train ssps_speaker_acc: {acc}\n")


def test_means_spread_and_gain_against_control(tmp_path, capsys):
    for seed, (base, ssps, cont) in enumerate([(20.0, 15.0, 20.0), (30.0, 18.0, 24.0)]):
        fake_run(tmp_path, seed, "simclr", base)
        fake_run(tmp_path, seed, "simclr_ssps", ssps, speaker_acc=(0.2, 0.3))
        fake_run(tmp_path, seed, "simclr_cont", cont)
    results = seed_summary.main([str(tmp_path)])
    assert results[1]["simclr_ssps"]["ssps_speaker_acc"] == [0.2, 0.3]
    gains = seed_summary.relative_gains(results)
    assert gains == {(0, "simclr_ssps"): pytest.approx(-0.25), (1, "simclr_ssps"): pytest.approx(-0.25)}
    printed = capsys.readouterr().out
    assert "| mean +- sd (2 seeds) | 25.00 +- 7.07 | 22.00 +- 2.83 | 16.50 +- 2.12 |" in printed  # base, cont, ssps
    assert "| mean +- sd | simclr_ssps | -25.0 +- 0.0 % | |" in printed
    assert "0.20, 0.30" in printed
    assert json.load(open(tmp_path / "summary.json"))["0"]["simclr"]["EER"] == 20.0


def test_nothing_to_summarise_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no .*verification.json"):
        seed_summary.main([str(tmp_path)])
