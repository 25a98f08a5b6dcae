"""Resumable training: one handler that saves and restores the whole training state atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from morphzoo.transforms.io import atomic_path

__all__ = ["ResumableCheckpoint", "save_state_atomic"]

logger = logging.getLogger(__name__)


class ResumableCheckpoint:
    """Save ``save_dict`` (network, optimizer, trainer, ...) every ``save_interval`` iterations and
    at the end of every epoch to ``<ckpt_dir>/last.pt`` atomically (temporary file + rename), and
    restore it when the trainer starts, so a run killed mid-epoch resumes from its last
    checkpoint with the same optimizer state and iteration count.

    Two settings of the new run win over the checkpoint, so a finished or plateaued run can be
    continued differently: ``max_epochs`` (a run can be extended) and, unless ``save_dict`` holds
    a learning-rate scheduler (``lr_scheduler``/``scheduler``), each optimizer's configured
    learning rate (a resumed run can be annealed with ``--learning_rate``). With an unchanged
    configuration both equal the checkpoint's, so resuming reproduces an uninterrupted run.

    Args:
        ckpt_dir: folder of the resume checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimizer, scheduler);
            the engine it is attached to is added as ``"trainer"``.
        save_interval: iterations between saves (0: only at epoch ends).
        resume: load ``last.pt`` on start if it exists.
    """

    def __init__(self, ckpt_dir: str, save_dict: dict[str, Any], save_interval: int = 50, resume: bool = True) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.save_dict = save_dict
        self.save_interval = int(save_interval)
        self.resume = resume

    @property
    def path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    def attach(self, engine: Engine) -> None:
        self.save_dict = {**self.save_dict, "trainer": engine}
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        if self.save_interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        if not self.path.exists():
            return
        max_epochs = engine.state.max_epochs
        ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        has_scheduler = any(k in self.save_dict for k in ("lr_scheduler", "scheduler"))
        configured = {
            k: [g["lr"] for g in o.param_groups]
            for k, o in self.save_dict.items()
            if isinstance(o, torch.optim.Optimizer) and not has_scheduler
        }
        Checkpoint.load_objects(to_load=self.save_dict, checkpoint=ckpt)
        if max_epochs is not None:  # the configured length wins, so a finished run can be extended
            engine.state.max_epochs = max(max_epochs, engine.state.epoch)
        for k, lrs in configured.items():  # the configured learning rate wins, so a run can be annealed
            for group, lr in zip(self.save_dict[k].param_groups, lrs):
                if group["lr"] != lr:
                    logger.info("%s: learning rate %g from the checkpoint replaced by the configured %g", k, group["lr"], lr)
                group["lr"] = lr
        logger.info("resumed from %s at epoch %d, iteration %d", self.path, engine.state.epoch, engine.state.iteration)

    def save(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_state_atomic({k: v.state_dict() for k, v in self.save_dict.items()}, self.path)


def save_state_atomic(state: Any, path: str | Path) -> Path:
    """``torch.save(state, path)`` through a temporary file and a rename, so a reader never sees
    half a file; a module is saved as its ``state_dict``. Returns the path."""
    path = Path(path)
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path
