"""Method plugins for the benchmark CLI tests (``--methods NAME=bench_plugins:ATTR``).

Not a test module: the CLI imports it from ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib

import torch

_seen: list[str] = []


def fail_on_second_pair(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Zero field for the first pair, ``RuntimeError`` for the second distinct pair, zero again after.

    Pairs are told apart by the fixed image's content (the Registrar's untimed warm-up call sees
    the first pair's images again, so a call counter would not do).
    """
    key = hashlib.sha1(fixed.detach().cpu().numpy().tobytes()).hexdigest()
    if key not in _seen:
        _seen.append(key)
    if _seen.index(key) == 1:
        raise RuntimeError("deliberate failure on the second pair")
    return torch.zeros((moving.shape[0], moving.ndim - 2, *moving.shape[2:]), dtype=moving.dtype)
