"""Atlas-based segmentation by registration, as a MONAI Label infer task.

MONAI Label's generic bundle task calls ``inferer(image, network)`` with one tensor, so it cannot
run a registration bundle. This task loads a registration bundle for a task with
:func:`morphzoo.inference.bundles.load_bundle_registrar` (the bundle's ``configs/inference.json``
plus ``configs/task_<task>.json`` when the task is not the bundle's default, its weights and its
:class:`morphzoo.inference.Registrar`, exactly as ``python -m monai.bundle run`` builds it), then
registers the atlas image (moving) onto the user's image (fixed) and warps the atlas label with
the predicted field (nearest neighbour). The warped atlas label, in the user's image grid and
format, is the segmentation.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.utils.others.generic import name_to_device

from lib.label_io import label_suffix, write_label
from morphzoo.inference import Registrar
from morphzoo.inference.bundles import bundle_config_files, load_bundle_registrar
from morphzoo.transforms.io import ImageRecord, InputError

logger = logging.getLogger(__name__)

__all__ = ["AtlasRegistrationInfer"]


class AtlasRegistrationInfer(InferTask):
    """Warp an atlas label onto the user's image with a registration bundle.

    Args:
        bundle_dir: registration bundle folder (``configs/inference.json`` with a ``registrar``).
        task: the bundle task whose weights to use (``None``: the bundle's default task).
        atlas_image: atlas image (moving), same dimensionality as the task.
        atlas_label: atlas label map on the atlas image's grid (values in the task's ``labels``).
        labels: label name -> value reported to clients; every atlas label value except 0 must be
            one of these values.
        name: model name used in log lines.
        description: shown to MONAI Label clients.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        task: str | None,
        atlas_image: str | Path,
        atlas_label: str | Path,
        labels: Mapping[str, int],
        name: str = "atlas_registration",
        description: str = "",
    ) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        self.task = task
        self.atlas_image = Path(atlas_image)
        self.atlas_label = Path(atlas_label)
        self.name = name
        for p, what in ((self.atlas_image, "atlas image (conf atlas_image)"), (self.atlas_label, "atlas label (conf atlas_label)")):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: {what} does not exist.")
        bundle_config_files(self.bundle_dir, task)  # fails now, naming the file, if the bundle/task is missing
        weights = self.bundle_dir / "models"
        if not any(weights.glob("*.pt")):
            raise FileNotFoundError(f"{weights}: no weights (*.pt) in registration bundle {self.bundle_dir.name}.")
        self._registrars: dict[str, Registrar] = {}
        self._atlas: dict[str, tuple[ImageRecord, ImageRecord]] = {}
        self._lock = threading.Lock()
        dims = self._spatial_dims()
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=dict(labels),
            dimension=dims,
            description=description
            or f"Atlas-based segmentation: {self.atlas_label.name} warped onto the image by registration bundle "
            f"{self.bundle_dir.name} (task {task or 'default'})",
            config={"device": ["cpu", "cuda"] if name_to_device("cuda") != "cpu" else ["cpu"]},
        )

    def _spatial_dims(self) -> int:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(f) for f in bundle_config_files(self.bundle_dir, self.task)])
        return int(parser.get("spatial_dims", 3))

    def is_valid(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        i = super().info()
        i.update(bundle=self.bundle_dir.name, task=self.task, atlas_image=str(self.atlas_image), atlas_label=str(self.atlas_label))
        return i

    def registrar(self, device: str) -> Registrar:
        """The bundle's registrar on ``device`` (loaded once per device)."""
        with self._lock:
            if device not in self._registrars:
                t0 = time.perf_counter()
                self._registrars[device] = load_bundle_registrar(self.bundle_dir, self.task, device=device)
                logger.info("[morphzoo] %s: loaded %s (task %s, %s) on %s in %.2f s", self.name, self.bundle_dir.name,
                            self._registrars[device].task, self._registrars[device].checkpoint, device, time.perf_counter() - t0)
            return self._registrars[device]

    def _atlas_records(self, reg: Registrar, image: str) -> tuple[ImageRecord, ImageRecord, ImageRecord]:
        mov, fix, mlab, _ = reg.read_pair(self.atlas_image, image, self.atlas_label)
        values = {int(v) for v in np.unique(mlab.array)} - {0}
        unknown = values - set(self.labels.values())
        if unknown:
            raise InputError(f"{self.atlas_label}: atlas label values {sorted(unknown)} are not app labels {self.labels}.")
        return mov, fix, mlab

    def __call__(self, request: dict) -> tuple[str | None, dict]:
        """Register the atlas onto ``request["image"]``; return the warped atlas label file and a result dict."""
        image = request.get("image")
        if not isinstance(image, str) or not Path(image).is_file():
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{self.name}: image file {image!r} does not exist.")
        device = name_to_device(request.get("device", "cuda"))
        t0 = time.perf_counter()
        try:
            reg = self.registrar(device)
            t_load = time.perf_counter()
            mov, fix, mlab = self._atlas_records(reg, image)
            t_read = time.perf_counter()
            res = reg.register_records(mov, fix, mlab, None, distances=False)
            t_reg = time.perf_counter()
            out = write_label(res.warped_label.astype(np.uint8), fix, label_suffix(image, request.get("result_extension")))
        except (InputError, ValueError, FileNotFoundError) as e:
            raise MONAILabelException(MONAILabelError.INFERENCE_ERROR, f"{self.name}: {e}") from e
        t_end = time.perf_counter()
        lat = {
            "load_model": round(t_load - t0, 3),
            "read": round(t_read - t_load, 3),
            "register": round(t_reg - t_read, 3),
            "network_ms": round(res.metrics["time_ms"], 1),
            "write": round(t_end - t_reg, 3),
            "total": round(t_end - t0, 3),
        }
        logger.info(
            "[morphzoo] %s inferred %s in %.2f s (read %.2f, registration %.2f incl. network+warp %.1f ms, write %.2f) "
            "with %s task %s", self.name, image, lat["total"], lat["read"], lat["register"], lat["network_ms"], lat["write"],
            self.bundle_dir.name, reg.task,
        )
        result = {
            "label_names": dict(self.labels),
            "latencies": lat,
            "registration": {
                "bundle": self.bundle_dir.name,
                "task": reg.task,
                "atlas_image": str(self.atlas_image),
                "atlas_label": str(self.atlas_label),
                "metrics": {k: (float(v) if np.isfinite(v) else None) for k, v in res.metrics.items()},
            },
        }
        return out, result
