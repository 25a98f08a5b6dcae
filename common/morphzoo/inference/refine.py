"""Label-free refinement: instance optimisation of the displacement field itself.

Started from the network's field ``u0``, Adam optimises a residual ``r`` on a coarse grid (the
image grid divided by ``grid_factor``), smoothed by repeated box filtering (a cheap B-spline-like
smoother), for ``steps`` steps on the task's own unsupervised loss
``similarity(moving ∘ u, fixed) + λ R(u)`` evaluated on that coarse grid (images, or their MIND-SSC
descriptors, average-pooled to it, as ConvexAdam's Adam stage does): ``u = u0 + smooth(r)``,
``r = 0`` at the start, so step 0 is the network's answer. The residual is finally upsampled
linearly onto the image grid and added to ``u0``. The best
field seen is returned (so refinement never ends above its start on its own loss), with an early
stop when the loss stops improving. The network's weights are not touched (compare
:class:`~morphzoo.inference.InstanceOptimization`, which fine-tunes them), and the pair's labels
are never read: the stage has no argument through which they could arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp

from morphzoo.losses.mind import mind_descriptor_distance, mind_ssc
from morphzoo.losses.registration import make_image_loss, make_regularizer
from morphzoo.transforms.spatial import resize_field

__all__ = ["FieldRefiner", "box_mean3"]


def box_mean3(x: torch.Tensor, dims: Iterable[int]) -> torch.Tensor:
    """Mean over a window of 3 along each of ``dims`` in turn, over the samples inside the array.

    The same as ``avg_pool{2,3}d(x, 3, stride=1, padding=1, count_include_pad=False)`` on the
    spatial dimensions (a box's count of valid samples is the product of its per-axis counts), but
    separable: about 4x cheaper forward and backward on a ``(1, 3, 32, 32, 32)`` field on one
    thread, and defined for axes shorter than 3, where pooling raises.

    Args:
        x: any tensor, e.g. a field ``(B, N, *S)``.
        dims: the axes to average along.

    Returns:
        A tensor of the shape of ``x``.
    """
    for d in dims:
        n = x.shape[d]
        padded = F.pad(x, [0, 0] * (x.ndim - 1 - d) + [1, 1])
        total = padded.narrow(d, 0, n) + padded.narrow(d, 1, n) + padded.narrow(d, 2, n)
        count = torch.full((n,), 3.0, dtype=x.dtype, device=x.device)
        count[0] -= 1.0
        count[-1] -= 1.0
        shape = [1] * x.ndim
        shape[d] = n
        x = total / count.clamp_min(1.0).view(shape)
    return x


class FieldRefiner:
    """A ``refine(moving, fixed, ddf) -> ddf`` stage for :class:`~morphzoo.inference.Registrar`.

    Args:
        spatial_dims: 2 or 3.
        steps: Adam steps (0 returns the field unchanged).
        learning_rate: Adam learning rate (voxels of the control grid per step, roughly).
        image_loss: ``"lncc"``, ``"ncc"``, ``"mse"``, ``"mi"``, ``"ssim"`` or ``"mind"`` (MIND-SSC
            descriptors of both images computed once, the moving ones warped, squared difference
            summed over descriptor channels: the cost of ConvexAdam's instance optimisation).
        regularizer: ``"diffusion"``, ``"bending"`` or ``"tv"``, on the full field ``u``.
        reg_weight: weight of the regulariser.
        grid_factor: the optimisation grid (field residual and loss) is the image grid divided by this factor.
        smooth_passes: box filters (size 3) applied to the control residual.
        kernel_size: LNCC window.
        patience: stop after this many steps without a relative improvement of ``min_delta``.
        min_delta: relative loss improvement that counts.

    Shapes: ``moving``, ``fixed`` ``(B, 1, *S)`` normalised on one grid (the moving image already
    pre-aligned, as the network saw it); ``ddf`` ``(B, N, *S)`` in voxels; returns ``(B, N, *S)``.

    Attributes:
        last_losses: the loss at every step of the last call (step 0 = the network's field).
        last_steps: steps actually run in the last call.
    """

    def __init__(
        self,
        spatial_dims: int,
        steps: int = 50,
        learning_rate: float = 0.1,
        image_loss: str = "lncc",
        regularizer: str = "diffusion",
        reg_weight: float = 1.0,
        grid_factor: int = 2,
        smooth_passes: int = 2,
        kernel_size: int = 7,
        patience: int = 10,
        min_delta: float = 1e-4,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if steps < 0 or grid_factor < 1:
            raise ValueError(f"steps must be >= 0 and grid_factor >= 1, got {steps} and {grid_factor}.")
        self.spatial_dims = spatial_dims
        self.steps = int(steps)
        self.learning_rate = float(learning_rate)
        self.use_mind = image_loss.lower() == "mind"
        self.image_loss = mind_descriptor_distance if self.use_mind else make_image_loss(image_loss, spatial_dims, kernel_size)
        self.regularizer = make_regularizer(regularizer)
        self.reg_weight = float(reg_weight)
        self.grid_factor = int(grid_factor)
        self.smooth_passes = int(smooth_passes)
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.warp = Warp(mode="bilinear", padding_mode="border")
        self.last_losses: list[float] = []
        self.last_steps = 0

    def _smooth(self, r: torch.Tensor) -> torch.Tensor:
        for _ in range(self.smooth_passes):
            r = box_mean3(r, dims=range(2, r.ndim))
        return r

    def loss(self, moving: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """The refinement objective ``similarity(moving ∘ ddf, fixed) + reg_weight * R(ddf)`` on one grid
        (``moving``/``fixed`` images or descriptors, ``ddf`` in voxels of that grid)."""
        return self.image_loss(self.warp(moving, ddf), fixed) + self.reg_weight * self.regularizer(ddf)

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        n = self.spatial_dims
        if moving.shape != fixed.shape or moving.ndim != n + 2 or ddf.shape != (moving.shape[0], n, *moving.shape[2:]):
            raise ValueError(
                f"expected (B, 1, *S) moving/fixed and a (B, {n}, *S) field, got {tuple(moving.shape)}, "
                f"{tuple(fixed.shape)} and {tuple(ddf.shape)}."
            )
        self.last_losses, self.last_steps = [], 0
        if self.steps == 0:
            return ddf
        moving, fixed, base = moving.detach().float(), fixed.detach().float(), ddf.detach().float()
        if self.use_mind:  # descriptors once, at full resolution; the moving ones are warped like an image
            moving, fixed = mind_ssc(moving), mind_ssc(fixed)
        size = tuple(moving.shape[2:])
        coarse = tuple(max(2, s // self.grid_factor) for s in size)
        pool = F.adaptive_avg_pool2d if n == 2 else F.adaptive_avg_pool3d
        mov_c, fix_c = pool(moving, coarse), pool(fixed, coarse)
        base_c = resize_field(base, coarse)
        residual = torch.zeros(moving.shape[0], n, *coarse, dtype=moving.dtype, device=moving.device, requires_grad=True)
        opt = torch.optim.Adam([residual], lr=self.learning_rate)
        best_r, best_loss, stale = None, float("inf"), 0
        with torch.enable_grad():
            for step in range(self.steps + 1):
                smooth = self._smooth(residual)
                value = self.loss(mov_c, fix_c, base_c + smooth)
                v = float(value.detach())
                self.last_losses.append(v)
                improved = best_loss == float("inf") or v < best_loss - self.min_delta * abs(best_loss)
                if v < best_loss:
                    best_r, best_loss = smooth.detach(), v
                stale = 0 if improved else stale + 1
                if step == self.steps or stale >= self.patience:
                    break
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                self.last_steps = step + 1
        return base + resize_field(best_r, size)
