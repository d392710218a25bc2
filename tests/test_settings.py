"""Run options are declared once (execution/settings.py): the CLI's `run` flags, the keywords of
shiftbench.run and make_plan, and the resolved settings all come from that declaration."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path

import pytest

import shiftbench
from shiftbench import api
from shiftbench.cli import build_parser
from shiftbench.core.errors import ShiftbenchError
from shiftbench.execution.config import DEFAULT_RESULTS_DIR, default_cache_dir, resolve_settings
from shiftbench.execution.settings import RunRequest, cli_flags, option_names
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import DEFAULT_PROTOCOL


def _run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_cli_flags_api_keywords_and_request_fields_are_one_set():
    fields = {f.name: f for f in dataclasses.fields(RunRequest)}
    params = inspect.signature(shiftbench.run).parameters
    assert list(params) == list(fields)  # same names, same order
    for name, p in params.items():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        assert p.default == fields[name].default, name
        assert p.annotation == fields[name].type, name  # both are strings (postponed annotations)
    run_flags = {a.dest: a.option_strings for a in _run_parser()._actions if a.dest != "help"}
    assert run_flags == {name: [flag] for name, flag in cli_flags().items()}
    for name, flag in cli_flags().items():  # every option is documented in both docstrings
        assert f"{name}: " in shiftbench.run.__doc__ and f"({flag})" in shiftbench.run.__doc__
        assert f"({flag})" in api.make_plan.__doc__
    named = set(inspect.signature(api.make_plan).parameters) - {"options"}
    assert named < set(option_names())


def test_make_plan_is_annotated_with_what_it_returns():
    assert inspect.signature(api.make_plan).return_annotation == "Plan"


def test_from_cli_reads_every_flag():
    args = _run_parser().parse_args(
        [
            "--pair",
            "a",
            "--pair",
            "b",
            "--model",
            "m",
            "--seeds",
            "0,1",
            "--protocol",
            "quick",
            "--precision",
            "bf16",
            "--registry",
            "r.yaml",
            "--data-dir",
            "D",
            "--results-dir",
            "R",
            "--cache-dir",
            "C",
            "--device",
            "cpu",
            "--dry-run",
            "--eval-only",
            "--dedup",
            "--executor",
            "ray",
            "--workers",
            "3",
            "--address",
            "auto",
            "--cpus-per-task",
            "4",
            "--gpus-per-task",
            "0.5",
            "--trust-remote-code",
            "--allow-pickle",
        ]
    )
    assert RunRequest.from_cli(args) == RunRequest(
        pairs=("a", "b"),
        models=("m",),
        seeds="0,1",
        protocol="quick",
        precision="bf16",
        registries=("r.yaml",),
        data_dir="D",
        results_dir="R",
        cache_dir="C",
        device="cpu",
        dry_run=True,
        eval_only=True,
        dedup=True,
        executor="ray",
        workers=3,  # parsed only: resolving refuses it with ray
        ray_address="auto",
        cpus_per_task=4,
        gpus_per_task=0.5,
        trust_remote_code=True,
        allow_pickle=True,
    )
    assert RunRequest.from_cli(_run_parser().parse_args([])) == RunRequest()  # flag defaults are the option defaults
    assert RunRequest.from_cli(_run_parser().parse_args(["--suite", "smoke"])).suite == "smoke"


def test_run_passes_every_keyword_to_the_request(monkeypatch):
    seen = []

    def fake_plan(request):
        seen.append(request)
        raise ShiftbenchError("stop")

    monkeypatch.setattr(api, "plan_request", fake_plan)
    values = {name: f"<{name}>" for name in option_names()}  # each keyword a value of its own
    values.update(pairs=("p",), models=("m",), registries=("r",), seeds=(3,))
    with pytest.raises(ShiftbenchError, match="stop"):
        shiftbench.run(**values)
    with pytest.raises(ShiftbenchError, match="stop"):
        api.make_plan(**values)
    assert seen == [RunRequest(**values)] * 2


def test_unknown_or_malformed_options_are_one_line_errors():
    with pytest.raises(ShiftbenchError, match=r"unknown run option 'result_dir' \(did you mean 'results_dir'\?\)"):
        api.make_plan(pairs=["fpb_to_tfns"], result_dir="x", dry_run=True)
    with pytest.raises(ShiftbenchError, match="pairs: expected a list of names, got the string 'fpb_to_tfns'"):
        api.make_plan(pairs="fpb_to_tfns", dry_run=True)
    with pytest.raises(ShiftbenchError, match="seeds: expected a list of integers, got 3"):
        RunRequest(seeds=3)
    assert RunRequest(pairs=["a"], seeds=[1, 2]) == RunRequest(pairs=("a",), seeds=(1, 2))  # lists become tuples


def test_resolution_order_flags_then_suite_then_environment_then_builtin(monkeypatch, tmp_path):
    catalog = load_catalog(())
    monkeypatch.delenv("SHIFTBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # Built-in defaults: no suite's protocol or seeds apply to explicit pairs.
    s = resolve_settings(catalog, RunRequest(pairs=("fpb_to_tfns",)))
    assert (s.protocol.name, s.seeds, s.models) == (DEFAULT_PROTOCOL, (0,), ("minilm-l6",))
    assert (s.results_dir, s.cache_dir, s.executor) == (DEFAULT_RESULTS_DIR, tmp_path / "xdg" / "shiftbench", "local")
    assert s.cache_dir == default_cache_dir()
    # The environment beats the built-in default ...
    monkeypatch.setenv("SHIFTBENCH_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_settings(catalog, RunRequest(pairs=("fpb_to_tfns",))).cache_dir == tmp_path / "env"
    # ... a suite's defaults beat the built-in ones ...
    s = resolve_settings(catalog, RunRequest(suite="ner"))
    assert (s.suite, s.seeds, s.protocol.name) == ("ner", (0, 1, 2), "standard-v2")
    assert resolve_settings(catalog, RunRequest(suite="smoke")).protocol.name == "quick"
    # ... and explicit options beat both.
    s = resolve_settings(catalog, RunRequest(suite="ner", seeds="5", protocol="quick", cache_dir=tmp_path / "flag"))
    assert (s.seeds, s.protocol.name, s.cache_dir) == ((5,), "quick", tmp_path / "flag")
    assert resolve_settings(catalog, RunRequest(pairs=("fpb_to_tfns",), results_dir="out")).results_dir == Path("out")
