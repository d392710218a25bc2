"""Every docstring example in the package runs (huggingface/evaluate style: runnable docs).

Only modules with an example that runs (``>>>`` without ``+SKIP``) are collected, and each must
run at least one: a module without one would "pass" having checked nothing.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import shiftbench

_EXAMPLE = re.compile(r"^\s*>>> (?!.*doctest: \+SKIP).*$", re.MULTILINE)  # an example that runs


def _source(name: str) -> str:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""


ALL_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(shiftbench.__path__, "shiftbench.")
    if "evaluate_modules" not in m.name and not m.name.endswith("__main__")
)
MODULES = [name for name in ALL_MODULES if _EXAMPLE.search(_source(name))]


def test_modules_with_examples_are_found():
    assert "shiftbench.core.errors" in MODULES and len(MODULES) < len(ALL_MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name}: its examples are all skipped or not in docstrings"
    assert result.failed == 0
