"""The README is the front door: it must document the schema the code writes."""

from __future__ import annotations

import re

from shiftbench.results import RUN_SCHEMA, SCHEMA_VERSION

from .conftest import REPO


def test_readme_documents_every_results_column():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Results schema", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z0-9_]+)`", section))
    missing = [c for c in RUN_SCHEMA.names if c not in documented]
    assert not missing, f"README 'Results schema' misses columns: {missing}"
    assert f"SCHEMA_VERSION = {SCHEMA_VERSION}" in section


def test_readme_has_a_real_leaderboard_excerpt():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Leaderboard", 1)[1].split("\n## ", 1)[0]
    assert "| model |" in section and "fpb_to_tfns" in section
