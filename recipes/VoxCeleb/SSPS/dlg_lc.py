#!/usr/bin/env python3
"""DLG-LC pseudo-label rounds from a self-supervised run (CA-DINO stage II).

Usage::

    python dlg_lc.py hparams/dlg_lc.yaml --data_folder=/data/voxceleb2 --test_data_folder=/data/voxceleb1 \
        --init_from=results/dino/1717/save
    torchrun --nproc_per_node=4 dlg_lc.py hparams/dlg_lc.yaml ... --init_from=results/dino/1717/save

Iteration stage of "Self-Supervised Learning with Cluster-Aware-DINO for
High-Performance Robust Speaker Verification" (Han, Chen & Qian,
arXiv:2304.05754; spec ../shared/docs/peers.md 5c item 3). For rounds
r = 1..R (``n_rounds``):

a. embed every training utterance in full with the current encoder (round
   1: ``init_encoder_key`` of the ``init_from`` run, e.g. the DINO teacher;
   later rounds: the previous round's encoder) and cluster the embeddings
   into K = ``n_clusters`` (one value, or one per round) with spherical
   k-means: the cluster indices are the pseudo-labels;
b. train ``PseudoLabelBrain`` (a new AAM classifier with K classes, the
   encoder continued) for ``number_of_epochs`` epochs with the dynamic loss
   gate from ``gate_start_epoch`` and label correction from ``lc_start_epoch``;
c. score the trial lists (``verification_lists``) with the round's encoder.

Written to ``output_folder``: ``round<r>/`` (train_log.txt, checkpoints,
pseudo_labels.pt, verification.json, round.json per round), ``rounds.json``
and ``rounds.csv`` (per round: K, empty clusters, NMI of the pseudo-labels
with the speakers and recordings when train.csv has them, EER, minDCF, and
the last epoch's gate threshold and reliable / corrected / dropped shares),
and ``verification.json`` (the last round's).
A finished round is not redone; an interrupted one resumes from its
checkpoints with the same pseudo-labels.
"""

import csv
import json
import logging
import os
import shutil
import sys
import tempfile

import ruamel.yaml
import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed_summary import read_log  # noqa: E402
from train import prepare_data  # noqa: E402

from ssps_ext.allocator import keep_freed_buffers  # noqa: E402
from ssps_ext.data import train_dataset, utterance_dataset  # noqa: E402
from ssps_ext.hparams import load_hparams  # noqa: E402
from ssps_ext.pseudo_labels.rounds import (  # noqa: E402
    check_cluster_count, class_centroids, cluster_pseudo_labels, cluster_sizes, embed_utterances, label_nmi,
    ordered_ids, round_clusters,
)
from ssps_ext.verification import trial_lists  # noqa: E402

EPOCH_STATS = ("gate_threshold", "gate_fallback", "reliable", "corrected", "dropped", "loss", "accuracy")


def round_overrides(overrides, r, init_from, init_encoder_key, extra=None):
    """The command line's overrides plus this round's ``round``, ``init_from``
    and ``init_encoder_key`` (and ``extra``: the final fine-tune's settings)."""
    base = ruamel.yaml.YAML(typ="safe").load(overrides) if isinstance(overrides, str) else overrides
    return {**(base or {}), **(extra or {}), "round": r, "init_from": init_from, "init_encoder_key": init_encoder_key}


def final_overrides(hparams):
    """The large-margin fine-tune (peers.md 5c item 4): one more round of
    ``final_epochs`` epochs on ``final_crop_seconds`` crops with AAM margin
    ``final_margin``, without gate or label correction."""
    epochs = int(hparams["final_epochs"])
    return {"number_of_epochs": epochs, "aam_margin": hparams["final_margin"],
            "crops": {"views": [1, hparams["final_crop_seconds"]]},
            "gate_start_epoch": epochs + 1, "lc_start_epoch": epochs + 1}


def pseudo_labels(brain, hparams, train_data, k, run_folder):
    """Labels (N,) and class centroids (K, D) of this round: read from
    ``pseudo_labels.pt`` when an interrupted round resumes, else embed ->
    k-means (then saved)."""
    path = os.path.join(run_folder, "pseudo_labels.pt")
    if os.path.isfile(path):
        saved = torch.load(path, weights_only=True)
        if saved["n_clusters"] == k and saved["labels"].shape[0] == len(train_data) and "centroids" in saved:
            return saved["labels"], saved["centroids"]
    brain.warm_start(hparams["init_from"])  # the round's starting encoder, before fit
    utterances = utterance_dataset([os.path.join(hparams["manifest_folder"], "train.csv")], hparams["sample_rate"])
    ids = ordered_ids(train_data)
    emb = embed_utterances(brain, utterances, ids, hparams["eval_batch_size"], not brain.noprogressbar)
    labels = cluster_pseudo_labels(emb.to(brain.device), k, hparams["kmeans_iterations"], hparams["seed"],
                                   hparams["kmeans_backend"], hparams["ahc_from"]).cpu()
    centroids = class_centroids(emb.cpu(), labels, k)  # (K, D); labels are rank 0's on every rank
    if if_main_process():
        os.makedirs(run_folder, exist_ok=True)
        torch.save({"labels": labels, "n_clusters": k, "centroids": centroids}, path)
    return labels, centroids


def run_round(r, hparams_file, overrides, run_opts, init_from, init_encoder_key, lists, extra=None):
    """Trains and evaluates round ``r``; returns its row (also round<r>/round.json)."""
    hparams, _ = load_hparams(hparams_file, round_overrides(overrides, r, init_from, init_encoder_key, extra))
    folder = hparams["round_folder"]
    done = os.path.join(folder, "round.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f), hparams
    manifests = hparams["manifest_folder"]
    train_data = train_dataset(os.path.join(manifests, "train.csv"), hparams["crops"], hparams["sample_rate"])
    k = round_clusters(hparams["n_clusters"], r)
    check_cluster_count(len(train_data), k)
    brain = hparams["brain_class"](modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
                                   run_opts=run_opts, checkpointer=hparams["checkpointer"])
    labels, centroids = pseudo_labels(brain, hparams, train_data, k, folder)
    brain.prepare_training(train_data, labels, k, centroids)
    brain.fit(hparams["epoch_counter"], train_data, train_loader_kwargs=hparams["dataloader_options"])

    utterances = utterance_dataset([os.path.join(manifests, f) for f in ("enrol.csv", "test.csv")],
                                   hparams["sample_rate"])
    cohort = None
    if hparams["score_norm_cohort"] > 0:
        cohort = utterance_dataset([os.path.join(manifests, "train.csv")], hparams["sample_rate"])
    result = brain.evaluate_verification(utterances, lists, os.path.join(folder, "verification.json"),
                                         cohort=cohort)
    rows = [train_data.data[i] for i in ordered_ids(train_data)]
    log = read_log(hparams["train_log"])
    last = log[max(log)] if log else {}
    row = {
        "round": r, "n_clusters": k, "empty_clusters": int((cluster_sizes(labels, k) == 0).sum()),
        "nmi_speaker": label_nmi(labels, rows, "spk_id"), "nmi_recording": label_nmi(labels, rows, "rec_id"),
        "EER": result["EER"], "minDCF_0.01": result["minDCF_0.01"], "epochs": max(log) if log else 0,
        "aam_margin": hparams["aam_margin"], "crop_seconds": hparams["crops"]["views"][1],
        **{name: last.get(name) for name in EPOCH_STATS},
    }
    if if_main_process():
        with open(done, "w") as f:
            json.dump(row, f, indent=2)
    return row, hparams


def write_rounds(rows, folder):
    """rounds.json and rounds.csv (one row per round)."""
    with open(os.path.join(folder, "rounds.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(folder, "rounds.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams, merged_yaml = load_hparams(hparams_file, overrides)
    malloc = keep_freed_buffers(hparams["malloc_keep_bytes"])  # before the first training allocations
    if not hparams["init_from"]:
        raise ValueError("dlg_lc: init_from must name the save folder of a self-supervised run (e.g. DINO)")
    lists = trial_lists(hparams["verification_lists"])
    prepare_data(hparams, lists)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        tmp.write(merged_yaml)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=tmp.name, overrides=overrides)
    os.unlink(tmp.name)
    logging.getLogger(__name__).info("glibc malloc thresholds (malloc_keep_bytes): %s", malloc)

    rows, init_from, key = [], hparams["init_from"], hparams["init_encoder_key"]
    for r in range(1, int(hparams["n_rounds"]) + 1):
        row, round_hparams = run_round(r, hparams_file, overrides, run_opts, init_from, key, lists)
        rows.append(row)
        print(f"[dlg_lc] round {r}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "round"), flush=True)
        init_from, key = round_hparams["save_folder"], "encoder"  # the next round continues this encoder
    if int(hparams["final_epochs"]) > 0:  # large-margin fine-tune on re-clustered labels
        r = int(hparams["n_rounds"]) + 1
        row, round_hparams = run_round(r, hparams_file, overrides, run_opts, init_from, key, lists,
                                       extra=final_overrides(hparams))
        rows.append({**row, "round": "final"})
        print("[dlg_lc] final fine-tune: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "round"), flush=True)
    if if_main_process():
        out = hparams["output_folder"]
        write_rounds(rows, out)
        last = os.path.join(round_hparams["round_folder"], "verification.json")
        shutil.copyfile(last, os.path.join(out, "verification.json"))


if __name__ == "__main__":
    main(sys.argv[1:])
