"""Shared fixtures: tiny random-init models and tiny datasets built in the test, never downloaded."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# The real mirror: $SHIFTBENCH_DATA_DIR, else ../shared/data beside the checkout.
REAL_DATA_DIR = Path(os.environ.get("SHIFTBENCH_DATA_DIR", REPO.parent / "shared" / "data"))

WORDS = {
    "positive": ["good", "great", "gain", "up", "profit", "rise", "strong"],
    "negative": ["bad", "poor", "loss", "down", "fall", "weak", "drop"],
    "neutral": ["the", "company", "said", "report", "today", "market", "shares"],
}
FILLER = ["a", "an", "of", "in", "on", "for", "with", "and", "to", "is"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_texts(labels: list[str], seed: int, style: str = "news") -> list[str]:
    """Short texts whose words correlate with the label; 'tweet' style adds social-media noise."""
    rng = random.Random(seed)
    out = []
    for lbl in labels:
        words = [rng.choice(WORDS[lbl]) for _ in range(rng.randint(1, 3))]
        words += [rng.choice(FILLER + WORDS["neutral"]) for _ in range(rng.randint(2, 12))]
        rng.shuffle(words)
        if style == "tweet":
            words = [w.upper() if rng.random() < 0.3 else w for w in words] + ["#stocks", "@user"]
        out.append(" ".join(words))
    return out


def write_split(
    data_dir: Path,
    hub_id: str,
    config: str,
    split: str,
    texts,
    labels,
    names=None,
    text_column: str = "text",
    label_column: str = "label",
) -> Path:
    """Write one split the way the shared mirror does (datasets -> Parquet, ClassLabel kept)."""
    import datasets

    feats = {text_column: datasets.Value("string")}
    if names is not None:
        feats[label_column] = datasets.ClassLabel(names=names)
        values = [names.index(x) for x in labels]
    else:
        feats[label_column] = datasets.Value("int64")
        values = list(labels)
    ds = datasets.Dataset.from_dict({text_column: list(texts), label_column: values}, features=datasets.Features(feats))
    path = data_dir / hub_id.replace("/", "__") / config / f"{split}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


def balanced_labels(n: int, names: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    labels = [names[i % len(names)] for i in range(n)]
    rng.shuffle(labels)
    return labels


# A minimal valid registry: one source, one target, one pair (datasets acme/src and acme/tgt).
MINI_REGISTRY = """
datasets:
  src:
    hub_id: acme/src
    text_column: text
    label_column: label
    splits: {train: train}
  tgt:
    hub_id: acme/tgt
    text_column: text
    label_column: label
    splits: {test: test}
pairs:
  src_to_tgt:
    task: text-classification
    source: src
    targets: [tgt]
"""


def user_error(capsys, argv, *needles) -> str:
    """Run the CLI; assert the house rule (exit 2, one line on stderr, no traceback) and that
    every needle is in that line."""
    from shiftbench.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, f"rc={rc}\nstdout={out}\nstderr={err}"
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line on stderr: {err!r}"
    line = err.rstrip("\n")
    assert line.startswith("shiftbench: error: "), line
    for needle in needles:
        assert str(needle) in line, f"{needle!r} not in {line!r}"
    return line


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class Killed(Exception):
    """Raised in-process at a fault point, standing in for a SIGKILL (see :func:`kill_at`)."""


def kill_at(monkeypatch, point: str, n: int) -> None:
    """Make the ``n``-th time ``point`` is reached (``shiftbench.core.faults``) raise :class:`Killed`;
    undo with ``monkeypatch.setattr(faults, "fault_point", lambda point: None)``."""
    from shiftbench.core import faults

    hits = []

    def fault(reached: str) -> None:
        if reached == point:
            hits.append(reached)
            if len(hits) == n:
                raise Killed

    monkeypatch.setattr(faults, "fault_point", fault)


@pytest.fixture()
def clean_env(monkeypatch):
    """No registry, data dir or thread setting leaks in from the caller's environment."""
    for var in ("SHIFTBENCH_REGISTRY", "SHIFTBENCH_DATA_DIR", "SHIFTBENCH_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 16-wide random BERT with a word-level vocab covering the tiny data."""
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = SPECIAL + sorted({w for ws in WORDS.values() for w in ws} | set(FILLER) | {"#", "@", "stocks", "user"})
    vocab += list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 ignores `vocab_file=` here (a 5-token vocab, every word [UNK]): pass the vocab itself.
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(d))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(d))  # safetensors by default
    return d


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data dir laid out like the shared mirror, with two sources and two targets:

    - ``acme/news`` (train only: validation and test are carved) 3 classes, ClassLabel
    - ``acme/tweets`` (train + test) 3 classes with other names (Bearish/Bullish/Neutral)
    - ``acme/reviews`` (train/validation/test) plain int labels 0/1
    - ``acme/forum`` (test) 3 classes; neutral dropped for a binary pair
    """
    d = tmp_path_factory.mktemp("data")
    three = ["negative", "neutral", "positive"]
    lbl = balanced_labels(90, three, 1)
    write_split(d, "acme/news", "default", "train", make_texts(lbl, 1), lbl, three, text_column="sentence")
    for split, n, seed in (("train", 30, 2), ("test", 30, 3)):
        lbl = balanced_labels(n, three, seed)
        mapped = [{"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral"}[x] for x in lbl]
        write_split(
            d,
            "acme/tweets",
            "default",
            split,
            make_texts(lbl, seed, "tweet"),
            mapped,
            ["Bearish", "Bullish", "Neutral"],
        )
    for split, n, seed in (("train", 40, 4), ("validation", 12, 5), ("test", 16, 6)):
        lbl = balanced_labels(n, ["negative", "positive"], seed)
        write_split(d, "acme/reviews", "default", split, make_texts(lbl, seed), [int(x == "positive") for x in lbl])
    lbl = balanced_labels(30, three, 7)
    write_split(d, "acme/forum", "posts", "test", make_texts(lbl, 7, "tweet"), lbl, three)
    return d


TINY_REGISTRY = """
datasets:
  news:
    hub_id: acme/news
    text_column: sentence
    label_column: label
    splits: {train: train}
    domain: newswire
    license: CC-BY-4.0
    redistributable: true
  tweets:
    hub_id: acme/tweets
    text_column: text
    label_column: label
    splits: {train: train, test: test}
    label_map: {Bearish: negative, Bullish: positive, Neutral: neutral}
    domain: tweets
  reviews:
    hub_id: acme/reviews
    text_column: text
    label_column: label
    splits: {train: train, validation: validation, test: test}
    label_map: {0: negative, 1: positive}
  forum:
    hub_id: acme/forum
    config: posts
    text_column: text
    label_column: label
    splits: {test: test}
  forum_binary:
    base: forum
    label_map: {neutral: null}
pairs:
  news_to_tweets:
    task: text-classification
    source: news
    targets: [tweets, forum]
  news_to_forum:
    task: text-classification
    source: news
    targets: [forum]
  reviews_to_forum:
    task: text-classification
    source: reviews
    targets: [forum_binary]
models:
  tiny:
    path: {model_dir}
"""

TINY_PROTOCOL = """
base: quick
description: tiny test protocol
learning_rates: [1.0e-3, 3.0e-3]
epochs: 2
batch_size: 8
max_length: 24
eval_batch_size: 16
"""


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory, tiny_model_dir) -> Path:
    p = tmp_path_factory.mktemp("reg") / "tiny.yaml"
    p.write_text(TINY_REGISTRY.replace("{model_dir}", str(tiny_model_dir)))
    return p


@pytest.fixture(scope="session")
def tiny_protocol(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("proto") / "tiny.yaml"
    p.write_text(TINY_PROTOCOL)
    return p


@pytest.fixture()
def tiny_env(tiny_registry, tiny_data_dir, tiny_protocol, tmp_path, monkeypatch):
    """Keywords for shiftbench.run against the tiny world, with fresh results and cache dirs."""
    monkeypatch.delenv("SHIFTBENCH_REGISTRY", raising=False)
    # Tiny models are all overhead: one intra-op thread is fastest and immune to a busy machine.
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")
    return {
        "registries": [tiny_registry],
        "data_dir": tiny_data_dir,
        "protocol": str(tiny_protocol),
        "results_dir": tmp_path / "results",
        "cache_dir": tmp_path / "cache",
        "models": ["tiny"],
        "device": "cpu",
    }
