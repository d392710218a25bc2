"""Every concept has one home (issue #17): only ``shiftbench/remedies/`` compares remedy names and
only ``shiftbench/tasks/`` compares task-kind names. Everything else asks the registered object
(``get_remedy(protocol.remedy).hook(...)``, ``get_task(spec.task).encode(...)``), so adding a
remedy or a task kind is a new file plus a registry entry, not an edit in every layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shiftbench"
TASK_NAMES = {"text-classification", "token-classification", "sentence-pair-classification", "pair-classification"}
TASK_CONSTANTS = {"TOKEN_TASK", "TEXT_TASK", "TEXT", "TOKENS"}  # names the code has given task-kind strings


def _names(node: ast.AST) -> tuple[set[str], set[str]]:
    """(identifiers and attribute names, string constants) inside ``node``."""
    idents: set[str] = set()
    strings: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            idents.add(n.id)
        elif isinstance(n, ast.Attribute):
            idents.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            strings.add(n.value)
    return idents, strings


def comparisons(path: Path) -> list[tuple[int, str, str]]:
    """(line, kind, source) of every comparison of a remedy or task-kind name in ``path``: a
    comparison involving a ``remedy`` variable or attribute, or a task-kind name or constant."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        idents, strings = _names(node)
        if "remedy" in idents:
            found.append((node.lineno, "remedy", ast.unparse(node)))
        if strings & TASK_NAMES or idents & TASK_CONSTANTS:
            found.append((node.lineno, "task", ast.unparse(node)))
    return sorted(found)


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "if protocol.remedy == 'lora': pass\n"
        "x = spec.task == 'token-classification'\n"
        "y = task is TOKENS\n"
        "z = protocol.remedy in ('distill', 'icl')\n"
        "ok = spec.name == 'fpb'\n"
        "ok = 'remedy' in field.metadata\n"
    )
    assert [(line, kind) for line, kind, _ in comparisons(f)] == [
        (1, "remedy"),
        (2, "task"),
        (3, "task"),
        (4, "remedy"),
    ]


@pytest.mark.parametrize("kind, home", [("remedy", "remedies"), ("task", "tasks")])
def test_names_are_compared_only_in_their_home(kind, home):
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {src}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if home not in path.relative_to(PACKAGE).parts[:1]
        for line, k, src in comparisons(path)
        if k == kind
    ]
    assert offenders == [], f"{kind} names compared outside shiftbench/{home}/:\n" + "\n".join(offenders)
