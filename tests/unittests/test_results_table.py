"""ssps_ext.results_table on hand-written verification.json files."""

import csv
import json

import pytest

from ssps_ext.results_table import main

PLAIN = {"EER": 6.3012, "EER_threshold": 0.41, "minDCF_0.01": 0.45678, "minDCF_0.05": 0.31234,
         "n_trials": 37611, "trials_file": "/data/vox1/veri_test2.txt", "checkpoint": "/r/save/CKPT+1"}
NORMED = {"EER": 2.5749, "EER_threshold": 0.52, "minDCF_0.01": 0.2719, "minDCF_0.05": 0.1804,
          "n_trials": 37611, "trials_file": "/data/vox1/veri_test2.txt", "checkpoint": "/r/save/CKPT+2",
          "score_norm": {"cohort": 3000, "top_k": 300,
                         "s": {"EER": 2.4011, "EER_threshold": 0.1, "minDCF_0.01": 0.25, "minDCF_0.05": 0.17,
                               "n_trials": 37611},
                         "as": {"EER": 2.2349, "EER_threshold": 0.2, "minDCF_0.01": 0.24, "minDCF_0.05": 0.16,
                                "n_trials": 37611}}}


def run(folder, result):
    folder.mkdir(parents=True)
    (folder / "verification.json").write_text(json.dumps(result))
    return str(folder)


def test_markdown_and_csv_rows(tmp_path, capsys):
    plain = run(tmp_path / "simclr" / "1717", PLAIN)  # a seed folder: named by its parent too
    normed = run(tmp_path / "simclr_ssps", NORMED)
    out_csv, out_md = tmp_path / "t.csv", tmp_path / "t.md"
    main([plain, normed + "/verification.json", "--csv", str(out_csv), "--md", str(out_md)])
    expected = "\n".join([
        "| system | trial list | EER % | minDCF0.01 | minDCF0.05 | n_trials | S-norm EER % | AS-norm EER % |",
        "|---|---|---|---|---|---|---|---|",
        "| simclr/1717 | veri_test2.txt | 6.30 | 0.457 | 0.312 | 37611 | - | - |",
        "| simclr_ssps | veri_test2.txt | 2.57 | 0.272 | 0.180 | 37611 | 2.40 | 2.23 |",
    ])
    assert capsys.readouterr().out == expected + "\n"
    assert out_md.read_text() == expected + "\n"
    with open(out_csv, newline="") as f:
        assert list(csv.reader(f)) == [
            ["system", "trial list", "EER %", "minDCF0.01", "minDCF0.05", "n_trials", "S-norm EER %", "AS-norm EER %"],
            ["simclr/1717", "veri_test2.txt", "6.3012", "0.45678", "0.31234", "37611", "", ""],
            ["simclr_ssps", "veri_test2.txt", "2.5749", "0.2719", "0.1804", "37611", "2.4011", "2.2349"],
        ]


def test_names_and_one_row_per_list(tmp_path, capsys):
    lists = {"lists": {"Vox1-O": PLAIN, "Vox1-E": {**NORMED, "score_norm": None}}}
    text = main([run(tmp_path / "a", lists), "--names", "DINO"])
    assert text.splitlines()[0] == "| system | trial list | EER % | minDCF0.01 | minDCF0.05 | n_trials |"
    assert text.splitlines()[2:] == ["| DINO | Vox1-O | 6.30 | 0.457 | 0.312 | 37611 |",
                                     "| DINO | Vox1-E | 2.57 | 0.272 | 0.180 | 37611 |"]
    with pytest.raises(SystemExit, match="2 names for 1 runs"):
        main([run(tmp_path / "b", PLAIN), "--names", "x,y"])


def test_folder_without_results_names_the_file(tmp_path):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(SystemExit, match=f"{tmp_path / 'empty_run' / 'verification.json'} not found"):
        main([run(tmp_path / "ok", PLAIN), str(tmp_path / "empty_run")])


def test_missing_metric_names_the_file(tmp_path):
    folder = run(tmp_path / "bad", {k: v for k, v in PLAIN.items() if k != "minDCF_0.05"})
    with pytest.raises(SystemExit, match="bad/verification.json: list 'veri_test2.txt' has no minDCF_0.05"):
        main([folder])
