"""SSPS diagnostics from speaker / recording labels (never used to sample).

Per step (averaged over the epoch by the Brain):
- ``ssps_coverage``: share of anchors that received a pseudo-positive;
- ``ssps_speaker_acc``: among those, share whose pseudo-positive has the
  anchor's speaker (higher is better);
- ``ssps_recording_acc``: share from the anchor's own recording (lower means
  SSPS escapes the channel confound);
- ``ssps_pool``: mean number of Q' candidates in the drawn cluster.
Per epoch, after k-means: ``ssps_kmeans_nmi_speaker`` / ``_recording``,
normalised mutual information between clusters and labels (sklearn).
"""

import torch


def sampling_stats(anchors, partners, pool, speakers=None, recordings=None):
    """0-d tensors describing one batch of draws (``partners`` -1 = none)."""
    got = partners >= 0
    stats = {"ssps_coverage": got.float().mean(), "ssps_pool": pool.float().mean()}
    n = got.sum().clamp(min=1)
    for name, labels in (("speaker", speakers), ("recording", recordings)):
        if labels is not None:
            same = labels[anchors] == labels[partners.clamp(min=0)]
            stats[f"ssps_{name}_acc"] = (same & got).sum() / n
    return stats


def kmeans_nmi(assignments, speakers=None, recordings=None):
    """NMI between the clusters of assigned utterances and each label set."""
    from sklearn.metrics import normalized_mutual_info_score

    assigned = assignments >= 0
    clusters = assignments[assigned].cpu().numpy()
    out = {}
    for name, labels in (("speaker", speakers), ("recording", recordings)):
        if labels is not None:
            truth = labels[assigned].cpu().numpy()
            out[f"ssps_kmeans_nmi_{name}"] = torch.tensor(normalized_mutual_info_score(truth, clusters))
    return out
