"""HyperPyYAML files that extend another one.

An experiment file may start with ``extends: parent.yaml`` (path relative to
the file), or a list ``extends: [parent.yaml, mixin.yaml]`` merged in order,
and then list only what it changes; mappings are merged key by key
(``modules``, ``crops``, a ``!new:`` object's arguments...), everything else
is replaced. Chains are allowed (``dino_ssps.yaml`` extends ``dino.yaml``,
which extends ``common.yaml``). The merge happens before HyperPyYAML resolves
``!ref``, so a parent's ``!ref <number_of_epochs>`` sees the child's value.

Command-line overrides are applied afterwards with SpeechBrain's usual rule
(an unknown top-level key is an error); a nested override of a mapping
(``--crops={reff: ...}``) must also name keys that mapping has, where
HyperPyYAML would silently add them. ``!include:`` paths stay relative to the file
that contains them.
"""

import io
import os
import re

import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml
from hyperpyyaml.core import recursive_update

EXTENDS = "extends"


def _absolutise_includes(node, folder):
    """Rewrites ``!include:rel.yaml`` tags to absolute paths, in place."""
    if isinstance(node, dict):
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        children = ()
    for child in children:
        _absolutise_includes(child, folder)
    tag = getattr(getattr(node, "tag", None), "value", None) or ""
    if tag.startswith("!include:") and not os.path.isabs(tag[9:]):
        node.yaml_set_ctag(
            ruamel.yaml.tag.Tag(suffix="!include:" + os.path.join(folder, tag[9:]))
        )


def _tag(node):
    return getattr(getattr(node, "tag", None), "value", None)


def _merge(base, child):
    """Child keys override base keys; a mapping merges into a mapping unless
    the child gives it another tag (e.g. a different ``!new:`` class)."""
    for key, value in child.items():
        old = base.get(key)
        same_kind = _tag(value) in (None, _tag(old))
        if isinstance(value, dict) and isinstance(old, dict) and same_kind:
            _merge(old, value)
        else:
            base[key] = value


_REF = re.compile(r"<([^<>\[\]]+)")


def _references(node):
    """Top-level keys named by the ``!ref``/``!copy`` tags inside ``node``."""
    if isinstance(node, dict):
        return {k for v in node.values() for k in _references(v)}
    if isinstance(node, list):
        return {k for v in node for k in _references(v)}
    if _tag(node) in ("!ref", "!copy"):
        return set(_REF.findall(str(node.value)))
    return set()


def _dependency_order(tree):
    """Re-orders top-level keys so that every key comes after the keys it
    references (HyperPyYAML follows a chain of references only towards keys
    defined earlier); otherwise the file order is kept."""
    ordered, visiting = ruamel.yaml.comments.CommentedMap(), set()
    position = {key: i for i, key in enumerate(tree)}

    def visit(key):
        if key in ordered or key in visiting or key not in tree:
            return
        visiting.add(key)
        for dep in sorted(_references(tree[key]) & set(position), key=position.get):
            visit(dep)
        visiting.discard(key)
        ordered[key] = tree[key]

    for key in list(tree):
        visit(key)
    return ordered


def _load_tree(path, seen=()):
    path = os.path.abspath(path)
    if path in seen:
        raise ValueError(f"circular 'extends' chain: {' -> '.join(seen + (path,))}")
    with open(path) as f:
        tree = ruamel.yaml.YAML().load(f)
    if tree is None:
        tree = ruamel.yaml.comments.CommentedMap()
    folder = os.path.dirname(path)
    _absolutise_includes(tree, folder)
    parents = tree.pop(EXTENDS, None)
    if parents is None:
        return tree
    if isinstance(parents, str):
        parents = [parents]
    base = _load_tree(os.path.join(folder, str(parents[0])), seen + (path,))
    for other in parents[1:]:  # mixins, merged in order
        _merge(base, _load_tree(os.path.join(folder, str(other)), seen + (path,)))
    _merge(base, tree)
    return base


def _dump(tree):
    out = io.StringIO()
    ruamel.yaml.YAML().dump(tree, out)
    return out.getvalue()


def flatten_hparams(path, overrides=None):
    """YAML text of ``path`` with its ``extends`` chain merged in and
    ``overrides`` (mapping or YAML string, checked as ``load_hparams`` does)
    written into it; ``!ref`` and unset ``!PLACEHOLDER`` tags are kept."""
    tree = _load_tree(path)
    overrides = _parse_overrides(overrides)
    if overrides:
        _check_nested_overrides(tree, overrides)
        recursive_update(tree, overrides, must_match=True)  # HyperPyYAML's own rule
    return _dump(_dependency_order(tree))


def load_hparams(path, overrides=None):
    """``load_hyperpyyaml`` for a file that may use ``extends``.

    Returns
    -------
    hparams : dict
    text : str, the merged YAML (what ``hyperparams.yaml`` should record).
    """
    tree = _dependency_order(_load_tree(path))
    _check_nested_overrides(tree, overrides)
    text = _dump(tree)
    return load_hyperpyyaml(text, overrides), text


def _parse_overrides(overrides):
    """A YAML string of overrides (as ``sb.parse_arguments`` gives them) as a
    mapping; round-trip loaded so that tags such as ``!ref`` survive."""
    if isinstance(overrides, str):
        return ruamel.yaml.YAML().load(overrides) if overrides.strip() else None
    return overrides


def _check_nested_overrides(tree, overrides, where=""):
    """Raises KeyError for an override key that a nested mapping lacks."""
    overrides = _parse_overrides(overrides)
    if not isinstance(overrides, dict):
        return
    for key, value in overrides.items():
        if key not in tree:
            if where:
                raise KeyError(
                    f"override {where}{key}: {where.rstrip('.') or 'the file'} has no key {key!r} "
                    f"(it has {', '.join(map(str, tree))})"
                )
            continue  # top level: SpeechBrain's own check reports it
        if isinstance(value, dict) and isinstance(tree[key], dict) and _tag(tree[key]) is None:
            _check_nested_overrides(tree[key], value, f"{where}{key}.")
