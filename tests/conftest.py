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


@pytest.fixture(scope="session")
def bundle_runner():
    """The :func:`run_bundle` helper as a fixture."""
    return run_bundle


@pytest.fixture(scope="session")
def bundle_command():
    """The :func:`bundle_cmd` helper as a fixture."""
    return bundle_cmd
