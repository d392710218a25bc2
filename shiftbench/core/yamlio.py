"""Safe YAML reading with one-line errors (file and line) and duplicate-key detection.

Bounded: a file is at most ``guards.MAX_YAML_BYTES`` and the loaded document at most
``MAX_EXPANDED`` once its aliases are expanded. PyYAML shares an aliased node instead of copying
it, so loading a "billion laughs" file is cheap, but anything that walks the value (``repr`` in
an error message, ``json.dumps`` for a hash) expands every alias: a 464-byte registry made a
351 MB error line or a MemoryError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.core.guards import MAX_YAML_BYTES, preview, read_text_bounded

# Values (plus characters of strings) of a document with every alias expanded: a registry of
# a few hundred entries is ~10^4; the cap is far above any real file and far below a bomb.
MAX_EXPANDED = 1_000_000


# What PyYAML's own constructors raise on a malformed scalar, e.g. `2020-13-45` (ValueError),
# `!!timestamp x` (AttributeError) or an int of more than 4300 digits (ValueError).
_CONSTRUCT_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, KeyError, IndexError)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and turns a constructor's crash on a malformed value into a ConstructorError with its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except _CONSTRUCT_ERRORS as exc:
            shown = preview(node.value if isinstance(node, yaml.ScalarNode) else node.id, 40)
            reason = one_line(exc)
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag.rsplit(':', 1)[-1]} value {shown}: {reason}", node.start_mark
            ) from None


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merge keys: keys they bring in may be overridden on purpose
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # SafeLoader.construct_mapping reports "found unhashable key" with its line
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {preview(key)}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; every failure is a ShiftbenchError naming the file (and line)."""
    path = Path(path)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a NUL byte or an over-long name in a path taken from a YAML field
        exists = True  # let the checked read below report it
    if not exists:
        raise ShiftbenchError(f"{what} file not found: {path}")
    text = read_text_bounded(path, f"{what} file", MAX_YAML_BYTES)
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ShiftbenchError(f"{path}: invalid YAML in {what} file: nested too deeply") from None
    except _CONSTRUCT_ERRORS as exc:  # last resort; _StrictLoader normally reports these with a line
        raise ShiftbenchError(f"{path}: invalid YAML in {what} file: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or one_line(exc)
        raise ShiftbenchError(f"{where}: invalid YAML in {what} file: {problem}") from None
    _check_expanded_size(doc, path, what)
    return doc


def _check_expanded_size(doc: Any, path: Path, what: str) -> None:
    """Refuse a document whose alias-expanded size passes MAX_EXPANDED (walked with a budget,
    so the check itself is bounded)."""
    budget = MAX_EXPANDED
    stack = [doc]
    while stack:
        value = stack.pop()
        budget -= 1 + (len(value) if isinstance(value, str) else 0)
        if budget < 0:
            raise ShiftbenchError(
                f"{path}: {what} file expands to more than {MAX_EXPANDED} values and characters "
                "(aliases of aliases?); refusing to load it"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
