"""MONAI Label's ``BundleTrainTask`` for a MorphZoo segmentation bundle, writing only into the app.

MONAI Label's bundle training runs the bundle's ``configs/train.json`` with ``monai.bundle.run``
and overrides ``bundle_root``, ``train#trainer#max_epochs``, ``train#dataset#data``,
``validate#dataset#data``, ``device`` and ``train#handlers``. Everything else keeps the bundle's
values, and a MorphZoo ``train.json`` saves the best model to ``@ckpt_dir/@model_file``
(``<bundle>/models/model.pt``) and its run files to ``@output_dir`` (``<bundle>/runs/<task>``):
MONAI Label would overwrite the committed weights. This subclass

- sets ``ckpt_dir`` to the app's model folder for this model (``<model_dir>/model.pt``) and
  ``output_dir`` to a new ``<model_dir>/runs/<time stamp>`` per training, and refuses to run
  if either resolves inside the bundle;
- starts from the app's last trained weights when they exist, else from the bundle's committed
  ``models/model.pt`` (read only; ``pretrained=false`` starts from scratch);
- caps ``batch_size`` at the number of training images (the bundle drops incomplete batches, so
  a few labelled images would otherwise give empty epochs) and sets ``max_epochs`` for the
  learning-rate schedule too;
- checks the committed weights' SHA-256 before and after training and fails loudly if it changed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from monai.handlers import CheckpointLoader
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger(__name__)

__all__ = ["AppBundleTrainTask", "sha256"]


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class AppBundleTrainTask(BundleTrainTask):
    """Train a segmentation bundle from MONAI Label's labelled images into ``model_dir``.

    Args:
        bundle_dir: the bundle folder (``configs/train.json``, ``models/model.pt``).
        conf: the app's configuration.
        model_dir: the app's folder for this model; ``model.pt`` there is what the infer task loads.
        name: model name used in log lines.
        default_epochs: ``max_epochs`` offered to clients.
    """

    def __init__(self, bundle_dir: str | Path, conf: Mapping[str, str], model_dir: str | Path, name: str, default_epochs: int = 10) -> None:
        bundle_dir = Path(bundle_dir).resolve()
        self.committed = bundle_dir / "models" / "model.pt"
        for need in (bundle_dir / "configs" / "train.json", bundle_dir / "configs" / "metadata.json", self.committed):
            if not need.is_file():
                raise FileNotFoundError(f"{need}: missing; {bundle_dir} cannot be trained from MONAI Label.")
        super().__init__(str(bundle_dir), dict(conf), load_strict=True)
        if not self.valid:
            raise RuntimeError(f"{bundle_dir}: MONAI Label's BundleTrainTask rejected the bundle (see the log above).")
        self.model_dir = Path(model_dir).resolve()
        if self.model_dir.is_relative_to(bundle_dir):
            raise ValueError(f"model_dir {self.model_dir} is inside the bundle {bundle_dir}: training would change committed files.")
        self.trained_model = self.model_dir / "model.pt"
        self.name = name
        self.default_epochs = int(default_epochs)
        self._train_size = 0

    def config(self) -> dict[str, Any]:
        """Options shown to clients (no ``model_filename``: the starting weights are chosen as described above)."""
        c = super().config()
        c.pop("model_filename", None)
        c["max_epochs"] = self.default_epochs
        c["multi_gpu"] = False
        return c

    def _partition_datalist(self, datalist, request, shuffle=False):
        train, val = super()._partition_datalist(datalist, request, shuffle)
        self._train_size = len(train)
        if not train:
            raise ValueError(f"{self.name}: no labelled images to train on (save final labels in the datastore first).")
        return train, val

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers) -> None:
        """Start from the app's trained weights, else the committed ones (``pretrained``), else from scratch."""
        train_handlers[:] = [h for h in train_handlers if h.get("_target_") != CheckpointLoader.__name__]
        if not pretrained:
            logger.info("[morphzoo] %s: training from scratch (pretrained=false)", self.name)
            return
        start = self.trained_model if self.trained_model.is_file() else self.committed
        logger.info("[morphzoo] %s: training starts from %s", self.name, start)
        super()._load_checkpoint(str(start), True, train_handlers)

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        run_dir = self.model_dir / "runs" / time.strftime("%Y%m%d_%H%M%S")
        bundle = Path(self.bundle_path).resolve()
        overrides["ckpt_dir"] = str(self.model_dir)
        overrides["output_dir"] = str(run_dir)
        overrides["model_file"] = "model.pt"
        overrides["max_epochs"] = overrides[self.const.key_train_trainer_max_epochs()]
        batch = int(self.bundle_config.get("batch_size", 1))
        overrides["batch_size"] = max(1, min(batch, self._train_size))
        for key in ("ckpt_dir", "output_dir"):
            if Path(overrides[key]).resolve().is_relative_to(bundle):
                raise ValueError(f"{key} {overrides[key]} is inside the bundle {bundle}: refusing to write there.")
        self.model_dir.mkdir(parents=True, exist_ok=True)
        logger.info("[morphzoo] %s: training writes %s and %s (batch_size %d, max_epochs %s)", self.name,
                    self.trained_model, run_dir, overrides["batch_size"], overrides["max_epochs"])
        return overrides

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        """Run MONAI Label's bundle training; check the committed weights are unchanged afterwards."""
        before = sha256(self.committed)
        t0 = time.perf_counter()
        res = super().__call__(request, datastore)
        after = sha256(self.committed)
        if after != before:
            raise RuntimeError(f"{self.committed} changed during training (sha256 {before} -> {after}).")
        ok = self.trained_model.is_file()
        logger.info("[morphzoo] %s: training finished in %.1f s; %s %s; committed %s unchanged (sha256 %s)", self.name,
                    time.perf_counter() - t0, self.trained_model, "written" if ok else "NOT written", self.committed, after[:12])
        return res
