"""One self-contained hyperparameter file from an ``extends`` chain.

Usage::

    python -m ssps_ext.flatten recipes/VoxCeleb/SSPS/hparams/simclr_ssps.yaml \\
        [--key=value ...] [--out simclr_ssps_flat.yaml]

Writes (to ``--out``, else to stdout) the experiment file with its
``extends`` chain merged in and the ``--key=value`` overrides written in, by
the rules of ``ssps_ext.hparams.load_hparams``: an unknown key is an error.
The result loads with plain ``hyperpyyaml.load_hyperpyyaml``, without this
package's loader; ``!ref`` tags are kept, so overriding ``seed`` still moves
``output_folder``. Keys left ``!PLACEHOLDER`` (e.g. ``data_folder``) stay
placeholders, as in any SpeechBrain recipe file: set them as overrides when
the flat file is used (``train.py flat.yaml --data_folder=...``) or here.
A header comment names the source file, the overrides and the placeholders
still to set. ``!include:`` paths are written absolute.

Every ``--key=value`` (or ``--key value``) is a hyperparameter override,
including keys that SpeechBrain also knows as run options
(``--max_grad_norm``): the flat file records them.
"""

import argparse
import os
import sys

import ruamel.yaml

from .hparams import _tag, flatten_hparams


def placeholders(node, where=""):
    """Dotted names of the ``!PLACEHOLDER`` values in a ruamel tree."""
    if _tag(node) == "!PLACEHOLDER":
        return [where]
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    return [name for key, child in items for name in placeholders(child, f"{where}.{key}" if where else str(key))]


def header(source, overrides, unset):
    """Comment block naming where a flat file comes from."""
    lines = [f"Flattened by `python -m ssps_ext.flatten` from {os.path.abspath(source)}",
             "(extends chain merged; loads with plain hyperpyyaml.load_hyperpyyaml)."]
    if overrides.strip():
        lines += ["Overrides written in:"] + [f"  {line}" for line in overrides.strip().splitlines()]
    else:
        lines.append("Overrides written in: none")
    if unset:
        lines.append(f"Still !PLACEHOLDER, set them as overrides: {', '.join(unset)}")
    return "".join(f"# {line}\n" for line in lines)


def flatten(source, overrides=""):
    """Text of the flat file (header + merged YAML) and its unset placeholders.

    Arguments
    ---------
    source : str, an hparams file, possibly with ``extends``.
    overrides : YAML string of overrides, as ``sb.parse_arguments`` gives them.

    Returns
    -------
    text : str
    unset : list of str, dotted names of the keys still ``!PLACEHOLDER``.
    """
    body = flatten_hparams(source, overrides)
    unset = placeholders(ruamel.yaml.YAML().load(body))
    return header(source, overrides, unset) + body, unset


def overrides_yaml(args):
    """YAML text of ``--key=value`` / ``--key value`` overrides (SpeechBrain's CLI form).

    Example
    -------
    >>> print(overrides_yaml(["--seed=3", "--data_folder", "/d", "--crops={ref: [1, 4.0]}"]))
    seed: 3
    data_folder: /d
    crops: {ref: [1, 4.0]}
    """
    lines = []
    for arg in args:
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            lines.append(f"{key}: {value}" if eq else f"{key}:")
        elif lines:
            lines[-1] += " " + arg
        else:
            raise SystemExit(f"unexpected argument {arg!r}: overrides are --key=value")
    return "\n".join(lines)


def main(argv=None):
    """CLI entry point; returns the flat text."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("hparams", help="experiment file, may use `extends:`")
    parser.add_argument("--out", help="file to write (default: stdout)")
    args, rest = parser.parse_known_args(argv)
    try:
        text, unset = flatten(args.hparams, overrides_yaml(rest))
    except KeyError as e:  # unknown override key
        raise SystemExit(f"flatten: {e.args[0]}")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        note = f" (still !PLACEHOLDER: {', '.join(unset)})" if unset else ""
        print(f"wrote {args.out}{note}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return text


if __name__ == "__main__":
    main()
