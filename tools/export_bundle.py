"""Export ``bundles/<name>`` as a self-contained MONAI Model Zoo bundle (folder + zip).

    python tools/export_bundle.py --bundle voxelmorph [--out dist/bundles] [--overwrite]

writes ``OUT/<name>/`` and ``OUT/<name>.zip`` (the zip holds the folder ``<name>/``):

- the bundle's files as git sees them (tracked + untracked-but-not-ignored: no ``runs/``,
  ``eval/``, ``outputs/``, checkpoints, ``__pycache__``), task overlays and their weights included;
- ``morphzoo/``: a copy of the shared library (``common/morphzoo``, no ``__pycache__``) in the
  bundle root, so the configs' ``morphzoo.*`` dotted paths resolve with only the bundle folder on
  ``sys.path`` (Model Zoo CI prepends the bundle folder; ``python -m monai.bundle run`` run from the
  bundle folder has it as ``sys.path[0]``);
- ``datalists/<task>.json`` for the default task and every overlay task (the configs' ``datalist``
  key finds them through ``morphzoo.paths.datalist_path``);
- ``models/model.ts``: TorchScript of ``network_def`` via MONAI's ``ckpt_export`` where it scripts;
- ``large_files.yml`` listing every file over ``--large_file_mb`` (25 MB, Model Zoo's limit);
- ``configs/metadata.json`` checked (``version`` present in ``changelog``) and its
  ``monai_version``/``pytorch_version``/``numpy_version``/``required_packages_version`` set to the
  versions installed here; every change is printed.

The export is atomic: everything is built in a temporary folder inside OUT and renamed into place;
an existing output is kept unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LARGE_FILE_MB = 25.0
# what .gitignore keeps out of bundles; used when the repository is not a git checkout
_EXCLUDED_DIRS = {"runs", "eval", "outputs", "__pycache__", ".pytest_cache"}

__all__ = [
    "bundle_files",
    "bundle_tasks",
    "update_metadata",
    "write_large_files",
    "vendor_morphzoo",
    "export_torchscript",
    "export_bundle",
]


def bundle_files(bundle_dir: Path) -> list[Path]:
    """Files of a bundle relative to it: git's tracked + untracked-not-ignored files, else a walk
    that skips ``runs/ eval/ outputs/ __pycache__`` and checkpoints; never ``method.json`` (the
    source the configs are rendered from in this repository, meaningless in an exported bundle)."""
    return [f for f in _bundle_files(bundle_dir) if f != Path("method.json")]


def _bundle_files(bundle_dir: Path) -> list[Path]:
    bundle_dir = Path(bundle_dir).resolve()
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z", "--", "."],
            cwd=bundle_dir, capture_output=True, check=True, text=True,
        ).stdout
        files = sorted({Path(p) for p in out.split("\0") if p})
        if files:
            return [f for f in files if (bundle_dir / f).is_file() and "__pycache__" not in f.parts]
    except (OSError, subprocess.CalledProcessError):
        pass
    return sorted(
        p.relative_to(bundle_dir)
        for p in bundle_dir.rglob("*")
        if p.is_file()
        and not (_EXCLUDED_DIRS & set(p.relative_to(bundle_dir).parts))
        and p.suffix != ".pyc"
        and not (p.parent.name == "models" and ("ckpt" in p.name or p.name.startswith("checkpoint")))
    )


def bundle_tasks(bundle_dir: Path) -> list[str]:
    """The default task (``task`` of ``configs/inference.json``) followed by every overlay task."""
    cfg = json.loads((Path(bundle_dir) / "configs" / "inference.json").read_text())
    tasks = [cfg["task"]] if isinstance(cfg.get("task"), str) else []
    for p in sorted((Path(bundle_dir) / "configs").glob("task_*.json")):
        t = p.stem[len("task_"):]
        if t not in tasks:
            tasks.append(t)
    return tasks


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def update_metadata(meta: dict) -> tuple[dict, list[str]]:
    """Check ``version``/``changelog`` and pin the versions to the installed ones.

    Returns:
        the updated metadata (a copy) and a list of human-readable changes.

    Raises:
        ValueError: ``version`` or ``changelog`` missing, or ``version`` not a ``changelog`` key.
    """
    meta = json.loads(json.dumps(meta))
    for key in ("version", "changelog"):
        if key not in meta:
            raise ValueError(f"metadata.json: mandatory key '{key}' missing.")
    if meta["version"] not in meta["changelog"]:
        raise ValueError(
            f"metadata.json: version {meta['version']} has no changelog entry (changelog has {sorted(meta['changelog'])})."
        )
    changes: list[str] = []
    import monai
    import numpy
    import torch

    installed = {
        "monai_version": monai.__version__.split("+")[0],
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
    }
    for key, ver in installed.items():
        if meta.get(key) != ver:
            changes.append(f"{key}: {meta.get(key)} -> {ver}")
            meta[key] = ver
    pkgs = meta.get("required_packages_version", {})
    for name, ver in list(pkgs.items()):
        have = _installed_version(name)
        if have is None:
            changes.append(f"required_packages_version[{name}]: {ver} kept (not installed here)")
        elif have != ver:
            changes.append(f"required_packages_version[{name}]: {ver} -> {have}")
            pkgs[name] = have
    return meta, changes


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_large_files(root: Path, threshold_mb: float = LARGE_FILE_MB, url_base: str = "") -> list[str]:
    """Write ``root/large_files.yml`` (Model Zoo format) listing every file under ``root`` larger
    than ``threshold_mb``; write nothing when there is none.

    Each entry has ``path`` (relative to ``root``), ``url`` (``url_base/<path>``, empty when no
    base is given: fill it in when the file is uploaded), ``hash_val`` (md5) and ``hash_type``.

    Returns:
        the relative paths listed.
    """
    root = Path(root)
    limit = threshold_mb * 1024 * 1024
    large = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.stat().st_size > limit)
    if not large:
        return []
    lines = ["large_files:"]
    for rel in large:
        url = f"{url_base.rstrip('/')}/{rel}" if url_base else ""
        lines += [f'  - path: "{rel}"', f'    url: "{url}"', f'    hash_val: "{_md5(root / rel)}"', '    hash_type: "md5"']
    (root / "large_files.yml").write_text("\n".join(lines) + "\n")
    return large


def vendor_morphzoo(dest_root: Path, src: Path | None = None) -> Path:
    """Copy the ``morphzoo`` package (no ``__pycache__``/``*.pyc``) to ``dest_root/morphzoo``."""
    if src is None:
        import morphzoo

        src = Path(morphzoo.__file__).resolve().parent
    dest = Path(dest_root) / "morphzoo"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return dest


def export_torchscript(root: Path, net_id: str = "network_def") -> tuple[bool, str]:
    """``models/model.ts`` from ``models/model.pt`` with MONAI's ``ckpt_export`` (in a subprocess
    whose ``sys.path`` starts with the bundle folder, as Model Zoo CI runs it).

    Returns:
        (success, message); a network that does not script is reported, not raised.
    """
    root = Path(root)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from monai.bundle import ckpt_export; "
        "r = sys.argv[1]; ckpt_export(net_id=sys.argv[2], filepath=r + '/models/model.ts', "
        "ckpt_file=r + '/models/model.pt', meta_file=r + '/configs/metadata.json', "
        "config_file=r + '/configs/inference.json', bundle_root=r)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root), net_id], capture_output=True, text=True, cwd=root)
    if proc.returncode == 0 and (root / "models" / "model.ts").is_file():
        return True, "models/model.ts written"
    (root / "models" / "model.ts").unlink(missing_ok=True)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return False, f"TorchScript export failed: {tail[0]}"


def export_bundle(
    name: str,
    out: str | Path,
    bundles_root: str | Path | None = None,
    overwrite: bool = False,
    large_file_mb: float = LARGE_FILE_MB,
    url_base: str = "",
    torchscript: bool = True,
    datalists_dir: str | Path | None = None,
    log=print,
) -> tuple[Path, Path]:
    """Export ``bundles_root/name`` to ``out/name/`` and ``out/name.zip``.

    Returns:
        (bundle folder, zip path).

    Raises:
        FileNotFoundError: no such bundle, or it lacks configs/metadata.json, configs/inference.json
            or models/model.pt.
        FileExistsError: an output exists and ``overwrite`` is false.
        ValueError: metadata.json fails the version/changelog check.
    """
    src = Path(bundles_root or REPO / "bundles") / name
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
        if not (src / rel).is_file():
            raise FileNotFoundError(f"{src / rel}: missing; bundle '{name}' cannot be exported.")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    final_dir, final_zip = out / name, out / f"{name}.zip"
    existing = [p for p in (final_dir, final_zip) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(map(str, existing))} exists; pass --overwrite to replace it.")

    datalists_dir = Path(datalists_dir or REPO / "datalists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    try:
        stage = tmp / name
        for rel in bundle_files(src):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, stage / rel)
        (stage / "models" / "model.ts").unlink(missing_ok=True)  # rebuilt below from model.pt
        vendor_morphzoo(stage)
        for task in bundle_tasks(stage):
            dl = datalists_dir / f"{task}.json"
            if dl.is_file():
                (stage / "datalists").mkdir(exist_ok=True)
                shutil.copy2(dl, stage / "datalists" / dl.name)
            else:
                log(f"[export] {name}: no datalist {dl} for task {task}")

        meta_path = stage / "configs" / "metadata.json"
        meta, changes = update_metadata(json.loads(meta_path.read_text()))
        meta_path.write_text(json.dumps(meta, indent=4) + "\n")
        log(f"[export] {name}: version {meta['version']} (in changelog)")
        for c in changes:
            log(f"[export] {name}: metadata {c}")

        if torchscript:
            ok, msg = export_torchscript(stage)
            log(f"[export] {name}: {msg}")
        large = write_large_files(stage, large_file_mb, url_base)
        for rel in large:
            log(f"[export] {name}: {rel} > {large_file_mb} MB, listed in large_files.yml")

        zip_tmp = tmp / f"{name}.zip"
        with zipfile.ZipFile(zip_tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(stage.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(tmp).as_posix())
        for p in existing:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        stage.rename(final_dir)
        zip_tmp.rename(final_zip)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[export] {name}: wrote {final_dir} and {final_zip}")
    return final_dir, final_zip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", required=True, help="bundle name under bundles/")
    ap.add_argument("--out", default=str(REPO / "dist" / "bundles"), help="output folder (default dist/bundles)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing export")
    ap.add_argument("--large_file_mb", type=float, default=LARGE_FILE_MB, help="size above which a file goes in large_files.yml")
    ap.add_argument("--url_base", default="", help="download URL prefix written into large_files.yml")
    ap.add_argument("--no_torchscript", action="store_true", help="skip models/model.ts")
    ap.add_argument("--bundles_root", default=None, help="folder holding the bundles (default bundles/)")
    args = ap.parse_args(argv)
    try:
        export_bundle(
            args.bundle, args.out, args.bundles_root, args.overwrite, args.large_file_mb, args.url_base, not args.no_torchscript
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"[export] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
