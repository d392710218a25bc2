"""Bad data, seeds, results dirs, models and flags: one line on stderr, exit 2, nothing lost.

Almost everything goes through ``run --dry-run``, which loads and validates every data file and
model directory of the selection but trains nothing. Results-dir checks only happen on a real
run; they fail before any training starts, so those runs are fast too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shiftbench.api import make_plan
from shiftbench.cli import main
from shiftbench.core.errors import ShiftbenchError

from .conftest import MINI_REGISTRY, balanced_labels, make_texts, user_error, write_split

REPO = Path(__file__).resolve().parent.parent
THREE = ["negative", "neutral", "positive"]
REGISTRY = (
    MINI_REGISTRY
    + """suites:
  mine:
    pairs: [src_to_tgt]
"""
)


pytestmark = pytest.mark.usefixtures("clean_env")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def world(tmp_path, tiny_model_dir):
    """A source (train only, validation/test carved) and a target (test), both 3-class."""
    data = tmp_path / "data"
    lbl = balanced_labels(30, THREE, 1)
    src = write_split(data, "acme/src", "default", "train", make_texts(lbl, 1), lbl, THREE)
    lbl = balanced_labels(12, THREE, 2)
    tgt = write_split(data, "acme/tgt", "default", "test", make_texts(lbl, 2, "tweet"), lbl, THREE)
    reg = tmp_path / "reg.yaml"
    reg.write_text(REGISTRY, encoding="utf-8")

    def argv(*extra, data_dir=data, model=tiny_model_dir, dry_run=True, pair="src_to_tgt"):
        out = ["run", "--registry", reg, "--protocol", "quick", "--device", "cpu", "--cache-dir", tmp_path / "cache"]
        out += ["--dry-run"] if dry_run else []
        out += ["--pair", pair] if pair else []
        out += ["--data-dir", data_dir] if data_dir is not None else []
        out += ["--model", model] if model is not None else []
        return [str(a) for a in out + list(extra)]

    return SimpleNamespace(data=data, src=src, tgt=tgt, reg=reg, argv=argv, tmp=tmp_path, model=tiny_model_dir)


def test_the_good_world_dry_runs(world, capsys):
    assert main(world.argv()) == 0
    out, err = capsys.readouterr()
    assert "src_to_tgt" in out and "1 of 1 fine-tunes" in out and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# data


def test_missing_data_dir(world, capsys):
    missing = world.tmp / "no-such-data"
    user_error(capsys, world.argv(data_dir=missing), "data dir", missing, "does not exist")


def test_data_dir_is_a_file(world, capsys):
    f = world.tmp / "data.txt"
    f.write_text("x")
    user_error(capsys, world.argv(data_dir=f), "data dir", f)


def test_dataset_dir_missing_and_hub_offline(world, capsys):
    shutil.rmtree(world.data / "acme__tgt")
    user_error(
        capsys,
        world.argv(),
        "dataset 'tgt'",
        "acme/tgt",
        "not found locally",
        world.data / "acme__tgt",
        "HF_HUB_OFFLINE=1",
    )


def test_no_data_dir_and_hub_offline(world, capsys):
    user_error(capsys, world.argv(data_dir=None), "dataset 'src'", "no data dir set", "HF_HUB_OFFLINE=1")


def test_dataset_missing_and_hub_unreachable_fails_fast(world, capsys, monkeypatch):
    """Hub allowed but the machine has no network: one refused connect, no retries, one line."""
    import datasets

    from shiftbench.data import datasets as data

    shutil.rmtree(world.data / "acme__tgt")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(data, "_HUB_PROBE", {})
    connects = []

    def refuse(address, timeout=None):
        connects.append((address, timeout))
        raise OSError(-2, "Name or service not known")

    real_load = datasets.load_dataset

    def no_download(path, *args, **kwargs):
        assert path == "parquet", f"the Hub ({path}) must not be tried when it is unreachable"
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(data.socket, "create_connection", refuse)
    monkeypatch.setattr(datasets, "load_dataset", no_download)
    user_error(
        capsys,
        world.argv(),
        "dataset 'tgt'",
        "acme/tgt",
        "Hub is not reachable",
        "https://hub.invalid is unreachable (Name or service not known)",
    )
    assert connects == [(("hub.invalid", 443), 5)]


def test_missing_split_file(world, capsys):
    world.tgt.unlink()
    user_error(capsys, world.argv(), "dataset 'tgt'", "split 'test' not found", world.tgt)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_parquet(path: Path) -> None:
    path.write_text("text,label\nhello,1\n", encoding="utf-8")


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _not_parquet, _empty_file], ids=["truncated", "text", "zero-bytes"])
@pytest.mark.parametrize("which", ["src", "tgt"])
def test_unreadable_parquet_names_the_file(world, capsys, damage, which):
    path = getattr(world, which)
    damage(path)
    user_error(capsys, world.argv(), path, "not a readable Parquet file")


def _cli_subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "shiftbench", *argv], capture_output=True, text=True, env=env, timeout=300
    )


def test_subprocess_stderr_is_one_line_for_a_missing_split(world):
    """Control for the test below: a real process, real stderr (what capsys cannot see)."""
    world.tgt.unlink()
    proc = _cli_subprocess(world.argv())
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("shiftbench: error: "), proc.stderr


def test_subprocess_stderr_is_one_line_for_a_truncated_parquet(world):
    _truncate(world.tgt)
    proc = _cli_subprocess(world.argv())
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("shiftbench: error: "), proc.stderr


def _write_table(path: Path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize(
    "columns, needles",
    [
        ({"body": ["a", "b"], "label": ["negative", "positive"]}, ["text column 'text' not found", "body, label"]),
        ({"text": ["a", "b"], "y": ["negative", "positive"]}, ["label column 'label' not found", "text, y"]),
        (
            {"text": [1, 2], "label": ["negative", "positive"]},
            ["text column 'text' row 0", "expected a string, got int"],
        ),
        ({"text": ["fine", None], "label": ["negative", "positive"]}, ["text column 'text' row 1", "got NoneType"]),
        ({"text": ["fine", ""], "label": ["negative", "positive"]}, ["text column 'text' row 1", "empty text"]),
        ({"text": ["fine", " \t "], "label": ["negative", "positive"]}, ["text column 'text' row 1", "empty text"]),
        ({"text": ["a", "b"], "label": ["negative", None]}, ["label column 'label'", "missing value"]),
    ],
    ids=["no-text-column", "no-label-column", "int-texts", "null-text", "empty-text", "blank-text", "null-label"],
)
def test_bad_split_contents(world, capsys, columns, needles):
    _write_table(world.tgt, columns)
    user_error(capsys, world.argv(), world.tgt, *needles)


def _zero_rows_pyarrow(world):
    _write_table(world.tgt, {"text": pa.array([], pa.string()), "label": pa.array([], pa.string())})


def _zero_rows_datasets(world):
    write_split(world.data, "acme/tgt", "default", "test", [], [], THREE)


@pytest.mark.parametrize("write_empty", [_zero_rows_pyarrow, _zero_rows_datasets], ids=["pyarrow", "datasets"])
def test_empty_split(world, capsys, write_empty):
    write_empty(world)
    assert pq.read_table(world.tgt).num_rows == 0  # a valid Parquet file with no rows
    user_error(capsys, world.argv(), world.tgt)


@pytest.mark.parametrize("write_empty", [_zero_rows_pyarrow, _zero_rows_datasets], ids=["pyarrow", "datasets"])
def test_empty_split_says_empty(world, capsys, write_empty):
    write_empty(world)
    line = user_error(capsys, world.argv(), world.tgt, "split 'test'", "is empty")
    assert "not a readable Parquet file" not in line


def test_label_map_drops_everything(world, capsys):
    world.reg.write_text(
        REGISTRY.replace(
            "splits: {test: test}",
            "splits: {test: test}\n    label_map: {negative: null, neutral: null, positive: null}",
        )
    )
    user_error(capsys, world.argv(), world.tgt, "dataset 'tgt'", "dropped by its label_map")


def test_label_sets_differ(world, capsys):
    lbl = balanced_labels(12, ["negative", "positive"], 3)
    write_split(world.data, "acme/tgt", "default", "test", make_texts(lbl, 3), lbl, ["negative", "positive"])
    user_error(capsys, world.argv(), "pair 'src_to_tgt'", "label sets differ", "'src'", "'tgt'")


def test_data_dir_name_too_long(world, capsys):
    user_error(capsys, world.argv(data_dir="d" * 300), "data dir")


# --------------------------------------------------------------------------------------------
# seeds


@pytest.mark.parametrize("seeds", ["0,a", "", "-1", "1,1", "0,,1", "1.5", "1_0", "4294967296", "0, 0"])
def test_bad_seeds(world, capsys, seeds):
    user_error(capsys, world.argv("--seeds", seeds), "--seeds", repr(seeds))


def test_good_seeds(world, capsys):
    assert main(world.argv("--seeds", " 2, 0 ,1")) == 0
    assert "seeds [2, 0, 1]" in capsys.readouterr().out


def test_bad_seeds_in_the_api():
    with pytest.raises(ShiftbenchError, match="seeds: expected integers"):
        make_plan(pairs=["fpb_to_tfns"], seeds=[0, True], dry_run=True)


# --------------------------------------------------------------------------------------------
# results dir (real runs: the checks come before any training)


def test_results_dir_is_a_file(world, capsys):
    f = world.tmp / "results"
    f.write_text("precious")
    user_error(capsys, world.argv("--results-dir", f, dry_run=False), "results dir", f, "is not a directory")
    assert f.read_text() == "precious"


def test_results_dir_parent_is_a_file(world, capsys):
    parent = world.tmp / "parent"
    parent.write_text("precious")
    user_error(
        capsys,
        world.argv("--results-dir", parent / "results", dry_run=False),
        "results dir",
        parent / "results",
        "not writable",
    )
    assert parent.read_text() == "precious"


def test_results_dir_not_writable(world, capsys):
    ro = world.tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user whom file permissions do not stop (root)")
        user_error(capsys, world.argv("--results-dir", ro / "results", dry_run=False), "results dir", "not writable")
    finally:
        ro.chmod(0o700)


def test_results_dir_name_too_long(world, capsys):
    user_error(capsys, world.argv("--results-dir", "r" * 300, dry_run=False), "results dir")


@pytest.mark.parametrize("bad", ["seeds", "data"])
def test_failed_run_keeps_existing_results(world, capsys, bad):
    results = world.tmp / "results"
    (results / "runs").mkdir(parents=True)
    (results / "predictions").mkdir()
    (results / "runs" / "0123456789abcdef.parquet").write_bytes(b"an earlier run")
    (results / "leaderboard.parquet").write_bytes(b"an earlier board")
    before = snapshot(results)
    if bad == "seeds":
        user_error(capsys, world.argv("--results-dir", results, "--seeds", "0,0", dry_run=False), "--seeds")
    else:
        _truncate(world.tgt)
        user_error(capsys, world.argv("--results-dir", results, dry_run=False), world.tgt)
    assert snapshot(results) == before
    assert not (world.tmp / "cache").exists()  # nothing was fine-tuned


# --------------------------------------------------------------------------------------------
# models


def _model_dir(world, files: dict[str, bytes | str | None], config: dict | None = None) -> Path:
    """A copy of the tiny model with ``files`` replaced (None deletes)."""
    d = world.tmp / "model"
    shutil.copytree(world.model, d)
    if config is not None:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **config}))
    for name, content in files.items():
        if content is None:
            (d / name).unlink()
        elif isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            (d / name).write_text(content)
    return d


def test_model_dir_without_weights(world, capsys):
    d = _model_dir(world, {"model.safetensors": None})
    user_error(capsys, world.argv(model=d), "model dir", d, "no weight files")


def test_model_dir_with_only_pickle_weights(world, capsys):
    d = _model_dir(world, {"model.safetensors": None, "pytorch_model.bin": b"not really a pickle"})
    user_error(capsys, world.argv(model=d), "model dir", d, "pytorch_model.bin", "--allow-pickle")
    assert main(world.argv("--allow-pickle", model=d)) == 0  # opted in; a dry run does not unpickle
    capsys.readouterr()


def test_model_config_with_auto_map(world, capsys):
    d = _model_dir(world, {}, config={"auto_map": {"AutoModel": "modeling_evil.EvilModel"}})
    user_error(capsys, world.argv(model=d), d / "config.json", "auto_map", "--trust-remote-code")
    assert main(world.argv("--trust-remote-code", model=d)) == 0
    capsys.readouterr()


def test_model_dir_without_config(world, capsys):
    d = _model_dir(world, {"config.json": None})
    user_error(capsys, world.argv(model=d), "model dir", d, "no config.json")


@pytest.mark.parametrize("config", ["{not json", "[1, 2]"])
def test_model_config_not_a_json_object(world, capsys, config):
    d = _model_dir(world, {"config.json": config})
    user_error(capsys, world.argv(model=d), d / "config.json")


def test_registry_model_path_missing(world, capsys):
    world.reg.write_text(REGISTRY + f"models:\n  gone:\n    path: {world.tmp / 'gone'}\n")
    user_error(
        capsys, world.argv(model="gone"), "model 'gone'", "field 'path'", world.tmp / "gone", "is not a directory"
    )


def test_registry_model_base_cycle(world, capsys):
    world.reg.write_text(REGISTRY + "models:\n  m1: {base: m2}\n  m2: {base: m1}\n")
    user_error(capsys, world.argv(model="m1"), "model 'm", "field 'base'", "cycle")


def test_model_package_not_installed(world, capsys):
    world.reg.write_text(REGISTRY + "models:\n  pkg: {package: no_such_package_xyz}\n")
    user_error(capsys, world.argv(model="pkg"), "model 'pkg'", "no_such_package_xyz", "pip install no-such-package-xyz")


def test_model_name_too_long(world, capsys):
    user_error(capsys, world.argv(model="m" * 300), "unknown model")


def test_hub_model_unavailable_offline(world, capsys):
    user_error(
        capsys,
        world.argv("--results-dir", world.tmp / "results", model="acme/not-on-disk", dry_run=False),
        "acme/not-on-disk",
    )


def test_bad_num_threads_env(world, capsys, monkeypatch):
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "abc")
    user_error(
        capsys, world.argv("--results-dir", world.tmp / "results", dry_run=False), "SHIFTBENCH_NUM_THREADS", "abc"
    )


# --------------------------------------------------------------------------------------------
# flags


def test_suite_and_pair_together_are_refused(world, capsys):
    user_error(capsys, world.argv("--suite", "mine"), "--suite", "--pair", "not allowed")


def test_suite_and_pair_together_are_refused_in_the_api():
    with pytest.raises(ShiftbenchError, match="either --suite or --pair, not both"):
        make_plan(suite="smoke", pairs=["fpb_to_tfns"], dry_run=True)


def test_suite_alone_works(world, capsys):
    assert main(world.argv("--suite", "mine", pair=None)) == 0
    assert "src_to_tgt" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["run", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["frobnicate"], ["invalid choice", "'frobnicate'"]),
        ([], ["required"]),
        (["leaderboard", "--format", "xlsx"], ["--format", "'xlsx'"]),
    ],
)
def test_bad_command_line(capsys, argv, needles):
    user_error(capsys, argv, *needles)


def test_leaderboard_results_dir_missing(tmp_path, capsys):
    user_error(capsys, ["leaderboard", "--results-dir", tmp_path / "none"], "--results-dir", tmp_path / "none")
