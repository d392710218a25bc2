"""Disk full while writing results, and a results reader that survives any file it finds."""

from __future__ import annotations

import errno

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shiftbench
from shiftbench.cli import main
from shiftbench.results.store import RUNS_DIR, read_runs


def test_disk_full_while_writing_keeps_earlier_results(tiny_env, capsys, monkeypatch):
    first = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env)
    results = tiny_env["results_dir"]
    before = {p: p.read_bytes() for p in sorted(results.rglob("*.parquet"))}

    real_write = pq.write_table

    def full_disk(table, where, *args, **kwargs):
        with open(where, "wb") as fh:  # half a file lands in the temporary path...
            fh.write(b"PAR1" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(pq, "write_table", full_disk)
    argv = [
        "run",
        "--pair",
        "news_to_forum",
        "--seeds",
        "1",
        "--model",
        "tiny",
        "--protocol",
        tiny_env["protocol"],
        "--registry",
        str(tiny_env["registries"][0]),
        "--data-dir",
        str(tiny_env["data_dir"]),
        "--results-dir",
        str(results),
        "--cache-dir",
        str(tiny_env["cache_dir"]),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()  # progress lines of the fine-tune come first
    errors = [line for line in err if line.startswith("shiftbench: error:")]
    assert errors == [err[-1]] and "No space left on device" in err[-1] and str(results) in err[-1]
    assert not any("Traceback" in line for line in err)
    # Nothing half-written is visible, and every earlier file is byte-identical.
    monkeypatch.setattr(pq, "write_table", real_write)
    after = {p: p.read_bytes() for p in sorted(results.rglob("*.parquet"))}
    assert after == before
    assert not [p for p in results.rglob("*") if p.name.endswith(".tmp")]
    loaded = read_runs(results)
    assert loaded.skipped == () and set(loaded.table.column("run_id").to_pylist()) == {first.new_results[0].run_id}
    # With space again the same command completes the missing run.
    assert main(argv) == 0
    assert len(list((results / RUNS_DIR).glob("*.parquet"))) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(st.binary(max_size=300), min_size=1, max_size=4), prefix=st.booleans())
def test_results_reader_never_raises(tmp_path_factory, blobs, prefix):
    """Any bytes in runs/*.parquet (even starting like Parquet) are skipped with a reason."""
    results = tmp_path_factory.mktemp("fuzz")
    runs = results / RUNS_DIR
    runs.mkdir()
    for i, blob in enumerate(blobs):
        (runs / f"f{i}.parquet").write_bytes((b"PAR1" if prefix else b"") + blob + (b"PAR1" if prefix else b""))
    loaded = read_runs(results)
    assert loaded.table.num_rows == 0
    assert len(loaded.skipped) == len(blobs) and all(reason for _, reason in loaded.skipped)
