"""Run Model Zoo CI's checks on an exported bundle in a fresh virtual environment without MorphZoo.

    python tools/check_bundle.py dist/bundles/voxelmorph.zip [--venv DIR] [--venv_root DIR]

The environment is created with ``python -m venv`` (no system site-packages), ``torch`` is
installed first (``torch==<pytorch_version>``), then ``monai==<monai_version>``,
``numpy==<numpy_version>``, every ``required_packages_version`` entry pinned, and ``jsonschema``
(needed by ``verify_metadata``). Without ``--venv`` it lives in
``--venv_root/<hash of the requirements and the Python version>`` (default
``~/.cache/morphzoo/venvs``), so CI can cache that folder and any change of requirements builds a
new one. ``morphzoo`` must not be importable there except from the bundle's vendored copy.

Checks, each printed as ``PASS``/``FAIL`` with its time:

- ``isolation``: ``import morphzoo`` fails in the venv outside the bundle folder;
- ``verify_metadata``, ``verify_net_in_out`` (``network_def``), ``ckpt_export`` (``network_def``,
  to a temporary file; ``models/model.ts`` is also loaded when present, and ``morphzoo`` must
  have come from the bundle folder): run as Model Zoo CI (``ci/verify_bundle.py``) runs them, in
  one Python process whose ``sys.path`` starts with the bundle folder; the schema comes from
  ``schemas/`` (offline: no download); times exclude the one-off ``monai`` import;
- ``run``: ``python -m monai.bundle run --config_file configs/inference.json`` started in the bundle
  folder (``python -m`` puts the working directory on ``sys.path``; no ``PYTHONPATH``) on one real
  case from the default task's datalist (test item 0): ``--moving/--fixed/--moving_label`` for a
  registration bundle (``registrar`` key), ``--image`` for a segmentation bundle (``segmenter``);
  the expected output files must exist.

Exit status 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # also when loaded by file path (tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from venv_cache import DEFAULT_VENV_ROOT, READY, ensure_venv, venv_key  # noqa: E402,F401  (shared with label_app.py)
from venv_cache import clean_env as _clean_env  # noqa: E402
from venv_cache import venv_python as _venv_python  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "schemas" / "meta_schema_20240725.json"
REGISTRATION_OUTPUTS = ("warped.nii.gz", "ddf.nii.gz", "jacobian.nii.gz", "metrics.json")
SEGMENTATION_OUTPUTS = ("mask.nii.gz",)

__all__ = ["requirements", "venv_key", "ensure_venv", "find_bundle_root", "real_case", "check_bundle"]

# what Model Zoo CI's ci/verify_bundle.py does, run inside the venv in one process (as CI does);
# prints one JSON line per check
_CI_CHECK = r"""
import json, os, sys, time, traceback
bundle, schema, tmp = sys.argv[1:4]
sys.path = [bundle] + sys.path  # as ci/verify_bundle.py: the bundle folder first on sys.path
from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out
meta = os.path.join(bundle, "configs", "metadata.json")
cfg = os.path.join(bundle, "configs", "inference.json")

def _ckpt_export():
    ckpt_export(net_id="network_def", filepath=os.path.join(tmp, "verify_model.ts"),
                ckpt_file=os.path.join(bundle, "models", "model.pt"), meta_file=meta, config_file=cfg, bundle_root=bundle)
    import torch
    ts = os.path.join(bundle, "models", "model.ts")
    if os.path.exists(ts):
        torch.jit.load(ts)  # the provided TorchScript file loads
    import morphzoo
    assert os.path.realpath(morphzoo.__file__).startswith(os.path.realpath(bundle)), morphzoo.__file__

checks = {
    "verify_metadata": lambda: verify_metadata(meta_file=meta, filepath=schema),
    "verify_net_in_out": lambda: verify_net_in_out(net_id="network_def", meta_file=meta, config_file=cfg, bundle_root=bundle),
    "ckpt_export": _ckpt_export,
}
for name, fn in checks.items():
    t0 = time.perf_counter()
    try:
        fn()
        err = ""
    except BaseException:
        err = traceback.format_exc()[-3000:]
    print("MZCHECK " + json.dumps({"name": name, "ok": not err, "seconds": time.perf_counter() - t0, "error": err}), flush=True)
"""
CI_CHECKS = ("verify_metadata", "verify_net_in_out", "ckpt_export")


def requirements(meta: dict) -> tuple[str, list[str]]:
    """(torch requirement, the other pinned requirements) from a bundle's metadata."""
    torch_req = f"torch=={meta['pytorch_version']}"
    reqs = [f"monai=={meta['monai_version']}", f"numpy=={meta['numpy_version']}"]
    reqs += [f"{k}=={v}" for k, v in sorted(meta.get("required_packages_version", {}).items())]
    try:
        reqs.append(f"jsonschema=={importlib.metadata.version('jsonschema')}")
    except importlib.metadata.PackageNotFoundError:
        reqs.append("jsonschema")
    return torch_req, reqs


def find_bundle_root(path: Path, workdir: Path) -> Path:
    """The bundle folder of an exported folder or zip (extracted into ``workdir``)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            zf.extractall(workdir)
        path = workdir
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    roots = [p.parent.parent for p in path.glob("*/configs/metadata.json")]
    if len(roots) != 1:
        raise FileNotFoundError(f"{path}: expected one bundle folder with configs/metadata.json, found {len(roots)}.")
    return roots[0].resolve()


def real_case(bundle: Path, data_root: Path | None = None, datalists_dir: Path | None = None) -> tuple[list[str], tuple[str, ...]]:
    """Command-line overrides for one real case (test item 0 of the default task's datalist) and
    the output files they must produce."""
    from morphzoo.paths import data_root as _data_root

    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    task = cfg.get("task")
    dl = Path(datalists_dir or REPO / "datalists") / f"{task}.json"
    if not dl.is_file():
        dl = bundle / "datalists" / f"{task}.json"
    item = json.loads(dl.read_text())["test"][0]
    root = Path(data_root or _data_root())
    if "registrar" in cfg:
        args = ["--moving", str(root / item["moving"]), "--fixed", str(root / item["fixed"])]
        outputs = REGISTRATION_OUTPUTS
        if item.get("moving_label"):
            args += ["--moving_label", str(root / item["moving_label"])]
            outputs = outputs + ("warped_label.nii.gz",)
        return args, outputs
    if "segmenter" in cfg:
        return ["--image", str(root / item["image"])], SEGMENTATION_OUTPUTS
    raise ValueError(f"{bundle.name}: inference.json has neither 'registrar' nor 'segmenter'.")


def _step(name: str, cmd: list[str], cwd: Path, results: dict, log, check_files: list[Path] | None = None) -> bool:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    missing = [str(p) for p in (check_files or []) if not p.is_file()]
    ok = proc.returncode == 0 and not missing
    results[name] = {"ok": ok, "seconds": round(dt, 1)}
    log(f"[check] {'PASS' if ok else 'FAIL'} {name} ({dt:.1f} s)")
    if not ok:
        why = f"missing outputs {missing}" if proc.returncode == 0 else f"exit {proc.returncode}"
        log(f"[check]   {name}: {why}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return ok


def _ci_checks(py: str, bundle: Path, tmp: Path, results: dict, log) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([py, "-c", _CI_CHECK, str(bundle), str(tmp / "schema.json"), str(tmp)],
                          cwd=tmp, env=_clean_env(), capture_output=True, text=True)
    log(f"[check] Model Zoo CI checks process: {time.perf_counter() - t0:.1f} s (monai import included)")
    done = {}
    for line in proc.stdout.splitlines():
        if line.startswith("MZCHECK "):
            r = json.loads(line[len("MZCHECK "):])
            done[r["name"]] = r
    for name in CI_CHECKS:
        r = done.get(name, {"ok": False, "seconds": 0.0, "error": f"not run (exit {proc.returncode}):\n{proc.stderr[-3000:]}"})
        results[name] = {"ok": r["ok"], "seconds": round(r["seconds"], 1)}
        log(f"[check] {'PASS' if r['ok'] else 'FAIL'} {name} ({r['seconds']:.1f} s)")
        if not r["ok"]:
            log(f"[check]   {name}: {r['error']}")


def check_bundle(
    path: str | Path,
    venv: str | Path | None = None,
    venv_root: str | Path = DEFAULT_VENV_ROOT,
    schema: str | Path = SCHEMA,
    data_root: str | Path | None = None,
    log=print,
) -> dict[str, dict]:
    """Run every check on the exported bundle at ``path`` (folder or zip); return
    ``{check: {"ok": bool, "seconds": float}}``."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mz_check_") as tmpdir:
        tmp = Path(tmpdir)
        bundle = find_bundle_root(Path(path), tmp / "bundle")
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        t0 = time.perf_counter()
        env_dir = ensure_venv(*requirements(meta), venv=Path(venv) if venv else None, venv_root=Path(venv_root), log=log)
        results["venv"] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1)}
        py = str(_venv_python(env_dir))
        shutil.copy2(schema, tmp / "schema.json")
        log(f"[check] bundle {bundle.name} ({bundle}) with {py}")

        _step("isolation", [py, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('morphzoo') is not None)"],
              tmp, results, log)
        _ci_checks(py, bundle, tmp, results, log)

        case, outputs = real_case(bundle, Path(data_root) if data_root else None)
        out_dir = tmp / "out"
        cmd = [py, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
               "--meta_file", "configs/metadata.json", "--bundle_root", str(bundle), "--output_dir", str(out_dir), *case]
        if (bundle / "configs" / "logging.conf").is_file():
            cmd += ["--logging_file", "configs/logging.conf"]
        _step("run", cmd, bundle, results, log, [out_dir / o for o in outputs])
    ok = all(r["ok"] for r in results.values())
    log(f"[check] {'PASS' if ok else 'FAIL'} {bundle.name}: " + ", ".join(f"{k} {'ok' if r['ok'] else 'FAILED'}" for k, r in results.items()))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", nargs="+", help="exported bundle folder(s) or zip(s)")
    ap.add_argument("--venv", default=None, help="use/create this venv instead of the hashed cache folder")
    ap.add_argument("--venv_root", default=str(DEFAULT_VENV_ROOT), help="cache folder of hashed venvs")
    ap.add_argument("--schema", default=str(SCHEMA), help="metadata schema file (no download)")
    ap.add_argument("--data_root", default=None, help="data root for the real case (default morphzoo.paths.data_root())")
    args = ap.parse_args(argv)
    ok = True
    for b in args.bundle:
        res = check_bundle(b, args.venv, args.venv_root, args.schema, args.data_root)
        ok &= all(r["ok"] for r in res.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
