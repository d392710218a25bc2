"""Protocol files: validation, inheritance, the canonical hash, and a fuzz of load_protocol.

Bad protocols are probed through ``run --dry-run`` on the tiny world: the protocol is resolved
before any data is loaded, so each case costs milliseconds.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftbench.cli import main
from shiftbench.core.errors import ShiftbenchError
from shiftbench.registry.protocol import REMEDY_FIELDS, Protocol, builtin_protocol_dir, builtin_protocols, load_protocol

from .conftest import user_error, write

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture()
def run_with(tiny_registry, tiny_data_dir):
    def argv(protocol) -> list:
        return [
            "run",
            "--dry-run",
            "--registry",
            tiny_registry,
            "--data-dir",
            tiny_data_dir,
            "--pair",
            "news_to_forum",
            "--model",
            "tiny",
            "--protocol",
            protocol,
        ]

    return argv


def test_builtins_load():
    assert builtin_protocols() == [
        "adversarial",
        "adversarial-v2",
        "augment",
        "augment-v2",
        "decoder-quick",
        "distill",
        "distill-v2",
        "icl",
        "icl-calibrated",
        "lora",
        "lora-v2",
        "quick",
        "standard",
        "standard-v2",
    ]
    std, quick = load_protocol("standard"), load_protocol("quick")
    assert std.learning_rates == (2e-5, 5e-5, 1e-4) and std.epochs == 3 and std.batch_size == 32
    assert (quick.name, quick.base, quick.epochs, quick.learning_rates, quick.max_length) == (
        "quick",
        "standard",
        1,
        (1e-4,),
        64,
    )
    assert quick.batch_size == std.batch_size and quick.optimizer == "adamw"


def test_v2_remedies_stand_on_standard_v2():
    """Each remedy's v2 trains on standard-v2's footing (epochs, early stopping, recipe); lora keeps
    its own larger rates, searched upwards too; distill's teacher is a standard-v2 fine-tune."""
    v2 = load_protocol("standard-v2")
    assert v2.learning_rates == tuple(sorted(v2.learning_rates)) and v2.patience and v2.grid_patience
    shared = (
        "epochs",
        "patience",
        "grid_patience",
        "batch_size",
        "max_length",
        "warmup_ratio",
        "schedule",
        "weight_decay",
    )
    for name, remedy in (
        ("augment-v2", "augment"),
        ("adversarial-v2", "adversarial"),
        ("distill-v2", "distill"),
        ("lora-v2", "lora"),
    ):
        p, old = load_protocol(name), load_protocol(remedy)
        assert p.base == "standard-v2" and p.remedy == remedy
        assert all(getattr(p, f) == getattr(v2, f) for f in shared)
        assert all(getattr(p, f) == getattr(old, f) for f in REMEDY_FIELDS[remedy] if f != "distill_teacher_protocol")
        assert p.learning_rates == (v2.learning_rates if remedy != "lora" else tuple(sorted(p.learning_rates)))
    assert load_protocol("lora-v2").lr_start == max(load_protocol("lora").learning_rates)  # starts at lora's edge
    assert load_protocol("distill-v2").distill_teacher_protocol == "standard-v2"


def test_dry_run_with_a_user_protocol_file(run_with, tiny_protocol, capsys):
    assert main([str(a) for a in run_with(tiny_protocol)]) == 0
    out, _ = capsys.readouterr()
    assert f"protocol tiny ({load_protocol(str(tiny_protocol)).hash})" in out


@pytest.mark.parametrize(
    "body, needles",
    [
        (
            "base: standard\nlearning_rate: [1.0e-4]\n",
            ["unknown field 'learning_rate'", "did you mean 'learning_rates'"],
        ),
        ("base: standard\nlearning_rates: [-1.0e-4]\n", ["field 'learning_rates'", "-0.0001"]),
        ("base: standard\nlearning_rates: []\n", ["field 'learning_rates'", "()"]),
        ("base: standard\nlearning_rates: 1.0e-4\n", ["field 'learning_rates'", "expected a list"]),
        ("base: standard\nlearning_rates: [fast]\n", ["field 'learning_rates'", "'fast'"]),
        ("base: standard\nlearning_rates: [" + "9" * 400 + "]\n", ["field 'learning_rates'", "too large"]),
        ("base: standard\nbatch_size: 0\n", ["field 'batch_size'", "must be >= 1", "got 0"]),
        ("base: standard\nbatch_size: 8.5\n", ["field 'batch_size'", "expected an integer, got 8.5"]),
        ("base: standard\nepochs: -2\n", ["field 'epochs'", "-2"]),
        ("base: standard\neval_batch_size: 0\n", ["field 'eval_batch_size'", "0"]),
        ("base: standard\nmax_length: 4\n", ["field 'max_length'", "4"]),
        ("base: standard\nweight_decay: 1.5\n", ["field 'weight_decay'", "1.5"]),
        ("base: standard\nwarmup_ratio: -0.1\n", ["field 'warmup_ratio'", "-0.1"]),
        ("base: standard\nmax_grad_norm: 0\n", ["field 'max_grad_norm'", "0"]),
        ("base: standard\nmax_steps: 0\n", ["field 'max_steps'", "0"]),
        ("base: standard\noptimizer: adamww\n", ["field 'optimizer'", "'adamww'", "did you mean 'adamw'"]),
        ("base: standard\nschedule: cosine\n", ["field 'schedule'", "'cosine'"]),
        ("base: standard\nprecision: fp16\n", ["field 'precision'", "'fp16'"]),
        ("base: standard\nselection_metric: macro-f1\n", ["field 'selection_metric'", "did you mean 'macro_f1'"]),
        ("learning_rates: [1.0e-4]\nepochs: 1\nbatch_size: 8\n", ["missing required field 'max_length'"]),
        ("base: standrd\n", ["field 'base'", "unknown protocol 'standrd'", "did you mean 'standard'"]),
        ("base: [standard]\n", ["field 'base'", "['standard']"]),
        ("base: missing.yaml\n", ["field 'base'", "protocol file not found", "missing.yaml"]),
        ("base: standard\nname: [x]\n", ["field 'name'", "['x']"]),
        ("- 1\n- 2\n", ["must be a mapping of fields", "[1, 2]"]),
        ("base: standard\nepochs: 1\nepochs: 2\n", [":3:", "duplicate key 'epochs'"]),
        ("base: standard\nepochs: [1\n", ["invalid YAML in protocol file"]),
    ],
)
def test_bad_protocol_file(run_with, tmp_path, capsys, body, needles):
    f = write(tmp_path / "bad.yaml", body)
    line = user_error(capsys, run_with(f), *needles)
    assert str(f) in line  # the file that is wrong is named


def test_error_in_a_base_file_names_that_file(run_with, tmp_path, capsys):
    parent = write(tmp_path / "parent.yaml", "base: standard\noptimizer: sgd\n")
    child = write(tmp_path / "sub" / "child.yaml", "base: ../parent.yaml\nepochs: 1\n")
    # The record is validated after merging, so the file run with is what is named; a base that
    # does not exist names the file that refers to it.
    user_error(capsys, run_with(child), child, "field 'optimizer'", "'sgd'")
    write(child, "base: ../nothere.yaml\n")
    user_error(capsys, run_with(child), child, "field 'base'", "protocol file not found", "nothere.yaml")
    write(parent, "base: standrd\n")
    write(child, "base: ../parent.yaml\n")
    line = user_error(capsys, run_with(child), "parent.yaml: field 'base'", "unknown protocol 'standrd'")
    assert "child.yaml" not in line


def test_base_cycle(run_with, tmp_path, capsys):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    user_error(capsys, run_with(tmp_path / "a.yaml"), "field 'base'", "cycle", "a.yaml", "b.yaml")
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    user_error(capsys, run_with(tmp_path / "self.yaml"), "field 'base'", "cycle", "self.yaml")


@pytest.mark.parametrize(
    "name, needles",
    [
        ("standrad", ["unknown protocol 'standrad'", "did you mean 'standard'"]),
        ("qiuck", ["unknown protocol 'qiuck'", "did you mean 'quick'"]),
        ("x" * 300, ["unknown protocol"]),  # too long for a file name: used to be an OSError
        ("nope.yaml", ["protocol file not found", "nope.yaml"]),
    ],
)
def test_unknown_protocol_name(run_with, capsys, name, needles):
    user_error(capsys, run_with(name), *needles)


def test_protocol_is_a_directory(run_with, tmp_path, capsys):
    user_error(capsys, run_with(tmp_path), "is a directory", tmp_path)


def test_base_standard_inherits_and_changes_the_hash(tmp_path):
    std = load_protocol("standard")
    f = write(tmp_path / "mine.yaml", "base: standard\nlearning_rates: [3.0e-5]\n")
    mine = load_protocol(str(f))
    assert mine.name == "mine" and mine.base == "standard"
    assert mine.learning_rates == (3e-5,)
    assert (mine.epochs, mine.batch_size, mine.max_length, mine.warmup_ratio) == (
        std.epochs,
        std.batch_size,
        std.max_length,
        std.warmup_ratio,
    )
    assert mine.hash != std.hash
    # Inheriting everything computes the same thing: same hash, whatever the name.
    same = load_protocol(str(write(tmp_path / "same.yaml", "base: standard\nname: other\n")))
    assert same.name == "other" and same.hash == std.hash


def test_base_relative_file_and_chain(tmp_path):
    write(tmp_path / "p1.yaml", "base: quick\nbatch_size: 4\n")
    f = write(tmp_path / "deep" / "p2.yaml", "base: ../p1.yaml\nmax_length: 32\n")
    p = load_protocol(str(f))
    assert (p.epochs, p.learning_rates, p.batch_size, p.max_length) == (1, (1e-4,), 4, 32)


def test_hash_stable_across_loads_and_independent_of_description(tmp_path):
    body = yaml.safe_load((builtin_protocol_dir() / "standard.yaml").read_text())
    a = write(tmp_path / "a.yaml", yaml.safe_dump({**body, "description": "one thing"}))
    b = write(tmp_path / "b.yaml", yaml.safe_dump({**body, "description": "something else entirely"}))
    ha = load_protocol(str(a)).hash
    assert ha == load_protocol(str(a)).hash == load_protocol(str(b)).hash == load_protocol("standard").hash
    assert re.fullmatch(r"[0-9a-f]{16}", ha)
    # Number spelling does not matter; the value does.
    c = write(tmp_path / "c.yaml", yaml.safe_dump({**body, "learning_rates": ["2e-5", 5.0e-5, 0.0001]}))
    assert load_protocol(str(c)).hash == ha
    d = write(tmp_path / "d.yaml", yaml.safe_dump({**body, "max_grad_norm": 2.0}))
    assert load_protocol(str(d)).hash != ha


def test_precision_override_changes_hash():
    std = load_protocol("standard")
    bf16 = std.with_overrides(precision="bf16")
    assert bf16.hash != std.hash and std.with_overrides() is std
    with pytest.raises(ShiftbenchError, match="field 'precision'"):
        std.with_overrides(precision="int8")


def test_protocol_record_rejects_bad_values_directly():
    with pytest.raises(ShiftbenchError, match="field 'learning_rates'"):
        Protocol(name="x", learning_rates=(1.0,), epochs=1, batch_size=1, max_length=8)


# --------------------------------------------------------------------------------------------
# Fuzz: load_protocol either succeeds or raises ShiftbenchError, never anything else

FIELDS = [f for f in Protocol.__dataclass_fields__ if f != "name"] + ["name"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-2, 300),
    st.floats(allow_nan=True),
    st.floats(-1, 1),
    st.text(max_size=10),
    st.sampled_from(
        ["standard", "quick", "adamw", "linear", "fp32", "bf16", "macro_f1", "p.yaml", "q.yml", "", "1e-4"]
    ),
)
values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), kids, max_size=3)
    ),
    max_leaves=10,
)
field_values = {
    "learning_rates": st.one_of(
        st.lists(st.one_of(st.floats(), st.floats(0, 1), st.integers(), st.text(max_size=6)), max_size=4), values
    ),
    "base": st.one_of(st.sampled_from(["standard", "quick", "other.yaml", "self.yaml", "standrd", "../x.yml"]), values),
}
protocol_docs = st.one_of(
    st.fixed_dictionaries({}, optional={f: field_values.get(f, values) for f in FIELDS}),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=5),
    values,
)
OTHER = {"base": "self.yaml", "epochs": 2}  # other.yaml exists beside; self.yaml refers to itself
YAML_TOKENS = [
    "base: ",
    "learning_rates: ",
    "epochs: ",
    "batch_size: ",
    "max_length: ",
    "standard",
    "quick",
    "other.yaml",
    "\n",
    "  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ", ",
    "1",
    "-1",
    "0",
    "1.0e-4",
    "2e-5",
    "9" * 30,
    "&a ",
    "*a",
    "<<: ",
    "!!float ",
    "!!timestamp ",
    "2020-02-30",
    "null",
    "'",
    '"',
    "#",
    "\t",
    "\x00",
    "---\n",
    "~",
    ".nan",
]


def _load_protocol_from(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.yaml"
        f.write_bytes(payload)
        (Path(d) / "other.yaml").write_text(yaml.safe_dump(OTHER))
        (Path(d) / "self.yaml").write_text("base: self.yaml\n")
        try:
            p = load_protocol(str(f))
        except ShiftbenchError as exc:
            assert "\n" not in str(exc)
        else:
            assert p.hash == load_protocol(str(f)).hash


FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(protocol_docs)
def test_fuzz_load_protocol_documents(doc):
    _load_protocol_from(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


@FUZZ
@given(
    st.one_of(st.lists(st.sampled_from(YAML_TOKENS), max_size=30).map("".join).map(str.encode), st.binary(max_size=64))
)
def test_fuzz_load_protocol_text(payload):
    _load_protocol_from(payload)


# The hashes the committed results (results/runs) were recorded under: a change to the Protocol
# record (a new field, a new default) must not move them, or every stored run is orphaned.
RECORDED_HASHES = {
    "standard": "eff8f18e4c31d47c",
    "augment": "33a1ea06f3a33bdc",
    "adversarial": "f3d57a6ad3756bbf",
    "lora": "5d6bd13c5f03df08",
    "distill": "b2b6890c5560feaf",
    "icl": "1b96f9f962538a5e",
    # standard-v2 and its remedies (issue #16): pinned when the new board started recording under them
    "standard-v2": "48d22da52adef278",
    "augment-v2": "e560cb95b2f1253b",
    "adversarial-v2": "aab7ad5443206351",
    "distill-v2": "74e2d1adae6d20a4",
    "lora-v2": "a5a40a820fa5c820",
}


@pytest.mark.parametrize("name", sorted(RECORDED_HASHES))
def test_hashes_of_recorded_protocols_do_not_move(name):
    assert load_protocol(name).hash == RECORDED_HASHES[name]


def test_a_later_field_is_hashed_only_when_set():
    icl, calibrated = load_protocol("icl"), load_protocol("icl-calibrated")
    assert not icl.icl_calibrate and calibrated.icl_calibrate and calibrated.base == "icl"
    assert "icl_calibrate" not in icl.canonical() and calibrated.canonical()["icl_calibrate"] is True
    assert calibrated.hash != icl.hash
    assert icl.with_overrides(icl_calibrate=True).hash == calibrated.hash
    # outside the icl remedy the field is not hashed at all
    assert load_protocol("standard").with_overrides(icl_calibrate=True).hash == RECORDED_HASHES["standard"]
