"""Classical baselines: the displacement conventions, proved on a known integer translation.

For each baseline, a smooth synthetic image is shifted by a known integer vector ``d`` so that
``fixed(x) = moving(x + d)``. In the MONAI ``Warp`` convention (``warped(x) = moving(x + ddf(x))``,
channel ``i`` = array axis ``i``, voxels) the right answer is ``ddf = d`` everywhere: a wrong sign,
a reversed channel order or physical-vs-voxel units all show up. The baseline's own warped image
(``ants.apply_transforms``; elastix's result image) must also equal ``Warp(moving, ddf)``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp

from morphzoo.inference.baselines import (
    BASELINES,
    AntsAffine,
    AntsSyN,
    ConvexAdam,
    ElastixBSpline,
    baseline_registrar,
    require_ants,
    require_convexadam,
    require_elastix,
)


def phantom(shape: tuple[int, ...], seed: int = 0, blobs: int = 8) -> np.ndarray:
    """Sum of Gaussian blobs of different sizes and heights, scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    img = np.zeros(shape, np.float32)
    for _ in range(blobs):
        c = (rng.uniform(0.25, 0.75, len(shape)) * np.array(shape)).reshape(-1, *[1] * len(shape))
        sigma, height = rng.uniform(2.5, 5.0), rng.uniform(0.3, 1.0)
        img += height * np.exp(-((grid - c) ** 2).sum(0) / (2 * sigma**2))
    return (img / img.max()).astype(np.float32)


def shifted_pair(shape: tuple[int, ...], shift: tuple[int, ...], pad: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``moving`` and ``fixed`` crops of one phantom with ``fixed(x) = moving(x + shift)``."""
    big = phantom(tuple(s + 2 * pad for s in shape))
    mov = big[tuple(slice(pad, pad + s) for s in shape)]
    fix = big[tuple(slice(pad + d, pad + d + s) for s, d in zip(shape, shift))]
    return np.ascontiguousarray(mov), np.ascontiguousarray(fix)


# 2D at 48^2: ANTs' affine stage (random metric sampling) occasionally misregisters 32^2 images.
CASES = {
    "2d": ((48, 48), (2, -3)),
    "3d": ((32, 32, 32), (2, -3, 1)),
}
MARGIN = 6  # interior used for the checks: away from the borders the shift moves out of view


def _interior(ndim: int) -> tuple[slice, ...]:
    return tuple(slice(MARGIN, -MARGIN) for _ in range(ndim))


def _check_shift(baseline, case: str, own_warped_tol: float, voxel_tol: float = 0.5, residual: float = 0.1) -> None:
    shape, shift = CASES[case]
    mov, fix = shifted_pair(shape, shift)
    moving, fixed = torch.from_numpy(mov)[None, None], torch.from_numpy(fix)[None, None]

    ddf = baseline(moving, fixed)

    assert isinstance(ddf, torch.Tensor) and ddf.shape == (1, len(shape), *shape) and ddf.dtype == torch.float32
    inner = _interior(len(shape))
    structure = fix[inner] > 0.1  # where the image constrains the field (it is free on the flat background)
    for axis, d in enumerate(shift):  # value, sign and channel order: channel i = shift along array axis i
        comp = ddf[0, axis].numpy()[inner]
        assert abs(float(np.median(comp)) - d) < 0.25, f"axis {axis}: median {np.median(comp):.3f}, expected {d}"
        close = float(np.mean(np.abs(comp[structure] - d) < voxel_tol))
        assert close > 0.85, f"axis {axis}: only {close:.0%} of the field is within {voxel_tol} voxel of {d}"

    warped = Warp(mode="bilinear", padding_mode="border")(moving, ddf)[0, 0].numpy()
    err = float(np.abs(warped - fix)[inner].mean())
    before = float(np.abs(mov - fix)[inner].mean())
    assert err < residual * before, f"Warp(moving, ddf) is not the fixed image: {err:.4f} vs {before:.4f} unregistered"

    # the library's own warped moving image agrees with MONAI Warp on our field
    own = baseline.last_result["warped"]
    assert own.shape == shape
    diff = float(np.abs(own - warped)[inner].max())
    assert diff < own_warped_tol, f"{type(baseline).__name__}'s own warped image differs from Warp(moving, ddf) by {diff:.4f}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_ants_syn_known_shift(case: str) -> None:
    # both linear interpolation of the same field: equal up to float rounding
    _check_shift(AntsSyN(), case, own_warped_tol=1e-3)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ants_affine_known_shift(case: str) -> None:
    # a translation is affine: the affine-only ANTs call recovers it exactly like SyN
    _check_shift(AntsAffine(), case, own_warped_tol=1e-3)


_SEEDED_RUN = """
import sys, numpy as np, torch
sys.path.insert(0, {repo!r})
from tests.inference.test_baselines import phantom
from morphzoo.inference.baselines import AntsAffine
mov, fix = (torch.from_numpy(phantom((64, 64), seed=s))[None, None] for s in (1, 2))
seed = None if sys.argv[1] == "none" else int(sys.argv[1])
np.save(sys.argv[2], AntsAffine(random_seed=seed)(mov, fix).numpy())
"""


def _ants_affine_in_fresh_process(seed: int | None, out) -> np.ndarray:
    """One ANTs affine run in its own process with ITK pinned to one thread: ITK reads
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS when its thread pool is created, so the pin holds whatever
    this process (or the machine) is doing, and the metric's reductions run in one order."""
    import os
    from pathlib import Path

    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    code = _SEEDED_RUN.format(repo=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-c", code, "none" if seed is None else str(seed), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


def test_ants_affine_seeded_runs_are_reproducible(tmp_path) -> None:
    """The seed reaches antsRegistration (antspyx 0.6 reads it from ants.config, not from a kwarg):
    two seeded affine runs on a pair that is not a plain shift give the same field bit for bit, and
    unseeded runs differ. Each run is a fresh process with one ITK thread (see the helper): with
    several threads the order of ITK's reductions follows thread scheduling, which made seeded runs
    differ by 4e-6 voxel on one CI machine and by 0.26 voxel on a busy one; no tolerance is safe
    against that, one thread is."""
    a = _ants_affine_in_fresh_process(1, tmp_path / "a.npy")
    b = _ants_affine_in_fresh_process(1, tmp_path / "b.npy")
    np.testing.assert_array_equal(a, b)
    runs = [_ants_affine_in_fresh_process(None, tmp_path / f"u{k}.npy") for k in range(2)]
    assert max(float(np.abs(runs[0] - r).max()) for r in runs[1:]) > 0.1  # unseeded runs do differ: the check can fail


def test_ants_affine_is_affine_only() -> None:
    """A local (non-affine) bump is not followed: the field of an affine map has a constant
    Jacobian, i.e. its second differences vanish."""
    shape = (48, 48)
    mov = phantom(shape, seed=1)
    yy, xx = np.meshgrid(np.arange(48.0), np.arange(48.0), indexing="ij")
    bump = 3.0 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / (2 * 6.0**2))
    fix = Warp(mode="bilinear", padding_mode="border")(
        torch.from_numpy(mov)[None, None], torch.from_numpy(np.stack([bump, bump]).astype(np.float32))[None]
    )
    baseline = AntsAffine()
    assert baseline.type_of_transform == "Affine" and baseline.name == "ants_affine"
    ddf = baseline(torch.from_numpy(mov)[None, None], fix)[0].numpy()
    for axis in (0, 1):
        second = np.diff(ddf[axis], n=2, axis=axis)[4:-4, 4:-4]
        assert np.abs(second).max() < 1e-3, "the affine baseline produced a non-affine field"
    syn = AntsSyN()(torch.from_numpy(mov)[None, None], fix)[0].numpy()
    assert np.abs(np.diff(syn[0], n=2, axis=0)).max() > 1e-2  # SyN does follow the bump: the check can fail


@pytest.mark.parametrize("case", sorted(CASES))
def test_elastix_bspline_known_shift(case: str, tmp_path, monkeypatch) -> None:
    # elastix's result image uses cubic B-spline interpolation, Warp linear: close, not equal
    # a B-spline field is only locally a translation: allow 1 voxel of local deviation and a larger
    # residual (a wrong sign or axis order leaves a residual as large as the unregistered one)
    # (3D: default map with fewer iterations, for test time; the conventions do not depend on it)
    baseline = ElastixBSpline(parameter_overrides={"MaximumNumberOfIterations": 64} if case == "3d" else None)
    monkeypatch.chdir(tmp_path)
    _check_shift(baseline, case, own_warped_tol=0.02, voxel_tol=1.0, residual=0.25)
    assert list(tmp_path.iterdir()) == []  # transformix wrote nothing into the working directory


def test_baseline_registrar_runs_at_the_network_grid() -> None:
    """Through ``Registrar``: the field is predicted at ``spatial_size`` and brought back to the
    fixed grid with its values rescaled (a shift of 2 voxels at 48 px is 4 voxels at 96 px)."""
    from morphzoo.transforms.io import ImageRecord

    shape, shift = (48, 48), (2, -3)
    mov, fix = shifted_pair(shape, shift)
    big_mov = torch.nn.functional.interpolate(torch.from_numpy(mov)[None, None], size=(95, 95), mode="bilinear", align_corners=True)[0, 0]
    big_fix = torch.nn.functional.interpolate(torch.from_numpy(fix)[None, None], size=(95, 95), mode="bilinear", align_corners=True)[0, 0]
    recs = [ImageRecord(a.numpy(), np.eye(4), (1.0, 1.0), f"{n}.png", "png", None) for a, n in ((big_mov, "m"), (big_fix, "f"))]
    reg = baseline_registrar("ants_syn", spatial_dims=2, spatial_size=shape, device="cpu")
    res = reg.register_records(recs[0], recs[1])
    assert res.ddf.shape == (2, 95, 95)
    inner = (slice(12, -12), slice(12, -12))
    for axis, d in enumerate(shift):
        assert abs(float(np.median(res.ddf[axis][inner])) - 2 * d) < 0.5
    assert res.metrics["time_ms"] > 0 and reg.num_parameters == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_ants_synra_known_shift(case: str) -> None:
    # rigid + affine + SyN: a translation is the rigid stage's answer
    baseline = BASELINES["ants_synra"]()
    assert baseline.type_of_transform == "SyNRA" and baseline.name == "ants_synra"
    _check_shift(baseline, case, own_warped_tol=1e-3)


def test_elastix_affine_bspline_known_shift() -> None:
    baseline = BASELINES["elastix_affine_bspline"]()
    assert baseline.name == "elastix_affine_bspline"
    maps = baseline.parameter_object()
    assert maps.GetNumberOfParameterMaps() == 2
    assert maps.GetParameterMap(0)["Transform"][0] == "AffineTransform"
    assert maps.GetParameterMap(1)["Transform"][0] == "BSplineTransform"
    _check_shift(baseline, "2d", own_warped_tol=0.02, voxel_tol=1.0, residual=0.25)


def test_convexadam_known_shift() -> None:
    """Sign, axis order and units of ConvexAdam's field. Its search runs on a grid of spacing 6, so on
    a 32^3 phantom the recovered shift is within half a voxel (a wrong convention is off by 2-6)."""
    shape, shift = CASES["3d"]
    mov, fix = shifted_pair(shape, shift)
    moving, fixed = torch.from_numpy(mov)[None, None], torch.from_numpy(fix)[None, None]
    with torch.no_grad():  # as a Registrar calls it: the Adam stage must still get its gradients
        ddf = ConvexAdam()(moving, fixed)
    assert ddf.shape == (1, 3, *shape) and ddf.dtype == torch.float32
    inner = _interior(3)
    for axis, d in enumerate(shift):
        med = float(np.median(ddf[0, axis].numpy()[inner]))
        assert abs(med - d) < 0.5, f"axis {axis}: median {med:.3f}, expected {d}"
    warped = Warp(mode="bilinear", padding_mode="border")(moving, ddf)[0, 0].numpy()
    assert np.abs(warped - fix)[inner].mean() < 0.5 * np.abs(mov - fix)[inner].mean()


def test_convexadam_is_3d_only() -> None:
    with pytest.raises(ValueError, match="3D"):
        ConvexAdam().register_arrays(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))


def test_unknown_baseline_name() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_registrar("demons", spatial_dims=2)


def test_missing_packages_give_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ants", None)  # makes `import ants` raise ImportError
    with pytest.raises(ImportError, match=r"pip install -e \.\[baselines\]"):
        require_ants()
    with pytest.raises(ImportError, match=r"pip install -e \.\[baselines\]"):
        AntsSyN()
    monkeypatch.setitem(sys.modules, "itk", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[baselines\]"):
        require_elastix()
    monkeypatch.setitem(sys.modules, "convexAdam", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[baselines\]"):
        require_convexadam()


def test_module_imports_without_the_packages() -> None:
    """Importing the module loads neither antspyx nor the elastix wrapping."""
    code = (
        "import sys; sys.modules['ants'] = None\n"
        "import morphzoo.inference.baselines as b\n"
        "assert set(b.BASELINES) == {'ants_syn', 'ants_synra', 'ants_affine', 'elastix_bspline', 'elastix_affine_bspline', 'convexadam'}\n"
        "try:\n    b.AntsSyN()\nexcept ImportError as e:\n    print('hint:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install -e .[baselines]" in out.stdout
