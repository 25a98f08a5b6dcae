"""Shared fixtures: the real data root (a missing one fails, never skips) and a bundle runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from morphzoo.paths import DATA_ENV, data_root, repo_root

REPO = repo_root()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    missing = [p for p in ("hippocampus/img", "hippocampus/label", "hc18/training_set") if not (root / p).is_dir()]
    if missing:
        pytest.fail(
            f"MorphZoo test data missing under {root}: {missing}. Set {DATA_ENV} to the data folder "
            "(see README.md, 'Data') or run `python tools/prepare_data.py --download`."
        )
    return root


def bundle_cmd(bundle: str, configs: list[str], subcommand: str = "run", **overrides) -> list[str]:
    """Command line for `python -m monai.bundle <subcommand>` on bundles/<bundle> with config overlays."""
    bdir = REPO / "bundles" / bundle
    files = [str(bdir / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", subcommand]
    if subcommand == "run":
        cmd += ["--config_file", str(files) if len(files) > 1 else files[0]]
    cmd += ["--bundle_root", str(bdir)]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def run_bundle(bundle: str, configs: list[str], timeout: float = 600, check: bool = True, **overrides) -> subprocess.CompletedProcess:
    """Run a bundle config through MONAI's runner in a subprocess (bundles' `scripts` packages
    collide in one process) and return the completed process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        bundle_cmd(bundle, configs, **overrides), capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bundle run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_bundle_torchrun(bundle: str, configs: list[str], nproc: int = 2, timeout: float = 600, **overrides) -> subprocess.CompletedProcess:
    """Run a bundle config under ``torch.distributed.run`` with ``nproc`` CPU processes (gloo; one
    thread each) and return the completed process (not checked)."""
    cmd = bundle_cmd(bundle, configs, **overrides)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}"] + cmd[1:]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="session")
def bundle_torchrun():
    """The :func:`run_bundle_torchrun` helper as a fixture."""
    return run_bundle_torchrun


@pytest.fixture(scope="session")
def bundle_runner():
    """The :func:`run_bundle` helper as a fixture."""
    return run_bundle


@pytest.fixture(scope="session")
def bundle_command():
    """The :func:`bundle_cmd` helper as a fixture."""
    return bundle_cmd


class BundleChecks:
    """The Model Zoo checks every bundle's tests run, in subprocesses (bundle ``scripts`` collide in one process)."""

    schema = REPO / "schemas" / "meta_schema_20240725.json"

    @staticmethod
    def python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)

    @staticmethod
    def _config_arg(bundle: str, configs: list[str]) -> str:
        files = [str(REPO / "bundles" / bundle / "configs" / c) for c in configs]
        return str(files) if len(files) > 1 else files[0]

    def assert_file_set(self, bundle: str, extra: tuple[str, ...] = ()) -> None:
        """The Model Zoo file set plus the bundle's task overlays / weights in ``extra``."""
        base = ("configs/metadata.json", "configs/train.json", "configs/inference.json", "configs/evaluate.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "docs/data_license.txt",
                "LICENSE", "models/model.pt")
        for rel in base + tuple(extra):
            assert (REPO / "bundles" / bundle / rel).is_file(), f"bundles/{bundle}/{rel} is missing"

    def verify_metadata(self, bundle: str, meta_file: Path | None = None) -> subprocess.CompletedProcess:
        meta = meta_file or REPO / "bundles" / bundle / "configs" / "metadata.json"
        return self.python("-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(self.schema))

    def assert_metadata_ok(self, bundle: str) -> None:
        proc = self.verify_metadata(bundle)
        assert proc.returncode == 0 and "metadata is verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]

    def assert_net_in_out_ok(self, bundle: str, configs: list[str], tmp_path: Path, spatial_shape: list[int] | None = None,
                             out_channels: int | None = None) -> None:
        """``verify_net_in_out network_def``; a task overlay of another grid/dimension is described in a
        metadata copy (``spatial_shape``, output ``num_channels``) since metadata.json describes the default task."""
        import json

        meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
        fmt = meta["network_data_format"]
        if spatial_shape is not None:
            fmt["inputs"]["image"]["spatial_shape"] = list(spatial_shape)
            fmt["outputs"]["pred"]["spatial_shape"] = list(spatial_shape)
        if out_channels is not None:
            fmt["outputs"]["pred"]["num_channels"] = out_channels
        mfile = tmp_path / "metadata.json"
        mfile.write_text(json.dumps(meta))
        proc = self.python("-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", str(mfile),
                           "--config_file", self._config_arg(bundle, configs), "--bundle_root", str(REPO / "bundles" / bundle))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "data shape of network is verified with no error" in proc.stdout + proc.stderr

    @staticmethod
    def assert_short_training(proc: subprocess.CompletedProcess, out: Path, models_dir: Path, model_file: str,
                              iterations: int = 2) -> dict:
        """A short ``train.json`` run logged one finite loss per iteration, a validation Dice in
        [0, 1] in ``training_log.jsonl``, the best model to ``models_dir/model_file`` and a resumable
        ``checkpoints/last.pt`` at ``iterations``; returns that checkpoint."""
        import json
        import re

        import numpy as np
        import torch

        losses = [float(v) for v in re.findall(r"train_loss: (\S+)", proc.stdout + proc.stderr)]
        assert len(losses) == iterations and all(np.isfinite(losses)), losses
        log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
        val = [r for r in log if "val_mean_dice" in r]
        assert val and 0.0 <= val[-1]["val_mean_dice"] <= 1.0
        assert (models_dir / model_file).is_file(), f"{models_dir / model_file} was not written"
        ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        assert set(ckpt) >= {"network", "optimizer", "trainer"} and ckpt["trainer"]["iteration"] == iterations
        ckpt["losses"] = losses
        return ckpt

    @staticmethod
    def assert_png_pair_registered(bundle: str, bundle_runner, data_dir: Path, out: Path) -> dict:
        """Register two real HC18 PNGs of different pixel sizes with the bundle's default 2D task:
        the warped image and the field are on the fixed PNG's grid, Dice in [0, 1]; returns the metrics."""
        import json

        import nibabel as nib
        import numpy as np
        from PIL import Image

        hc = data_dir / "hc18" / "training_set"
        bundle_runner(bundle, ["inference.json"], moving=hc / "001_HC.png", fixed=hc / "002_HC.png",
                      moving_label=hc / "001_HC_Annotation.png", fixed_label=hc / "002_HC_Annotation.png", output_dir=out)
        h, w = np.asarray(Image.open(hc / "002_HC.png")).shape[:2]
        assert nib.load(str(out / "warped.nii.gz")).shape == (h, w)
        assert nib.load(str(out / "ddf.nii.gz")).shape == (h, w, 1, 1, 2)
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert 0.0 <= metrics["dice"] <= 1.0
        return metrics

    def ckpt_export(self, bundle: str, configs: list[str], model_file: str, out: Path):
        """``ckpt_export network_def`` of ``models/<model_file>``; returns the loaded TorchScript module."""
        import torch

        bdir = REPO / "bundles" / bundle
        proc = self.python("-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(out), "--ckpt_file",
                           str(bdir / "models" / model_file), "--meta_file", str(bdir / "configs" / "metadata.json"),
                           "--config_file", self._config_arg(bundle, configs), "--bundle_root", str(bdir))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return torch.jit.load(str(out)).eval()


@pytest.fixture(scope="session")
def bundle_checks() -> BundleChecks:
    """:class:`BundleChecks`: file set, verify_metadata, verify_net_in_out and ckpt_export of a bundle."""
    return BundleChecks()
