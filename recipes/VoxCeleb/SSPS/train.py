#!/usr/bin/env python3
"""Self-supervised speaker embeddings (SimCLR, DINO, with or without SSPS).

Usage::

    python train.py hparams/simclr.yaml --data_folder=/data/voxceleb2 --test_data_folder=/data/voxceleb1
    torchrun --nproc_per_node=4 train.py hparams/dino_ssps.yaml --data_folder=... --test_data_folder=...
    python train.py hparams/simclr.yaml --data_folder=... --test_data_folder=... --test_only \
        --eval_checkpoint=results/simclr/1717/save/CKPT+...   # evaluate only
    python train.py hparams/simclr.yaml --data_folder=... --test_data_folder=/data/vox1 \
        --verification_lists="{VoxCeleb1-E: /data/vox1/list_test_all2.txt, VoxCeleb1-H: /data/vox1/list_test_hard2.txt}"

Order of work, as in SpeechBrain's VoxCeleb recipes: parse arguments, DDP
group, hyperparameters, data prep (main process), datasets, experiment
folder, Brain, fit, then verification on the ``verification_lists`` (one
extraction for all of them) written to ``<output_folder>/verification.json``
and the evaluated encoder exported to ``<output_folder>/inference`` for
``SpeakerRecognition.from_hparams``.

``--test_only`` skips training (SpeechBrain's flag): the encoder of
``eval_checkpoint``, or of the output folder's latest checkpoints, is
evaluated and exported again; no checkpoint is written. Without
``--eval_checkpoint`` it needs the ``save`` folder of a run of the same
hparams in ``output_folder``.
"""

import logging
import os
import sys
import tempfile

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from voxceleb_prepare import prepare_voxceleb  # noqa: E402

from ssps_ext.allocator import keep_freed_buffers  # noqa: E402
from ssps_ext.audio_scan import write_augmentation_csv  # noqa: E402
from ssps_ext.data import train_dataset, utterance_dataset  # noqa: E402
from ssps_ext.export import export_inference  # noqa: E402
from ssps_ext.hparams import load_hparams  # noqa: E402
from ssps_ext.periodic_eval import PeriodicEER  # noqa: E402
from ssps_ext.verification import trial_lists  # noqa: E402

NOISE_CATEGORIES = ("speech", "noise", "music")


def prepare_augmentation(noise_folder, rir_folder, manifest_folder):
    """noise_<category>.csv and rir.csv for SpeechBrain's AddNoise/AddReverb."""
    for category in NOISE_CATEGORIES:
        csv = os.path.join(manifest_folder, f"noise_{category}.csv")
        if not os.path.isfile(csv):
            write_augmentation_csv(os.path.join(noise_folder, category), csv)
    csv = os.path.join(manifest_folder, "rir.csv")
    if not os.path.isfile(csv):
        write_augmentation_csv(rir_folder, csv)


def prepare_data(hparams, lists):
    """Manifests (train, enrol/test of ``lists``) and augmentation CSVs, on the main process."""
    manifests = hparams["manifest_folder"]
    run_on_main(
        prepare_voxceleb,
        kwargs={
            "data_folder": hparams["data_folder"],
            "test_data_folder": hparams["test_data_folder"],
            "save_folder": manifests,
            "verification_pairs_file": list(lists.values()),
            "splits": ["train", "test"],
            "amp_th": hparams["amp_th"],
            "sample_rate": hparams["sample_rate"],
            "num_workers": hparams["prep_workers"],
            "skip_prep": hparams["skip_prep"],
            "bad_audio": hparams["bad_audio"],
            "min_duration": hparams["min_duration"],
        },
    )
    if hparams["augment"]:
        run_on_main(prepare_augmentation, args=[hparams["noise_folder"], hparams["rir_folder"], manifests])


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams, merged_yaml = load_hparams(hparams_file, overrides)
    malloc = keep_freed_buffers(hparams["malloc_keep_bytes"])  # before the first training allocations
    manifests = hparams["manifest_folder"]
    lists = trial_lists(hparams["verification_lists"])

    prepare_data(hparams, lists)

    # Record the merged hyperparameters (extends chain + overrides).
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        tmp.write(merged_yaml)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=tmp.name,
        overrides=overrides,
    )
    os.unlink(tmp.name)
    logging.getLogger(__name__).info("glibc malloc thresholds (malloc_keep_bytes): %s", malloc)

    train_data = train_dataset(os.path.join(manifests, "train.csv"), hparams["crops"], hparams["sample_rate"])
    brain = hparams["brain_class"](
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.prepare_training(train_data)
    utterances = utterance_dataset(
        [os.path.join(manifests, "enrol.csv"), os.path.join(manifests, "test.csv")],
        hparams["sample_rate"],
    )
    if hparams["eval_interval_epochs"] > 0:  # EER of the first list in the train log every N epochs
        brain.periodic_eer = PeriodicEER(
            utterances, next(iter(lists.values())),
            hparams["eval_interval_epochs"], hparams["eval_batch_size"],
        )
    brain.fit(hparams["epoch_counter"], train_data, train_loader_kwargs=hparams["dataloader_options"])

    cohort = None
    if hparams["score_norm_cohort"] > 0:
        cohort = utterance_dataset([os.path.join(manifests, "train.csv")], hparams["sample_rate"])
    result = brain.evaluate_verification(
        utterances,
        lists,
        os.path.join(hparams["output_folder"], "verification.json"),
        checkpoint=hparams["eval_checkpoint"],
        cohort=cohort,
    )
    # The evaluated encoder, loadable with SpeakerRecognition.from_hparams.
    if sb.utils.distributed.if_main_process():
        export_inference(
            os.path.join(hparams["output_folder"], "inference"),
            brain.embedding_encoder(),
            merged_yaml,
            overrides,
            checkpoint=result["checkpoint"],
            metrics=result,
            command=" ".join(["python", *sys.argv]),
        )


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    main(sys.argv[1:])
