"""``RegistrationRunner``: what a registration bundle's ``inference.json`` runs from the command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from morphzoo.inference.registrar import Registrar
from morphzoo.inference.reports import pair_name
from morphzoo.transforms.io import InputError
from morphzoo.transforms.subjects import read_pair_item

__all__ = ["RegistrationRunner", "datalist_pairs", "cli_errors", "cli_flag"]

logger = logging.getLogger(__name__)


def datalist_pairs(datalist: str | Path, pair_set: str = "test") -> list[dict[str, Any]]:
    """The items of split ``pair_set`` of a datalist file (registration: ``"test"``,
    ``"validation_pairs"``, ``"atlas_test_pairs"``; segmentation: ``"test"``, ``"validation"``...).

    Raises:
        InputError: the file is missing, not JSON, or has no such pair set (the message names it and
            the ``--datalist`` override).
    """
    p = Path(datalist)
    if not p.is_file():
        raise InputError(f"{p}: datalist not found; pass --datalist PATH (or register your own pair with --moving/--fixed).")
    try:
        content = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: datalist is not valid JSON ({e}).") from e
    if pair_set not in content:
        sets = sorted(k for k, v in content.items() if isinstance(v, list) and v and isinstance(v[0], dict))
        raise InputError(f"{p}: datalist has no split {pair_set!r} (splits: {', '.join(sets) or 'none'}).")
    return list(content[pair_set])


def cli_flag(value: object, name: str = "flag") -> bool:
    """A boolean config value as the bundle command line gives it: ``--x false`` arrives as the
    string ``"false"`` (which Python would call true), ``--x False`` as ``False``.

    Raises:
        ValueError: for anything but a bool, 0/1 or true/false/1/0/yes/no (any case).
    """
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise ValueError(f"--{name}: expected true or false, got {value!r}.")


class cli_errors:
    """Context manager for command-line entry points: an :class:`InputError` (a user's bad input)
    ends the process with its one-line message as the last thing printed and exit status 2; the
    traceback goes to the log at debug level. Inside a library call the error propagates as usual
    (use this only around what a command line runs)."""

    def __enter__(self) -> "cli_errors":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, InputError):
            logger.debug("input error", exc_info=(exc_type, exc, tb))
            sys.stderr.flush()
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2)  # a BaseException: MONAI's config runner does not wrap it
        return False


class RegistrationRunner:
    """What a registration bundle's ``inference.json`` runs.

    With ``moving`` and ``fixed`` set (command line ``--moving PATH --fixed PATH``, optionally
    ``--initial_transform AFFINE`` in place of the pre-alignment stage), registers that pair into ``output_dir``
    (``--learn2reg_export true`` adds the field in Learn2Reg's ``disp_*.npz`` format); otherwise registers every pair of ``items``, or of ``pair_set`` of the
    ``datalist`` file (read only then, so registering your own pair needs no datalist and no data
    folder), into ``output_dir/<pair>/``, with relative paths under ``dataset_dir``.

    A user's bad input (:class:`~morphzoo.transforms.InputError`) ends :meth:`run` with one line
    naming the file and the problem, exit status 2, and nothing written (see :class:`cli_errors`).
    """

    def __init__(
        self,
        registrar: Registrar,
        output_dir: str,
        moving: str | None = None,
        fixed: str | None = None,
        moving_label: str | None = None,
        fixed_label: str | None = None,
        overwrite: bool | str = False,
        items: Sequence[Mapping[str, Any]] | None = None,
        num_pairs: int | None = None,
        datalist: str | Path | None = None,
        pair_set: str = "test",
        dataset_dir: str | Path | None = None,
        initial_transform: str | None = None,
        learn2reg_export: bool | str = False,
    ) -> None:
        self.registrar = registrar
        self.output_dir = Path(output_dir)
        self.moving, self.fixed = moving or None, fixed or None
        self.moving_label, self.fixed_label = moving_label or None, fixed_label or None
        self.overwrite = cli_flag(overwrite, "overwrite")
        self.items = None if items is None else list(items)
        self.num_pairs = num_pairs
        self.datalist, self.pair_set, self.dataset_dir = datalist, pair_set, dataset_dir
        self.initial_transform = initial_transform or None
        self.learn2reg = cli_flag(learn2reg_export, "learn2reg_export")

    def run(self) -> list[dict[str, float]]:
        """Register (see the class); exits with status 2 and one line on a user's bad input."""
        with cli_errors():
            return self._run()

    def _run(self) -> list[dict[str, float]]:
        if bool(self.moving) != bool(self.fixed):
            raise InputError("give both --moving and --fixed (or neither, to register the test split).")
        if self.initial_transform and not self.moving:
            raise InputError(f"{self.initial_transform}: --initial_transform belongs to one pair; give --moving and --fixed too.")
        if self.moving:
            return [
                self.registrar.register_files(
                    self.moving, self.fixed, self.output_dir, self.moving_label, self.fixed_label, overwrite=self.overwrite,
                    initial_transform=self.initial_transform, learn2reg=self.learn2reg,
                )
            ]
        items = self.items
        if items is None:
            if self.datalist is None:
                raise InputError("give --moving and --fixed, or a datalist to register its test pairs.")
            items = datalist_pairs(self.datalist, self.pair_set)
        results = []
        for k, item in enumerate(items[: self.num_pairs or None]):
            mov, fix, mlab, flab = read_pair_item(item, self.registrar.labels, root=self.dataset_dir)
            res = self.registrar.register_records(mov, fix, mlab, flab)
            self.registrar.write_outputs(res, mov, fix, mlab, flab, self.output_dir / pair_name(item, k), self.overwrite,
                                         learn2reg=self.learn2reg)
            results.append(res.metrics)
        return results
