"""The distill remedy: a 1-layer student learns from the 2-layer tiny BERT fine-tuned as teacher."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shiftbench
from shiftbench.api import make_plan
from shiftbench.core.errors import ShiftbenchError
from shiftbench.execution.cache import finetune_dir
from shiftbench.modeling.models import LoadOptions, load_classifier, resolve_model
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import load_protocol
from shiftbench.remedies import remedy_for
from shiftbench.remedies.distill import check_head, distillation_loss, resolve_teacher

from .conftest import FILLER, SPECIAL, WORDS, Killed, kill_at, write

STUDENTS = """
models:
  tiny-l1:
    base: tiny
    num_layers: 1
  other-tok:
    path: {other_dir}
"""


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny BERT like the conftest one, but with a vocabulary in another order."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("other-tok")
    vocab = SPECIAL + sorted({w for ws in WORDS.values() for w in ws} | set(FILLER), reverse=True)
    vocab += list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(str(d))
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=128,
            pad_token_id=0,
        )
    ).save_pretrained(str(d))
    return d


@pytest.fixture()
def env(tiny_env, tmp_path, other_tokenizer_model):
    """tiny_env with the student tiny-l1 and a distill protocol whose teacher is tiny under the tiny protocol."""
    students = write(tmp_path / "students.yaml", STUDENTS.replace("{other_dir}", str(other_tokenizer_model)))
    return {**tiny_env, "registries": [*tiny_env["registries"], students], "models": ["tiny-l1"]}


def distill_protocol(env, path, **fields) -> str:
    fields = {"distill_teacher": "tiny", "distill_teacher_protocol": env["protocol"], **fields}
    text = f"base: {env['protocol']}\nremedy: distill\n" + "".join(f"{k}: {v}\n" for k, v in fields.items())
    return str(write(path, text))


def timeless(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def run(env, capsys, **kw):
    summary = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **{**env, **kw})
    return summary, capsys.readouterr().err


def test_loss_is_hintons_formula_by_hand():
    s = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.4, -1.0]])
    t = torch.tensor([[2.0, 0.0, -1.0], [-0.3, 1.5, 0.1]])
    y = torch.tensor([0, 2])
    T, alpha = 2.0, 0.3

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    sn, tn = s.numpy().astype(np.float64), t.numpy().astype(np.float64)
    ce = -np.mean(np.log(softmax(sn)[[0, 1], y.numpy()]))
    p_t, p_s = softmax(tn / T), softmax(sn / T)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    expected = alpha * ce + (1 - alpha) * T**2 * kl
    assert float(distillation_loss(s, y, t, T, alpha)) == pytest.approx(expected, rel=1e-5)
    # alpha 1: plain cross-entropy, whatever the teacher says.
    assert float(distillation_loss(s, y, t, T, 1.0)) == pytest.approx(float(F.cross_entropy(s, y)), rel=1e-6)
    assert float(distillation_loss(s, y, s, T, 0.0)) == pytest.approx(0.0, abs=1e-6)


def test_builtin_distill_protocol():
    p = load_protocol("distill")
    assert (p.remedy, p.distill_teacher, p.distill_teacher_protocol) == ("distill", "minilm-l6", "standard")
    assert (p.distill_temperature, p.distill_alpha) == (2.0, 0.5)
    assert p.hash != load_protocol("standard").hash
    catalog = load_catalog(include_env=False)
    assert catalog.models.get("minilm-l6-l2").base == "minilm-l6"  # the intended student shares the tokenizer


def test_cached_teacher_is_reused_and_a_missing_one_trained_once(env, tmp_path, capsys):
    proto = distill_protocol(env, tmp_path / "distill.yaml")
    # A: the teacher is already cached by a plain run of it under its protocol.
    a = {**env, "results_dir": tmp_path / "a" / "results", "cache_dir": tmp_path / "a" / "cache"}
    plain, _ = run(a, capsys, models=["tiny"])
    teacher_id = plain.new_results[0].finetune_id
    summary, log = run(a, capsys, protocol=proto)
    (student,) = summary.new_results
    (dep,) = summary.plan.jobs[0].dependencies
    assert dep.role == "teacher" and dep.job.finetune_id == teacher_id  # the teacher's id is the plain run's
    assert f"reusing fine-tuned weights {teacher_id}" in log
    assert "fine-tuning tiny on" not in log and "fine-tuning tiny-l1 on news" in log
    assert student.protocol == "distill" and student.protocol_hash == load_protocol(proto).hash
    assert student.model == "tiny-l1" and student.finetune_id not in (teacher_id, plain.new_results[0].finetune_id)

    # B: nothing cached; the teacher is trained first, cached, and then a plain run reuses it.
    b = {**env, "results_dir": tmp_path / "b" / "results", "cache_dir": tmp_path / "b" / "cache"}
    summary, log = run(b, capsys, protocol=proto)
    assert log.index("fine-tuning tiny on news") < log.index("fine-tuning tiny-l1 on news")
    assert finetune_dir(b["cache_dir"], teacher_id).is_dir()
    plain_b, log = run(b, capsys, models=["tiny"])
    assert f"reusing fine-tuned weights {teacher_id}" in log and "fine-tuning" not in log
    assert plain_b.new_results[0].ood_scores == plain.new_results[0].ood_scores
    # The same teacher, trained here or before: the same student.
    assert summary.new_results[0].ood_scores == student.ood_scores
    assert timeless(summary.new_results[0].history) == timeless(student.history)


def test_alpha_one_trains_like_plain_cross_entropy(env, tmp_path, capsys):
    plain, _ = run(env, capsys)  # tiny-l1 under the tiny protocol
    distilled, _ = run(env, capsys, protocol=distill_protocol(env, tmp_path / "a1.yaml", distill_alpha=1.0))
    p, d = plain.new_results[0], distilled.new_results[0]
    assert d.finetune_id != p.finetune_id
    assert timeless(d.history) == timeless(p.history)
    assert d.ood_scores == p.ood_scores
    # ...while alpha < 1 learns from the teacher: another training loss.
    soft, _ = run(env, capsys, protocol=distill_protocol(env, tmp_path / "a0.yaml", distill_alpha=0.0))
    assert soft.new_results[0].history[0]["train_loss"] != p.history[0]["train_loss"]


def teacher_id(job) -> str:
    (dep,) = job.dependencies
    return dep.job.finetune_id


def test_finetune_id_changes_with_the_teacher(env, tmp_path):
    teacher_proto = write(tmp_path / "teacher.yaml", f"base: {env['protocol']}\n")
    proto = distill_protocol(env, tmp_path / "distill.yaml", distill_teacher_protocol=teacher_proto)
    first = make_plan(pairs=["news_to_forum"], seeds=[0], dry_run=True, **{**env, "protocol": proto}).jobs[0]
    # Same student protocol (its hash names the teacher protocol file, not its content)...
    teacher_proto.write_text(f"base: {env['protocol']}\nlearning_rates: [2.0e-3]\n")
    second = make_plan(pairs=["news_to_forum"], seeds=[0], dry_run=True, **{**env, "protocol": proto}).jobs[0]
    assert first.protocol.hash == second.protocol.hash
    # ...but another teacher fine-tune, so another student fine-tune.
    assert teacher_id(first) != teacher_id(second)
    assert first.finetune_id != second.finetune_id
    # The teacher's id is exactly the one a plain run of the teacher gets.
    plain = make_plan(
        pairs=["news_to_forum"], seeds=[0], dry_run=True, **{**env, "models": ["tiny"], "protocol": str(teacher_proto)}
    )
    assert plain.jobs[0].finetune_id == teacher_id(second)
    other = distill_protocol(env, tmp_path / "other.yaml", distill_teacher="tiny-l1")
    third = make_plan(pairs=["news_to_forum"], seeds=[0], dry_run=True, **{**env, "protocol": other}).jobs[0]
    assert third.finetune_id != first.finetune_id and third.protocol.hash != first.protocol.hash
    assert (
        "teacher: tiny under teacher"
        in make_plan(pairs=["news_to_forum"], seeds=[0], dry_run=True, **{**env, "protocol": proto}).describe()
    )


def test_teacher_with_another_tokenizer_is_refused_before_training(env, tmp_path):
    proto = distill_protocol(env, tmp_path / "d.yaml", distill_teacher="other-tok")
    with pytest.raises(ShiftbenchError, match="'other-tok' and student 'tiny-l1' use different tokenizers"):
        shiftbench.run(pairs=["news_to_forum"], seeds=[0], **{**env, "protocol": proto})
    assert not (env["cache_dir"] / "finetunes").exists()


def test_teacher_over_another_label_space_is_refused(env, tmp_path, tiny_registry):
    proto = distill_protocol(env, tmp_path / "d.yaml")
    job = make_plan(pairs=["news_to_forum"], seeds=[0], dry_run=True, **{**env, "protocol": proto}).jobs[0]
    # Plant a binary (reviews) fine-tune of the teacher where the 3-class news teacher belongs.
    binary = shiftbench.run(pairs=["reviews_to_forum"], seeds=[0], **{**env, "models": ["tiny"]}).new_results[0]
    shutil.copytree(finetune_dir(env["cache_dir"], binary.finetune_id), finetune_dir(env["cache_dir"], teacher_id(job)))
    with pytest.raises(
        ShiftbenchError,
        match=r"does not fit a classifier over the student's 3 labels \['negative', 'neutral', 'positive'\]",
    ):
        shiftbench.run(pairs=["news_to_forum"], seeds=[0], **{**env, "protocol": proto})
    # The check itself, on a state dict.
    catalog = load_catalog(env["registries"], include_env=False)
    teacher = resolve_model("tiny", catalog)
    two = load_classifier(teacher, ("negative", "positive"), 0).state_dict()
    with pytest.raises(ShiftbenchError, match=r"mismatch in classifier\."):
        check_head(teacher.name, "t", two, load_classifier(teacher, ("a", "b", "c"), 0), ("a", "b", "c"))


def test_teacher_protocol_and_task_are_checked(env, tmp_path):
    catalog = load_catalog(env["registries"], include_env=False)
    nested = load_protocol(distill_protocol(env, tmp_path / "inner.yaml"))
    outer = dataclasses.replace(nested, distill_teacher_protocol=str(tmp_path / "inner.yaml"))
    with pytest.raises(ShiftbenchError, match="uses the 'distill' remedy"):
        resolve_teacher(outer, catalog, LoadOptions())
    with pytest.raises(
        ShiftbenchError,
        match="pair 'ner': the distill remedy supports text-classification pairs only, not token-classification",
    ):
        remedy_for(nested).check_task("ner", "token-classification")
    with pytest.raises(ShiftbenchError, match="unknown model 'nope'"):
        make_plan(
            pairs=["news_to_forum"],
            seeds=[0],
            dry_run=True,
            **{**env, "protocol": distill_protocol(env, tmp_path / "nope.yaml", distill_teacher="nope")},
        )


# epoch_end hits: 1-4 are the teacher's (2 lr x 2 epochs), 5-8 the student's.
@pytest.mark.parametrize("kill_at_hit", [3, 6])
def test_interrupted_distill_run_resumes_to_the_same_result(env, tmp_path, capsys, monkeypatch, kill_at_hit):
    from shiftbench.core import faults

    proto = distill_protocol(env, tmp_path / "d.yaml")
    ref = {**env, "results_dir": tmp_path / "ref" / "results", "cache_dir": tmp_path / "ref" / "cache"}
    (reference,) = run(ref, capsys, protocol=proto)[0].new_results
    kill_at(monkeypatch, "epoch_end", kill_at_hit)
    with pytest.raises(Killed):
        run(env, capsys, protocol=proto)
    monkeypatch.setattr(faults, "fault_point", lambda point: None)
    summary, log = run(env, capsys, protocol=proto)
    assert "resuming after" in log
    (resumed,) = summary.new_results
    assert resumed.finetune_id == reference.finetune_id
    assert resumed.ood_scores == reference.ood_scores and resumed.id_scores == reference.id_scores
    assert timeless(resumed.history) == timeless(reference.history)


def test_claims_defer_a_student_whose_teacher_another_process_is_training(env, tmp_path):
    """A job whose teacher is claimed elsewhere would only wait: free jobs come first (the board's
    two lanes sat idle on this), and the deferred one is still taken once the teacher is free."""
    from shiftbench.execution.claims import claimed_jobs

    from .test_workers import held_elsewhere

    proto = distill_protocol(env, tmp_path / "distill.yaml")
    plan = make_plan(pairs=["news_to_forum"], seeds="0,1", dry_run=True, **{**env, "protocol": proto})
    students = plan.pending_jobs
    assert len(students) == 2 and all(len(j.dependencies) == 1 for j in students)
    teacher_0 = students[0].dependencies[0].job.finetune_id
    with held_elsewhere(env["results_dir"], teacher_0) as release:
        jobs = claimed_jobs(plan)
        assert next(jobs).finetune_id == students[1].finetune_id  # seed 1 first: its teacher is free
        release()
        assert next(jobs).finetune_id == students[0].finetune_id  # then seed 0, not skipped
        assert next(jobs, None) is None
