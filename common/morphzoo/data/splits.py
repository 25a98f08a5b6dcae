"""Deterministic subject splits and fixed test pairs, shared by every MorphZoo tool.

The rules are those of ``benchmarks.md`` ("Split and pair rules"):

- subjects are sorted, shuffled with ``random.Random(seed)`` (seed 0 for the benchmarks), then
  cut into train / val / test;
- the fixed test pairs are ordered pairs ``(moving, fixed)`` of distinct subjects drawn with
  ``random.Random(seed)`` without repetition; ``--pairs N`` takes the first ``N`` of them.

Both functions depend only on the *set* of ids, never on the order they are given in.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

__all__ = ["SPLIT_NAMES", "split_sizes", "split_subjects", "fixed_test_pairs"]

SPLIT_NAMES = ("train", "val", "test")


def _check_ids(ids: Sequence[str]) -> list[str]:
    """Return the ids sorted; raise if there are duplicates or non-string ids."""
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise TypeError(f"subject ids must be strings, got {bad[:3]!r}")
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"subject ids must be unique, duplicated: {dup[:5]}")
    return sorted(ids)


def _round_half_up(x: Fraction) -> int:
    """Round a non-negative exact fraction to the nearest integer, halves upwards."""
    return math.floor(x + Fraction(1, 2))


def split_sizes(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Number of subjects in train / val / test for ``n`` subjects.

    The rounding rule, exactly: each fraction is taken as the exact decimal it is written as
    (``Fraction(str(f))``, so ``0.1`` is exactly one tenth, free of binary floating-point
    error); ``n_train = round_half_up(f_train * n)``, ``n_val = round_half_up(f_val * n)``,
    and test takes the rest, ``n_test = n - n_train - n_val``. For example 220 subjects give
    176 / 22 / 22 and 665 give 532 / 67 (66.5 rounded up) / 66.

    Args:
        n: number of subjects (>= 0).
        fractions: three non-negative fractions (train, val, test) summing to 1.

    Returns:
        ``(n_train, n_val, n_test)``.

    Raises:
        ValueError: wrong number of fractions, a negative fraction, or a sum other than 1.
    """
    if len(fractions) != 3:
        raise ValueError(f"fractions must have three entries (train, val, test), got {tuple(fractions)!r}")
    exact = [Fraction(str(float(f))) for f in fractions]
    if any(f < 0 for f in exact):
        raise ValueError(f"fractions must be non-negative, got {tuple(fractions)!r}")
    if abs(float(sum(exact)) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {tuple(fractions)!r} (sum {float(sum(exact))})")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    n_train = min(n, _round_half_up(exact[0] * n))
    n_val = min(n - n_train, _round_half_up(exact[1] * n))
    return n_train, n_val, n - n_train - n_val


def split_subjects(
    ids: Sequence[str], seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[str]]:
    """Split subject ids into train / val / test, deterministically.

    The ids are sorted, shuffled in place with ``random.Random(seed).shuffle``, then cut in
    that shuffled order: the first ``n_train`` are train, the next ``n_val`` val, the rest
    test (sizes from :func:`split_sizes`). Each returned list keeps the shuffled order.

    Args:
        ids: unique subject ids (any order).
        seed: seed of ``random.Random``; the benchmarks use 0.
        fractions: train, val, test fractions.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        ValueError: duplicated ids or invalid fractions.
        TypeError: an id is not a string.
    """
    order = _check_ids(ids)
    random.Random(seed).shuffle(order)
    n_train, n_val, _ = split_sizes(len(order), fractions)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def fixed_test_pairs(ids: Sequence[str], n: int = 100, seed: int = 0) -> list[tuple[str, str]]:
    """Draw ``n`` distinct ordered pairs ``(moving, fixed)`` of distinct subjects, deterministically.

    All ordered pairs of the sorted ids are enumerated (``itertools.permutations(sorted(ids), 2)``,
    i.e. lexicographic order), then ``random.Random(seed).sample(pairs, min(n, len(pairs)))``
    draws them without repetition. When fewer than ``n`` ordered pairs exist, all of them
    are returned, in the drawn order. Because ``random.sample`` draws its picks one after the
    other, the first ``k`` pairs for a given ``n`` are not in general those for ``n = k``:
    take a prefix of the returned list (as ``--pairs N`` does) rather than calling with a smaller ``n``.

    Args:
        ids: unique subject ids (any order).
        n: number of pairs wanted (>= 0).
        seed: seed of ``random.Random``; the benchmarks use 0.

    Returns:
        List of ``(moving_id, fixed_id)`` tuples, ``moving_id != fixed_id``.

    Raises:
        ValueError: duplicated ids or negative ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pairs = list(itertools.permutations(_check_ids(ids), 2))
    return random.Random(seed).sample(pairs, min(n, len(pairs)))
