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


def export_inference(folder, encoder, hparams_yaml, overrides=None, checkpoint="", encoder_key="encoder"):
    """Writes the inference folder.

    Arguments
    ---------
    folder : str, destination.
    encoder : torch.nn.Module whose weights become ``embedding_model``.
    hparams_yaml : str, the training YAML text (``extends`` already merged).
    overrides : the command-line overrides of the run.
    checkpoint : str, recorded in the header.
    encoder_key : key of the encoder definition in ``hparams_yaml``.
    """
    resolved = resolve_references(hparams_yaml, overrides).getvalue()
    tree = ruamel.yaml.YAML().load(resolved)
    out = ruamel.yaml.comments.CommentedMap()
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
    return folder
