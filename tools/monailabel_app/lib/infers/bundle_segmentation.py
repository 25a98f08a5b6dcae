"""A MorphZoo segmentation bundle served through MONAI Label's own ``BundleInferTask``.

MONAI Label's bundle task reads the bundle's ``configs/inference.json`` (``network_def``,
``preprocessing``, ``inferer``, ``postprocessing``) and ``configs/metadata.json``; this subclass
only adapts what MorphZoo bundles do differently:

- ``postprocessing`` of a MorphZoo segmentation bundle ends with per-class probabilities in the
  input grid (softmax + ``Invertd``); the label is their ``argmax`` (appended here).
- MONAI Label's ``Restored`` step is not added: ``Invertd`` already returns the input grid, and
  ``Restored`` would resize to the PIL meta ``spatial_shape``, which is (width, height) while the
  bundle reads PNG rows first (``PILReader(reverse_indexing=False)``).
- A bundle whose ``inference.json`` sets ``ellipse_mask`` (``fetal_us_seg``) gets its label
  replaced by the fitted ellipse (:class:`morphzoo.transforms.FillEllipsed`), as the bundle's own
  command line does.
- The label is written by :func:`lib.label_io.write_label` in the image's own grid and format.
- Label names are the app's (``{"head": 1}`` for HC18), not the metadata's channel names, so every
  model of the app reports the same labels.
- Weights: the bundle's committed ``models/model.pt`` (read only) until MONAI Label training has
  written ``<model_dir>/model.pt``; then that one (MONAI Label picks the last existing path). The
  bundle's other ``models/*.pt`` files (other architectures) are not offered as ``model_filename``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import AsDiscreted
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.label_io import label_suffix, write_label
from morphzoo.inference.runner import cli_flag
from morphzoo.transforms import FillEllipsed
from morphzoo.transforms.io import InputError, read_image

logger = logging.getLogger(__name__)

__all__ = ["BundleSegmentationInfer"]


class BundleSegmentationInfer(BundleInferTask):
    """Serve a MorphZoo segmentation bundle (e.g. ``bundles/fetal_us_seg``).

    Args:
        bundle_dir: the bundle folder.
        conf: the app's configuration (``--conf`` pairs).
        trained_model: where MONAI Label training writes this model's weights (used once it exists).
        labels: label name -> value reported to clients.
        name: model name used in log lines.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        conf: Mapping[str, str],
        trained_model: str | Path,
        labels: Mapping[str, int],
        name: str,
    ) -> None:
        bundle_dir = Path(bundle_dir).resolve()
        committed = bundle_dir / "models" / "model.pt"
        for need in (bundle_dir / "configs" / "inference.json", bundle_dir / "configs" / "metadata.json", committed):
            if not need.is_file():
                raise FileNotFoundError(f"{need}: missing; {bundle_dir} cannot be served as a segmentation model.")
        super().__init__(str(bundle_dir), dict(conf), type=InferType.SEGMENTATION, add_post_restore=False, load_strict=True)
        if not self.valid:
            raise RuntimeError(f"{bundle_dir}: MONAI Label's BundleInferTask rejected the bundle (see the log above).")
        self.name = name
        self.labels = dict(labels)
        self.trained_model = Path(trained_model)
        # committed weights first, the app's trained weights last ("latest" in MONAI Label's terms)
        self.path = [str(committed), str(self.trained_model)]
        self._config.pop("model_filename", None)

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """The bundle's ``postprocessing`` (softmax, ``Invertd``) followed by ``argmax`` and, where
        the bundle asks for it, the ellipse shape prior."""
        post = list(super().post_transforms(data))
        post.append(AsDiscreted(keys=self.key_pred, argmax=True))
        if cli_flag(self.bundle_config.get("ellipse_mask", False), "ellipse_mask"):
            post.append(FillEllipsed(keys=self.key_pred, method=str(self.bundle_config.get("hc_fit", "moments"))))
        return post

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """Write the label in the image's grid and format (PNG -> PNG, NIfTI -> NIfTI with its header)."""
        image_path = data.get("image_path")
        try:
            ref = read_image(image_path, what="image")
            pred = data[self.key_pred]
            arr = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            arr = arr[0] if arr.ndim == ref.array.ndim + 1 else arr
            out = write_label(arr.astype(np.uint8), ref, label_suffix(image_path, extension or data.get("result_extension")))
        except (InputError, ValueError) as e:
            raise MONAILabelException(MONAILabelError.INFERENCE_ERROR, str(e)) from e
        return out, {"label_names": self.labels, "model_file": self.get_path()}

    def __call__(self, request: dict, callbacks: dict | None = None) -> tuple[str | None, dict]:
        """Run MONAI Label's bundle inference and log one timing line."""
        image = request.get("image")
        if not isinstance(image, str) or not Path(image).is_file():
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{self.name}: image file {image!r} does not exist.")
        t0 = time.perf_counter()
        out, res = super().__call__(request, callbacks)
        lat = res.get("latencies", {})
        logger.info(
            "[morphzoo] %s inferred %s in %.2f s (pre %.2f, network %.2f, post %.2f, write %.2f) with %s",
            self.name, image, time.perf_counter() - t0, lat.get("pre", 0), lat.get("infer", 0), lat.get("post", 0),
            lat.get("write", 0), self.get_path(),
        )
        return out, res
