"""Every docstring example in the package runs (huggingface/evaluate style: runnable docs)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import shiftbench

MODULES = sorted(m.name for m in pkgutil.walk_packages(shiftbench.__path__, "shiftbench.") if "evaluate_modules" not in m.name and not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
