"""Safe YAML reading with one-line errors (file and line) and duplicate-key detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shiftbench.errors import ShiftbenchError


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
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.id
            shown = repr(shown if len(str(shown)) <= 40 else str(shown)[:37] + "...")
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
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
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; every failure is a ShiftbenchError naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ShiftbenchError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise ShiftbenchError(f"{what} file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ShiftbenchError(f"cannot read {what} file {path}: {exc}") from None
    except ValueError as exc:  # a NUL byte in a path taken from a YAML field
        raise ShiftbenchError(f"cannot read {what} file {str(path)!r}: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ShiftbenchError(f"{path}: invalid YAML in {what} file: nested too deeply") from None
    except _CONSTRUCT_ERRORS as exc:  # last resort; _StrictLoader normally reports these with a line
        raise ShiftbenchError(f"{path}: invalid YAML in {what} file: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ShiftbenchError(f"{where}: invalid YAML in {what} file: {problem}") from None
