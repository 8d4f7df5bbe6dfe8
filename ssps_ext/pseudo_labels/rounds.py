"""Pseudo-labels of a DLG-LC round: embed -> spherical k-means -> labels, and their NMI.

Each round of the iteration stage (Han, Chen & Qian, arXiv:2304.05754;
spec ../shared/docs/peers.md 5c item 3a) embeds every training utterance
in full with the current encoder (eval mode, L2-normalised, as for
verification), clusters the embeddings into K clusters with the project's
spherical k-means (``ssps_ext.ssps.kmeans``, faiss on GPU when present) and
gives each utterance its cluster index as pseudo-label. The labels'
normalised mutual information with the true speakers (``spk_id``) and
recordings (``rec_id``), when the manifest has them, measures the
pseudo-labels only; training never reads those columns.
"""

import logging

import torch
from sklearn.metrics import normalized_mutual_info_score

from .. import distributed as dist
from ..ssps.kmeans import spherical_kmeans
from ..verification import extract_embeddings

logger = logging.getLogger(__name__)


def round_clusters(n_clusters, round_index):
    """K of round ``round_index`` (1-based): ``n_clusters`` is one K for
    every round, or a list with one K per round ("progressive" clustering).

    Example
    -------
    >>> round_clusters(48, 3), round_clusters([60, 48], 2)
    (48, 48)
    """
    if isinstance(n_clusters, (list, tuple)):
        if not 1 <= round_index <= len(n_clusters):
            raise ValueError(f"n_clusters lists {len(n_clusters)} values but round {round_index} is asked for")
        return int(n_clusters[round_index - 1])
    return int(n_clusters)


def check_cluster_count(n_utterances, n_clusters, where="train.csv"):
    """ValueError when K < 2 or the training set has fewer utterances than K."""
    if n_clusters < 2:
        raise ValueError(f"pseudo-label rounds: n_clusters = {n_clusters}; K must be >= 2")
    if n_utterances < n_clusters:
        raise ValueError(
            f"pseudo-label rounds: K = {n_clusters} clusters but {where} has only {n_utterances} "
            "utterances: lower n_clusters (about the number of speakers) or add training data"
        )


def ordered_ids(train_set):
    """Utterance IDs of ``train_set`` (a DynamicItemDataset of train.csv) by ``utt_index``."""
    return sorted(train_set.data, key=lambda i: int(train_set.data[i]["utt_index"]))


@torch.no_grad()
def embed_utterances(brain, utterances, ids, batch_size=1, progressbar=False):
    """(N, D) L2-normalised full-utterance embeddings of ``ids`` with
    ``brain``'s encoder (``modules.encoder``) in eval mode; the modules'
    modes and the global generator are left as they were."""
    modes = [(m, m.training) for m in brain.modules.modules()]
    encoder = brain.modules.encoder
    brain.modules.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            return extract_embeddings(lambda w, lens: brain.encode(w, encoder, lens), utterances, ids,
                                      brain.device, batch_size, progressbar, desc="train embeddings")
    finally:
        for module, mode in modes:
            module.training = mode


def merge_centroids(centroids, n_clusters):
    """(K1,) group in [0, K) of each of K1 centroids: agglomerative
    clustering (scikit-learn, cosine distance, average linkage)."""
    from sklearn.cluster import AgglomerativeClustering

    ahc = AgglomerativeClustering(n_clusters=n_clusters, metric="cosine", linkage="average")
    return torch.as_tensor(ahc.fit_predict(centroids.detach().cpu().double().numpy()), dtype=torch.long)


def cluster_pseudo_labels(embeddings, n_clusters, n_iter=10, seed=0, backend="auto", ahc_from=0):
    """Pseudo-labels (N,) long in [0, K): spherical k-means of the rows of
    ``embeddings`` (N, D), computed on rank 0 and broadcast so that every
    rank trains on the same labels.

    ``ahc_from`` = K1 > K: k-means into K1 clusters first, whose centroids
    are then merged into K groups by agglomerative clustering (the 50,000 ->
    7,500 scheme of the public DLG-LC re-implementation, peers.md 5a); every
    utterance takes its centroid's group. 0 = k-means into K directly.
    """
    check_cluster_count(embeddings.shape[0], n_clusters, "the embedded training set")
    if ahc_from and ahc_from <= n_clusters:
        raise ValueError(f"pseudo-label rounds: ahc_from = {ahc_from} must exceed n_clusters = {n_clusters} (or be 0)")
    labels = torch.empty(embeddings.shape[0], dtype=torch.long, device=embeddings.device)
    if dist.rank() == 0:
        if ahc_from:
            check_cluster_count(embeddings.shape[0], ahc_from, "the embedded training set (ahc_from)")
            centroids, fine = spherical_kmeans(embeddings, ahc_from, n_iter=n_iter, seed=seed, backend=backend)
            labels = merge_centroids(centroids, n_clusters).to(fine.device)[fine]
        else:
            _, labels = spherical_kmeans(embeddings, n_clusters, n_iter=n_iter, seed=seed, backend=backend)
    return dist.broadcast(labels.to(embeddings.device))


def class_centroids(embeddings, labels, n_clusters):
    """(K, D) L2-normalised mean of the normalised ``embeddings`` (N, D) of
    each pseudo-class in ``labels`` (N,); a class without members gets a
    zero row (``init_classifier`` then leaves its random weights).

    Example
    -------
    >>> emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    >>> class_centroids(emb, torch.tensor([0, 1, 1]), 3).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """
    emb = torch.nn.functional.normalize(embeddings.float(), dim=1)
    sums = torch.zeros(n_clusters, emb.shape[1], device=emb.device).index_add_(0, labels.to(emb.device), emb)
    return torch.nn.functional.normalize(sums, dim=1)  # (K, D); an empty class stays 0


def label_nmi(labels, rows, column):
    """NMI between ``labels`` (N,) and the manifest column ``column`` of
    ``rows`` (N dicts, same order); None when the column is missing."""
    if not rows or column not in rows[0]:
        return None
    truth = [row[column] for row in rows]
    return float(normalized_mutual_info_score(truth, torch.as_tensor(labels).cpu().numpy()))


def cluster_sizes(labels, n_clusters):
    """(K,) member count of each cluster (an empty cluster has a class with no sample)."""
    return torch.bincount(torch.as_tensor(labels).cpu(), minlength=n_clusters)
