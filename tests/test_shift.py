"""Shift measures: the statistics on data with known answers, and ``shiftbench shift`` end to end
on data built in the test (a tiny random encoder stands in for all-MiniLM-L6-v2)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from shiftbench.cli import main
from shiftbench.core.errors import ShiftbenchError
from shiftbench.execution import shift
from shiftbench.execution.shift import (
    compute_measures,
    domain_classifier_error,
    mmd2_test,
    proxy_a_distance,
    read_shift_table,
    vocabulary,
)

from .conftest import REAL_DATA_DIR, user_error


def test_vocabulary_disjoint_and_identical():
    disjoint = vocabulary(["alpha beta", "gamma"], ["delta epsilon", "zeta zeta"])
    assert disjoint.jaccard == 0.0 and disjoint.target_oov_rate == 1.0 and disjoint.target_type_oov_rate == 1.0
    same = vocabulary(["Profit rose", "shares fell"], ["profit ROSE https://t.co/x @bob"])  # URLs/mentions dropped
    assert same.target_oov_rate == 0.0 and same.target_types == 2
    half = vocabulary(["a b"], ["a c c"])  # types {a, b} vs {a, c}: J = 1/3; tokens: 2 of 3 OOV
    assert half.jaccard == pytest.approx(1 / 3) and half.target_oov_rate == pytest.approx(2 / 3)


def _gauss(n, d, shift_by, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift_by
    return x


def test_mmd_same_distribution_is_near_zero_and_not_significant():
    r = mmd2_test(_gauss(300, 8, 0, 1), _gauss(300, 8, 0, 2), n_permutations=200)
    assert abs(r.mmd2) < 0.01 and r.p_value > 0.05


def test_mmd_detects_a_mean_shift_and_matches_the_direct_formula():
    x, y = _gauss(150, 4, 1.0, 3), _gauss(120, 4, 0.0, 4)
    r = mmd2_test(x, y, n_permutations=200)
    assert r.p_value < 0.01 and r.mmd2 > 0.05
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * r.bandwidth**2))  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    n, m = len(x), len(y)
    direct = (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean()
    )
    assert r.mmd2 == pytest.approx(direct, rel=1e-9)


def test_proxy_a_distance_zero_for_one_domain_two_for_separable_ones():
    same = domain_classifier_error(_gauss(200, 5, 0, 5), _gauss(200, 5, 0, 6))
    assert 0.35 < same <= 0.65 and proxy_a_distance(same) < 0.6
    apart = domain_classifier_error(_gauss(200, 5, 6.0, 7), _gauss(200, 5, 0, 8))
    assert apart < 0.02 and proxy_a_distance(apart) > 1.9


def _bag_of_words_embed(texts, _index: dict = {}):  # noqa: B006  the shared index is the point
    """A stand-in encoder: bag of words over a word index shared by every call (one dimension
    per word, no collisions; deterministic, no model), unit norm."""
    out = np.zeros((len(texts), 128))
    for i, t in enumerate(texts):
        for w in shift.words(t):
            out[i, _index.setdefault(w, len(_index) % 128)] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_same_distribution_lands_at_the_in_domain_baseline():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(vocab, 8)) for _ in range(800)]
    labels = list(rng.choice(["neg", "pos"], 800))
    m = compute_measures(
        "s",
        "t",
        "fs",
        "ft",
        texts[:400],
        texts[400:],
        ("neg", "pos"),
        labels[:400],
        labels[400:],
        _bag_of_words_embed,
        "bag-of-words",
        "0",
        sample_size=200,
        n_permutations=200,
    )
    assert m.mmd2_p_value > 0.05 and abs(m.mmd2 - m.mmd2_baseline) < 0.01
    assert m.pad < 0.6 and m.label_prior_tv < 0.1 and m.vocab_jaccard == 1.0
    other = [" ".join(rng.choice([f"v{i}" for i in range(40)], 8)) for _ in range(400)]
    far = compute_measures(
        "s",
        "t",
        "fs",
        "ft",
        texts[:400],
        other,
        ("neg", "pos"),
        labels[:400],
        None,
        _bag_of_words_embed,
        "bag-of-words",
        "0",
        sample_size=200,
        n_permutations=200,
    )
    assert far.vocab_jaccard == 0.0 and far.target_oov_rate == 1.0
    assert far.mmd2_p_value < 0.01 and far.mmd2 > 10 * abs(far.mmd2_baseline) and far.pad > 1.9
    assert far.label_prior_tv is None and far.label_prior_method == "none"
    est = compute_measures(
        "s",
        "t",
        "fs",
        "ft",
        texts[:400],
        other,
        ("neg", "pos"),
        labels[:400],
        None,
        _bag_of_words_embed,
        "bag-of-words",
        "0",
        sample_size=20,
        n_permutations=20,
        estimated_target_priors=(0.9, 0.1),
    )
    assert est.label_prior_method == "estimated" and est.label_prior_tv == pytest.approx(
        abs(0.9 - est.source_priors[0])
    )
    with pytest.raises(ShiftbenchError, match="need 2 values"):
        compute_measures(
            "s",
            "t",
            "fs",
            "ft",
            texts[:400],
            other,
            ("neg", "pos"),
            labels[:400],
            None,
            _bag_of_words_embed,
            "bag-of-words",
            "0",
            sample_size=20,
            n_permutations=20,
            estimated_target_priors=(1.0,),
        )


@pytest.fixture()
def tiny_shift(tiny_registry, tiny_data_dir, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("SHIFTBENCH_REGISTRY", raising=False)
    monkeypatch.setattr(shift, "DEFAULT_ENCODER", "tiny")  # the tiny random BERT of the test registry
    return [
        "--registry",
        str(tiny_registry),
        "--data-dir",
        str(tiny_data_dir),
        "--results-dir",
        str(tmp_path / "results"),
    ]


def test_shift_cli_prints_measures_and_caches_them(tiny_shift, tmp_path, capsys, monkeypatch):
    argv = ["shift", "--pair", "news_to_tweets", "--sample", "20", *tiny_shift]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "news_to_tweets" in out and "tweets" in out and "forum" in out and "no (" in out
    files = sorted((tmp_path / "results" / "shift").glob("*.parquet"))
    assert len(files) == 2  # one per (source, target) data pair
    table = read_shift_table(tmp_path / "results").to_pandas()
    assert set(table["target"]) == {"tweets", "forum"} and (table["sample_size"] == 20).all()
    assert table["label_prior_method"].eq("labels").all() and table["mmd2_p_value"].between(0, 1).all()
    assert pq.read_schema(files[0]).metadata[b"shiftbench.shift_schema_version"] == b"1"

    import shiftbench.modeling.embed

    def refuse(*a, **k):
        raise AssertionError("a cached pair must not be embedded again")

    monkeypatch.setattr(shiftbench.modeling.embed, "embed_texts", refuse)
    assert main(argv) == 0
    assert capsys.readouterr().out.count(" yes") == 2
    assert (
        main(["shift", "--pair", "news_to_forum", "--sample", "20", *tiny_shift]) == 0
    )  # same data pair: shared entry
    assert " yes" in capsys.readouterr().out


def test_shift_cli_bad_input(tiny_shift, tmp_path, capsys):
    user_error(capsys, ["shift", "--pair", "news_to_tweet", *tiny_shift], "news_to_tweet", "did you mean")
    user_error(capsys, ["shift", "--pair", "news_to_tweets", "--sample", "2", *tiny_shift], "--sample", "2")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    user_error(
        capsys,
        ["shift", "--pair", "news_to_tweets", *tiny_shift, "--results-dir", not_a_dir],
        "--results-dir",
        "not a directory",
    )
    user_error(
        capsys, ["shift", "--pair", "news_to_tweets", *tiny_shift, "--data-dir", tmp_path / "nowhere"], "nowhere"
    )


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA_DIR / "takala__financial_phrasebank").is_dir(), reason="no data mirror")
def test_real_minilm_embeddings_are_unit_norm_sentence_vectors():
    from shiftbench.modeling.embed import embed_texts
    from shiftbench.modeling.models import resolve_model
    from shiftbench.registry.catalog import load_catalog

    emb = embed_texts(
        ["Profits rose sharply.", "Earnings increased a lot.", "The cat sat on the mat."],
        resolve_model("minilm-l6", load_catalog()),
    )
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2  # paraphrases are closer than unrelated text


def test_readme_shift_table_is_the_committed_cache():
    from shiftbench.registry.catalog import load_catalog

    from .conftest import REPO

    table = read_shift_table(REPO / "results").to_pylist()
    if not table:
        pytest.skip("no committed shift measures")
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- shift:start -->", 1)[1].split("<!-- shift:end -->", 1)[0]
    rows = [line for line in section.strip().splitlines()[2:]]
    assert len(rows) == 3
    pairs = load_catalog(include_env=False).pairs
    for line in rows:
        name = line.strip("|").split("|")[0].strip()
        pair = pairs.get(name)
        hits = [shift.read_cached(p) for p in sorted((REPO / "results" / "shift").glob("*.parquet"))]
        hits = [h for h in hits if h.source == pair.source and h.target == pair.targets[0]]
        assert len(hits) == 1, name
        assert shift.to_markdown([shift.PairShift(name, hits[0], True)]).splitlines()[2] == line
