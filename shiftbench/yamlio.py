"""Safe YAML reading with one-line errors (file and line) and duplicate-key detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shiftbench.errors import ShiftbenchError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
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
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ShiftbenchError(f"{where}: invalid YAML in {what} file: {problem}") from None
