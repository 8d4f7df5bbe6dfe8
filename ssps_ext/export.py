"""Export a trained encoder for SpeechBrain's inference interfaces.

Writes ``<folder>/hyperparams.yaml`` and ``<folder>/embedding_model.ckpt`` so
that::

    from speechbrain.inference.speaker import SpeakerRecognition
    model = SpeakerRecognition.from_hparams(source=folder, savedir="tmp")
    score, same = model.verify_files("a.wav", "b.wav")
    emb = model.encode_batch(wavs)  # (B, 1, D)

The feature extractor, normalisation and encoder definitions are copied,
fully resolved, from the training hyperparameters, so any architecture
change made there is exported as is. No path is written into the file: the
Pretrainer fetches ``embedding_model.ckpt`` from whatever ``source`` it is
given, so the folder can be copied anywhere or uploaded to a model hub.
"""

import io
import os

import ruamel.yaml
import torch
from hyperpyyaml.core import resolve_references

HEADER = """# SpeechBrain inference file written by ssps_ext.export
# source checkpoint: {checkpoint}
# SpeakerRecognition.from_hparams(source=<this folder>) -> verify_files / encode_batch
"""


def _without_comments(node):
    """Drops the training file's comments (they describe the full model)."""
    if hasattr(node, "ca"):
        node.ca.items.clear()
        node.ca.comment = None
        node.ca.end = None
    for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
        _without_comments(child)
    return node


CARD = """# Speaker embeddings: {system}

Self-supervised ECAPA-TDNN speaker encoder trained with ssps-speechbrain.

| trial list | EER (%) | minDCF 0.01 | minDCF 0.05 | trials |
|---|---|---|---|---|
| `{trials}` | {EER:.2f} | {dcf_01:.3f} | {dcf_05:.3f} | {n_trials} |

- Decision threshold: cosine >= {EER_threshold:.4f} (the EER threshold on the list above,
  also `eer_threshold` in `hyperparams.yaml`; SpeechBrain's default 0.25 does not suit
  self-supervised embeddings).
- Source checkpoint: `{checkpoint_name}` (averaged checkpoints: {averaged_checkpoints}).
- Trained with: `{command}`

```python
from ssps_ext.inference import SSLSpeakerRecognition  # SpeakerRecognition + this threshold
model = SSLSpeakerRecognition.from_hparams(source="<this folder or hub id>", savedir="tmp")
score, same = model.verify_files("a.wav", "b.wav")
# or SpeechBrain's class: score = SpeakerRecognition...verify_files(a, b)[0];
# same = score >= model.hparams.eer_threshold
```
"""


def export_inference(folder, encoder, hparams_yaml, overrides=None, checkpoint="", encoder_key="encoder",
                     metrics=None, command=""):
    """Writes the inference folder.

    Arguments
    ---------
    folder : str, destination.
    encoder : torch.nn.Module whose weights become ``embedding_model``.
    hparams_yaml : str, the training YAML text (``extends`` already merged).
    overrides : the command-line overrides of the run.
    checkpoint : str, recorded in the header.
    encoder_key : key of the encoder definition in ``hparams_yaml``.
    metrics : dict from ``evaluate_trials`` (EER, its threshold, minDCF...):
        the threshold goes into ``hyperparams.yaml`` as ``eer_threshold`` and
        everything into the model card ``README.md``.
    command : str, the training command, for the model card.
    """
    resolved = resolve_references(hparams_yaml, overrides).getvalue()
    tree = ruamel.yaml.YAML().load(resolved)
    out = ruamel.yaml.comments.CommentedMap()
    if metrics:
        out["eer_threshold"] = round(float(metrics["EER_threshold"]), 6)
    for key, source in (("compute_features", "compute_features"), ("mean_var_norm", "mean_var_norm"),
                        ("embedding_model", encoder_key)):
        out[key] = _without_comments(tree[source])
    text = io.StringIO()
    ruamel.yaml.YAML().dump(out, text)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
        f.write(HEADER.format(checkpoint=checkpoint))
        f.write(text.getvalue())
        f.write(
            "modules:\n"
            "    compute_features: !ref <compute_features>\n"
            "    mean_var_norm: !ref <mean_var_norm>\n"
            "    embedding_model: !ref <embedding_model>\n"
            "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
            "    loadables:\n"
            "        embedding_model: !ref <embedding_model>\n"
        )
    torch.save(encoder.state_dict(), os.path.join(folder, "embedding_model.ckpt"))
    if metrics:
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(CARD.format_map({
                **metrics, "system": os.path.basename(os.path.dirname(os.path.abspath(folder))),
                "trials": os.path.basename(metrics.get("trials_file", "")),
                "checkpoint_name": os.path.basename(checkpoint), "command": command,
                "averaged_checkpoints": metrics.get("averaged_checkpoints", 1),
                "dcf_01": metrics["minDCF_0.01"], "dcf_05": metrics["minDCF_0.05"],
            }))
    return folder
