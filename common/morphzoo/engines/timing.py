"""Per-stage wall time of a MONAI trainer's iterations (data, forward, loss, backward, optimiser)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = ["StepTimer", "STEP_STAGES"]

STEP_STAGES = ("data", "forward", "loss", "backward", "optimizer", "other", "total")


class StepTimer:
    """Time every training iteration of a MONAI trainer by stage, from the events it fires.

    ``data``: ignite's ``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED`` (loading, caching misses
    and augmentation in the data loader); ``forward``: -> ``IterationEvents.FORWARD_COMPLETED``
    (batch preparation and the network); ``loss``: -> ``LOSS_COMPLETED``; ``backward``: ->
    ``BACKWARD_COMPLETED``; ``optimizer``: -> ``MODEL_COMPLETED``; ``other``: -> the end of the
    iteration (post-processing, handlers); ``total``: the iteration from ``GET_BATCH_STARTED``;
    ``cpu``: the process's CPU time (all threads, user + system) over the same span, which other
    jobs on a shared machine change much less than the wall times.
    MONAI's ``SupervisedTrainer`` and :class:`morphzoo.engines.JointRegSegTrainer` fire them all.
    On CUDA each boundary synchronises the device, so the stages are the device's times.

    Args:
        warmup: iterations left out of :meth:`summary` (the first builds lazy state).

    Attributes:
        records: one ``{stage: ms}`` dict per timed iteration.
    """

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = int(warmup)
        self.records: list[dict[str, float]] = []
        self._marks: dict[str, float] = {}
        self._device: torch.device | None = None

    def _mark(self, name: str) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self._marks[name] = time.perf_counter()
        if name in ("start", "end"):
            self._marks["cpu_" + name] = time.process_time()

    def attach(self, engine: Engine) -> None:
        """Register the stage marks on ``engine`` (a MONAI trainer)."""
        device = getattr(engine.state, "device", None)
        self._device = torch.device(device) if device is not None else None
        engine.add_event_handler(Events.GET_BATCH_STARTED, lambda e: (self._marks.clear(), self._mark("start")))
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: self._mark("data"))
        for name, event in (
            ("forward", IterationEvents.FORWARD_COMPLETED),
            ("loss", IterationEvents.LOSS_COMPLETED),
            ("backward", IterationEvents.BACKWARD_COMPLETED),
            ("optimizer", IterationEvents.MODEL_COMPLETED),
        ):
            engine.add_event_handler(event, lambda e, n=name: self._mark(n))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _completed(self, engine: Engine) -> None:
        self._mark("end")
        m, rec = self._marks, {}
        if "start" not in m:
            return
        prev = m["start"]
        for stage in ("data", "forward", "loss", "backward", "optimizer"):
            if stage in m:  # a trainer that fires fewer events folds the stage into the next
                rec[stage] = (m[stage] - prev) * 1000.0
                prev = m[stage]
            else:
                rec[stage] = float("nan")
        rec["other"] = (m["end"] - prev) * 1000.0
        rec["total"] = (m["end"] - m["start"]) * 1000.0
        rec["cpu"] = (m["cpu_end"] - m["cpu_start"]) * 1000.0
        self.records.append(rec)

    def summary(self) -> dict[str, Any]:
        """Median ms per stage (and ``cpu_ms``) over the iterations after ``warmup``, and their count.

        Raises:
            RuntimeError: if no iteration after the warm-up was timed.
        """
        timed = self.records[self.warmup :]
        if not timed:
            raise RuntimeError(f"StepTimer: {len(self.records)} iteration(s) timed, none after the {self.warmup} warm-up iteration(s).")
        out: dict[str, Any] = {f"{s}_ms": statistics.median(r[s] for r in timed) for s in (*STEP_STAGES, "cpu")}
        out["steps"] = len(timed)
        return out
