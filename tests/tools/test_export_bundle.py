"""``tools/export_bundle.py`` and ``tools/check_bundle.py``.

Unit tests export the voxelmorph bundle without TorchScript (seconds) and check: the vendored
``morphzoo`` is importable with only the bundle folder on ``sys.path`` (the development copy
removed from it) and is the one imported; no ``__pycache__``; the zip's content; the
``large_files.yml`` logic (a small threshold stands in for 25 MB); metadata version checks; an
existing output is refused without ``--overwrite``.

The integration test exports every bundle under ``bundles/`` that has ``models/model.pt`` and runs
``check_bundle`` on each, all in ONE shared virtual environment without MorphZoo (cached in
``$MORPHZOO_VENV_ROOT`` or ``~/.cache/morphzoo/venvs/<hash>``; the first build takes about
100 s on 2 cores, offline from the local torch wheel and the package registry).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, load_tool



export_tool = load_tool("export_bundle")
check_tool = load_tool("check_bundle")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("export")
    return export_tool.export_bundle("voxelmorph", out, torchscript=False, log=lambda *a: None)


def test_vendored_morphzoo_imports_from_bundle_only(exported):
    bundle, _ = exported
    assert (bundle / "morphzoo" / "__init__.py").is_file()
    dev = str((REPO / "common").resolve())
    code = (
        "import sys; sys.path = [sys.argv[1]] + [p for p in sys.path if p not in ('', sys.argv[2])]; "
        "import morphzoo.networks.nets, morphzoo.inference, morphzoo.paths; "
        "print(morphzoo.__file__); print(morphzoo.paths.datalist_path('hippocampus3d'))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), dev], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    mod_file, datalist = proc.stdout.split()
    assert Path(mod_file).resolve().is_relative_to(bundle.resolve())
    # the config's `datalist` key resolves to the bundle's own copy of the datalist
    assert Path(datalist).resolve() == (bundle / "datalists" / "hippocampus3d.json").resolve()
    assert Path(datalist).is_file()


def test_export_content_and_zip(exported):
    bundle, zpath = exported
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert not [p for p in bundle.rglob("__pycache__")]
    assert not [f for f in files if f.endswith(".pyc") or f.startswith(("runs/", "eval/", "outputs/"))]
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/task_hc18_reg2d.json", "models/model.pt",
                "models/model_hc18_reg2d.pt", "LICENSE", "docs/README.md", "morphzoo/networks/nets/__init__.py",
                "datalists/hippocampus3d.json", "datalists/hc18_reg2d.json"):
        assert rel in files, rel
    assert "models/model.ts" not in files  # torchscript=False
    assert "large_files.yml" not in files  # every file is < 25 MB
    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
    assert names == {f"voxelmorph/{f}" for f in files}
    # metadata: version in changelog and pinned to the installed versions
    import monai
    import torch

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert meta["monai_version"] == monai.__version__.split("+")[0]
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]


def test_large_files_yml(tmp_path):
    root = tmp_path / "b"
    (root / "models").mkdir(parents=True)
    big = root / "models" / "model.pt"
    big.write_bytes(b"\1" * 26 * 1024)  # "26 MB" at a threshold of 25 kB
    (root / "models" / "small.pt").write_bytes(b"\0" * 1024)
    listed = export_tool.write_large_files(root, threshold_mb=25 / 1024, url_base="https://example.org/b")
    assert listed == ["models/model.pt"]
    entries = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    assert entries == [{
        "path": "models/model.pt",
        "url": "https://example.org/b/models/model.pt",
        "hash_val": hashlib.md5(big.read_bytes()).hexdigest(),
        "hash_type": "md5",
    }]
    (root / "large_files.yml").unlink()
    assert export_tool.write_large_files(root, threshold_mb=1.0) == []
    assert not (root / "large_files.yml").exists()


def test_metadata_version_checks():
    meta = {"version": "0.2.0", "changelog": {"0.1.0": "first"}, "monai_version": "0.0.1", "numpy_version": "1",
            "pytorch_version": "1", "required_packages_version": {"no-such-package-mz": "1.0"}}
    with pytest.raises(ValueError, match="0.2.0"):
        export_tool.update_metadata(meta)
    meta["changelog"]["0.2.0"] = "second"
    new, changes = export_tool.update_metadata(meta)
    assert new["monai_version"] != "0.0.1" and any(c.startswith("monai_version: 0.0.1 ->") for c in changes)
    assert new["required_packages_version"] == {"no-such-package-mz": "1.0"}
    assert meta["monai_version"] == "0.0.1"  # input left untouched


def test_refuses_overwrite(exported, tmp_path):
    bundle, zpath = exported
    out = bundle.parent
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_tool.export_bundle("voxelmorph", out, torchscript=False, log=lambda *a: None)
    assert export_tool.main(["--bundle", "voxelmorph", "--out", str(out), "--no_torchscript"]) == 1
    marker = bundle / "stale.txt"
    marker.write_text("x")
    export_tool.export_bundle("voxelmorph", out, overwrite=True, torchscript=False, large_file_mb=0.5, log=lambda *a: None)
    assert not marker.exists()
    large = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    threshold = int(0.5 * 1024 * 1024)
    expected = {p.relative_to(bundle).as_posix() for p in (bundle / "models").iterdir() if p.stat().st_size > threshold}
    assert "models/model.pt" in expected and "models/model_hc18_reg2d.pt" not in expected  # 1.1 MB vs 0.37 MB
    assert {e["path"] for e in large} == expected
    assert sorted(p.name for p in out.iterdir()) == ["voxelmorph", "voxelmorph.zip"]  # no temp leftovers
    with pytest.raises(FileNotFoundError):
        export_tool.export_bundle("no_such_bundle", tmp_path, log=lambda *a: None)


def test_export_and_fresh_venv_check_every_bundle(tmp_path, data_dir):
    """Export + fresh-environment Model Zoo checks for every bundle with trained weights."""
    bundles = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/models/model.pt"))
    assert bundles, "no bundle with models/model.pt"
    log: list[str] = []
    t_start = time.perf_counter()
    failures = {}
    for name in bundles:
        t0 = time.perf_counter()
        _, zpath = export_tool.export_bundle(name, tmp_path / "dist", log=log.append)
        t_export = time.perf_counter() - t0
        assert any(f"{name}: models/model.ts written" in line for line in log), "\n".join(log)
        t0 = time.perf_counter()
        res = check_tool.check_bundle(zpath, data_root=data_dir, log=log.append)
        log.append(f"[timing] {name}: export {t_export:.1f} s, check {time.perf_counter() - t0:.1f} s (venv included)")
        if not all(r["ok"] for r in res.values()):
            failures[name] = res
    print("\n".join(log) + f"\n[timing] total {time.perf_counter() - t_start:.1f} s")
    assert not failures, f"{failures}\n" + "\n".join(log)
