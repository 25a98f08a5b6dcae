"""Pair building: turn a dataset of preprocessed subjects into (moving, fixed) registration pairs."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["PairDataset", "pair_indices"]

_PAIR_KEYS = ("image", "label", "spacing")


def pair_indices(n: int, mode: str = "all", atlas_index: int = 0) -> list[tuple[int, int]]:
    """Ordered (moving, fixed) index pairs over ``n`` subjects.

    Args:
        n: number of subjects.
        mode: ``"all"``: every ordered pair of distinct subjects (inter-subject); ``"atlas"``:
            every subject to the atlas ``atlas_index``.
        atlas_index: index of the fixed atlas for ``mode="atlas"``.
    """
    if n < 2:
        raise ValueError(f"pairing needs at least 2 subjects, got {n}.")
    if mode == "all":
        return [(i, j) for i in range(n) for j in range(n) if i != j]
    if mode == "atlas":
        if not 0 <= atlas_index < n:
            raise ValueError(f"atlas_index {atlas_index} outside 0..{n - 1}.")
        return [(i, atlas_index) for i in range(n) if i != atlas_index]
    raise ValueError(f"pairing mode must be 'all' or 'atlas', got {mode!r}.")


class PairDataset(Dataset):
    """Registration pairs drawn from a subject dataset.

    Each item is ``{"moving", "fixed", "moving_label", "fixed_label", "moving_spacing",
    "fixed_spacing"}`` taken from the subjects' ``image``/``label``/``spacing``. Random pairs per
    epoch come from sampling this dataset (``RandomSampler(replacement=True, num_samples=...)``),
    so they follow MONAI's ``set_determinism`` seed.

    Args:
        subjects: a (cached) dataset whose items hold ``image`` ``(1, *S)`` and optionally
            ``label`` ``(1, *S)`` and ``spacing``.
        mode: ``"all"`` ordered pairs, ``"atlas"`` (all to ``atlas_index``) or ``"list"`` (``pairs``).
        pairs: explicit (moving, fixed) subject indices for ``mode="list"``.
        atlas_index: the atlas subject for ``mode="atlas"``.
    """

    def __init__(
        self,
        subjects: Sequence[dict[str, Any]] | Dataset,
        mode: str = "all",
        pairs: Sequence[Sequence[int]] | None = None,
        atlas_index: int = 0,
    ) -> None:
        self.subjects = subjects
        if mode == "list":
            if not pairs:
                raise ValueError("mode='list' needs a non-empty `pairs`.")
            self.pairs = [(int(a), int(b)) for a, b in pairs]
        else:
            self.pairs = pair_indices(len(subjects), mode, atlas_index)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, j = self.pairs[index]
        mov, fix = self.subjects[i], self.subjects[j]
        out: dict[str, Any] = {"moving": mov["image"], "fixed": fix["image"]}
        if "label" in mov and "label" in fix:
            out["moving_label"], out["fixed_label"] = mov["label"], fix["label"]
        for name, d in (("moving", mov), ("fixed", fix)):
            if "spacing" in d:
                out[f"{name}_spacing"] = torch.as_tensor(d["spacing"])
        return out

    @staticmethod
    def from_pair_items(items: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """Split datalist pair items (``moving``/``fixed``/``moving_label``/``fixed_label``) into unique
        subject items and index pairs, so each file is loaded (and cached) once."""
        index: dict[tuple, int] = {}
        subjects: list[dict[str, Any]] = []
        pairs: list[tuple[int, int]] = []
        for it in items:
            ids = []
            for role in ("moving", "fixed"):
                subj = {"image": it[role]}
                if it.get(f"{role}_label"):
                    subj["label"] = it[f"{role}_label"]
                for extra in ("slice_axis", "slice_index"):
                    if extra in it:
                        subj[extra] = it[extra]
                if f"{role}_pixel_size_mm" in it:
                    subj["pixel_size_mm"] = it[f"{role}_pixel_size_mm"]
                key = tuple(sorted((k, str(v)) for k, v in subj.items()))
                if key not in index:
                    index[key] = len(subjects)
                    subjects.append(subj)
                ids.append(index[key])
            pairs.append((ids[0], ids[1]))
        return subjects, pairs
