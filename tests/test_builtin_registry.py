"""Invariants over the whole built-in registry, parametrized so a new entry is tested for free."""

from __future__ import annotations

import pytest

from shiftbench.data.datasets import load_domain, pair_label_space
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import builtin_protocols, load_protocol

from .conftest import REAL_DATA_DIR

CATALOG = load_catalog(include_env=False)
needs_mirror = pytest.mark.skipif(not REAL_DATA_DIR.is_dir(), reason=f"data mirror not found at {REAL_DATA_DIR}")


@pytest.mark.parametrize("name", CATALOG.datasets.names())
def test_dataset_metadata_is_complete(name):
    spec = CATALOG.datasets.get(name)
    assert spec.license and spec.license != "unknown" or spec.license.startswith("unknown (")
    assert spec.domain != "unspecified"
    assert spec.description


@needs_mirror
@pytest.mark.parametrize("name", CATALOG.datasets.names())
def test_dataset_loads_from_the_mirror(name):
    spec = CATALOG.datasets.get(name)
    if spec.optional and not (REAL_DATA_DIR / spec.local_dirname).is_dir():
        pytest.skip(f"{name} is optional and not in the mirror (e.g. not redistributable)")
    roles = ("train", "validation", "test") if "train" in spec.splits else tuple(spec.splits)
    domain = load_domain(spec, REAL_DATA_DIR, roles)
    assert set(domain.splits) == set(roles)
    for split in domain.splits.values():
        assert len(split) > 0
        if spec.task != "token-classification":
            assert all(isinstance(t, str) and t.strip() for t in split.texts)
        else:  # a few real sentences hold an empty-string word (BTC test), so no strip() check
            assert all(len(w) > 0 for w in split.texts)
            assert all(len(w) == len(tags) for w, tags in zip(split.texts, split.labels))
            assert {t for tags in split.labels for t in tags} <= set(domain.label_names)
    assert len(domain.label_names) >= 2
    # Carving is deterministic and disjoint.
    again = load_domain(spec, REAL_DATA_DIR, roles)
    assert again.fingerprint == domain.fingerprint and again.splits == domain.splits


@needs_mirror
@pytest.mark.parametrize("name", CATALOG.pairs.names())
def test_pair_label_spaces_agree(name):
    pair = CATALOG.pairs.get(name)
    if any(
        CATALOG.datasets.get(d).optional and not (REAL_DATA_DIR / CATALOG.datasets.get(d).local_dirname).is_dir()
        for d in (pair.source, *pair.targets)
    ):
        pytest.skip(f"{name} needs an optional dataset that is not in the mirror")
    source = load_domain(CATALOG.datasets.get(pair.source), REAL_DATA_DIR, ("train", "validation", "test"))
    targets = [load_domain(CATALOG.datasets.get(t), REAL_DATA_DIR, ("test",)) for t in pair.targets]
    space = pair_label_space(source, targets, name)
    if pair.task == "token-classification":
        assert space == ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")  # the shared PER/ORG/LOC space
    else:
        assert space == tuple(sorted(space))
        assert {"negative", "positive"} <= set(space)


@pytest.mark.parametrize("name", CATALOG.suites.names())
def test_suites_reference_known_pairs_and_protocols(name):
    suite = CATALOG.suites.get(name)
    assert all(p in CATALOG.pairs for p in suite.pairs)
    assert suite.protocol is None or suite.protocol in builtin_protocols()
    assert all(m in CATALOG.models for m in suite.models)


@pytest.mark.parametrize("name", builtin_protocols())
def test_builtin_protocols_load_with_distinct_hashes(name):
    p = load_protocol(name)
    others = {load_protocol(o).hash for o in builtin_protocols() if o != name}
    assert p.hash not in others


def test_fpb_is_carved_80_10_10_stratified():
    if not REAL_DATA_DIR.is_dir():
        pytest.skip(f"data mirror not found at {REAL_DATA_DIR}")
    d = load_domain(CATALOG.datasets.get("fpb"), REAL_DATA_DIR, ("train", "validation", "test"))
    n = {r: len(s) for r, s in d.splits.items()}
    assert sum(n.values()) == 4846
    assert n["test"] == n["validation"] == 484
    share = {r: s.labels.count("neutral") / len(s) for r, s in d.splits.items()}
    assert max(share.values()) - min(share.values()) < 0.01  # stratified: ~59 % neutral everywhere
    texts = {r: set(s.texts) for r, s in d.splits.items()}
    # FPB repeats a few sentences in the source file; carving splits rows, never duplicates them.
    assert len(texts["train"] & texts["test"]) <= 8
