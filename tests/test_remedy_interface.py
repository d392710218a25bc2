"""Remedies behind one interface (shiftbench/remedies/base.py): the registry by name, a remedy
defined here (in the test, touching no other file) run end to end, and the import rules that
keep the training loop and the planner free of remedy names and of torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import shiftbench
from shiftbench.api import make_plan
from shiftbench.core.errors import ShiftbenchError
from shiftbench.registry.protocol import REMEDY_FIELDS, Protocol, load_protocol, remedy_names
from shiftbench.remedies import Remedy, get_remedy, register_remedy, remedy_for
from shiftbench.remedies.base import REMEDIES
from shiftbench.remedies.distill import teacher_remedies
from shiftbench.training.hooks import TrainHooks

PACKAGE = Path(shiftbench.__file__).parent
BUILTIN = ("adversarial", "augment", "distill", "icl", "lora", "none")


# --------------------------------------------------------------------------- a remedy defined here


class CountingHooks(TrainHooks):
    """Triples the loss, and counts what the loop calls."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def wrap_model(self, model):
        self.counts["wrap_model"] += 1
        return model

    def loss(self, logits, labels, idx):
        self.counts["loss"] += 1
        return 3 * super().loss(logits, labels, idx)

    def after_backward(self, model, batch, labels, runtime):
        self.counts["after_backward"] += 1
        assert any(p.grad is not None for p in model.parameters())  # after loss.backward()

    def export_state(self, state, build):
        self.counts["export_state"] += 1
        return None


@register_remedy("toy-counting")
class ToyCounting(Remedy):
    counts: dict[str, int] = {}

    def train_hooks(self, ctx):
        ToyCounting.counts = dict.fromkeys(("wrap_model", "loss", "after_backward", "export_state"), 0)
        return CountingHooks(ToyCounting.counts)


# --------------------------------------------------------------------------- registry


def test_builtin_remedies_are_registered_by_name():
    assert set(BUILTIN) <= set(REMEDIES.names())
    for name in BUILTIN:
        cls = get_remedy(name)
        assert cls.name == name and issubclass(cls, Remedy)
        assert cls.fields() == REMEDY_FIELDS[name]  # read from the Protocol's field metadata
        assert name in remedy_names()
    assert get_remedy("lora").fields() == ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")
    assert get_remedy("none").fields() == ()
    # Every remedy field of the Protocol is declared with the remedy it configures, and only once.
    declared = [f.name for f in dataclasses.fields(Protocol) if "remedy" in f.metadata]
    assert sorted(declared) == sorted(f for fields in REMEDY_FIELDS.values() for f in fields)
    assert isinstance(remedy_for(load_protocol("lora")), get_remedy("lora"))
    assert not get_remedy("icl").fine_tunes and all(get_remedy(n).fine_tunes for n in BUILTIN if n != "icl")
    assert set(teacher_remedies()) >= {"none", "augment", "adversarial", "lora"}
    assert not {"distill", "icl"} & set(teacher_remedies())


def test_unknown_remedy_is_one_line_with_did_you_mean():
    with pytest.raises(ShiftbenchError) as exc:
        get_remedy("lorra")
    assert str(exc.value) == "unknown remedy 'lorra' (did you mean 'lora'?)"
    with pytest.raises(ShiftbenchError) as exc:
        dataclasses.replace(load_protocol("standard"), remedy="adversarail")
    assert str(exc.value) == "field 'remedy': unknown value 'adversarail' (did you mean 'adversarial'?)"


def test_a_name_is_registered_once():
    with pytest.raises(ShiftbenchError, match="duplicate remedy 'lora'"):
        register_remedy("lora")(type("Again", (Remedy,), {}))


def test_remedy_checks_its_task_kinds():
    remedy_for(load_protocol("lora")).check_task("p", "token-classification")  # lora: both kinds
    with pytest.raises(ShiftbenchError, match="pair 'p': the augment remedy supports text-classification pairs only"):
        remedy_for(load_protocol("augment")).check_task("p", "token-classification")


# --------------------------------------------------------------------------- the toy remedy, end to end


def test_a_remedy_defined_in_a_test_runs_through_plan_runner_and_fine_tune(tiny_env, tmp_path):
    proto = tmp_path / "toy.yaml"
    proto.write_text(f"base: {tiny_env['protocol']}\nremedy: toy-counting\n")
    protocol = load_protocol(str(proto))
    assert protocol.canonical()["remedy"] == "toy-counting"  # hashed: another protocol than its base
    assert protocol.hash != load_protocol(tiny_env["protocol"]).hash

    env = {**tiny_env, "protocol": str(proto)}
    assert "fine-tune tiny on news" in make_plan(pairs=["news_to_forum"], seeds=[0], dry_run=True, **env).describe()
    (result,) = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **env).new_results
    assert result.protocol == "toy" and result.protocol_hash == protocol.hash
    steps = sum(h["steps"] for h in result.history)
    counts = ToyCounting.counts
    assert counts["loss"] == counts["after_backward"] == steps > 0
    assert counts["wrap_model"] == len({h["learning_rate"] for h in result.history})  # once per learning rate
    assert counts["export_state"] == 1

    # The tripled loss is what the loop records (the plain run under the base protocol: a third).
    (plain,) = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env).new_results
    assert result.history[0]["train_loss"] == pytest.approx(3 * plain.history[0]["train_loss"], rel=1e-5)


# --------------------------------------------------------------------------- import rules
