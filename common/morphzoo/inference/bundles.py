"""Load a registration bundle's ``Registrar`` through MONAI's bundle API (``monai.bundle.ConfigParser``).

A registration bundle is a folder (anywhere: the caller names it) whose ``configs/inference.json`` defines
a ``registrar`` (a :class:`~morphzoo.inference.Registrar`), a ``network_def`` and a
``load_weights`` expression. Its default task is the config's ``task``; any other task ``T`` is
the overlay ``configs/task_T.json`` merged on top (as ``python -m monai.bundle run --config_file
"['configs/inference.json','configs/task_T.json']"`` does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from morphzoo.inference.registrar import Registrar

__all__ = ["load_bundle_registrar", "list_registration_bundles", "bundle_config_files", "bundle_default_task"]


def list_registration_bundles(root: str | Path) -> dict[str, Path]:
    """Registration bundles in the folder ``root`` (e.g. a checkout's ``bundles/``, passed in by the
    caller): name -> bundle folder. A bundle counts when its ``configs/inference.json`` has a
    ``registrar`` key.
    """
    out: dict[str, Path] = {}
    base = Path(root)
    for d in sorted(base.glob("*")) if base.is_dir() else []:
        cfg = d / "configs" / "inference.json"
        if not cfg.is_file():
            continue
        try:
            content = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(content, dict) and "registrar" in content:
            out[d.name] = d
    return out


def bundle_default_task(bundle_dir: str | Path) -> str | None:
    """The ``task`` key of the bundle's ``configs/inference.json`` (its default task)."""
    content = json.loads((Path(bundle_dir) / "configs" / "inference.json").read_text())
    task = content.get("task")
    return task if isinstance(task, str) else None


def bundle_config_files(bundle_dir: str | Path, task: str | None = None) -> list[Path]:
    """``configs/inference.json`` plus ``configs/task_<task>.json`` when ``task`` is not the default.

    Raises:
        FileNotFoundError: no inference config, or no overlay for a non-default task.
    """
    bdir = Path(bundle_dir)
    base = bdir / "configs" / "inference.json"
    if not base.is_file():
        raise FileNotFoundError(f"{base}: not a bundle (no configs/inference.json).")
    files = [base]
    if task is not None and task != bundle_default_task(bdir):
        overlay = bdir / "configs" / f"task_{task}.json"
        if not overlay.is_file():
            tasks = sorted(p.stem[len("task_") :] for p in (bdir / "configs").glob("task_*.json"))
            raise FileNotFoundError(
                f"{overlay}: bundle '{bdir.name}' has no task '{task}' (default: {bundle_default_task(bdir)}; "
                f"overlays: {tasks or 'none'})."
            )
        files.append(overlay)
    return files


def load_bundle_registrar(
    bundle_dir: str | Path,
    task: str | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    configs: Sequence[str] | None = None,
) -> Registrar:
    """Parse a registration bundle's inference config (with the task overlay), load its weights
    and return its ``registrar``.

    Args:
        bundle_dir: the bundle folder (``bundles/<name>``).
        task: task name; ``None`` or the bundle's default task reads ``inference.json`` alone.
        device: overrides the config's ``device``.
        checkpoint: overrides the config's ``checkpoint`` (weights path).
        overrides: further config keys to set before parsing.
        configs: further overlays of the bundle's ``configs/`` folder read after the task overlay
            (e.g. ``["variant_unsupervised.json"]``).

    Returns:
        the parsed :class:`Registrar`, weights loaded, with extra attributes ``num_parameters``
        (parameters of ``network_def``), ``bundle_name``, ``task`` and ``checkpoint``.

    Raises:
        FileNotFoundError: missing config/overlay, or missing weights (message says how to train).
    """
    from monai.bundle import ConfigParser

    bdir = Path(bundle_dir).resolve()
    files = bundle_config_files(bdir, task)
    for name in configs or ():
        extra = bdir / "configs" / name
        if not extra.is_file():
            raise FileNotFoundError(f"{extra}: no such config overlay in bundle {bdir.name}.")
        files.append(extra)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(bdir)
    if device is not None:
        parser["device"] = torch.device(device)
    if checkpoint is not None:
        parser["checkpoint"] = str(Path(checkpoint).resolve())
    for k, v in (overrides or {}).items():
        parser[k] = v
    if "registrar" not in parser.config:
        raise ValueError(f"{files[0]}: no 'registrar' key; '{bdir.name}' is not a registration bundle.")
    added = str(bdir) not in sys.path and (bdir / "scripts").is_dir()
    if added:  # bundle-specific code, as `monai.bundle run` would see it
        sys.path.insert(0, str(bdir))
    try:
        parser.parse(True)
        ckpt = parser.get_parsed_content("checkpoint") if "checkpoint" in parser.config else None
        if ckpt is not None and not Path(ckpt).is_file():
            raise FileNotFoundError(
                f"{ckpt}: weights of bundle '{bdir.name}' for task '{task or bundle_default_task(bdir)}' not found. "
                "Train it first (configs/train.json) or pass a checkpoint."
            )
        if "load_weights" in parser.config:
            try:
                parser.get_parsed_content("load_weights")
            except RuntimeError as e:  # MONAI wraps expression errors; surface the real one
                raise (e.__cause__ or e) from e
        registrar = parser.get_parsed_content("registrar")
        net = parser.get_parsed_content("network_def")
    finally:
        if added:
            sys.path.remove(str(bdir))
    if not isinstance(registrar, Registrar):
        raise TypeError(f"{bdir.name}: 'registrar' parsed to {type(registrar).__name__}, expected a morphzoo Registrar.")
    registrar.num_parameters = int(sum(p.numel() for p in net.parameters())) if isinstance(net, torch.nn.Module) else None
    registrar.bundle_name = bdir.name
    registrar.task = parser.get_parsed_content("task") if "task" in parser.config else task
    registrar.checkpoint = ckpt
    return registrar
