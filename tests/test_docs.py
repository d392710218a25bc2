"""The README is the front door: it must document the schema the code writes."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from shiftbench.results.store import RUN_SCHEMA, SCHEMA_VERSION

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
    # every row shown is one the committed leaderboard holds, with the same numbers (not stale, not typed in)
    board = pd.read_parquet(REPO / "results" / "leaderboard.parquet")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| model ")]
    assert len(rows) >= 12  # 4 checkpoints x 3 sentiment pairs at least
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        model, pair, target, protocol, metric, n_seeds, id_cell, ood_cell, gap_cell, _, rank, edge = cells
        key = dict(model=model, pair=pair, target=target, protocol=protocol, metric=metric, n_seeds=int(n_seeds))
        hit = board[(board[list(key)] == pd.Series(key)).all(axis=1)]
        assert len(hit) == 1, f"README leaderboard row not in results/leaderboard.parquet: {line}"
        for cell, col in ((id_cell, "id_score_mean"), (ood_cell, "ood_score_mean"), (gap_cell, "gap_mean")):
            assert float(cell.split()[0]) == pytest.approx(hit[col].iloc[0], abs=6e-5), f"{col} differs: {line}"
            low, high = (float(x) for x in cell.split("[", 1)[1].split("]")[0].split(","))  # the interval too
            base = col.removesuffix("_mean")
            assert (low, high) == (
                pytest.approx(hit[f"{base}_ci_low"].iloc[0], abs=6e-5),
                pytest.approx(hit[f"{base}_ci_high"].iloc[0], abs=6e-5),
            ), f"{base} interval differs: {line}"
        assert int(rank) == hit["rank"].iloc[0], f"rank differs: {line}"
        n_edge = hit["n_edge_selections"].iloc[0]
        assert edge == ("–" if pd.isna(n_edge) else f"{int(n_edge)}/{n_seeds}"), f"at grid edge differs: {line}"


def test_readme_verdicts_are_the_ones_compare_gives():
    """Every verdict the Leaderboard section quotes (the standard-v2 board's and, in its details
    block, the superseded standard board's) is re-derived by ``compare`` on the committed results
    (each quoted "OOD <diff> [<low>, <high>]" with its MDE, the gap difference where quoted, and the
    verdict word after the dash: "no verdict" is compare's "needs >= 2 seeds per side")."""
    import re as _re

    from shiftbench.analysis.compare import compare

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Leaderboard", 1)[1].split("\n## ", 1)[0]
    quoted = _re.findall(
        r"`(\S+)` vs `(\S+)` on (\S+): OOD ([+−-][0-9.]+) \[([+−-][0-9.]+), ([+−-][0-9.]+)\], MDE ([0-9.]+|–)"
        r"(?:; gap ([+−-][0-9.]+) \[([+−-][0-9.]+), ([+−-][0-9.]+)\])?"  # the gap difference, where quoted
        r"(?: —\s+\**(no significant difference|worse|better|no verdict))?",  # the verdict, where it follows
        section,
    )
    assert len(quoted) >= 12, "the verdicts are not quoted in the expected form"
    assert len({(b, a, pair) for b, a, pair, *_ in quoted}) == len(quoted), "a verdict quoted twice"
    num = lambda x: float(x.replace("−", "-"))  # noqa: E731
    for b, a, pair, est, low, high, mde, *gap, verdict in quoted:  # quoted as "`B` vs `A`"
        [t] = [t for t in compare(REPO / "results", a, b, pairs=[pair]).targets]
        assert (t.ood_diff.estimate, t.ood_diff.low, t.ood_diff.high) == (
            pytest.approx(num(est), abs=6e-4),
            pytest.approx(num(low), abs=6e-4),
            pytest.approx(num(high), abs=6e-4),
        ), (a, b)
        if gap[0]:
            assert (t.gap_diff.estimate, t.gap_diff.low, t.gap_diff.high) == tuple(
                pytest.approx(num(x), abs=6e-4) for x in gap
            ), (a, b, "gap")
        if verdict:
            assert verdict == t.verdict.replace("needs >= 2 seeds per side", "no verdict"), (a, b, t.verdict)
        if t.verdict == "needs >= 2 seeds per side":
            assert mde == "–", (a, b)
        else:
            assert t.mde_ood == pytest.approx(num(mde), abs=6e-4), (a, b)


def test_readme_command_line_shows_every_run_flag():
    from shiftbench.execution.settings import cli_flags

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    usage = section.split("python -m shiftbench run", 1)[1].split("python -m shiftbench list", 1)[0]
    missing = [flag for flag in cli_flags().values() if f"[{flag}" not in usage and f"| {flag}" not in usage]
    assert not missing, f"README 'Command line' run usage misses: {missing}"
