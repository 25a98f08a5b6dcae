#!/usr/bin/env python
"""Render every bundle's committed configs from one shared source plus the bundle's method file.

What bundles share lives once, in ``tools/bundle_templates/``:

- ``<kind>/*.json``: the base configs of a bundle kind (``registration``: ``train.json``,
  ``inference.json``, ``evaluate.json``, ``multi_gpu_train.json``, ``train_affine.json``;
  ``segmentation``: ``multi_gpu_train.json``, its train/inference configs being the bundle's own);
- ``common/*``: files every bundle carries unchanged (``logging.conf``);
- ``tasks/<task>.json``: the facts of a benchmark task (dimension, grid, labels, affine grid).

What is unique to a bundle lives in ``bundles/<name>/method.json``::

    {
      "kind": "registration",
      "default_task": "hc18_reg2d",
      "params": {...},              # method hyper-parameters: top-level keys of every rendered config
      "network_def": {...},         # the bundle's network
      "train": {...}, "inference": {...}, "evaluate": {...},   # per-file additions / overrides
      "tasks": {"<task>": {...}},   # per-task keys; "train"/"inference" sub-dicts go to that file only
      "overlays": {"<file>.json": {...}}   # optional bundle-specific overlays (e.g. training stages)
    }

Rendering: ``configs/<file>`` = base ⊕ (for train/inference: task facts ⊕ params ⊕ network_def
⊕ the default task's keys) ⊕ ``method[<file>]``, where ⊕ merges dicts recursively and replaces
everything else; ``configs/task_<task>.json`` (one per non-default task) = task facts ⊕ the task's
keys, an overlay of top-level keys as MONAI's ``--config_file "[a, b]"`` merges them; each of
``method["overlays"]`` is written as ``configs/<file>`` unchanged. The value
``"@@bundle_name"`` becomes the bundle's folder name.

The committed files stay complete, self-contained MONAI bundle configs (MONAI Label, the Model
Zoo checks and ``python -m monai.bundle run`` read only them); ``tests/tools/test_render_configs.py``
fails when a committed config differs from its render.

Usage::

    python tools/render_configs.py            # rewrite every bundle's rendered configs
    python tools/render_configs.py --check    # exit 1 and list the files that differ
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "tools" / "bundle_templates"
BUNDLES = ROOT / "bundles"
DEFAULT_FILES = ("train.json", "inference.json")  # configs that carry the default task's keys
SUBSECTIONS = ("train", "inference")


def merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: dicts recursively, anything else replaced (copies)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _substitute(obj: Any, names: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _substitute(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, names) for v in obj]
    if isinstance(obj, str) and obj in names:
        return names[obj]
    return obj


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON ({e}).") from e


def task_facts(task: str) -> dict[str, Any]:
    path = TEMPLATES / "tasks" / f"{task}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (TEMPLATES / "tasks").glob("*.json"))
        raise SystemExit(f"{path}: unknown task {task!r} (known: {', '.join(known)}).")
    return _load(path)


def _task_keys(method: dict[str, Any], task: str, file: str | None) -> dict[str, Any]:
    """The method's keys for ``task``: common ones, plus the ``file`` subsection (``None``: all)."""
    keys = dict(method.get("tasks", {}).get(task, {}))
    subs = {s: keys.pop(s) for s in SUBSECTIONS if s in keys}
    for s, sub in subs.items():
        if file is None or file == f"{s}.json":
            keys = merge(keys, sub)
    return keys


def _reset_default_task_keys(
    method: dict[str, Any], kind_dir: Path, default: str, overlay: dict[str, Any]
) -> dict[str, Any]:
    """Base values of the keys the default task sets and ``overlay`` does not.

    The train/inference configs carry the default task's keys (e.g. ``prealign: net`` for a task
    with a trained affine network); an overlay for another task must put those keys back to the
    template's value, otherwise it silently inherits them.
    """
    base: dict[str, Any] = {}
    for name in DEFAULT_FILES:
        path = kind_dir / name
        if not path.is_file():
            continue
        cfg = merge(_load(path), method.get("params", {}))
        for key in _task_keys(method, default, name):
            if key in overlay or key not in cfg:
                continue
            if key in base and base[key] != cfg[key]:
                raise SystemExit(f"{kind_dir}: {key!r} has different base values in {DEFAULT_FILES}.")
            base[key] = copy.deepcopy(cfg[key])
    missing = [k for k in _task_keys(method, default, None) if k not in overlay and k not in base]
    if missing:
        raise SystemExit(
            f"method.json: task {default!r} sets {missing} which no base config defines, so the "
            "other tasks' overlays cannot put them back; define them in params or in every task."
        )
    return base


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=4) + "\n"


def render_bundle(bundle_dir: Path) -> dict[str, str]:
    """Rendered files of one bundle: ``{relative path: text}``."""
    method = _load(bundle_dir / "method.json")
    kind = method.get("kind")
    kind_dir = TEMPLATES / str(kind)
    if not kind_dir.is_dir():
        raise SystemExit(f"{bundle_dir / 'method.json'}: unknown kind {kind!r}.")
    names = {"@@bundle_name": bundle_dir.name}
    default = method["default_task"]
    out: dict[str, str] = {}
    for common in sorted((TEMPLATES / "common").iterdir()):
        out[f"configs/{common.name}"] = common.read_text()
    for tpl in sorted(kind_dir.glob("*.json")):
        cfg = _load(tpl)
        if tpl.name in DEFAULT_FILES and kind == "registration":
            cfg = merge(cfg, task_facts(default))
            cfg = merge(cfg, method.get("params", {}))
            cfg = merge(cfg, {"network_def": method["network_def"]})
            cfg = merge(cfg, _task_keys(method, default, tpl.name))
        cfg = merge(cfg, method.get(tpl.stem, {}))
        out[f"configs/{tpl.name}"] = dump(_substitute(cfg, names))
    for name, overlay in method.get("overlays", {}).items():
        out[f"configs/{name}"] = dump(_substitute(overlay, names))
    for task in method.get("tasks", {}):
        if task == default:
            continue
        overlay = merge(task_facts(task), _task_keys(method, task, None))
        overlay = merge(_reset_default_task_keys(method, kind_dir, default, overlay), overlay)
        out[f"configs/task_{task}.json"] = dump(_substitute(overlay, names))
    return out


def rendered_bundles(root: Path = BUNDLES) -> dict[Path, dict[str, str]]:
    """Every bundle folder with a ``method.json`` -> its rendered files."""
    return {d: render_bundle(d) for d in sorted(root.iterdir()) if (d / "method.json").is_file()}


def differences(root: Path = BUNDLES) -> list[Path]:
    """Committed files that differ from (or lack) their render."""
    bad = []
    for d, files in rendered_bundles(root).items():
        for rel, text in files.items():
            p = d / rel
            if not p.is_file() or p.read_text() != text:
                bad.append(p)
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report files that differ from their render")
    args = p.parse_args(argv)
    if args.check:
        bad = differences()
        for path in bad:
            print(f"differs from its render: {path.relative_to(ROOT)}")
        if bad:
            print("run `python tools/render_configs.py` and commit the result", file=sys.stderr)
        return 1 if bad else 0
    for d, files in rendered_bundles().items():
        for rel, text in files.items():
            path = d / rel
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                print(f"rendered {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
