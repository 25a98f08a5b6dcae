"""MorphZoo MONAI Label app: fetal head and hippocampus segmentation from MorphZoo bundles.

Models (``--conf models fetal_us_seg,atlas_registration,fmirnet_joint_seg``, the default is all):

- ``fetal_us_seg``: the ``bundles/fetal_us_seg`` segmentation bundle through MONAI Label's own
  ``BundleInferTask`` / ``BundleTrainTask`` (training writes ``<model_dir>/fetal_us_seg/model.pt``,
  never the bundle's committed weights).
- ``atlas_registration``: atlas-based segmentation: the atlas label warped onto the image by a
  registration bundle (default ``bundles/dense_eca_unet``, task ``hc18_reg2d``).
- ``fmirnet_joint_seg``: the ``bundles/fmirnet_joint_seg`` segmenter (trained from one annotated
  slice per volume with labels propagated by FMIRNet) through the same ``BundleInferTask``: a 3D
  MRI volume segmented slice by slice, labels ``anterior hippocampus`` = 1, ``posterior
  hippocampus`` = 2. Inference only (its training needs the registration bundle's weights and
  runs through the bundle's own ``train.json``).

The two fetal models report the label ``head`` = 1. Configuration keys are listed in ``README.md``
next to this file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:  # `lib` is imported from the app folder (MONAI Label loads main.py by path)
    sys.path.insert(0, str(APP_DIR))

from fastapi import HTTPException  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402

import morphzoo  # noqa: E402
from lib.infers import AtlasRegistrationInfer, BundleSegmentationInfer  # noqa: E402
from lib.trainers import AppBundleTrainTask  # noqa: E402
from morphzoo.paths import data_root, datalist_path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]  # the checkout this app lives in: default --conf bundles_dir <REPO>/bundles

logger = logging.getLogger(__name__)

LABELS = {"head": 1}
HIPPOCAMPUS_LABELS = {"anterior hippocampus": 1, "posterior hippocampus": 2}
MODELS = ("fetal_us_seg", "atlas_registration", "fmirnet_joint_seg")
DEFAULTS = {
    "models": ",".join(MODELS),
    "seg_bundle": "fetal_us_seg",
    "fewlabel_bundle": "fmirnet_joint_seg",
    "registration_bundle": "dense_eca_unet",
    "registration_task": "hc18_reg2d",
    "train_epochs": "10",
}


def _as_path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def default_atlas(task: str, bundle_dir: Path | None = None) -> tuple[Path, Path]:
    """The atlas (image, label) of a task's datalist (key ``atlas``), under the data root.

    The datalist is the registration bundle's own (``<bundle>/datalists/<task>.json``, an exported
    bundle) or its checkout's (``morphzoo.paths.datalist_path``).

    Raises:
        FileNotFoundError: no datalist, or it has no ``atlas`` entry.
    """
    dl = datalist_path(task, bundle_dir)
    if not dl.is_file():
        raise FileNotFoundError(f"{dl}: no datalist for task '{task}'; give --conf atlas_image PATH --conf atlas_label PATH.")
    atlas = json.loads(dl.read_text()).get("atlas")
    if not atlas:
        raise FileNotFoundError(f"{dl}: no 'atlas' entry; give --conf atlas_image PATH --conf atlas_label PATH.")
    root = data_root()
    image, label = root / atlas["image"], root / atlas["label"]
    for p in (image, label):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p}: default atlas of task '{task}' ({dl}) not found under the data root {root}; set MORPHZOO_DATA "
                "to the data folder or give --conf atlas_image PATH --conf atlas_label PATH."
            )
    return image, label


class MorphZooApp(MONAILabelApp):
    """The MorphZoo MONAI Label app (see the module docstring and README.md for configuration)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.conf_values = {**DEFAULTS, **(conf or {})}
        c = self.conf_values
        self.models = [m.strip() for m in c["models"].split(",") if m.strip()]
        if c["models"].strip() == "all":
            self.models = list(MODELS)
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ValueError(f"--conf models: unknown model(s) {unknown}; available: {list(MODELS)}")
        self.bundles_dir = _as_path(c.get("bundles_dir", str(REPO / "bundles")), Path.cwd()).resolve()
        self.model_dir = _as_path(c.get("model_dir", str(Path(app_dir) / "model")), Path.cwd()).resolve()
        logger.info("[morphzoo] app: models %s; bundles %s; model_dir %s; data %s", self.models, self.bundles_dir,
                    self.model_dir, data_root())
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MorphZoo",
            description="Fetal head segmentation in 2D ultrasound from MorphZoo bundles (a GhostSC U-Net and "
            "atlas-based segmentation by deformable registration) and hippocampus segmentation in 3D MRI from a "
            "segmenter trained on one annotated slice per volume",
            version=getattr(morphzoo, "__version__", "0.1.0"),
            labels=LABELS,
        )

    def _bundle(self, key: str) -> Path:
        path = self.bundles_dir / self.conf_values[key]
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: bundle folder not found (--conf {key} / --conf bundles_dir).")
        return path

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        c = self.conf_values
        if "fetal_us_seg" in self.models:
            infers["fetal_us_seg"] = BundleSegmentationInfer(
                self._bundle("seg_bundle"), c, self.model_dir / "fetal_us_seg" / "model.pt", LABELS, name="fetal_us_seg"
            )
        if "fmirnet_joint_seg" in self.models:
            infers["fmirnet_joint_seg"] = BundleSegmentationInfer(
                self._bundle("fewlabel_bundle"), c, self.model_dir / "fmirnet_joint_seg" / "model.pt", HIPPOCAMPUS_LABELS,
                name="fmirnet_joint_seg",
            )
        if "atlas_registration" in self.models:
            task = c["registration_task"] or None
            if "atlas_image" in c or "atlas_label" in c:
                if not ("atlas_image" in c and "atlas_label" in c):
                    raise ValueError("give both --conf atlas_image PATH and --conf atlas_label PATH (or neither).")
                image, label = _as_path(c["atlas_image"], Path.cwd()), _as_path(c["atlas_label"], Path.cwd())
            else:
                image, label = default_atlas(task or "hc18_reg2d", self._bundle("registration_bundle"))
            infers["atlas_registration"] = AtlasRegistrationInfer(
                self._bundle("registration_bundle"), task, image, label, LABELS, name="atlas_registration"
            )
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        if "fetal_us_seg" not in self.models:
            return {}
        return {
            "fetal_us_seg": AppBundleTrainTask(
                self._bundle("seg_bundle"), self.conf_values, self.model_dir / "fetal_us_seg", name="fetal_us_seg",
                default_epochs=int(self.conf_values["train_epochs"]),
            )
        }

    def infer(self, request: dict[str, Any], datastore=None) -> dict[str, Any]:
        """MONAI Label's inference, with a 404 naming the image when it is neither a datastore id nor a file."""
        image = request.get("image")
        ds = datastore if datastore else self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not ds.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"image '{image}' is not in the datastore {self.studies}")
        return super().infer(request, datastore)
