"""Remedies as protocol variants: augment (source texts) and adversarial (FGM); the interface they
share is tested in test_remedy_interface.py."""

from __future__ import annotations

import dataclasses

import pytest

import shiftbench
from shiftbench.data.datasets import SplitData
from shiftbench.registry.protocol import load_protocol
from shiftbench.remedies.augment import augment_split


def test_plain_protocol_hashes_are_unchanged_by_the_remedy_fields():
    # Pinned: these hashes are in stored results; adding fields must not change them.
    assert load_protocol("standard").hash == "eff8f18e4c31d47c"
    assert load_protocol("quick").hash == "5b0d33723bdcea5c"
    hashes = {load_protocol(n).hash for n in ("standard", "augment", "adversarial")}
    assert len(hashes) == 3
    adv = load_protocol("adversarial")
    assert adv.hash != dataclasses.replace(adv, adversarial_epsilon=0.5).hash


def test_augment_split_is_seeded_keeps_labels_and_changes_about_half():
    texts = tuple(f"company profit rose {i} percent in the quarter" for i in range(200))
    split = SplitData(texts, ("positive",) * 200)
    a, b, c = augment_split(split, 0, 0.3), augment_split(split, 0, 0.3), augment_split(split, 1, 0.3)
    assert a == b and a != c and a.labels == split.labels
    changed = sum(x != y for x, y in zip(a.texts, texts))
    assert 40 < changed < 110  # each text is replaced with probability 1/2, and a variant may equal it
    assert any("@user" in t for t in a.texts) and any("https://t.co/" in t for t in a.texts)
    assert any("#" in t for t in a.texts)


def _losses(result) -> list[tuple[float, int, float]]:
    return [(h["learning_rate"], h["epoch"], h["train_loss"]) for h in result.history]


@pytest.mark.parametrize("remedy", ["augment", "adversarial"])
def test_remedy_runs_end_to_end_and_differs_from_plain(tiny_env, tmp_path, remedy):
    proto = tmp_path / f"{remedy}.yaml"
    proto.write_text(f"base: {tiny_env['protocol']}\nremedy: {remedy}\n")
    plain = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env).new_results[0]
    env = {**tiny_env, "protocol": str(proto)}
    fixed = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **env).new_results[0]
    assert fixed.protocol == remedy and fixed.protocol_hash != plain.protocol_hash
    assert fixed.finetune_id != plain.finetune_id  # a remedy is its own fine-tune
    # It trained differently: the per-epoch training losses differ (not the whole history, whose
    # wall-clock seconds differ between any two runs).
    assert _losses(fixed) != _losses(plain)
    # Reproducible under the seed.
    again = shiftbench.run(
        pairs=["news_to_forum"], seeds=[0], **{**env, "results_dir": tmp_path / "r2", "cache_dir": tmp_path / "c2"}
    ).new_results[0]
    assert again.ood_scores == fixed.ood_scores and again.history[-1]["train_loss"] == fixed.history[-1]["train_loss"]
