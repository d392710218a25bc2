"""Token classification (NER) end to end on tiny data: BIO label spaces from label_map on entity
types, first-sub-token alignment, entity-level scores, per-word predictions files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import shiftbench
from shiftbench.core.errors import ShiftbenchError
from shiftbench.data.datasets import load_domain
from shiftbench.data.encode import IGNORE, encode_split
from shiftbench.registry.specs import DatasetSpec
from shiftbench.results.store import PREDICTIONS_DIR, read_runs
from shiftbench.tasks import bio_tags
from tests.conftest import FILLER, user_error, write

PER, ORG, LOC = ["stocks", "user"], ["profit", "market"], ["gain", "report"]  # words of the tiny vocab


def tagged_sentences(n: int, seed: int, types=("PER", "ORG", "LOC"), style: str = "news"):
    """Sentences of filler words with 1-2 entities; an entity is the first word of its type,
    optionally followed by the second (so B- and I- tags are both lexically learnable)."""
    words_of = {"PER": PER, "ORG": ORG, "LOC": LOC}
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(1, 2)):
            words += [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
            tags += ["O"] * (len(words) - len(tags))
            etype = rng.choice(types)
            span = words_of[etype][: rng.randint(1, 2)]
            words += [w.upper() if style == "tweet" and rng.random() < 0.5 else w for w in span]
            tags += [f"B-{etype}"] + [f"I-{etype}"] * (len(span) - 1)
        words.append(rng.choice(FILLER))
        tags.append("O")
        out.append((words, tags))
    return out


def write_ner_split(data_dir: Path, hub_id: str, config: str, split: str, rows, names: list[str]) -> Path:
    """As the mirror stores NER data: tokens = List(string), ner_tags = List(ClassLabel)."""
    import datasets

    feats = datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.ClassLabel(names=names))}
    )
    ds = datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in rows], "ner_tags": [[names.index(t) for t in tags] for _, tags in rows]},
        features=feats,
    )
    path = data_dir / hub_id.replace("/", "__") / config / f"{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


WNUT_NAMES = [
    "O",
    "B-corporation",
    "I-corporation",
    "B-group",
    "I-group",
    "B-location",
    "I-location",
    "B-person",
    "I-person",
    "B-product",
    "I-product",
]
NER_REGISTRY = """
datasets:
  wiki:
    hub_id: acme/wiki
    task: token-classification
    text_column: tokens
    label_column: ner_tags
    splits: {train: train}
  tweetner:
    hub_id: acme/tweetner
    task: token-classification
    text_column: tokens
    label_column: ner_tags
    splits: {test: test}
    label_map: {person: PER, corporation: ORG, group: ORG, location: LOC, product: null}
pairs:
  wiki_to_tweetner:
    task: token-classification
    source: wiki
    targets: [tweetner]
models:
  tiny:
    path: {model_dir}
"""


def _to_wnut(rows, seed):
    """Re-tag PER/ORG/LOC sentences in WNUT-17's vocabulary (ORG split into corporation/group) and
    sprinkle in products, which the pair maps to O."""
    rng = random.Random(seed)
    names = {"PER": "person", "LOC": "location"}
    out = []
    for words, tags in rows:
        new = []
        for t in tags:
            if t == "O":
                new.append("O" if rng.random() > 0.05 else "B-product")
            else:
                etype = names.get(t[2:]) or rng.choice(["corporation", "group"])
                new.append(f"{t[:2]}{etype}")
        # keep BIO well formed: an I- must continue the same type
        for i in range(1, len(new)):
            if new[i].startswith("I-") and new[i - 1][2:] != new[i][2:]:
                new[i] = "B-" + new[i][2:]
        out.append((words, new))
    return out


@pytest.fixture(scope="module")
def ner_world(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("ner-data")
    write_ner_split(d, "acme/wiki", "default", "train", tagged_sentences(120, 1), list(bio_tags({"PER", "ORG", "LOC"})))
    write_ner_split(
        d, "acme/tweetner", "default", "test", _to_wnut(tagged_sentences(40, 2, style="tweet"), 3), WNUT_NAMES
    )
    reg = write(
        tmp_path_factory.mktemp("ner-reg") / "ner.yaml", NER_REGISTRY.replace("{model_dir}", str(tiny_model_dir))
    )
    return d, reg


@pytest.fixture()
def ner_env(ner_world, tiny_protocol, tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")
    data_dir, reg = ner_world
    return {
        "registries": [reg],
        "data_dir": data_dir,
        "protocol": str(tiny_protocol),
        "results_dir": tmp_path / "results",
        "cache_dir": tmp_path / "cache",
        "models": ["tiny"],
        "device": "cpu",
        "pairs": ["wiki_to_tweetner"],
    }


def _spec(**kw) -> DatasetSpec:
    base = {
        "name": "tweetner",
        "hub_id": "acme/tweetner",
        "task": "token-classification",
        "text_column": "tokens",
        "label_column": "ner_tags",
        "splits": {"test": "test"},
    }
    return DatasetSpec(**{**base, **kw})


def test_label_map_maps_entity_types_and_null_makes_words_outside(ner_world):
    data_dir, _ = ner_world
    spec = _spec(label_map={"person": "PER", "corporation": "ORG", "group": "ORG", "location": "LOC", "product": None})
    dom = load_domain(spec, data_dir, ("test",))
    assert dom.label_names == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    tags = {t for sent in dom.role("test").labels for t in sent}
    assert tags <= set(dom.label_names) and not any("product" in t or "group" in t for t in tags)
    # Without the map the raw WNUT types are the label space.
    raw = load_domain(_spec(), data_dir, ("test",))
    assert "B-product" in raw.label_names and "B-person" in raw.label_names


def test_carving_keeps_sentences_whole_and_splits_disjoint(ner_world):
    data_dir, _ = ner_world
    spec = _spec(name="wiki", hub_id="acme/wiki", splits={"train": "train"})
    dom = load_domain(spec, data_dir, ("train", "validation", "test"))
    sizes = {r: len(dom.role(r)) for r in ("train", "validation", "test")}
    assert (
        sum(sizes.values()) == 120 and 10 <= sizes["test"] <= 14 and 10 <= sizes["validation"] <= 14
    )  # ~10 % each, per stratum
    for role in sizes:
        split = dom.role(role)
        assert all(len(w) == len(t) for w, t in zip(split.texts, split.labels))
    assert dom.fingerprint == load_domain(spec, data_dir, ("train", "validation", "test")).fingerprint


def test_first_subtoken_alignment_and_truncation(tiny_model_dir):
    from transformers import AutoTokenizer

    from shiftbench.data.datasets import SplitData

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    space = bio_tags({"PER"})
    # "zq" is not in the vocab: it becomes z ##q, two sub-tokens; the tag goes on the first.
    split = SplitData((("the", "zq", "zq"),), (("O", "B-PER", "I-PER"),), "token-classification")
    enc = encode_split(split, tok, space, max_length=16)
    ids = enc.input_ids[0].tolist()
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "the", "z", "##q", "z", "##q", "[SEP]"]
    assert enc.word_starts[0].tolist() == [1, 2, 4]
    assert enc.batch_labels(np.array([0]))[0].tolist() == [IGNORE, 0, 1, IGNORE, 2, IGNORE, IGNORE]
    assert enc.labels.tolist() == [0, 1, 2]
    # Truncated to 4 tokens ([CLS] the z [SEP]): the third word has no sub-token left.
    short = encode_split(split, tok, space, max_length=4)
    assert short.n_truncated == 1 and short.word_starts[0].tolist() == [1, 2, -1]
    assert short.batch_labels(np.array([0]))[0].tolist() == [IGNORE, 0, 1, IGNORE]


def test_predict_reads_first_subtoken_and_marks_cut_words_outside(tiny_model_dir):
    import torch
    from transformers import AutoTokenizer

    from shiftbench.data.datasets import SplitData
    from shiftbench.modeling.device import make_runtime
    from shiftbench.training.evaluation import predict

    class Fixed(torch.nn.Module):  # logits favour tag (position mod 3)
        config = type("C", (), {"num_labels": 3})()

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1]) % 3
            logits = torch.nn.functional.one_hot(pos, 3).float().expand(input_ids.shape[0], -1, -1) * 5
            return type("O", (), {"logits": logits})()

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    split = SplitData((("the", "zq", "zq"), ("a",)), (("O", "B-PER", "I-PER"), ("O",)), "token-classification")
    enc = encode_split(split, tok, bio_tags({"PER"}), max_length=4)
    p = predict(
        Fixed(), enc, 2, tok.pad_token_id, make_runtime("cpu", "fp32")
    )  # the split's task kind places the outputs
    # words start at positions 1, 2 and (cut) -> tags 1, 2, O; second sentence: position 1 -> 1
    assert p.preds.tolist() == [1, 2, 0, 1] and p.lengths.tolist() == [3, 1]
    assert np.allclose(p.probs.sum(axis=1), 1.0) and p.probs[2].tolist() == [1.0, 0.0, 0.0]


def test_ner_pair_end_to_end(ner_env):
    results = shiftbench.run(**ner_env, seeds=[0]).new_results
    assert len(results) == 1
    r = results[0]
    assert r.task == "token-classification" and r.label_space == bio_tags({"PER", "ORG", "LOC"})
    for scores in (r.id_scores, r.ood_scores):
        assert {
            "entity_micro_f1",
            "entity_micro_precision",
            "entity_micro_recall",
            "macro_f1",
            "accuracy",
            "f1_LOC",
            "f1_ORG",
            "f1_PER",
            "ece",
            "ece_debiased",
            "brier",
        } == set(scores)
        assert all(0.0 <= v <= 1.0 for v in scores.values())
        assert scores["macro_f1"] == pytest.approx(np.mean([scores[f"f1_{t}"] for t in ("LOC", "ORG", "PER")]))
    assert 10 <= r.n_id <= 14 and r.n_ood == 40  # sentences, not words
    assert sum(r.id_label_counts) > r.n_id  # words per tag
    losses = [h["train_loss"] for h in r.history]
    assert losses[1] < losses[0]  # it learns (2 epochs of the first learning rate)

    preds = pq.read_table(ner_env["results_dir"] / PREDICTIONS_DIR / f"{r.run_id}.parquet").to_pandas()
    ood = preds[preds["split"] == "ood_test"]
    assert ood["index"].nunique() == 40 and len(ood) == sum(r.ood_label_counts)
    assert (ood.groupby("index")["position"].apply(lambda s: s.tolist() == list(range(len(s))))).all()
    # Stored predictions reproduce the recorded entity F1.
    from shiftbench.tasks.ner_metrics import token_classification_scores

    lengths = ood.groupby("index").size().to_numpy()
    again = token_classification_scores(ood["label"].to_numpy(), ood["pred"].to_numpy(), lengths, r.label_space)
    assert again["entity_micro_f1"] == pytest.approx(r.ood_scores["entity_micro_f1"])

    rows = read_runs(ner_env["results_dir"]).table.to_pandas()
    assert set(rows["task"]) == {"token-classification"}
    assert shiftbench.run(**ner_env, seeds=[0]).new_results == ()  # done: nothing re-runs


def test_tags_words_mismatch_is_one_line_error(ner_world, tmp_path, capsys, clean_env):
    import datasets

    data_dir = tmp_path / "data"
    feats = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER"])),
        }
    )
    path = data_dir / "acme__tweetner" / "default" / "test.parquet"
    path.parent.mkdir(parents=True)
    datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [[0]]}, features=feats).to_parquet(str(path))
    _, reg = ner_world
    write_ner_split(
        data_dir, "acme/wiki", "default", "train", tagged_sentences(30, 1), list(bio_tags({"PER", "ORG", "LOC"}))
    )
    user_error(
        capsys,
        [
            "run",
            "--registry",
            reg,
            "--data-dir",
            data_dir,
            "--pair",
            "wiki_to_tweetner",
            "--model",
            "tiny",
            "--dry-run",
        ],
        "test.parquet",
        "row 0",
        "2 words",
        "1 tags",
    )


def test_non_bio_tag_is_one_line_error(ner_world, tmp_path, capsys, clean_env):
    data_dir = tmp_path / "data"
    write_ner_split(data_dir, "acme/tweetner", "default", "test", [(["a", "b"], ["O", "PER"])], ["O", "PER"])
    write_ner_split(
        data_dir, "acme/wiki", "default", "train", tagged_sentences(30, 1), list(bio_tags({"PER", "ORG", "LOC"}))
    )
    _, reg = ner_world
    user_error(
        capsys,
        [
            "run",
            "--registry",
            reg,
            "--data-dir",
            data_dir,
            "--pair",
            "wiki_to_tweetner",
            "--model",
            "tiny",
            "--dry-run",
        ],
        "test.parquet",
        "row 0",
        "'PER'",
        "BIO",
    )


def test_tiny_model_learns_the_entities(ner_env, tmp_path):
    """Entity words are fixed per type, so a working alignment + loss + decoding learns them."""
    proto = write(
        tmp_path / "learn.yaml", "base: quick\nlearning_rates: [1.0e-2]\nepochs: 8\nbatch_size: 8\nmax_length: 32\n"
    )
    r = shiftbench.run(**{**ner_env, "protocol": str(proto)}, seeds=[0]).new_results[0]
    assert r.id_scores["entity_micro_f1"] > 0.8, r.id_scores
    assert r.selection_score == max(h["val_scores"]["macro_f1"] for h in r.history)


def test_compare_and_leaderboard_bootstrap_sentences(ner_env, tmp_path, capsys):
    """compare and the single-seed leaderboard CI work on NER runs (sentence bootstrap, entity F1)."""
    from shiftbench.analysis.compare import compare
    from shiftbench.analysis.leaderboard import build_leaderboard

    proto = write(
        tmp_path / "learn.yaml", "base: quick\nlearning_rates: [1.0e-2]\nepochs: 4\nbatch_size: 8\nmax_length: 32\n"
    )
    shiftbench.run(**ner_env, seeds=[0])
    shiftbench.run(**{**ner_env, "protocol": str(proto)}, seeds=[0])
    a, b = "tiny@tiny", "tiny@learn"
    for metric in ("entity_micro_f1", "macro_f1", "accuracy"):
        c = compare(ner_env["results_dir"], a, b, metric=metric, n_boot=200)
        (t,) = c.targets
        assert t.n_id >= 10 and t.n_ood == 40  # sentences
        runs = read_runs(ner_env["results_dir"]).table.to_pandas()
        got = runs[(runs["metric"] == metric)].set_index("protocol")
        assert t.ood_b - t.ood_a == pytest.approx(got.loc["learn", "ood_score"] - got.loc["tiny", "ood_score"])
        assert t.ood_diff.low <= t.ood_diff.estimate <= t.ood_diff.high
    assert c.targets[0].verdict == "needs >= 2 seeds per side"  # one seed per side: no verdict on the recipe
    with pytest.raises(ShiftbenchError, match="metric 'macro_precision' is not defined for token-classification"):
        compare(ner_env["results_dir"], a, b, metric="macro_precision")
    assert compare(ner_env["results_dir"], a, b, n_boot=50).targets[0].metric == "entity_micro_f1"  # the NER headline
    board, _ = build_leaderboard(ner_env["results_dir"])
    row = board[(board["metric"] == "entity_micro_f1") & (board["protocol"] == "learn")].iloc[0]
    assert row["ci_method"] == "examples only (1 seed)"
    assert row["ood_score_ci_low"] <= row["ood_score_mean"] <= row["ood_score_ci_high"]


def test_suite_skips_a_pair_whose_optional_dataset_is_absent(ner_world, tmp_path, capsys, clean_env):
    """Like CoNLL-2003 (not redistributable): a suite warns and goes on; --pair fails with exit 2."""
    from shiftbench.cli import main

    data_dir, reg = ner_world
    extra = write(
        tmp_path / "extra.yaml",
        """
datasets:
  private_news:
    hub_id: acme/private-news
    task: token-classification
    text_column: tokens
    label_column: ner_tags
    splits: {train: train}
    optional: true
pairs:
  private_to_tweetner:
    task: token-classification
    source: private_news
    targets: [tweetner]
suites:
  both:
    pairs: [wiki_to_tweetner, private_to_tweetner]
    models: [tiny]
""",
    )
    rc = main(
        [
            "run",
            "--registry",
            str(reg),
            "--registry",
            str(extra),
            "--data-dir",
            str(data_dir),
            "--suite",
            "both",
            "--dry-run",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "skipping pair 'private_to_tweetner'" in err and "acme/private-news" in err
    assert "wiki_to_tweetner" in out and "private_to_tweetner" not in out
    user_error(
        capsys,
        [
            "run",
            "--registry",
            reg,
            "--registry",
            extra,
            "--data-dir",
            data_dir,
            "--pair",
            "private_to_tweetner",
            "--model",
            "tiny",
            "--dry-run",
        ],
        "private_news",
        "not found locally",
    )


def test_token_cache_round_trips(ner_world, tiny_model_dir, tmp_path):
    """A token-classification split read back from the on-disk token cache equals the fresh one."""
    from transformers import AutoTokenizer

    from shiftbench.data.encode import Encoder

    data_dir, _ = ner_world
    dom = load_domain(
        _spec(name="wiki", hub_id="acme/wiki", splits={"train": "train"}), data_dir, ("train", "validation", "test")
    )
    enc = Encoder(
        AutoTokenizer.from_pretrained(str(tiny_model_dir)), dom.label_names, 8, tmp_path / "cache"
    )  # some cut
    fresh, cached = enc(dom, "train"), enc(dom, "train")
    assert any((tmp_path / "cache" / "tokens").glob("*.parquet"))
    assert cached.n_truncated == fresh.n_truncated > 0 and np.array_equal(cached.labels, fresh.labels)
    for name in ("input_ids", "word_starts", "word_labels"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(cached, name), getattr(fresh, name), strict=True)), name
