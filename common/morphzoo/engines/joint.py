"""Joint registration and segmentation training from few annotations (FMIRNet paper, Fig. 2).

One training step on a batch of slice pairs (:class:`morphzoo.transforms.RandSlicePaird`): the
registration network maps (annotated slice, unlabelled slice) to a displacement field; the
annotated slice's label is warped onto the unlabelled slice; the segmenter is trained on the
annotated slices with their real labels and on the unlabelled slices with the propagated ones,
while the registration network is trained on its own unsupervised loss. Both networks are
updated in the same step, each by its own optimiser and loss, as MONAI's ``GanTrainer`` does
for its two networks.

With the optional extent prior (:class:`morphzoo.transforms.RandSlicePaird` ``background_beyond``)
a batch item flagged ``fixed_background`` gets an all-background label instead of a propagated one.

The propagated labels are detached (warped by nearest neighbour): the segmentation loss never
moves the registration network, so a segmenter's early mistakes cannot teach the field to
agree with them. Without a registration network the same trainer is the supervised-only
baseline (annotated slices alone: the paper's FCN / UNet rows; with the extent prior, plus the
background slices).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.networks.blocks import Warp
from torch.optim import Optimizer
from torch.utils.data import DataLoader

__all__ = ["JointRegSegLoss", "JointRegSegTrainer"]


class JointRegSegLoss(nn.Module):
    """The two losses of the joint framework and the record of their terms.

    ``segmentation = seg_loss(S(moving), moving_label) + propagated_weight * seg_loss(S(fixed),
    moving_label∘φ)``; ``registration = reg_loss(φ, cat(moving, fixed))`` (e.g.
    :class:`morphzoo.losses.RegistrationLoss`: image similarity + regulariser, no labels).

    Args:
        seg_loss: segmentation loss on logits and integer labels ``(B, 1, *S)`` (e.g. MONAI
            ``DiceCELoss(to_onehot_y=True, softmax=True)``).
        reg_loss: registration loss ``(ddf, targets) -> scalar`` or None (supervised only).
        propagated_weight: weight of the segmentation loss on propagated labels.
        reg_weight: weight of the registration loss in the logged total.
    """

    def __init__(self, seg_loss: Callable, reg_loss: Callable | None = None, propagated_weight: float = 1.0, reg_weight: float = 1.0) -> None:
        super().__init__()
        self.seg_loss = seg_loss
        self.reg_loss = reg_loss
        self.propagated_weight = float(propagated_weight)
        self.reg_weight = float(reg_weight)
        self.last_terms: dict[str, float] = {}

    def segmentation(self, logits_real: torch.Tensor, label: torch.Tensor, logits_prop: torch.Tensor | None = None, label_prop: torch.Tensor | None = None) -> torch.Tensor:
        real = self.seg_loss(logits_real, label)
        self.last_terms["seg_real"] = float(real.detach())
        total = real
        if logits_prop is not None and label_prop is not None and self.propagated_weight > 0:
            prop = self.seg_loss(logits_prop, label_prop)
            self.last_terms["seg_propagated"] = float(prop.detach())
            total = total + self.propagated_weight * prop
        return total

    def registration(self, ddf: torch.Tensor, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if self.reg_loss is None:
            raise RuntimeError("JointRegSegLoss has no reg_loss: the supervised-only setting has no registration network.")
        loss = self.reg_loss(ddf, torch.cat([moving, fixed], dim=1))
        self.last_terms["registration"] = float(loss.detach())
        for k, v in (getattr(self.reg_loss, "last_terms", None) or {}).items():
            self.last_terms[f"reg_{k}"] = float(v)
        return loss


class JointRegSegTrainer(Trainer):
    """MONAI trainer that updates a segmenter and (optionally) a registration network together.

    Batches hold ``moving`` ``(B, 1, *S)``, ``moving_label`` ``(B, 1, *S)`` (integer labels) and
    ``fixed`` ``(B, 1, *S)`` (unlabelled); see the module docstring for the step.
    ``engine.state.output`` is ``{"loss", "seg_loss", "reg_loss" (joint only), "pred", "label"}`` where
    ``pred``/``label`` are the segmenter's logits and targets of the whole step (real then
    propagated), so MONAI's train metrics and ``from_engine`` handlers work unchanged.

    Args:
        device: torch device.
        max_epochs: epochs to run.
        train_data_loader: loader of slice-pair batches.
        segmenter: image ``(B, 1, *S)`` -> logits ``(B, num_classes, *S)``.
        seg_optimizer: optimiser of the segmenter.
        loss_function: a :class:`JointRegSegLoss`.
        registration: pair ``(B, 2, *S)`` -> displacement ``(B, spatial_dims, *S)`` in voxels, or
            None for the supervised-only baseline.
        reg_optimizer: optimiser of ``registration`` (None: the registration network is frozen).
        epoch_length: iterations per epoch (None: the loader's length).
        train_handlers: MONAI/ignite handlers.
        kwargs: the rest of :class:`monai.engines.Trainer`'s arguments.

    Raises:
        ValueError: a batch lacks one of the three keys or its images differ in shape.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        segmenter: nn.Module,
        seg_optimizer: Optimizer,
        loss_function: JointRegSegLoss,
        registration: nn.Module | None = None,
        reg_optimizer: Optimizer | None = None,
        epoch_length: int | None = None,
        train_handlers: Sequence | None = None,
        optim_set_to_none: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            handlers=train_handlers,
            **kwargs,
        )
        self.network = segmenter  # MONAI handlers and MONAI Label look for `network`
        self.segmenter = segmenter
        self.seg_optimizer = seg_optimizer
        self.optimizer = seg_optimizer
        self.loss_function = loss_function
        self.registration = registration
        self.reg_optimizer = reg_optimizer
        self.optim_set_to_none = optim_set_to_none
        self.warp_image = Warp(mode="bilinear", padding_mode="border")
        self.warp_label = Warp(mode="nearest", padding_mode="zeros")

    def _iteration(self, engine: "JointRegSegTrainer", batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        missing = [k for k in ("moving", "moving_label", "fixed") if k not in batchdata]
        if missing:
            raise ValueError(f"joint training batch lacks {missing} (keys: {sorted(batchdata)}); use RandSlicePaird.")
        dev = dict(device=engine.state.device, non_blocking=engine.non_blocking)
        mov = torch.as_tensor(batchdata["moving"]).float().to(**dev)
        lab = torch.as_tensor(batchdata["moving_label"]).to(**dev)
        fix = torch.as_tensor(batchdata["fixed"]).float().to(**dev)
        if mov.shape != fix.shape or mov.shape[2:] != lab.shape[2:]:
            raise ValueError(f"moving {tuple(mov.shape)}, moving_label {tuple(lab.shape)} and fixed {tuple(fix.shape)} differ in shape.")
        loss_fn = engine.loss_function
        loss_fn.last_terms = {}

        reg_loss = None
        prop_label = None
        if engine.registration is not None:
            train_reg = engine.reg_optimizer is not None
            engine.registration.train(train_reg)
            with torch.set_grad_enabled(train_reg):
                ddf = engine.registration(torch.cat([mov, fix], dim=1))
                if train_reg:
                    reg_loss = loss_fn.registration(ddf, mov, fix)
            with torch.no_grad():
                prop_label = engine.warp_label(lab.float(), ddf.detach()).round()
                if "fixed_background" in batchdata:  # extent prior: slices known to hold no structure
                    bg = torch.as_tensor(batchdata["fixed_background"]).to(prop_label.device).reshape(-1) > 0
                    prop_label[bg] = 0.0

        engine.segmenter.train()
        if prop_label is not None:
            logits = engine.segmenter(torch.cat([mov, fix], dim=0))
            logits_real, logits_prop = logits[: mov.shape[0]], logits[mov.shape[0]:]
            seg_loss = loss_fn.segmentation(logits_real, lab, logits_prop, prop_label)
            targets = torch.cat([lab, prop_label.to(lab.dtype)], dim=0)
        else:
            bg = None
            if "fixed_background" in batchdata:  # supervised only + extent prior: background slices, no propagation
                bg = torch.as_tensor(batchdata["fixed_background"]).to(mov.device).reshape(-1) > 0
            if bg is not None and bool(bg.any()):
                n = mov.shape[0]
                logits = engine.segmenter(torch.cat([mov, fix[bg]], dim=0))
                empty = torch.zeros_like(lab[bg])
                seg_loss = loss_fn.segmentation(logits[:n], lab, logits[n:], empty)
                targets = torch.cat([lab, empty], dim=0)
            else:
                logits = logits_real = engine.segmenter(mov)
                seg_loss = loss_fn.segmentation(logits_real, lab)
                targets = lab
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        total = seg_loss if reg_loss is None else seg_loss + loss_fn.reg_weight * reg_loss
        engine.state.output = {"pred": logits.detach(), "label": targets, "loss": total.detach()}
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        engine.seg_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if reg_loss is not None:
            engine.reg_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        total.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.seg_optimizer.step()
        if reg_loss is not None:
            engine.reg_optimizer.step()
        engine.state.output["seg_loss"] = seg_loss.detach()
        if reg_loss is not None:
            engine.state.output["reg_loss"] = reg_loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # MONAI decollates the output here
        return engine.state.output
