"""Glue that lets MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` train and validate an
unsupervised pair loss.

- :class:`RegistrationPrepareBatch` turns a pair batch into ``inputs = cat(moving, fixed)`` and
  ``targets = cat(moving, fixed[, moving_label, fixed_label])``.
- :class:`RegistrationInferer` runs the backbone (pair -> field) and, for diffeomorphic
  variants, integrates the velocity field (MONAI ``DVF2DDF``).
- :class:`AffineInferer` runs an affine network (pair -> ``theta``) and returns the affine's
  displacement field, so the same losses, post-transforms and metrics train and score it.
- :class:`WarpLabelsd` is the evaluator's post-transform: warps the moving label with the
  predicted field so MONAI's ``MeanDice`` handler scores registration.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from monai.networks.blocks import DVF2DDF, Warp
from monai.transforms import MapTransform

from morphzoo.engines.precision import resolve_autocast
from morphzoo.networks.nets.fcn_deep_selfsup import resize_displacement
from morphzoo.transforms.affine import affine_to_ddf

__all__ = ["RegistrationPrepareBatch", "RegistrationInferer", "AffineInferer", "WarpLabelsd", "one_hot_labels"]


class RegistrationPrepareBatch(PrepareBatch):
    """Pair batch -> ``(inputs, targets)`` for MONAI engines.

    ``inputs`` is ``(B, 2, *S)`` (moving, fixed); ``targets`` is ``(B, 4, *S)`` with the labels
    when the batch has ``moving_label``/``fixed_label`` and ``use_labels`` is set, else
    ``(B, 2, *S)``.

    With ``prealign`` (a callable ``(moving, fixed) -> theta`` such as
    :class:`morphzoo.inference.prealign.NetAffine`), the moving image and label are first warped by
    the affine it finds, so the network trains on pre-aligned pairs exactly as it is run at
    inference (labels by nearest neighbour, never used to find the affine).
    """

    def __init__(self, use_labels: bool = True, prealign: Any = None) -> None:
        self.use_labels = use_labels
        self.prealign = prealign
        self._warp = Warp(mode="bilinear", padding_mode="border")
        self._warp_nearest = Warp(mode="nearest", padding_mode="zeros")

    def __call__(
        self, batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for key in ("moving", "fixed"):
            if key not in batchdata:
                raise KeyError(f"registration batch has no {key!r} key (keys: {sorted(batchdata)}).")
        mov = torch.as_tensor(batchdata["moving"]).to(device=device, non_blocking=non_blocking, **kwargs)
        fix = torch.as_tensor(batchdata["fixed"]).to(device=device, non_blocking=non_blocking, **kwargs)
        if mov.shape != fix.shape:
            raise ValueError(f"moving {tuple(mov.shape)} and fixed {tuple(fix.shape)} batches differ in shape.")
        with_labels = self.use_labels and "moving_label" in batchdata and "fixed_label" in batchdata
        mlab = flab = None
        if with_labels:
            mlab = torch.as_tensor(batchdata["moving_label"]).to(device=device, non_blocking=non_blocking, **kwargs)
            flab = torch.as_tensor(batchdata["fixed_label"]).to(device=device, non_blocking=non_blocking, **kwargs)
        if self.prealign is not None:
            with torch.no_grad():
                ddf = affine_to_ddf(self.prealign(mov, fix).to(mov.dtype), mov.shape[2:])
                mov = self._warp(mov, ddf)
                if mlab is not None:
                    mlab = self._warp_nearest(mlab.float(), ddf)
        parts = [mov, fix] + ([mlab, flab] if with_labels else [])
        return torch.cat([mov, fix], dim=1), torch.cat(parts, dim=1)


class RegistrationInferer(Inferer):
    """Run a pair -> field network and return the displacement field.

    Args:
        integration_steps: 0 for a network predicting displacements directly; > 0 integrates a
            stationary velocity field by scaling and squaring (diffeomorphic VoxelMorph).
        return_all: pass through a list of fields when the network returns several (multi-scale
            training losses); otherwise the first (finest) is returned, resized to the input grid
            (values rescaled) if it is coarser (a cascade trained one coarse stage at a time).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"auto"``: run the network's forward pass
            under bf16 autocast where the device has native bf16
            (:func:`morphzoo.engines.resolve_autocast`); the returned fields are fp32 and the
            integration, warping and loss stay fp32.
    """

    def __init__(self, integration_steps: int = 0, return_all: bool = False, precision: str | None = "fp32") -> None:
        super().__init__()
        self.integration_steps = int(integration_steps)
        self.return_all = return_all
        self.precision = precision
        resolve_autocast(precision)  # a bad setting fails at construction, not at the first step
        self._dtypes: dict[str, torch.dtype | None] = {}
        self.dvf2ddf = DVF2DDF(num_steps=self.integration_steps) if self.integration_steps > 0 else None

    def _integrate(self, field: torch.Tensor) -> torch.Tensor:
        field = field.float()
        return self.dvf2ddf(field) if self.dvf2ddf is not None else field

    def _autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if device.type not in self._dtypes:
            self._dtypes[device.type] = resolve_autocast(self.precision, device)
        return self._dtypes[device.type]

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        dtype = self._autocast_dtype(inputs.device)
        with torch.autocast(device_type=inputs.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = network(inputs, *args, **kwargs)
        if isinstance(out, (list, tuple)):
            fields = [self._integrate(f) for f in out]
            if self.return_all:
                return fields
            return resize_displacement(fields[0], [int(v) for v in inputs.shape[2:]])
        return self._integrate(out)


class AffineInferer(Inferer):
    """Run an affine network (``(B, 2, *S)`` -> ``theta`` ``(B, N, N + 1)``, e.g.
    :class:`morphzoo.networks.nets.AffineNet`) and return the affine's displacement field
    ``(B, N, *S)`` on the input grid, so that :class:`morphzoo.losses.RegistrationLoss` (image
    similarity and, for label-supervised training, Dice of warped labels) and :class:`WarpLabelsd`
    train and validate it like any pair -> field network."""

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        theta = network(inputs, *args, **kwargs)
        return affine_to_ddf(theta.to(inputs.dtype), inputs.shape[2:])


def one_hot_labels(label: torch.Tensor, num_labels: int, channel_dim: int = 0) -> torch.Tensor:
    """One-channel integer label map to one-hot float.

    Args:
        label: ``(1, *S)`` (``channel_dim=0``) or ``(B, 1, *S)`` (``channel_dim=1``).
        num_labels: classes including background; values are clamped to ``0..num_labels-1``.
        channel_dim: the axis holding the single channel.
    """
    if label.shape[channel_dim] != 1:
        raise ValueError(f"expected one channel on axis {channel_dim}, got shape {tuple(label.shape)}.")
    lab = label.round().long().clamp(0, num_labels - 1).squeeze(channel_dim)
    return F.one_hot(lab, num_labels).movedim(-1, channel_dim).float()


class WarpLabelsd(MapTransform):
    """Evaluator post-transform: ``pred`` (field ``(N, *S)``) -> one-hot warped moving label,
    ``label`` -> one-hot fixed label, for MONAI's ``MeanDice``/``HausdorffDistance`` handlers.

    The labels are taken from the engine's targets when they carry them (``label`` of 4 channels:
    moving, fixed, moving label, fixed label, as :class:`RegistrationPrepareBatch` builds them), so
    that with a pre-alignment stage the field is applied to the pre-aligned moving label exactly as
    in the loss; otherwise from the batch's ``moving_label``/``fixed_label``.

    Args:
        num_labels: classes including background.
        field_key, moving_label_key, fixed_label_key: keys of the decollated batch+output dict.
        target_key: key of the engine's targets.
    """

    def __init__(
        self,
        num_labels: int,
        field_key: str = "pred",
        moving_label_key: str = "moving_label",
        fixed_label_key: str = "fixed_label",
        output_keys: Sequence[str] = ("pred", "label"),
        target_key: str = "label",
    ) -> None:
        super().__init__([field_key], allow_missing_keys=False)
        self.num_labels = int(num_labels)
        self.field_key, self.mkey, self.fkey, self.tkey = field_key, moving_label_key, fixed_label_key, target_key
        self.output_keys = tuple(output_keys)
        self.warp = Warp(mode="nearest", padding_mode="zeros")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ddf = torch.as_tensor(d[self.field_key])
        targets = d.get(self.tkey)
        if targets is not None and torch.as_tensor(targets).shape[0] == 4:
            targets = torch.as_tensor(targets).to(ddf.device)
            mlab, flab = targets[2:3].float(), targets[3:4].float()
        else:
            mlab = torch.as_tensor(d[self.mkey]).to(ddf.device).float()
            flab = torch.as_tensor(d[self.fkey]).to(ddf.device).float()
        warped = self.warp(mlab[None], ddf[None].float())[0]
        d[self.output_keys[0]] = one_hot_labels(warped, self.num_labels)
        d[self.output_keys[1]] = one_hot_labels(flab, self.num_labels)
        return d
