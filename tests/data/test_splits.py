"""Deterministic subject splits and fixed test pairs (benchmarks.md, 'Split and pair rules')."""

from __future__ import annotations

import itertools
import random

import pytest

from morphzoo.data import fixed_test_pairs, split_sizes, split_subjects


def test_split_sizes_rounding() -> None:
    assert split_sizes(220) == (176, 22, 22)
    assert split_sizes(665) == (532, 67, 66)  # 66.5 rounds half up, exactly
    assert split_sizes(10) == (8, 1, 1)
    assert split_sizes(0) == (0, 0, 0)
    assert split_sizes(3) == (2, 0, 1)
    with pytest.raises(ValueError, match="sum to 1"):
        split_sizes(10, (0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="three entries"):
        split_sizes(10, (0.9, 0.1))


def test_split_rule_is_the_documented_one() -> None:
    ids = [f"s{i:02d}" for i in range(10)]
    order = sorted(ids)
    random.Random(0).shuffle(order)
    assert split_subjects(ids) == {"train": order[:8], "val": order[8:9], "test": order[9:]}


def test_split_real_hippocampus_ids(hippocampus_items: list[dict]) -> None:
    ids = [it["subject"] for it in hippocampus_items]
    assert len(ids) == 220
    split = split_subjects(ids)
    assert [len(split[k]) for k in ("train", "val", "test")] == [176, 22, 22]
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(ids)
    # deterministic, and independent of the order the ids come in
    assert split_subjects(list(reversed(ids))) == split
    assert split_subjects(ids, seed=0) == split
    assert split_subjects(ids, seed=1) != split


def test_split_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicated"):
        split_subjects(["a", "b", "a"])


def test_fixed_test_pairs(hippocampus_items: list[dict]) -> None:
    test_ids = split_subjects([it["subject"] for it in hippocampus_items])["test"]
    pairs = fixed_test_pairs(test_ids)
    assert len(pairs) == 100
    assert len(set(pairs)) == 100
    assert all(m != f and m in test_ids and f in test_ids for m, f in pairs)
    assert fixed_test_pairs(list(reversed(test_ids))) == pairs
    expected = random.Random(0).sample(list(itertools.permutations(sorted(test_ids), 2)), 100)
    assert pairs == expected


def test_fixed_test_pairs_fewer_than_n() -> None:
    pairs = fixed_test_pairs(["c", "a", "b"], n=100)
    assert len(pairs) == 6
    assert sorted(pairs) == sorted(itertools.permutations("abc", 2))
    assert fixed_test_pairs(["a"], n=5) == []
