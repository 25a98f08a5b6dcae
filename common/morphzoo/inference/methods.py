"""The registry of registration methods: every name the benchmark, the demo and the MONAI Label app
can run, built into a :class:`~morphzoo.inference.Registrar` the same way for all of them.

A method spec is one of:

- ``identity``: no registration (the floor);
- a key of :data:`morphzoo.inference.baselines.BASELINES` (``ants_syn``, ``ants_synra``,
  ``ants_affine``, ``elastix_bspline``, ``elastix_affine_bspline``, ``convexadam``);
- a registration bundle found in the bundles folder, optionally with config overrides in
  brackets, ``searchmorph[prealign=none]`` or ``voxelmorph[refine_steps=0;prealign=opt]`` (the
  stage ablations of a bundle's pipeline); ``config=FILE[+FILE]`` reads overlays of the bundle's
  ``configs/`` folder after the task overlay, ``searchmorph[config=variant_unsupervised.json]``
  (a variant with list-valued keys, which brackets cannot hold); the spec is the method's row name;
- ``NAME=module:attr``: an importable ``field_fn(moving, fixed) -> ddf`` or a Registrar.

Bundles are looked up in a folder the caller passes (``bundles_dir``): the library does not
assume where a checkout is.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from morphzoo.inference.registrar import Registrar

__all__ = ["TASKS", "BASELINE_DEFAULTS", "parse_method_spec", "build_methods", "bundle_has_weights"]

#: network grid of the baselines and plug-ins (bundles use their own config's), and the metrics of each task's table
TASKS: dict[str, dict[str, Any]] = {
    "hippocampus3d": {
        "spatial_size": (64, 64, 64),
        "metrics": ("dice", "dice_1", "dice_2", "hd95", "hd95_l2r", "assd", "folding_percent", "sdlogj", "sdlogj_l2r", "ncc", "time_ms"),
    },
    "hippocampus2d": {
        "spatial_size": (64, 64),
        "metrics": ("dice", "dice_1", "dice_2", "hd95", "assd", "folding_percent", "sdlogj", "ncc", "time_ms"),
    },
    "hc18_reg2d": {
        "spatial_size": (160, 240),
        "metrics": ("dice", "hd", "hd95", "assd", "folding_count", "folding_percent", "jacobian_std", "ncc", "ssim", "nmi", "time_ms"),
    },
}
#: the classical rows of a default run (every key of ``BASELINES`` can be named)
BASELINE_DEFAULTS = ("ants_syn", "elastix_bspline")

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(\[(?P<over>[^\]]*)\])?$")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_method_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"name[k=v;k2=v2]"`` -> ``(name, None, {k: v, k2: v2})``; ``"NAME=module:attr"`` -> ``(NAME, "module:attr", {})``.

    Values are JSON where they parse (``0``, ``true``, ``[1, 2]``), else strings.
    """
    spec = spec.strip()
    if "=" in spec and "[" not in spec.split("=", 1)[0]:
        name, _, target = spec.partition("=")
        return name, target, {}
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"method spec {spec!r}: expected NAME, NAME[key=value;...] or NAME=module:attr.")
    over: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (m.group("over") or "").split(";"))):
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"method spec {spec!r}: override {part!r} is not key=value.")
        over[k.strip()] = _value(v.strip())
    return m.group("name"), None, over


def bundle_has_weights(bundle_dir: str | Path, task: str) -> bool:
    """Whether a registration bundle ships weights (and, for a non-default task, an overlay) for ``task``."""
    from morphzoo.inference.bundles import bundle_default_task

    bdir = Path(bundle_dir)
    if task == bundle_default_task(bdir):
        return (bdir / "models" / "model.pt").is_file()
    return (bdir / "configs" / f"task_{task}.json").is_file() and (bdir / "models" / f"model_{task}.pt").is_file()


def _plugin(target: str, spatial_dims: int, size: Sequence[int], labels: Sequence[int], device) -> Registrar:
    mod, _, attr = target.partition(":")
    if not mod or not attr:
        raise ValueError(f"{target!r}: expected module:attr")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, Registrar):
        return obj
    if not callable(obj):
        raise TypeError(f"{target} is neither a Registrar nor a field_fn(moving, fixed) -> ddf.")
    return Registrar(None, spatial_dims, spatial_size=size, labels=labels, device=device, size_multiple=1, field_fn=obj)


def build_methods(
    names: Sequence[str] | None,
    task: str,
    spatial_dims: int,
    labels: Sequence[int],
    device: str | torch.device | None = None,
    threads: int | None = None,
    bundles_dir: str | Path | None = None,
) -> tuple[dict[str, Registrar], dict[str, str]]:
    """Build the Registrars of ``names`` (method specs, see the module) for ``task``.

    With ``names=None`` every available method is taken (identity, the default baselines, every
    bundle under ``bundles_dir`` with weights for the task) and the unavailable ones are returned
    in ``skipped`` (name -> reason); a named method that cannot be built raises ``SystemExit``
    naming it.

    Returns:
        ``(methods, skipped)``: row name -> Registrar, and name -> reason.
    """
    from morphzoo.inference.baselines import BASELINES, baseline_registrar
    from morphzoo.inference.bundles import list_registration_bundles, load_bundle_registrar
    from morphzoo.inference.evaluate import identity_registrar

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}.")
    bundles = list_registration_bundles(bundles_dir) if bundles_dir is not None else {}
    explicit = names is not None
    if names is None:
        names = ["identity", *BASELINE_DEFAULTS, *[b for b, d in bundles.items() if bundle_has_weights(d, task)]]
    size = TASKS[task]["spatial_size"]
    methods: dict[str, Registrar] = {}
    skipped: dict[str, str] = {}
    for spec in names:
        try:
            name, target, overrides = parse_method_spec(spec)
            row = name if target else spec.strip()
            if row in methods:
                raise ValueError(f"method {row!r} given twice.")
            if target:
                methods[row] = _plugin(target, spatial_dims, size, labels, device)
            elif name == "identity":
                methods[row] = identity_registrar(spatial_dims, labels, device)
                methods[row].num_parameters = 0
            elif name in BASELINES:
                kw = {"number_of_threads": threads} if name.startswith("elastix") and threads else {}
                methods[row] = baseline_registrar(name, spatial_dims, size, labels, device, **{**kw, **overrides})
            elif name in bundles:
                configs = overrides.pop("config", None)  # a bundle's own overlay(s), e.g. a variant's weights
                configs = [c for c in str(configs).split("+") if c] if configs else None
                methods[row] = load_bundle_registrar(bundles[name], task=task, device=device, overrides=overrides, configs=configs)
                if methods[row].spatial_dims != spatial_dims:
                    raise ValueError(f"bundle {name} registers {methods[row].spatial_dims}D images, task {task} is {spatial_dims}D.")
            else:
                raise ValueError(
                    f"unknown method {name!r}: choose from identity, {', '.join(BASELINES)}, "
                    f"{', '.join(bundles) or '(no bundles in ' + str(bundles_dir) + ')'} or NAME=module:attr."
                )
        except Exception as e:
            methods.pop(spec, None)
            if explicit:
                raise SystemExit(f"benchmark: cannot use method {spec!r}: {type(e).__name__}: {e}") from e
            skipped[spec] = f"{type(e).__name__}: {e}"
    return methods, skipped
