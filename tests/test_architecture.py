"""The import layers (README "Layers") hold: the import-linter contracts in pyproject.toml, and
the commands that only read results (leaderboard, compare, report) start without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import REPO

HEAVY = ("torch", "transformers")


def _env() -> dict[str, str]:
    """This checkout first on the path (not another install of shiftbench)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert Path(found).exists(), "lint-imports not found: pip install -e '.[test]' (import-linter)"
    return found


def test_import_contracts_are_kept():
    """layers (imports go down), torch-free (core..analysis never import torch or transformers,
    not even through another module) and acyclic (no import cycles between siblings)."""
    proc = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"import-linter contracts broken:\n{proc.stdout}\n{proc.stderr}"


def _modules_loaded_by(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter; the heavy modules it left in sys.modules."""
    probe = code + f"\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split("\n")[-2].split())


def test_reading_modules_import_without_torch():
    code = "import shiftbench.analysis.leaderboard, shiftbench.analysis.compare, shiftbench.reporting.report, shiftbench.cli"
    assert _modules_loaded_by(code) == set()


def test_planning_imports_without_torch():
    """What ``run --dry-run`` needs to plan (settings, plan: identities, data, model files) loads no
    torch; torch comes with the runner, when something is trained or scored."""
    assert _modules_loaded_by("import shiftbench.execution.config, shiftbench.execution.plan") == set()


def test_read_only_commands_start_without_torch(tmp_path):
    """The leaderboard, compare and report commands go through their imports (on a results dir
    with no runs, so they stop right after) without loading torch or transformers."""
    empty = tmp_path / "results"
    (empty / "runs").mkdir(parents=True)
    code = textwrap.dedent(f"""
        from shiftbench.cli import main
        for argv in (["leaderboard", "--format", "markdown", "--metric", "macro_f1"],
                     ["compare", "minilm-l6", "minilm-l6@augment"],
                     ["report", "--out", {str(tmp_path / "report.html")!r}]):
            main([*argv, "--results-dir", {str(empty)!r}])  # an error exit is fine: the imports ran
    """)
    assert _modules_loaded_by(code) == set()
