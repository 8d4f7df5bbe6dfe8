"""Verification pictures: DET, score histograms, t-SNE, and the CLI."""

import numpy as np
import pytest

from ssps_ext import plots

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def trial_scores(seed=0, n=200):
    g = np.random.default_rng(seed)
    labels = np.repeat([1, 0], n // 2)
    return np.where(labels == 1, 0.6, 0.1) + 0.15 * g.standard_normal(n), labels


def test_det_and_histogram_written(tmp_path):
    scores, labels = trial_scores()
    plots.det_png({"a": (scores, labels), "b": trial_scores(1)}, str(tmp_path / "det.png"))
    plots.histogram_png(scores, labels, str(tmp_path / "h.png"), threshold=0.35)
    assert png_size(tmp_path / "det.png") == (600, 600)  # the sizes stated in ssps_ext.plots
    assert png_size(tmp_path / "h.png") == (720, 420)


def test_tsne_uses_ten_speakers_and_needs_points(tmp_path):
    g = np.random.default_rng(0)
    ids = [f"id{s:05d}/rec{r}/{u:05d}" for s in range(12) for r in range(2) for u in range(3)]
    emb = g.standard_normal((len(ids), 8))
    assert plots.tsne_png(emb, ids, str(tmp_path / "t.png"))
    assert png_size(tmp_path / "t.png") == (720, 720)
    assert not plots.tsne_png(emb[:3], ids[:3], str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()


def test_cli_reads_scores_files(tmp_path):
    for name in ("simclr", "simclr_ssps"):
        (tmp_path / name).mkdir()
        scores, labels = trial_scores(len(name))
        (tmp_path / name / "scores.txt").write_text(
            "".join(f"e{k}.wav t{k}.wav {lab} {s:.6f}\n" for k, (s, lab) in enumerate(zip(scores, labels)))
        )
    read, labels = plots.read_scores(str(tmp_path / "simclr" / "scores.txt"))
    assert read.shape == (200,) and labels.sum() == 100
    plots.main(["det", str(tmp_path / "both.png"), *(str(tmp_path / n / "scores.txt") for n in ("simclr", "simclr_ssps"))])
    assert (tmp_path / "both.png").read_bytes()[:8] == PNG
    with pytest.raises(SystemExit, match="usage"):
        plots.main(["det", "x.png"])
