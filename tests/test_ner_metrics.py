"""Entity-level NER metrics: known answers worked by hand, a property test against a naive
reference written here, and a cross-check against seqeval when it is importable."""

from __future__ import annotations

import doctest
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftbench.tasks import ner_metrics as nm
from shiftbench.tasks.ner_metrics import (
    NER_PRIMARY_METRIC,
    EntityCounts,
    entity_counts,
    extract_entities,
    micro_f1_from_counts,
    ner_metrics,
    per_type_f1_from_counts,
    sentence_counts,
)

# ---------------------------------------------------------------------------- known answers

README_TRUE = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
README_PRED = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]


def test_seqeval_readme_example():
    # truth: MISC[3,6) in s0, PER[0,2) in s1.  prediction: MISC[2,6) in s0, PER[0,2) in s1.
    # PER matches exactly -> tp=1; MISC[2,6) != MISC[3,6) -> fp=1 (MISC) and fn=1 (MISC).
    # P = 1/2, R = 1/2, F1 = 1/2.  Tokens: s0 is wrong at positions 2 and 3 -> 8/10 correct.
    m = ner_metrics(README_TRUE, README_PRED)
    assert m["entity_micro_f1"] == pytest.approx(0.5)
    assert m["entity_micro_precision"] == pytest.approx(0.5)
    assert m["entity_micro_recall"] == pytest.approx(0.5)
    assert m["token_accuracy"] == pytest.approx(0.8)
    assert m["f1_MISC"] == 0.0 and m["f1_PER"] == 1.0
    assert set(m) == {
        "entity_micro_f1",
        "entity_micro_precision",
        "entity_micro_recall",
        "token_accuracy",
        "f1_MISC",
        "f1_PER",
    }
    assert NER_PRIMARY_METRIC == "entity_micro_f1" and NER_PRIMARY_METRIC in m


def test_i_after_o_starts_an_entity():
    # conlleval / seqeval default: I-PER right after O opens a PER entity, so the prediction
    # [1,3) matches the truth's B-PER I-PER span exactly: tp=1, F1=1; token 1 differs -> 3/4.
    assert extract_entities(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 3)]
    assert extract_entities(["I-LOC"]) == [("LOC", 0, 1)]  # also at sentence start
    m = ner_metrics([["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]])
    assert m["entity_micro_f1"] == 1.0
    assert m["token_accuracy"] == 0.75


def test_type_change_mid_span_splits_entities():
    # I-ORG after I-PER: the PER span ends at 2 and an ORG span starts there.
    assert extract_entities(["B-PER", "I-PER", "I-ORG", "I-ORG"]) == [("PER", 0, 2), ("ORG", 2, 4)]
    # B- always starts a new entity, even of the same type; O closes the open one.
    assert extract_entities(["B-PER", "B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("PER", 1, 3), ("LOC", 4, 5)]
    # the truth has one PER[0,4); the split prediction PER[0,2), ORG[2,4) matches nothing:
    # tp=0, fp=2 (PER, ORG), fn=1 (PER) -> F1 0.
    c = entity_counts([["B-PER", "I-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "I-ORG", "I-ORG"]])
    assert c.per_type() == {"ORG": {"tp": 0, "fp": 1, "fn": 0}, "PER": {"tp": 0, "fp": 1, "fn": 1}}


def test_right_span_wrong_type_is_fp_and_fn():
    # same span [0,2), type ORG instead of PER: one fp for ORG, one fn for PER, no tp.
    c = entity_counts([["B-PER", "I-PER", "O"]], [["B-ORG", "I-ORG", "O"]])
    assert c.types == ("ORG", "PER")
    assert c.tp.tolist() == [0, 0] and c.fp.tolist() == [1, 0] and c.fn.tolist() == [0, 1]
    assert c.counts.tolist() == [[0, 1, 0], [0, 0, 1]]
    m = ner_metrics([["B-PER", "I-PER", "O"]], [["B-ORG", "I-ORG", "O"]])
    assert m["entity_micro_f1"] == 0.0 and m["f1_PER"] == 0.0 and m["f1_ORG"] == 0.0
    assert m["token_accuracy"] == pytest.approx(1 / 3)


def test_perfect_predictions():
    y = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "B-ORG"], []]
    m = ner_metrics(y, y)
    assert m == {
        "entity_micro_f1": 1.0,
        "entity_micro_precision": 1.0,
        "entity_micro_recall": 1.0,
        "token_accuracy": 1.0,
        "f1_LOC": 1.0,
        "f1_ORG": 1.0,
        "f1_PER": 1.0,
    }


def test_no_entities_anywhere_gives_zero():
    # no entity in truth nor prediction: every ratio is 0/0 -> 0 (zero_division=0); no f1_ keys.
    m = ner_metrics([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert m == {
        "entity_micro_f1": 0.0,
        "entity_micro_precision": 0.0,
        "entity_micro_recall": 0.0,
        "token_accuracy": 1.0,
    }
    c = entity_counts([["O"]], [["O"]])
    assert c.types == () and c.counts.shape == (0, 3)


def test_per_type_f1():
    # truth: s0 PER[0,1) LOC[2,4); s1 ORG[0,2) PER[3,4).
    # pred:  s0 PER[0,1) LOC[2,3); s1 ORG[0,2).
    # LOC: tp0 fp1 fn1 -> 0.  ORG: tp1 -> 1.  PER: tp1 fn1 -> P=1, R=1/2, F1=2/3.
    # micro: tp=2 fp=1 fn=2 -> P=2/3, R=1/2, F1=2*2/(2*2+1+2)=4/7.  tokens: 6/8 right.
    y_true = [["B-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG", "O", "B-PER"]]
    y_pred = [["B-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O", "O"]]
    m = ner_metrics(y_true, y_pred)
    assert m["f1_LOC"] == 0.0 and m["f1_ORG"] == 1.0 and m["f1_PER"] == pytest.approx(2 / 3)
    assert m["entity_micro_precision"] == pytest.approx(2 / 3)
    assert m["entity_micro_recall"] == pytest.approx(1 / 2)
    assert m["entity_micro_f1"] == pytest.approx(4 / 7)
    assert m["token_accuracy"] == pytest.approx(0.75)
    c = entity_counts(y_true, y_pred)
    assert per_type_f1_from_counts(c.counts) == pytest.approx([0.0, 1.0, 2 / 3])


def test_sentence_counts_sum_to_entity_counts():
    c = entity_counts(README_TRUE, README_PRED)
    s = sentence_counts(README_TRUE, README_PRED, c.types)
    # types (MISC, PER); s0: MISC fp1 fn1; s1: PER tp1.
    assert s.tolist() == [[[0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 0, 0]]]
    assert s.dtype == np.int64
    np.testing.assert_array_equal(s.sum(axis=0), c.counts)
    assert float(micro_f1_from_counts(s.sum(axis=0))) == pytest.approx(0.5)


def test_counts_are_read_only():
    c = entity_counts(README_TRUE, README_PRED)
    assert isinstance(c, EntityCounts)
    with pytest.raises(ValueError):
        c.tp[0] = 5
    with pytest.raises(AttributeError):
        c.types = ("X",)  # type: ignore[misc]


def test_f1_from_counts_is_vectorised_over_leading_axes():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(7, 3, 3))  # 7 sentences, 3 types
    counts[0] = 0  # a resample of only this sentence has 0/0 everywhere
    idx = rng.integers(0, 7, size=(5, 4, 7))  # a (5, 4) grid of bootstrap resamples
    idx[0, 0] = 0
    sums = counts[idx].sum(axis=2)  # (5, 4, n_types, 3)
    micro = micro_f1_from_counts(sums)
    per = per_type_f1_from_counts(sums)
    assert micro.shape == (5, 4) and per.shape == (5, 4, 3)
    for i in range(5):
        for j in range(4):
            tp, fp, fn = sums[i, j].sum(axis=0)
            want = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
            assert micro[i, j] == pytest.approx(want)
            for k in range(3):
                tp, fp, fn = sums[i, j, k]
                assert per[i, j, k] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert micro[0, 0] == 0.0
    assert micro_f1_from_counts(counts[1]).shape == ()


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("tag", ["X-PER", "B-", "I-", "PER", "B", "E-PER", "S-LOC", "", "b-PER", None])
def test_malformed_tag_raises(tag):
    with pytest.raises(ValueError, match="position 1"):
        extract_entities(["O", tag])


def test_malformed_tag_names_sentence():
    with pytest.raises(ValueError, match=r"sentence 1: malformed BIO tag 'X-PER'"):
        ner_metrics([["O"], ["X-PER"]], [["O"], ["O"]])


def test_shape_errors():
    with pytest.raises(ValueError, match="sentence 1: 2 true tags but 1 predicted"):
        entity_counts([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 sentences but pred_tags has 1"):
        ner_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="no sentences"):
        ner_metrics([], [])
    with pytest.raises(ValueError, match="no tokens"):
        ner_metrics([[], []], [[], []])
    with pytest.raises(ValueError, match="sequence of tag sequences"):
        ner_metrics(["B-PER", "O"], ["B-PER", "O"])  # a flat sentence, not a list of sentences
    with pytest.raises(ValueError, match="not in types"):
        sentence_counts([["B-PER"]], [["B-ORG"]], ["PER"])
    with pytest.raises(ValueError, match="duplicates"):
        sentence_counts([["O"]], [["O"]], ["PER", "PER"])
    with pytest.raises(ValueError, match=r"\(\.\.\., n_types, 3\)"):
        micro_f1_from_counts(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., n_types, 3\)"):
        per_type_f1_from_counts(np.zeros(3))


def test_doctests():
    result = doctest.testmod(nm, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------- property test

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def ref_entities(tags):
    """Naive reference: token i begins an entity iff it is B-X, or I-X whose left neighbour is
    not B-X/I-X of the same type; the entity then runs over the following I-X tokens."""
    out = []
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        kind, etype = tag.split("-", 1)
        prev_type = tags[i - 1].split("-", 1)[1] if i > 0 and tags[i - 1] != "O" else None
        if kind == "B" or prev_type != etype:
            j = i + 1
            while j < len(tags) and tags[j] == "I-" + etype:
                j += 1
            out.append((etype, i, j))
    return out


def ref_metrics(y_true, y_pred):
    """seqeval-style metrics by direct set arithmetic on (sentence, type, start, end) tuples."""
    true = {(s, *e) for s, sent in enumerate(y_true) for e in ref_entities(sent)}
    pred = {(s, *e) for s, sent in enumerate(y_pred) for e in ref_entities(sent)}
    tp = Counter(e[1] for e in true & pred)
    fp = Counter(e[1] for e in pred - true)
    fn = Counter(e[1] for e in true - pred)

    def f1(a, b, c):
        return 2 * a / (2 * a + b + c) if a + b + c else 0.0

    T, P, N = sum(tp.values()), sum(fp.values()), sum(fn.values())
    tokens = [(a, b) for t, p in zip(y_true, y_pred) for a, b in zip(t, p)]
    out = {
        "entity_micro_f1": f1(T, P, N),
        "entity_micro_precision": T / (T + P) if T + P else 0.0,
        "entity_micro_recall": T / (T + N) if T + N else 0.0,
        "token_accuracy": sum(a == b for a, b in tokens) / len(tokens),
    }
    for etype in {e[1] for e in true | pred}:
        out[f"f1_{etype}"] = f1(tp[etype], fp[etype], fn[etype])
    return out, (tp, fp, fn)


sentence_pair = st.integers(0, 8).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from(TAGS), min_size=n, max_size=n), st.lists(st.sampled_from(TAGS), min_size=n, max_size=n)
    )
)  # (true, pred) tags of one sentence, equal lengths 0..8
corpus = st.lists(sentence_pair, min_size=1, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus)
def test_matches_reference(pairs):
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    for sent in y_true + y_pred:
        assert extract_entities(sent) == ref_entities(sent)
    if not any(y_true):
        with pytest.raises(ValueError, match="no tokens"):
            ner_metrics(y_true, y_pred)
        return
    want, (tp, fp, fn) = ref_metrics(y_true, y_pred)
    got = ner_metrics(y_true, y_pred)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    c = entity_counts(y_true, y_pred)
    assert c.per_type() == {t: {"tp": tp[t], "fp": fp[t], "fn": fn[t]} for t in c.types}
    s = sentence_counts(y_true, y_pred, c.types)
    np.testing.assert_array_equal(s.sum(axis=0), c.counts)
    assert float(micro_f1_from_counts(s.sum(axis=0))) == pytest.approx(got["entity_micro_f1"], abs=1e-12)


# ---------------------------------------------------------------------------- seqeval cross-check


def _seqeval():
    """seqeval.metrics, or skip (it is a test-only cross-check; it also needs scikit-learn)."""
    try:
        import seqeval.metrics as sm
    except ImportError as err:
        pytest.skip(f"seqeval not importable: {err}")
    return sm


def _check_against_seqeval(sm, y_true, y_pred):
    from seqeval.metrics.sequence_labeling import (
        get_entities,
        precision_recall_fscore_support,
    )

    for sent in y_true + y_pred:  # seqeval's spans are (type, start, end_inclusive)
        assert [(t, a, b + 1) for t, a, b in get_entities(list(sent))] == extract_entities(sent)
    got = ner_metrics(y_true, y_pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert got["entity_micro_f1"] == pytest.approx(sm.f1_score(y_true, y_pred, zero_division=0), abs=1e-12)
        assert got["entity_micro_precision"] == pytest.approx(
            sm.precision_score(y_true, y_pred, zero_division=0), abs=1e-12
        )
        assert got["entity_micro_recall"] == pytest.approx(sm.recall_score(y_true, y_pred, zero_division=0), abs=1e-12)
        assert got["token_accuracy"] == pytest.approx(sm.accuracy_score(y_true, y_pred), abs=1e-12)
        _, _, f, _ = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    types = entity_counts(y_true, y_pred).types  # seqeval orders per-type scores by sorted type
    assert {k: v for k, v in got.items() if k.startswith("f1_")} == pytest.approx(
        {f"f1_{t}": x for t, x in zip(types, f)}, abs=1e-12
    )


def test_seqeval_cross_check_known():
    sm = _seqeval()
    _check_against_seqeval(sm, README_TRUE, README_PRED)
    _check_against_seqeval(
        sm, [["O", "B-PER", "I-PER", "I-ORG"], ["O"]], [["I-PER", "I-PER", "B-ORG", "I-LOC"], ["B-LOC"]]
    )
    _check_against_seqeval(sm, [["O", "O"]], [["O", "O"]])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus)
def test_seqeval_cross_check_random(pairs):
    sm = _seqeval()
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    if any(y_true):
        _check_against_seqeval(sm, y_true, y_pred)
