"""Pictures of a verification run, written as PNG beside ``verification.json``.

- ``det.png``: DET curve (miss vs false-alarm probability on normal-deviate
  axes, scikit-learn's ``det_curve``), one line per system, EER marked;
- ``scores.png``: target / non-target score histograms with the EER threshold;
- ``tsne.png``: t-SNE of the test embeddings of 10 speakers, coloured by
  speaker and marked by recording, as the SSPS paper's Figure 2: a model
  that encodes the channel makes one island per recording, SSPS merges a
  speaker's recordings.
Sizes at 120 dpi: det.png 600 x 600, scores.png 720 x 420, tsne.png 720 x 720 pixels.

Command line, to put several runs on one DET plot::

    python -m ssps_ext.plots det.png results/simclr/scores.txt results/simclr_ssps/scores.txt
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import det_curve  # noqa: E402

TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


def read_scores(path):
    """``scores.txt`` (enrol test label score) -> (scores, labels) arrays."""
    rows = [line.split() for line in open(path) if line.strip()]
    return np.array([float(r[3]) for r in rows]), np.array([int(r[2]) for r in rows])


def det_png(systems, path):
    """DET curves of ``{name: (scores, labels)}`` on one plot."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (scores, labels) in systems.items():
        p_fa, p_miss, _ = det_curve(labels, scores)
        eer_at = np.argmin(np.abs(p_fa - p_miss))
        eer = (p_fa[eer_at] + p_miss[eer_at]) / 2
        clip = lambda p: norm.ppf(np.clip(p, 1e-4, 1 - 1e-4))  # noqa: E731
        ax.plot(clip(p_fa), clip(p_miss), label=f"{name} (EER {100 * eer:.2f} %)")
        ax.plot(clip(eer), clip(eer), "k.", markersize=4)
    ticks = norm.ppf(TICKS)
    labels_pct = [f"{100 * t:g}" for t in TICKS]
    ax.set_xticks(ticks, labels_pct)
    ax.set_yticks(ticks, labels_pct)
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.set_xlabel("false-alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def histogram_png(scores, labels, path, threshold=None):
    """Target / non-target cosine-score histograms (and the threshold)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(min(scores.min(), -0.2), 1.0, 60)
    ax.hist(scores[labels == 1], bins, alpha=0.6, density=True, label="target")
    ax.hist(scores[labels == 0], bins, alpha=0.6, density=True, label="non-target")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"EER threshold {threshold:.3f}")
    ax.set_xlabel("cosine score")
    ax.legend(fontsize=8)
    _save(fig, path)


def tsne_png(embeddings, ids, path, n_speakers=10, seed=0):
    """t-SNE of the embeddings of the first ``n_speakers`` speakers.

    ``ids``: ``spk/recording/utt`` per row of ``embeddings`` (N, D).
    """
    spk = np.array([i.split("/")[0] for i in ids])
    rec = np.array(["/".join(i.split("/")[:2]) for i in ids])
    keep = np.isin(spk, sorted(set(spk))[:n_speakers])
    x, spk, rec = np.asarray(embeddings)[keep], spk[keep], rec[keep]
    if len(x) < 5:
        return False
    xy = TSNE(2, perplexity=min(30, len(x) - 1), init="pca", random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6, 6))
    markers = "os^vD<>ph*"
    colours = plt.get_cmap("tab10")
    for s_i, s in enumerate(sorted(set(spk))):
        recs = sorted(set(rec[spk == s]))
        for r_i, r in enumerate(recs):
            m = rec == r
            ax.scatter(xy[m, 0], xy[m, 1], s=18, color=colours(s_i % 10), marker=markers[r_i % len(markers)],
                       label=s if r_i == 0 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of test embeddings: colour = speaker, marker = recording", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)
    return True


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] != "det":
        raise SystemExit("usage: python -m ssps_ext.plots det OUT.png RUN/scores.txt [RUN2/scores.txt ...]")
    systems = {os.path.basename(os.path.dirname(os.path.abspath(p))): read_scores(p) for p in argv[2:]}
    det_png(systems, argv[1])


if __name__ == "__main__":
    main()
