"""Displacement fields in the Learn2Reg submission format (``disp_FFFF_0000_MMMM_0000.npz``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["learn2reg_name", "learn2reg_array"]


def learn2reg_name(item: Mapping[str, Any]) -> str:
    """``disp_FFFF_0000_MMMM_0000.npz`` from the pair's subject numbers (fixed first), read from
    ``<role>_subject`` or the last number of the file name.

    Raises:
        ValueError: if a name holds no number.
    """

    def number(role: str) -> int:
        subj = str(item.get(f"{role}_subject") or Path(str(item[role])).name.split(".")[0])
        m = re.search(r"(\d+)\D*$", subj)
        if not m:
            raise ValueError(f"no subject number in {subj!r}")
        return int(m.group(1))

    return f"disp_{number('fixed'):04d}_0000_{number('moving'):04d}_0000.npz"


def learn2reg_array(ddf: Any) -> np.ndarray:
    """Our ``(N, *S)`` ddf as Learn2Reg's channel-last ``(*S, N)`` float32 array: the same values,
    so that ``map_coordinates(moving, identity + disp)`` (with ``disp`` moved back to the first
    axis) is the warped moving image."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(ddf, dtype=np.float32), 0, -1))
