"""The lora remedy: peft adapters on a frozen checkpoint, kept as a merged plain classifier."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys

import pyarrow.parquet as pq
import pytest
import torch

import shiftbench
from shiftbench.cli import main
from shiftbench.core import faults
from shiftbench.core.errors import ShiftbenchError
from shiftbench.data.datasets import load_domain
from shiftbench.data.encode import Encoder
from shiftbench.execution.cache import finetune_dir
from shiftbench.modeling.device import make_runtime
from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import load_protocol
from shiftbench.remedies import lora, remedy_for
from shiftbench.remedies.base import TrainContext
from shiftbench.results.store import RUNS_DIR, read_runs, read_trainable_params
from shiftbench.tasks import get_task
from shiftbench.training.hooks import count_trainable
from shiftbench.training.train import fine_tune, seed_everything

from .conftest import Killed, kill_at, user_error

LABELS = ("negative", "neutral", "positive")


def _expected_trainable(config, r: int, n_targets: int, n_labels: int) -> int:
    """Per adapted (h x h) projection A (r x h) + B (h x r); plus the head's weight and bias."""
    h = config.hidden_size
    return config.num_hidden_layers * n_targets * r * (h + h) + h * n_labels + n_labels


@pytest.fixture()
def tiny(tiny_registry, tiny_data_dir, tiny_protocol, monkeypatch):
    """The tiny world as objects: model, tokenizer, encoded news splits, a lora protocol."""
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")
    catalog = load_catalog([tiny_registry], include_env=False)
    model = resolve_model("tiny", catalog)
    tok = load_tokenizer(model)
    source = load_domain(catalog.datasets.get("news"), tiny_data_dir, ("train", "validation", "test"))
    protocol = dataclasses.replace(load_protocol(str(tiny_protocol)), remedy="lora", lora_dropout=0.0)
    enc = Encoder(tok, LABELS, protocol.max_length, None)

    def make_model():
        return load_classifier(model, LABELS, tok.pad_token_id)

    return {
        "make_model": make_model,
        "train": enc(source, "train"),
        "val": enc(source, "validation"),
        "protocol": protocol,
        "pad_id": tok.pad_token_id,
        "runtime": make_runtime("cpu", "fp32"),
    }


def _fine_tune(tiny, **kw):
    t = tiny
    protocol = kw.pop("protocol", t["protocol"])
    hooks = remedy_for(protocol).train_hooks(TrainContext(t["train"], LABELS, t["runtime"]))
    return fine_tune(t["make_model"], t["train"], t["val"], protocol, 0, t["pad_id"], t["runtime"], hooks=hooks, **kw)


def test_lora_protocol_is_built_in_and_hashed_apart():
    p = load_protocol("lora")
    assert p.remedy == "lora" and p.lora_r == 8 and p.lora_targets is None
    assert min(p.learning_rates) >= 10 * min(load_protocol("standard").learning_rates)
    assert p.hash != load_protocol("standard").hash
    assert p.hash != dataclasses.replace(p, lora_r=4).hash != dataclasses.replace(p, lora_targets=("query",)).hash


def test_cli_lora_run_is_its_own_protocol_and_records_trainable_params(tiny_env, capsys):
    argv = [
        "run",
        "--pair",
        "news_to_forum",
        "--model",
        "tiny",
        "--seeds",
        "0",
        "--registry",
        tiny_env["registries"][0],
        "--data-dir",
        tiny_env["data_dir"],
        "--results-dir",
        tiny_env["results_dir"],
        "--cache-dir",
        tiny_env["cache_dir"],
        "--device",
        "cpu",
    ]
    assert main([str(a) for a in argv + ["--protocol", "lora"]]) == 0
    assert main([str(a) for a in argv + ["--protocol", "standard"]]) == 0
    assert "1,075 trainable parameters" in capsys.readouterr().err
    rows = read_runs(tiny_env["results_dir"]).table.to_pandas().drop_duplicates("run_id").set_index("protocol")
    assert rows.loc["lora", "protocol_hash"] == load_protocol("lora").hash != rows.loc["standard", "protocol_hash"]
    assert rows.loc["lora", "finetune_id"] != rows.loc["standard", "finetune_id"]
    assert rows.loc["lora", "selected_lr"] in load_protocol("lora").learning_rates

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(resolve_model("tiny", load_catalog(tiny_env["registries"])).path))
    expected = _expected_trainable(config, r=8, n_targets=2, n_labels=3)  # query + value
    counts = {
        pq.read_table(path, columns=["protocol"])["protocol"][0].as_py(): read_trainable_params(path)
        for path in (tiny_env["results_dir"] / RUNS_DIR).glob("*.parquet")
    }
    assert counts["lora"] == expected == 1075
    assert counts["standard"] > 7 * expected  # a full fine-tune trains every parameter
    # The cache holds a plain classifier (no peft keys) and the count, and a re-run reuses it.
    meta = json.loads(
        (finetune_dir(tiny_env["cache_dir"], rows.loc["lora", "finetune_id"]) / "finetune.json").read_text()
    )
    assert meta["trainable_params"] == expected


def test_only_targeted_layers_and_head_change(tiny):
    ft = _fine_tune(tiny)
    seed_everything(0)
    base = tiny["make_model"]().state_dict()
    assert ft.state.keys() == base.keys()  # merged: the keys of a plain classifier
    changed = {k for k in base if not torch.equal(base[k], ft.state[k])}
    layers = range(2)
    assert changed == {
        f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in layers for m in ("query", "value")
    } | {"classifier.weight", "classifier.bias"}
    assert ft.trainable_params == 1075


def test_explicit_targets_and_rank_change_the_count(tiny):
    protocol = dataclasses.replace(tiny["protocol"], lora_r=4, lora_targets=("query", "key", "value"))
    seed_everything(0)
    model = lora.wrap(tiny["make_model"](), protocol, "SEQ_CLS")
    assert count_trainable(model) == _expected_trainable(model.config, r=4, n_targets=3, n_labels=3)
    bad = dataclasses.replace(tiny["protocol"], lora_targets=("no_such_module",))
    with pytest.raises(ShiftbenchError, match="lora_targets"):
        lora.wrap(tiny["make_model"](), bad, "SEQ_CLS")


def test_merged_state_loads_into_a_plain_classifier_with_the_same_predictions(tiny):
    seed_everything(0)
    peft_model = lora.wrap(tiny["make_model"](), tiny["protocol"], get_task(tiny["train"].task).peft_task_type)
    assert get_task(tiny["train"].task).peft_task_type == "SEQ_CLS"
    with torch.no_grad():  # a trained-looking adapter: B != 0, and a head unlike the initial one
        for _name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    peft_model.eval()
    ids = torch.tensor([list(x[:10]) + [tiny["pad_id"]] * (10 - len(x[:10])) for x in tiny["train"].input_ids[:8]])
    mask = (ids != tiny["pad_id"]).long()
    with torch.no_grad():
        expected = peft_model(input_ids=ids, attention_mask=mask).logits
    state = lora.merged_state(copy.deepcopy(peft_model), peft_model.state_dict())
    plain = tiny["make_model"]()
    plain.load_state_dict(state)  # strict: exactly the plain keys
    plain.eval()
    with torch.no_grad():
        got = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kill_at_hit", [1, 3])  # after lr #1 epoch 1 (same lr resumes), after lr #2 epoch 1
def test_interrupted_lora_fine_tune_resumes_to_the_same_result(tiny, tmp_path, monkeypatch, kill_at_hit):
    protocol = dataclasses.replace(tiny["protocol"], lora_dropout=0.1)  # dropout: the RNG state must resume too
    reference = _fine_tune(tiny, protocol=protocol)
    ckpt = tmp_path / "ckpt"
    kill_at(monkeypatch, "epoch_end", kill_at_hit)
    with pytest.raises(Killed):
        _fine_tune(tiny, protocol=protocol, checkpoints=ckpt)
    assert any(ckpt.glob("state-*"))
    monkeypatch.setattr(faults, "fault_point", lambda point: None)
    messages = []
    resumed = _fine_tune(tiny, protocol=protocol, checkpoints=ckpt, log=messages.append)
    assert any("resuming after" in m for m in messages)
    assert (resumed.selected_lr, resumed.selected_epoch, resumed.trainable_params) == (
        reference.selected_lr,
        reference.selected_epoch,
        reference.trainable_params,
    )
    strip = [{k: v for k, v in dataclasses.asdict(h).items() if k != "seconds"} for h in reference.history]
    assert [{k: v for k, v in dataclasses.asdict(h).items() if k != "seconds"} for h in resumed.history] == strip
    assert resumed.state.keys() == reference.state.keys()
    for k in reference.state:
        assert torch.equal(resumed.state[k], reference.state[k]), k


def test_missing_peft_is_one_clear_line(tiny_env, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(ShiftbenchError, match=r"needs peft: pip install shiftbench\[lora\]"):
        shiftbench.run(pairs=["news_to_forum"], seeds=[0], **{**tiny_env, "protocol": "lora"})
    user_error(
        capsys,
        [
            "run",
            "--pair",
            "news_to_forum",
            "--model",
            "tiny",
            "--protocol",
            "lora",
            "--registry",
            tiny_env["registries"][0],
            "--data-dir",
            tiny_env["data_dir"],
            "--results-dir",
            tiny_env["results_dir"],
            "--cache-dir",
            tiny_env["cache_dir"],
        ],
        lora.MISSING_PEFT,
    )
    # Plain protocols never import peft.
    assert shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env).new_results
