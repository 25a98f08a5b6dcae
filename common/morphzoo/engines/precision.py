"""Mixed precision for training steps on CPUs and GPUs: bf16 autocast where the hardware has it.

MONAI's ``SupervisedTrainer(amp=True)`` autocasts on CUDA only (and in fp16 with a grad scaler).
On a CPU with AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake and later) oneDNN runs bf16
convolutions at about twice the fp32 rate; :func:`resolve_autocast` decides whether a run gets them
and :class:`~morphzoo.engines.RegistrationInferer` applies it to the network's forward pass only
(loss, warping and the optimiser stay fp32, weights stay fp32).
"""

from __future__ import annotations

import logging

import torch

__all__ = ["bf16_supported", "resolve_autocast"]

logger = logging.getLogger(__name__)

_CHOICES = ("fp32", "bf16", "auto")


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bf16 arithmetic natively (CUDA: compute capability 8.0+; CPU:
    oneDNN's bf16 kernels, i.e. AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_autocast(precision: str | None, device: str | torch.device = "cpu") -> torch.dtype | None:
    """The autocast dtype for a ``precision`` setting on ``device``, or ``None`` for fp32.

    Args:
        precision: ``"fp32"`` (or ``None``): no autocast; ``"bf16"``: bf16 autocast, falling back
            to fp32 with a warning where ``device`` has no native bf16 (emulated bf16 is slower
            than fp32); ``"auto"``: bf16 where native, fp32 otherwise, silently.
        device: where the network runs.

    Raises:
        ValueError: for another ``precision``.
    """
    p = "fp32" if precision is None else str(precision).strip().lower()
    if p not in _CHOICES:
        raise ValueError(f"precision must be one of {list(_CHOICES)}, got {precision!r}.")
    if p == "fp32":
        return None
    if bf16_supported(device):
        return torch.bfloat16
    if p == "bf16":
        logger.warning("precision bf16: %s has no native bf16 arithmetic; training stays fp32.", torch.device(device))
    return None
