"""A JSON-lines training log (loss terms, validation metrics) that training-curve figures read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["TrainingLog"]


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class TrainingLog:
    """Append one JSON record per ``log_interval`` iterations (loss and loss terms) and one per
    validation (evaluator metrics) to ``path``, and draw ``training_curves.png`` beside it at the
    end of every epoch.

    Args:
        path: JSON-lines file.
        loss_function: optional loss with a ``last_terms`` dict (e.g. ``RegistrationLoss``).
        evaluator: optional evaluator whose ``state.metrics`` are logged after it runs.
        log_interval: iterations between loss records.
        plot: draw the curves PNG.
    """

    def __init__(self, path: str, loss_function: Any = None, evaluator: Engine | None = None, log_interval: int = 10, plot: bool = True) -> None:
        self.path = Path(path)
        self.loss_function = loss_function
        self.evaluator = evaluator
        self.log_interval = int(log_interval)
        self.plot = plot
        self._t0 = time.perf_counter()
        self._trainer: Engine | None = None

    def _write(self, rec: dict[str, Any]) -> None:
        if _rank() != 0:  # one log per distributed run
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.log_interval), self._log_iter)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.COMPLETED, self._log_val)

    def _log_iter(self, engine: Engine) -> None:
        out = engine.state.output
        loss = out[0]["loss"] if isinstance(out, list) else out.get("loss") if isinstance(out, dict) else out
        rec = {"epoch": engine.state.epoch, "iteration": engine.state.iteration, "loss": float(loss), "time_s": time.perf_counter() - self._t0}
        terms = getattr(self.loss_function, "last_terms", None) or {}
        rec.update({k: float(v) for k, v in terms.items()})
        self._write(rec)

    def _log_val(self, evaluator: Engine) -> None:
        tr = self._trainer
        rec = {"epoch": tr.state.epoch if tr else 0, "iteration": tr.state.iteration if tr else 0}
        rec.update({f"val_{k}" if not k.startswith("val") else k: float(v) for k, v in evaluator.state.metrics.items()})
        self._write(rec)

    def _log_epoch(self, engine: Engine) -> None:
        if not self.plot or _rank() != 0 or not self.path.exists():
            return
        from morphzoo.viz import plot_training_curves  # matplotlib is a dependency: an import error is a real bug

        plot_training_curves(self.path, self.path.with_name("training_curves.png"))
