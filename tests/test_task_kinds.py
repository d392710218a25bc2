"""Task kinds behind one interface (shiftbench.tasks): the registry, each kind's metrics against
scikit-learn / seqeval, the registry schema for text pairs, and an NLI-style text-pair benchmark
built in the test and run end to end."""

from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest

import shiftbench
from shiftbench.core.errors import ShiftbenchError
from shiftbench.registry.specs import DatasetSpec, PairSpec
from shiftbench.tasks import (
    TaskKind,
    TextClassification,
    TextPairClassification,
    TokenClassification,
    get_task,
    register_task,
    task_names,
)
from shiftbench.tasks.metrics import expected_calibration_error

from .conftest import WORDS, write

# --------------------------------------------------------------------------- the registry


def test_registry_holds_the_three_kinds():
    assert set(task_names()) >= {"text-classification", "token-classification", "text-pair-classification"}
    assert isinstance(get_task("text-classification"), TextClassification)
    assert isinstance(get_task("token-classification"), TokenClassification)
    assert isinstance(get_task("text-pair-classification"), TextPairClassification)
    for name in task_names():
        kind = get_task(name)
        assert isinstance(kind, TaskKind) and kind.name == name
        assert kind.headline in kind.metrics(("O", "B-PER", "I-PER"))
        assert kind.head_class.startswith("AutoModelFor")


def test_unknown_task_is_one_line_with_did_you_mean():
    with pytest.raises(
        ShiftbenchError, match=r"^unknown task 'token-clasification' \(did you mean 'token-classification'"
    ) as exc:
        get_task("token-clasification")
    assert "\n" not in str(exc.value)
    with pytest.raises(
        ShiftbenchError,
        match=r"unknown task 'ner' \(known: text-classification, text-pair-classification, token-classification",
    ):
        get_task("ner")
    with pytest.raises(ShiftbenchError, match="unknown task"):
        get_task(["not", "a", "name"])  # e.g. a YAML list where a name belongs


def test_a_name_registers_once():
    with pytest.raises(ShiftbenchError, match="duplicate task 'text-classification'"):

        @register_task("text-classification")
        class Again(TextClassification):
            pass

    assert type(get_task("text-classification")) is TextClassification


def test_metric_errors_name_the_kind():
    with pytest.raises(
        ShiftbenchError,
        match=r"metric 'entity_micro_f1' is not defined for text-pair-classification \(did you mean 'macro_f1'\?\)",
    ):
        get_task("text-pair-classification").metric_fn("entity_micro_f1", ("a", "b"))


# --------------------------------------------------------------------------- metrics against sklearn / seqeval


def _random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.dirichlet(np.full(k, 0.7), size=n).astype(np.float32)


@pytest.mark.parametrize("task", ["text-classification", "text-pair-classification"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_example_kinds_match_sklearn(task, seed):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    space = ("contradiction", "entailment", "neutral", "other")
    n = 200
    probs = _random_probs(rng, n, len(space))
    preds = probs.argmax(axis=1)
    labels = rng.integers(0, 3, size=n)  # label 3 never true: it still counts where it is predicted
    kind = get_task(task)
    stats = kind.unit_stats(labels, preds, probs, None, space)
    assert stats.shape == (n, kind.width(space))
    sums = stats.sum(axis=0)
    score = {m: float(kind.metric_fn(m, space)(sums)) for m in kind.metrics(space)}
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="macro", zero_division=0)
    assert score["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert (score["macro_precision"], score["macro_recall"], score["macro_f1"]) == pytest.approx((p, r, f))
    assert score["ece"] == pytest.approx(expected_calibration_error(labels, probs), abs=1e-6)
    onehot = np.eye(len(space))[labels]
    assert score["brier"] == pytest.approx(float(((probs - onehot) ** 2).sum(axis=1).mean()), rel=1e-6)
    recorded = kind.scores(labels, preds, None, space)  # what the runner records
    assert {m: recorded[m] for m in ("accuracy", "macro_f1")} == pytest.approx(
        {m: score[m] for m in ("accuracy", "macro_f1")}
    )
    # A metric reads only its columns: zeroing the others changes nothing.
    for metric in kind.metrics(space):
        kept = np.zeros_like(sums)
        cols = kind.columns(metric, space)
        kept[cols] = sums[cols]
        assert float(kind.metric_fn(metric, space)(kept)) == pytest.approx(score[metric])


def _random_tags(rng: random.Random, n_words: int, types: tuple[str, ...]) -> list[str]:
    tags = []
    for _ in range(n_words):
        roll = rng.random()
        t = rng.choice(types)
        tags.append("O" if roll < 0.5 else (f"B-{t}" if roll < 0.8 else f"I-{t}"))  # stray I- tags too
    return tags


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_kind_matches_seqeval(seed):
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    kind = get_task("token-classification")
    types = ("LOC", "ORG", "PER")
    space = kind.label_space([("O", "B-PER", "I-LOC"), ("B-ORG",)])
    assert space == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    lengths = np.array([rng.randint(1, 12) for _ in range(60)])
    gold = [_random_tags(rng, k, types) for k in lengths]
    pred = [[t if rng.random() < 0.6 else rng.choice(space) for t in sent] for sent in gold]
    index = {t: i for i, t in enumerate(space)}
    labels = np.array([index[t] for s in gold for t in s])
    preds = np.array([index[t] for s in pred for t in s])
    probs = _random_probs(nrng, len(labels), len(space))
    rows, top = np.arange(len(preds)), probs.argmax(axis=1)  # make each row's largest probability the prediction's
    probs[rows, top], probs[rows, preds] = probs[rows, preds], probs[rows, top].copy()
    assert (probs.argmax(axis=1) == preds).all()
    stats = kind.unit_stats(labels, preds, probs, lengths, space)
    assert stats.shape == (len(lengths), kind.width(space))  # one unit per sentence
    sums = stats.sum(axis=0)
    score = {m: float(kind.metric_fn(m, space)(sums)) for m in kind.metrics(space)}
    assert score["entity_micro_f1"] == pytest.approx(f1_score(gold, pred))
    assert score["entity_micro_precision"] == pytest.approx(precision_score(gold, pred))
    assert score["entity_micro_recall"] == pytest.approx(recall_score(gold, pred))
    assert score["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    for t in types:
        assert score[f"f1_{t}"] == pytest.approx(report[t]["f1-score"])
    assert score["macro_f1"] == pytest.approx(np.mean([report[t]["f1-score"] for t in types]))
    assert score["ece"] == pytest.approx(expected_calibration_error(labels, probs), abs=1e-6)
    recorded = kind.scores(labels, preds, lengths, space)
    assert recorded["entity_micro_f1"] == pytest.approx(score["entity_micro_f1"])
    assert kind.n_units(labels, lengths) == len(lengths)


# --------------------------------------------------------------------------- the registry schema


def test_text_pair_column_is_validated_with_one_line_errors():
    base = {
        "name": "nli",
        "hub_id": "acme/nli",
        "text_column": "premise",
        "label_column": "label",
        "splits": {"test": "test"},
    }
    spec = DatasetSpec(**base, task="text-pair-classification", text_pair_column="hypothesis")
    assert spec.text_pair_column == "hypothesis"
    with pytest.raises(ShiftbenchError, match=r"field 'text_pair_column': required for text-pair-classification"):
        DatasetSpec(**base, task="text-pair-classification")
    with pytest.raises(
        ShiftbenchError,
        match=r"field 'text_pair_column': 'hypothesis' is only read by text-pair-classification datasets, not text-classification",
    ):
        DatasetSpec(**base, text_pair_column="hypothesis")
    with pytest.raises(ShiftbenchError, match=r"field 'text_pair_column': 'premise' is also the text_column"):
        DatasetSpec(**base, task="text-pair-classification", text_pair_column="premise")
    with pytest.raises(
        ShiftbenchError,
        match=r"field 'task': unknown task 'text-pair-clasification' \(did you mean 'text-pair-classification'",
    ):
        DatasetSpec(**base, task="text-pair-clasification", text_pair_column="hypothesis")
    with pytest.raises(ShiftbenchError, match=r"field 'task': unknown task 'nli' \(known: "):
        PairSpec(name="p", task="nli", source="a", targets=("b",))


def test_registry_file_errors_name_file_entry_and_field(tmp_path):
    from shiftbench.registry.catalog import load_catalog

    reg = write(
        tmp_path / "nli.yaml",
        "datasets:\n  nli:\n    hub_id: acme/nli\n    task: text-pair-classification\n"
        "    text_column: premise\n    label_column: label\n    splits: {test: test}\n",
    )
    with pytest.raises(ShiftbenchError) as exc:
        load_catalog([reg], include_env=False)
    message = str(exc.value)
    assert str(reg) in message and "dataset 'nli'" in message and "field 'text_pair_column': required" in message
    assert "\n" not in message
    reg.write_text(
        reg.read_text().replace("text_column: premise", "text_column: premise\n    text_pair_colum: hypothesis")
    )
    with pytest.raises(ShiftbenchError, match=r"unknown field 'text_pair_colum' \(did you mean 'text_pair_column'"):
        load_catalog([reg], include_env=False)


# --------------------------------------------------------------------------- an NLI-style pair, end to end

NLI_LABELS = ["contradiction", "entailment"]


def _nli_rows(n: int, seed: int, style: str) -> tuple[list[str], list[str], list[str]]:
    """Premise and hypothesis of a few words each: the hypothesis repeats the premise's
    sentiment (entailment) or turns it (contradiction)."""
    rng = random.Random(seed)
    premises, hypotheses, labels = [], [], []
    for i in range(n):
        label = NLI_LABELS[i % 2]
        side = rng.choice(["positive", "negative"])
        other = side if label == "entailment" else ("negative" if side == "positive" else "positive")
        premise = [rng.choice(WORDS[side]), rng.choice(WORDS["neutral"]), rng.choice(WORDS["neutral"])]
        hypothesis = [rng.choice(WORDS["neutral"]), rng.choice(WORDS[other])]
        if style == "tweet":
            premise = [w.upper() if rng.random() < 0.3 else w for w in premise] + ["#stocks"]
        premises.append(" ".join(premise))
        hypotheses.append(" ".join(hypothesis))
        labels.append(label)
    return premises, hypotheses, labels


def _write_nli(data_dir, hub_id: str, split: str, n: int, seed: int, style: str = "news") -> None:
    import datasets

    premises, hypotheses, labels = _nli_rows(n, seed, style)
    feats = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=NLI_LABELS),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"premise": premises, "hypothesis": hypotheses, "label": [NLI_LABELS.index(x) for x in labels]}, features=feats
    )
    path = data_dir / hub_id.replace("/", "__") / "default" / f"{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


NLI_REGISTRY = """
datasets:
  nli_news:
    hub_id: acme/nli_news
    task: text-pair-classification
    text_column: premise
    text_pair_column: hypothesis
    label_column: label
    splits: {train: train}
  nli_tweets:
    hub_id: acme/nli_tweets
    task: text-pair-classification
    text_column: premise
    text_pair_column: hypothesis
    label_column: label
    splits: {test: test}
pairs:
  nli_news_to_tweets:
    task: text-pair-classification
    source: nli_news
    targets: [nli_tweets]
"""


@pytest.fixture()
def nli_env(tiny_env, tiny_registry, tmp_path):
    data_dir = tmp_path / "nli-data"
    _write_nli(data_dir, "acme/nli_news", "train", 80, 11)
    _write_nli(data_dir, "acme/nli_tweets", "test", 24, 12, "tweet")
    reg = write(tmp_path / "nli.yaml", NLI_REGISTRY)
    return {**tiny_env, "registries": [tiny_registry, reg], "data_dir": data_dir}


def test_pair_datasets_load_as_text_pairs(nli_env):
    from shiftbench.data.datasets import load_domain
    from shiftbench.registry.catalog import load_catalog

    catalog = load_catalog(nli_env["registries"], include_env=False)
    dom = load_domain(catalog.datasets.get("nli_tweets"), nli_env["data_dir"], ("test",))
    test = dom.role("test")
    assert len(test) == 24 and all(isinstance(t, tuple) and len(t) == 2 for t in test.texts)
    assert dom.label_names == tuple(NLI_LABELS)
    premises, hypotheses, _ = _nli_rows(24, 12, "tweet")
    assert test.texts[0] == (premises[0], hypotheses[0])
    assert test.plain_texts()[0] == f"{premises[0]} {hypotheses[0]}"
    # A missing second column is a one-line error naming the file and the column.
    spec = DatasetSpec(
        name="x",
        hub_id="acme/nli_tweets",
        task="text-pair-classification",
        text_column="premise",
        text_pair_column="hypothesis_text",
        label_column="label",
        splits={"test": "test"},
    )
    with pytest.raises(
        ShiftbenchError,
        match=r"test\.parquet: text column 'hypothesis_text' not found \(columns: premise, hypothesis, label\)",
    ):
        load_domain(spec, nli_env["data_dir"], ("test",))


def test_pair_encoding_sends_both_texts_to_the_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    enc = get_task("text-pair-classification").encode([("good profit", "bad loss today")], tok, max_length=32)
    assert tok.convert_ids_to_tokens(enc.input_ids[0].tolist()) == [
        "[CLS]",
        "good",
        "profit",
        "[SEP]",
        "bad",
        "loss",
        "today",
        "[SEP]",
    ]
    assert enc.n_truncated == 0 and enc.word_starts is None
    cut = get_task("text-pair-classification").encode([("good profit", "bad loss today")], tok, max_length=6)
    assert cut.n_truncated == 1 and tok.convert_ids_to_tokens(cut.input_ids[0].tolist())[-1] == "[SEP]"


def test_pairs_reach_the_model_with_segment_ids(tiny_model_dir, tmp_path):
    """BERT was pretrained on pairs with token_type_ids; the pair kind gives it them: 0 on
    [CLS] a [SEP], 1 on b [SEP], 0 on padding; single texts get none (the model's default)."""
    import torch
    from transformers import AutoTokenizer

    from shiftbench.data.encode import EncodedSplit, _from_table, _to_table
    from shiftbench.training.batching import collate

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    kind = get_task("text-pair-classification")
    enc = kind.encode([("good profit", "bad loss today"), ("profit", "loss")], tok, max_length=32)
    assert enc.segment_starts.tolist() == [4, 3]
    split = EncodedSplit(enc.input_ids, np.array([0, 1]), 0, task=kind.name, segment_starts=enc.segment_starts)
    batch = collate(split.input_ids, np.array([0, 1]), tok.pad_token_id, torch.device("cpu"), split.segment_starts)
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]]
    reference = tok(["good profit", "profit"], ["bad loss today", "loss"], padding=True, return_tensors="pt")
    assert torch.equal(batch["token_type_ids"], reference["token_type_ids"] * reference["attention_mask"])
    # the token cache keeps them
    assert _from_table(_to_table(split), kind.name, ("a", "b")).segment_starts.tolist() == [4, 3]
    # one text per example: no segment ids
    single = get_task("text-classification").encode(["good profit"], tok, max_length=32)
    assert single.segment_starts is None
    assert "token_type_ids" not in collate(single.input_ids, np.array([0]), tok.pad_token_id, torch.device("cpu"))


def test_nli_pair_runs_end_to_end(nli_env, monkeypatch):
    """A third task kind through shiftbench.run: fine-tune on NLI 'news', score ID and OOD."""
    seen = []
    original = TextPairClassification.encode

    def spy(self, texts, tokenizer, max_length):
        enc = original(self, texts, tokenizer, max_length)
        seen.append((list(texts), enc, tokenizer))
        return enc

    monkeypatch.setattr(TextPairClassification, "encode", spy)
    summary = shiftbench.run(pairs=["nli_news_to_tweets"], seeds=[0], **nli_env)
    (r,) = summary.new_results
    assert (r.pair, r.source, r.target, r.task) == (
        "nli_news_to_tweets",
        "nli_news",
        "nli_tweets",
        "text-pair-classification",
    )
    assert r.label_space == tuple(NLI_LABELS)
    assert r.n_id == 8 and r.n_ood == 24  # 10 % of 80 carved as the source test split
    for scores in (r.id_scores, r.ood_scores):
        assert set(scores) == set(get_task("text-pair-classification").metrics(r.label_space))
        assert all(0.0 <= v <= (2.0 if m == "brier" else 1.0) for m, v in scores.items())  # multi-class Brier: [0, 2]

    # The tokenizer got the pairs: every encoded example is [CLS] premise [SEP] hypothesis [SEP].
    assert seen, "the pair kind's encode was never called"
    for texts, enc, tok in seen:
        for (premise, hypothesis), ids in zip(texts, enc.input_ids):
            tokens = tok.convert_ids_to_tokens(ids.tolist())
            assert tokens.count(tok.sep_token) == 2
            first = tokens.index(tok.sep_token)
            assert tokens[1:first] == tok.tokenize(premise) and tokens[first + 1 : -1] == tok.tokenize(hypothesis)

    runs = pq.read_table(next((nli_env["results_dir"] / "runs").glob("*.parquet"))).to_pandas()
    assert set(runs["task"]) == {"text-pair-classification"}
    board = pq.read_table(nli_env["results_dir"] / "leaderboard.parquet").to_pandas()
    row = board[(board["pair"] == "nli_news_to_tweets") & (board["metric"] == "macro_f1")]
    assert len(row) == 1 and 0.0 <= float(row["ood_score_mean"].iloc[0]) <= 1.0
