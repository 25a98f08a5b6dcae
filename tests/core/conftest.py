"""Fixtures for the core-library tests (I/O, resampling, losses, engines, networks, inference).

Tests that need the real data read it from ``morphzoo.paths.data_root()`` through
``require_data``: when it is missing they FAIL with instructions, they never skip.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from morphzoo.paths import require_data


@pytest.fixture(autouse=True)
def _few_threads():
    """A training job shares the machine: keep every test single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(*parts: str) -> Path:
    try:
        return require_data(*parts)
    except FileNotFoundError as e:  # missing data is a failure, never a skip
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def hippo_dir() -> Path:
    for sub in ("img", "label"):
        _data("hippocampus", sub)
    return _data("hippocampus")


@pytest.fixture(scope="session")
def hc18_dir() -> Path:
    return _data("hc18", "training_set")


@pytest.fixture(scope="session")
def hippo_img(hippo_dir: Path):
    """(image path, label path) of a clean subject (no stray label values)."""
    return hippo_dir / "img" / "hippocampus_004.nii.gz", hippo_dir / "label" / "hippocampus_004.nii.gz"


@pytest.fixture(scope="session")
def hippo_img2(hippo_dir: Path):
    return hippo_dir / "img" / "hippocampus_006.nii.gz", hippo_dir / "label" / "hippocampus_006.nii.gz"


def _smooth_volume(shape, seed: int = 0) -> np.ndarray:
    """A smooth, everywhere non-constant test image (sum of low-frequency sinusoids)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(3):
        k = rng.uniform(0.15, 0.4, size=len(shape))
        ph = rng.uniform(0, 2 * np.pi)
        out += np.sin(sum(ki * g for ki, g in zip(k, grids)) + ph)
    return out.astype(np.float32)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture(scope="session")
def smooth_volume():
    """``smooth_volume(shape, seed=0)``: a smooth test image."""
    return _smooth_volume


@pytest.fixture(scope="session")
def save_nifti():
    """``save_nifti(path, array, affine=None)``: write a NIfTI file, return its path."""
    return _save_nifti


def _assert_every_parameter_learns(net: torch.nn.Module, x: torch.Tensor) -> None:
    """``net(x).pow(2).sum()`` gives every parameter a non-zero gradient, and one SGD step changes the output."""
    net(x).pow(2).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert not missing, missing
    with torch.no_grad():
        before = net(x).clone()
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    with torch.no_grad():
        assert not torch.allclose(net(x), before)


@pytest.fixture(scope="session")
def assert_every_parameter_learns():
    """``assert_every_parameter_learns(net, x)``: gradients reach every parameter and a step changes the output."""
    return _assert_every_parameter_learns
