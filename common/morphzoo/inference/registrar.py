"""``Registrar``: register a (moving, fixed) pair with the registration pipeline of a bundle.

The moving image is first resampled onto the fixed image's grid (world coordinates for NIfTI,
a resize for PNG) and both are intensity-normalised. Then, on the network's grid:

1. ``prealign`` (optional) finds a global affine ``A`` (see :mod:`morphzoo.inference.prealign`);
2. the network (or a ``field_fn``) predicts a field ``u`` on the pre-aligned pair ``(moving ∘ A, fixed)``;
3. ``refine`` (optional) optimises ``u`` on the pair without labels (:class:`~morphzoo.inference.FieldRefiner`).

The field is brought back to the fixed grid (values rescaled) and composed with the affine into one
map ``x -> A(x + u(x))`` (:func:`~morphzoo.transforms.affine.compose_affine_field`); for a pair of
different grids it is further composed with the fixed-to-moving voxel map, so the written moving
image and label are interpolated once from the original moving arrays
(:func:`~morphzoo.transforms.spatial.warp_from_reference`; outside the moving image: 0). Outputs keep the fixed image's affine and header;
each stage's time is recorded in the metrics.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.networks.blocks import Warp

from morphzoo.engines.registration import RegistrationInferer
from morphzoo.inference.learn2reg import learn2reg_array, learn2reg_name
from morphzoo.metrics import hd95_learn2reg, jacobian_determinant, jacobian_stats, label_overlap_and_distance, ncc_global, nmi, ssim
from morphzoo.transforms.io import (
    ImageRecord,
    InputError,
    atomic_output_dir,
    check_outputs_free,
    write_nifti_like,
    write_png,
)
from morphzoo.transforms.affine import compose_affine_field, resample_affine, theta_from_voxel, theta_to_voxel
from morphzoo.transforms.itk_export import TRANSFORM_NAMES, read_initial_transform, write_transforms
from morphzoo.transforms.spatial import (
    compose_ddf,
    reference_to_moving_voxels,
    resample_to_reference,
    resize_field,
    resize_image,
    warp_from_reference,
)
from morphzoo.transforms.subjects import read_subject

__all__ = ["Registrar", "RegistrationResult", "minmax_normalize", "load_weights", "OUTPUT_NAMES"]

logger = logging.getLogger(__name__)

_HAS_SURFACE_DISTANCE = importlib.util.find_spec("surface_distance") is not None

OUTPUT_NAMES = ("warped.nii.gz", "warped_label.nii.gz", "ddf.nii.gz", "jacobian.nii.gz", *TRANSFORM_NAMES, "metrics.json")


def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device`` (timings on GPU); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minmax_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale each item of a ``(B, C, *S)`` tensor to [0, 1] (constant images become 0).

    The same normalisation as ``monai.transforms.ScaleIntensity(minv=0, maxv=1)`` used in training.
    """
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(x))


@dataclass
class RegistrationResult:
    """Arrays on the fixed grid and the pair's metrics.

    Attributes:
        warped: ``(*S)`` warped moving image (the moving image's intensities).
        ddf: ``(N, *S)`` displacement in voxels of the fixed grid, array-axis order.
        warped_label: ``(*S)`` warped moving label or ``None``.
        metrics: flat dict of numbers (time, Jacobian statistics, similarities, label metrics).
        theta: ``(N, N + 1)`` the pre-alignment affine in normalised coordinates (fixed -> moving,
            see :mod:`morphzoo.transforms.affine`), ``None`` without a pre-alignment stage; ``ddf``
            already contains it.
        voxel_map: ``(N + 1, N + 1)`` fixed voxel -> original moving voxel map of the grid change
            (:func:`~morphzoo.transforms.spatial.reference_to_moving_voxels`) the outputs were sampled with.
    """

    warped: np.ndarray
    ddf: np.ndarray
    warped_label: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    theta: np.ndarray | None = None
    voxel_map: np.ndarray | None = None


class _StageClock:
    """``with clock("name_ms"):`` adds the block's wall time (device-synchronised) to ``times``."""

    def __init__(self, device: torch.device, times: dict[str, float] | None) -> None:
        self.device, self.times = device, times

    def __call__(self, name: str) -> "_StageClock":
        self.name = name
        return self

    def __enter__(self) -> None:
        if self.times is not None:
            sync_device(self.device)
            self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        if self.times is not None:
            sync_device(self.device)
            self.times[self.name] = self.times.get(self.name, 0.0) + (time.perf_counter() - self.t0) * 1000.0


class Registrar:
    """Register pairs with a pair -> field network.

    Args:
        network: module mapping ``(B, 2, *S)`` to ``(B, N, *S)`` (a bundle's ``network_def``) or
            any callable ``(moving, fixed) -> ddf`` via ``field_fn``.
        spatial_dims: 2 or 3; inputs of another dimensionality are rejected.
        spatial_size: the network grid; ``None`` runs at the fixed grid padded to ``size_multiple``.
        inferer: turns network output into a displacement field (default
            :class:`~morphzoo.engines.RegistrationInferer`, no integration).
        device: torch device (default: CUDA if available).
        labels: declared label values of label inputs (e.g. ``[0, 1, 2]``); others raise.
        size_multiple: divisor the network needs when ``spatial_size`` is ``None``.
        field_fn: alternative to ``network``: ``field_fn(moving, fixed) -> ddf`` on ``(B, 1, *S)``
            tensors at the network grid (e.g. per-pair optimisation, classical methods).
        prealign: global stage ``prealign(moving, fixed) -> theta`` run first on the network grid
            (:func:`morphzoo.inference.prealign.make_prealign`); ``None`` skips it.
        refine: label-free stage ``refine(moving, fixed, ddf) -> ddf`` run after the network on
            the network grid (:class:`morphzoo.inference.FieldRefiner`); ``None`` skips it.
        refine_grid: ``"network"`` (default): refine on the network grid; ``"fixed"``: upsample
            the network's field to the fixed image's grid first and refine there, for networks run
            on a coarser grid than the images (the moving image is still resampled once, by the
            composed transform, for the output).
        network_passes: how many times the network (or ``field_fn``) runs: pass k > 1 registers the
            moving image warped by the field so far to the fixed image and its field is composed
            with it (:func:`~morphzoo.transforms.compose_ddf`; a recursive cascade with shared
            weights, Zhao et al., ICCV 2019, at inference). The moving image is interpolated once,
            by the composed field; ``network_ms`` counts every pass.
    """

    def __init__(
        self,
        network: nn.Module | None,
        spatial_dims: int,
        spatial_size: Sequence[int] | None = None,
        inferer: Callable | None = None,
        device: str | torch.device | None = None,
        labels: Sequence[int] | None = None,
        size_multiple: int = 8,
        field_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        prealign: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        refine: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        refine_grid: str = "network",
        network_passes: int = 1,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if network is None and field_fn is None:
            raise ValueError("give a network or a field_fn.")
        if spatial_size is not None and len(spatial_size) != spatial_dims:
            raise ValueError(f"spatial_size {list(spatial_size)} does not have {spatial_dims} entries.")
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.network = network.to(self.device).eval() if network is not None else None
        self.spatial_dims = spatial_dims
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.inferer = inferer if inferer is not None else RegistrationInferer()
        self.labels = None if labels is None else [int(v) for v in labels]
        self.size_multiple = int(size_multiple)
        self.field_fn = field_fn
        self.prealign = prealign
        self.refine = refine
        if refine_grid not in ("network", "fixed"):
            raise ValueError(f"refine_grid must be 'network' or 'fixed', got {refine_grid!r}.")
        self.refine_grid = refine_grid
        if int(network_passes) != network_passes or network_passes < 1:
            raise ValueError(f"network_passes must be a positive integer, got {network_passes!r}.")
        self.network_passes = int(network_passes)
        self.warp = Warp(mode="bilinear", padding_mode="border")
        self.warp_nearest = Warp(mode="nearest", padding_mode="zeros")
        self._warm = False
        self.last_theta: torch.Tensor | None = None

    # ------------------------------------------------------------------ core
    def _network_size(self, fixed_shape: Sequence[int]) -> tuple[int, ...]:
        if self.spatial_size is not None:
            return self.spatial_size
        m = self.size_multiple
        return tuple(int(np.ceil(s / m) * m) for s in fixed_shape)

    def predict_field(
        self, moving: torch.Tensor, fixed: torch.Tensor, times: dict[str, float] | None = None, theta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Field on the fixed grid for normalised ``(1, 1, *S)`` tensors already on that grid.

        Runs the pipeline (pre-alignment, network or ``field_fn``, refinement) on the network grid
        and returns the composed field ``x -> A(x + u(x))`` on the fixed grid. The affine is kept in
        ``self.last_theta``; with ``times`` given, each stage's milliseconds are stored there
        (``prealign_ms``, ``network_ms``, ``refine_ms``). A given ``theta`` (``(1, N, N + 1)``,
        normalised, e.g. a user's initial transform) replaces the pre-alignment stage.
        """
        size = tuple(fixed.shape[2:])
        net_size = self._network_size(size)
        fix_n = resize_image(fixed, net_size)
        clock = _StageClock(self.device, times)
        with torch.no_grad():
            if theta is not None:
                theta = theta.to(device=moving.device, dtype=moving.dtype)
            elif self.prealign is not None:
                with clock("prealign_ms"):
                    theta = self.prealign(resize_image(moving, net_size), fix_n).to(moving.dtype)
            mov_n = resample_affine(moving, theta, net_size) if theta is not None else resize_image(moving, net_size)
            with clock("network_ms"):
                ddf = self._network_field(mov_n, fix_n)
                for _ in range(self.network_passes - 1):
                    ddf = ddf.float()
                    ddf = compose_ddf(ddf, self._network_field(self.warp(mov_n, ddf), fix_n).float())
        if self.refine is not None:
            with clock("refine_ms"):
                if self.refine_grid == "fixed" and tuple(net_size) != size:
                    with torch.no_grad():
                        mov_f = resample_affine(moving, theta, size) if theta is not None else moving
                    ddf = self.refine(mov_f, fixed, resize_field(ddf.float().detach(), size))
                else:
                    ddf = self.refine(mov_n, fix_n, ddf.float())
        ddf = resize_field(ddf.float().detach(), size)
        self.last_theta = theta
        return compose_affine_field(theta, ddf) if theta is not None else ddf

    def _network_field(self, mov_n: torch.Tensor, fix_n: torch.Tensor) -> torch.Tensor:
        if self.field_fn is not None:
            return self.field_fn(mov_n, fix_n)
        return self.inferer(torch.cat([mov_n, fix_n], dim=1), self.network)

    def _sync(self) -> None:
        sync_device(self.device)

    def register_records(
        self,
        moving: ImageRecord,
        fixed: ImageRecord,
        moving_label: ImageRecord | None = None,
        fixed_label: ImageRecord | None = None,
        distances: bool = True,
        initial_transform: str | Path | None = None,
    ) -> RegistrationResult:
        """Register already-read images (see :func:`read_image`); returns arrays on the fixed grid.

        ``initial_transform``: an ITK/ANTs affine file (fixed -> moving physical points) that starts
        the pipeline instead of the pre-alignment stage.
        """
        for rec, what in ((moving, "moving image"), (fixed, "fixed image")):
            if rec.spatial_dims != self.spatial_dims:
                raise InputError(
                    f"{rec.path}: {what} is {rec.spatial_dims}D (shape {rec.shape}) but this model registers "
                    f"{self.spatial_dims}D images (spatial_dims={self.spatial_dims})."
                )
        if moving_label is not None and moving_label.shape != moving.shape:
            raise InputError(f"{moving_label.path}: moving label shape {moving_label.shape} differs from moving image {moving.shape}.")
        if fixed_label is not None and fixed_label.shape != fixed.shape:
            raise InputError(f"{fixed_label.path}: fixed label shape {fixed_label.shape} differs from fixed image {fixed.shape}.")

        voxel_map = reference_to_moving_voxels(moving, fixed)
        initial_theta = None
        if initial_transform:
            a_vox = read_initial_transform(initial_transform, moving, fixed, voxel_map)
            initial_theta = theta_from_voxel(torch.as_tensor(a_vox, dtype=torch.float64)[None], fixed.shape).float()
        mov_arr = resample_to_reference(moving, fixed)
        mov_raw = torch.as_tensor(mov_arr, dtype=torch.float32)[None, None].to(self.device)
        mov = minmax_normalize(mov_raw)
        fix = minmax_normalize(torch.as_tensor(fixed.array, dtype=torch.float32)[None, None]).to(self.device)

        if not self._warm and self.field_fn is None:  # first call: allocator / kernel selection, not timed
            self.predict_field(mov, fix, theta=initial_theta)
            self._warm = True
        self._sync()
        t0 = time.perf_counter()
        times: dict[str, float] = {}
        ddf = self.predict_field(mov, fix, times, theta=initial_theta)
        theta = self.last_theta
        warped = self.warp(mov, ddf)
        self._sync()
        ms = (time.perf_counter() - t0) * 1000.0

        metrics: dict[str, float] = {"time_ms": ms}
        if self.prealign is not None or self.refine is not None:
            metrics.update({f"time_{k}": v for k, v in times.items()})
        metrics.update({k: float(v[0]) for k, v in jacobian_stats(ddf).items()})
        metrics["ncc"] = float(ncc_global(warped, fix)[0])
        metrics["ssim"] = float(ssim(warped, fix)[0])
        metrics["nmi"] = float(nmi(warped, fix)[0])
        metrics["mse"] = float(((warped - fix) ** 2).mean())

        # outputs: the original moving image/label interpolated once through grid change + field
        same_grid = np.allclose(voxel_map, np.eye(voxel_map.shape[0]))
        warped_label = None
        if moving_label is not None:
            if same_grid:
                lab = torch.as_tensor(moving_label.array, dtype=torch.float32)[None, None].to(self.device)
                lab_w = self.warp_nearest(lab, ddf)
            else:
                lab_w = warp_from_reference(moving_label.array, ddf, voxel_map, label=True)
            warped_label = lab_w[0, 0].round().cpu().numpy().astype(np.int16)
            if fixed_label is not None:
                labels = self.labels or sorted(int(v) for v in np.unique(fixed_label.array))
                fg = [v for v in labels if v != 0]
                metrics.update(
                    label_overlap_and_distance(warped_label, fixed_label.array, fg, spacing=fixed.spacing, distances=distances)
                )
                if distances and _HAS_SURFACE_DISTANCE:  # Learn2Reg's own HD95 definition, beside ours
                    metrics["hd95_l2r"] = hd95_learn2reg(warped_label, fixed_label.array, fg, spacing=fixed.spacing)
        # the moving image's own intensities, for writing
        warped_raw = self.warp(mov_raw, ddf) if same_grid else warp_from_reference(moving.array, ddf, voxel_map)
        return RegistrationResult(
            warped=warped_raw[0, 0].cpu().numpy(),
            ddf=ddf[0].cpu().numpy(),
            warped_label=warped_label,
            metrics=metrics,
            theta=None if theta is None else theta[0].detach().cpu().numpy(),
            voxel_map=voxel_map,
        )

    # ------------------------------------------------------------------ files
    def read_pair(
        self,
        moving: str | Path,
        fixed: str | Path,
        moving_label: str | Path | None = None,
        fixed_label: str | Path | None = None,
        moving_spacing: Sequence[float] | None = None,
        fixed_spacing: Sequence[float] | None = None,
    ) -> tuple[ImageRecord, ImageRecord, ImageRecord | None, ImageRecord | None]:
        """Read and validate a pair (and labels); every problem raises :class:`InputError` naming the file."""
        cwd = Path.cwd()  # a user's relative paths mean the working directory, not the data root
        mov, mlab = read_subject(moving, moving_label or None, root=cwd, labels=self.labels, label_policy="error", pixel_size_mm=moving_spacing, role="moving")
        fix, flab = read_subject(fixed, fixed_label or None, root=cwd, labels=self.labels, label_policy="error", pixel_size_mm=fixed_spacing, role="fixed")
        if mov.spatial_dims != fix.spatial_dims:
            raise InputError(
                f"{mov.path} is {mov.spatial_dims}D (shape {mov.shape}) but {fix.path} is {fix.spatial_dims}D "
                f"(shape {fix.shape}); moving and fixed must have the same dimensionality."
            )
        return mov, fix, mlab, flab

    def register_files(
        self,
        moving: str | Path,
        fixed: str | Path,
        output_dir: str | Path,
        moving_label: str | Path | None = None,
        fixed_label: str | Path | None = None,
        overwrite: bool = False,
        moving_spacing: Sequence[float] | None = None,
        fixed_spacing: Sequence[float] | None = None,
        initial_transform: str | Path | None = None,
        learn2reg: bool = False,
    ) -> dict[str, float]:
        """Register files and write ``warped.nii.gz``, ``ddf.nii.gz``, ``jacobian.nii.gz`` (the
        Jacobian determinant of ``x -> x + ddf(x)``, the map the folding metrics count), ``metrics.json`` (and
        ``warped_label.nii.gz`` with a moving label; ``warped.png`` for PNG input) into
        ``output_dir`` in the fixed image's grid and header.

        Existing outputs are an error unless ``overwrite``; on any error nothing is written.
        ``initial_transform``: see :meth:`register_records`; ``learn2reg``: also write the field in
        Learn2Reg's submission format (see :meth:`write_outputs`).
        """
        names = [n for n in OUTPUT_NAMES if moving_label or n != "warped_label.nii.gz"]
        check_outputs_free(output_dir, names, overwrite)
        mov, fix, mlab, flab = self.read_pair(moving, fixed, moving_label, fixed_label, moving_spacing, fixed_spacing)
        res = self.register_records(mov, fix, mlab, flab, initial_transform=initial_transform)
        self.write_outputs(res, mov, fix, mlab, flab, output_dir, overwrite=overwrite, learn2reg=learn2reg)
        return res.metrics

    def write_outputs(
        self,
        res: RegistrationResult,
        mov: ImageRecord,
        fix: ImageRecord,
        mlab: ImageRecord | None,
        flab: ImageRecord | None,
        output_dir: str | Path,
        overwrite: bool = False,
        learn2reg: bool = False,
    ) -> None:
        """Write a result into ``output_dir`` atomically, in the fixed image's grid and header.

        With ``learn2reg``, the field is also written as Learn2Reg's ``disp_FFFF_0000_MMMM_0000.npz``
        (subject numbers from the file names; ``disp.npz`` when they hold none): channel-last, in
        fixed voxels, the values of ``ddf.nii.gz``.
        """
        names = [n for n in OUTPUT_NAMES if res.warped_label is not None or n != "warped_label.nii.gz"]
        l2r_name = None
        if learn2reg:
            try:
                l2r_name = learn2reg_name({"moving": mov.path, "fixed": fix.path})
            except ValueError:
                l2r_name = "disp.npz"
            names.append(l2r_name)
        check_outputs_free(output_dir, names, overwrite)
        meta = {
            "moving": str(mov.path),
            "fixed": str(fix.path),
            "moving_label": str(mlab.path) if mlab else None,
            "fixed_label": str(flab.path) if flab else None,
            "ddf_units": "voxels of the fixed grid, one component per array axis (MONAI Warp convention)",
            "metrics": res.metrics,
        }
        with atomic_output_dir(output_dir) as tmp:
            write_nifti_like(res.warped.astype(np.float32), fix, tmp / "warped.nii.gz")
            write_nifti_like(res.ddf.astype(np.float32), fix, tmp / "ddf.nii.gz", vector=True)
            det = jacobian_determinant(torch.as_tensor(res.ddf, dtype=torch.float32)[None])[0]
            write_nifti_like(det.numpy(), fix, tmp / "jacobian.nii.gz")
            affine_vox = None
            if res.theta is not None:
                affine_vox = theta_to_voxel(torch.as_tensor(res.theta, dtype=torch.float64)[None], fix.shape)[0].numpy()
            voxel_map = res.voxel_map if res.voxel_map is not None else reference_to_moving_voxels(mov, fix)
            write_transforms(tmp, res.ddf, mov, fix, voxel_map, affine_vox)
            if res.warped_label is not None:
                write_nifti_like(res.warped_label.astype(np.int16), fix, tmp / "warped_label.nii.gz")
            if fix.kind == "png":
                write_png(res.warped, tmp / "warped.png")
            if l2r_name is not None:
                np.savez_compressed(tmp / l2r_name, learn2reg_array(res.ddf))
            (tmp / "metrics.json").write_text(json.dumps(meta, indent=2))
        logger.info("registered %s -> %s in %.1f ms; outputs in %s", mov.path, fix.path, res.metrics["time_ms"], output_dir)


def load_weights(
    network: nn.Module,
    path: str | Path,
    device: str | torch.device | None = None,
    what: str = "model weights",
    hint: str = "Train the bundle first (configs/train.json) or pass --checkpoint PATH.",
) -> nn.Module:
    """Load a plain state dict (``models/model.pt``) into ``network``, with a clear error if it is missing.

    ``what`` and ``hint`` word the error (e.g. a joint training's registration weights)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: {what} not found. {hint}")
    state = torch.load(p, map_location=device or "cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    network.load_state_dict(state)
    return network
