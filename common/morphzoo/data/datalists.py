"""Datalist builders for the benchmark tasks and for plain user folders, and the loaders that read them back.

A benchmark datalist (``datalists/<task>.json``) is built by :func:`build_datalist` from the
data root, following ``benchmarks.md`` exactly; its paths are POSIX strings relative to the
data root (``$MORPHZOO_DATA``), turned absolute at run time by :func:`resolve_paths`.
Format (MONAI-style keys)::

    {"task": "hippocampus3d", "description": "...", "split_seed": 0, "spatial_dims": 3,
     "labels": {"0": "background", ...},
     "training":   [subject items],      # registration: {"subject", "image", "label", ...}
     "validation": [subject items],
     "test":       [100 fixed ordered pair items],   # {"moving", "fixed", "moving_label",
                                                     #  "fixed_label", "moving_subject", "fixed_subject", ...}
     "validation_pairs": [<= 20 fixed ordered pairs of validation subjects],
     "atlas": subject item, "atlas_test_pairs": [every test subject (moving) -> atlas (fixed)]}

``hc18_seg`` and ``hippocampus_fewlabel`` have image items in training/validation/test and no pairs;
``hippocampus_fewlabel``'s training items carry ``labelled_axis`` and ``labelled_slice`` (the one slice
whose label training may read). Pairs follow
:func:`morphzoo.data.splits.fixed_test_pairs` (seed 0); subjects follow
:func:`morphzoo.data.splits.split_subjects` (seed 0, 80/10/10).

Choices not fixed by ``benchmarks.md`` (documented here so every tool agrees):

- HC18 registration ``training``/``validation`` hold *every* image of the split's subjects
  (each item carries ``subject``, so a pair sampler can avoid pairing a subject with itself);
  fixed pairs (test, validation, atlas) use the first image of each subject by plain string
  sort of the file names (so ``010_2HC.png`` comes before ``010_HC.png``).
- The atlas of a registration task is the training subject with the smallest id (sorted);
  ``atlas_test_pairs`` registers every test subject (moving, sorted) onto it (fixed).
- HC18 items carry ``size_hw`` = [height, width] of the PNG (array order of numpy/PIL;
  note that MONAI's ``PILReader`` returns arrays transposed, (W, H), by default).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from morphzoo.data.hc18 import HC18_LABELS, list_hc18
from morphzoo.data.hippocampus import HIPPOCAMPUS_LABELS, list_hippocampus
from morphzoo.data.splits import fixed_test_pairs, split_subjects
from morphzoo.paths import DATA_ENV, data_root, datalist_path, require_data

__all__ = [
    "TASKS",
    "SPLIT_SEED",
    "N_TEST_PAIRS",
    "N_VALIDATION_PAIRS",
    "HIPPOCAMPUS2D_SLICE",
    "FEWLABEL_SLICE",
    "PATH_KEYS",
    "IMAGE_SUFFIXES",
    "build_datalist",
    "atlas_pairs",
    "build_folder_datalist",
    "save_datalist",
    "load_datalist",
    "resolve_paths",
]

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("hippocampus3d", "hippocampus2d", "hc18_reg2d", "hc18_seg", "hippocampus_fewlabel")
SPLIT_SEED = 0
N_TEST_PAIRS = 100
N_VALIDATION_PAIRS = 20
HIPPOCAMPUS2D_SLICE: dict[str, int] = {"slice_axis": 0, "slice_index": 32}
FEWLABEL_SLICE: dict[str, int] = {"labelled_axis": 0, "labelled_slice": 32}  # not slice_axis: loaders would cut the volume
PATH_KEYS: tuple[str, ...] = ("image", "label", "moving", "fixed", "moving_label", "fixed_label")
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".mha", ".nrrd")

_DATASET_DIR = {
    "hippocampus3d": "hippocampus",
    "hippocampus2d": "hippocampus",
    "hc18_reg2d": "hc18",
    "hc18_seg": "hc18",
    "hippocampus_fewlabel": "hippocampus",
}


# ----------------------------------------------------------------------------------------- helpers
def _missing_root_error(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"MorphZoo data not found: {path} does not exist. Set {DATA_ENV} to the folder holding "
        "'hippocampus/', 'hc18/', 'brain/' (see README.md, 'Data'), or fetch the public datasets with "
        "`python tools/prepare_data.py --download --root DIR`."
    )


def _root_and_dataset(root: str | Path | None, dataset: str) -> tuple[Path, Path]:
    """The (resolved) data root and its dataset folder, raising the data-missing message if absent."""
    if root is None:
        folder = require_data(dataset)
        return data_root(), folder
    root = Path(root).expanduser().resolve()
    folder = root / dataset
    if not folder.exists():
        raise _missing_root_error(folder)
    return root, folder


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"datalist path {path} is not under the data root {root}") from None


def _labels(names: dict[int, str]) -> dict[str, str]:
    return {str(k): v for k, v in sorted(names.items())}


def _pair_item(moving: dict, fixed: dict, extra_keys: Sequence[str], common: dict | None = None) -> dict:
    """A registration pair item from two subject items (paths already relative strings)."""
    item = {
        "moving": moving["image"],
        "fixed": fixed["image"],
        "moving_label": moving["label"],
        "fixed_label": fixed["label"],
        "moving_subject": moving["subject"],
        "fixed_subject": fixed["subject"],
    }
    for key in extra_keys:
        item[f"moving_{key}"] = moving[key]
        item[f"fixed_{key}"] = fixed[key]
    item.update(common or {})
    return item


def _pairs(
    ids: Sequence[str], first: dict[str, dict], n: int, extra_keys: Sequence[str], common: dict | None
) -> list[dict]:
    return [_pair_item(first[m], first[f], extra_keys, common) for m, f in fixed_test_pairs(ids, n=n, seed=SPLIT_SEED)]


# ------------------------------------------------------------------------------ benchmark datalists
def _subject_items(task: str, root: Path, folder: Path) -> tuple[list[dict], dict[str, str], int, list[str]]:
    """Per-image items (relative paths), label names, spatial dims and the pair extra keys for a task."""
    if task.startswith("hippocampus"):
        listed = list_hippocampus(folder)
        if listed[0]["layout"] != "learn2reg":
            raise ValueError(
                f"{folder} is in the raw MSD layout (imagesTr/, varying sizes): convert it to the 64^3 Learn2Reg "
                "layout first (`python tools/prepare_data.py --download` or morphzoo.data.convert_msd_hippocampus)"
            )
        extra = dict(HIPPOCAMPUS2D_SLICE) if task == "hippocampus2d" else {}
        items = [
            {"subject": it["subject"], "image": _rel(it["image"], root), "label": _rel(it["label"], root), **extra}
            for it in listed
        ]
        return items, _labels(HIPPOCAMPUS_LABELS), (2 if task == "hippocampus2d" else 3), []
    listed = list_hc18(folder)
    items = [
        {
            "subject": it["subject"],
            "image": _rel(it["image"], root),
            "label": _rel(it["label"], root),
            "pixel_size_mm": it["pixel_size_mm"],
            "hc_mm": it["hc_mm"],
            "size_hw": list(it["size_hw"]),
        }
        for it in listed
    ]
    return items, _labels(HC18_LABELS), 2, ["pixel_size_mm", "hc_mm", "size_hw"]


_DESCRIPTIONS = {
    "hippocampus3d": "MSD Task04 hippocampus MRI, Learn2Reg 64^3 volumes: inter-subject 3D registration",
    "hippocampus2d": "MSD Task04 hippocampus MRI, middle slice (index 32 along array axis 0) of each 64^3 volume: "
    "inter-subject and atlas-based 2D registration",
    "hc18_reg2d": "HC18 fetal head ultrasound (training set): inter-subject 2D registration of head images, "
    "resized to 160x240 (H x W) by the bundles",
    "hc18_seg": "HC18 fetal head ultrasound (training set): head segmentation, all images of each subject",
    "hippocampus_fewlabel": "MSD Task04 hippocampus MRI, 64^3 volumes as stacks of 2D slices along array axis 0: "
    "segmentation from few annotations. Only the middle slice (labelled_slice 32) of each training volume may be "
    "read as labelled; validation and test volumes are fully labelled and scored on every slice",
}


def build_datalist(task: str, root: str | Path | None = None) -> dict:
    """Build the datalist of a benchmark task, exactly per ``benchmarks.md``.

    Args:
        task: one of :data:`TASKS` (``hippocampus3d``, ``hippocampus2d``, ``hc18_reg2d``, ``hc18_seg``, ``hippocampus_fewlabel``).
        root: data root holding ``hippocampus/`` and/or ``hc18/``; default :func:`morphzoo.paths.data_root`.
            Paths in the result are relative to it.

    Returns:
        The datalist dict (JSON-ready: only dicts, lists, strings and numbers); see the module docstring.

    Raises:
        ValueError: unknown task, or hippocampus data in the raw MSD layout.
        FileNotFoundError: the data root or the task's data set folder is missing.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    root, folder = _root_and_dataset(root, _DATASET_DIR[task])
    items, labels, dims, extra_keys = _subject_items(task, root, folder)

    by_subject: dict[str, list[dict]] = {}
    for it in items:  # items are sorted by file name, so by_subject[s][0] is the subject's first image
        by_subject.setdefault(it["subject"], []).append(it)
    split = split_subjects(sorted(by_subject), seed=SPLIT_SEED)
    counts = {k: len(v) for k, v in split.items()}

    def images_of(subjects: Sequence[str]) -> list[dict]:
        return [it for s in sorted(subjects) for it in by_subject[s]]

    out: dict[str, Any] = {
        "task": task,
        "description": f"{_DESCRIPTIONS[task]}. Subjects split 80/10/10 with random.Random({SPLIT_SEED}) "
        f"({counts['train']}/{counts['val']}/{counts['test']}); paths relative to the data root (${DATA_ENV}).",
        "split_seed": SPLIT_SEED,
        "spatial_dims": dims,
        "labels": labels,
        "training": images_of(split["train"]),
        "validation": images_of(split["val"]),
    }
    if task == "hc18_seg":
        out["test"] = images_of(split["test"])
        return out
    if task == "hippocampus_fewlabel":
        out["training"] = [{**it, **FEWLABEL_SLICE} for it in out["training"]]
        out["test"] = images_of(split["test"])
        return out

    first = {s: its[0] for s, its in by_subject.items()}
    common = dict(HIPPOCAMPUS2D_SLICE) if task == "hippocampus2d" else None
    out["test"] = _pairs(split["test"], first, N_TEST_PAIRS, extra_keys, common)
    out["validation_pairs"] = _pairs(split["val"], first, N_VALIDATION_PAIRS, extra_keys, common)
    atlas = first[min(split["train"])]
    out["atlas"] = atlas
    out["atlas_test_pairs"] = atlas_pairs([first[s] for s in split["test"]], atlas)
    return out


def validation_subject_pairs(datalist: dict, seed: int = SPLIT_SEED) -> list[dict]:
    """Every ordered pair of distinct validation subjects of a pair-task datalist, in a fixed order.

    The committed ``validation_pairs`` are only 20 of them; choosing a pipeline on those can
    follow their draw more than the method (on hippocampus3d their identity Dice is 0.595 against
    0.493 on the 100 test pairs). This larger set stays within the validation split: each
    subject's first image, all ``k (k - 1)`` ordered pairs, in the order
    :func:`~morphzoo.data.splits.fixed_test_pairs` draws them with ``seed`` (take a prefix for fewer).
    Per-image keys (e.g. HC18's ``pixel_size_mm``) become ``moving_``/``fixed_`` keys and keys
    shared by every pair (e.g. hippocampus2d's slice) are copied, as in ``validation_pairs``.

    Args:
        datalist: a benchmark datalist with ``validation`` subject items and ``validation_pairs``
            (``hippocampus3d``, ``hippocampus2d``, ``hc18_reg2d``).
        seed: seed of the draw (default: the datalists' split seed, 0).

    Returns:
        Pair items, as ``validation_pairs``'s.

    Raises:
        ValueError: if the datalist has no validation subjects or no ``validation_pairs`` to follow.
    """
    subjects = datalist.get("validation") or []
    template = (datalist.get("validation_pairs") or [None])[0]
    if not subjects or template is None:
        raise ValueError(f"datalist {datalist.get('task', '?')!r} has no validation subjects and pairs to build pairs from")
    first: dict[str, dict] = {}
    for it in subjects:
        first.setdefault(it["subject"], it)
    base = {"moving", "fixed", "moving_label", "fixed_label", "moving_subject", "fixed_subject"}
    extra_keys = [k[len("moving_"):] for k in template if k.startswith("moving_") and k not in base]
    common = {k: v for k, v in template.items() if k not in base and not k.startswith(("moving_", "fixed_"))}
    n = len(first) * (len(first) - 1)
    return [_pair_item(first[m], first[f], extra_keys, common) for m, f in fixed_test_pairs(sorted(first), n=n, seed=seed)]


def atlas_pairs(subjects: Sequence[dict], atlas: dict) -> list[dict]:
    """Atlas-based pair items: each subject's first image (moving, subjects sorted) onto ``atlas`` (fixed).

    Built like a benchmark datalist's ``atlas_test_pairs`` (which this function makes), so e.g.
    ``atlas_pairs(datalist["validation"], datalist["atlas"])`` gives the validation counterpart.
    Subject items carry ``subject``, ``image``, ``label``; the atlas's other keys are copied per role
    (``moving_<key>``/``fixed_<key>``, e.g. HC18 ``pixel_size_mm``) except the slice keys of
    ``hippocampus2d``, which are shared by the pair. The atlas subject itself is skipped.
    """
    first: dict[str, dict] = {}
    for it in subjects:
        first.setdefault(it["subject"], it)
    common = {k: atlas[k] for k in HIPPOCAMPUS2D_SLICE if k in atlas}
    extra = [k for k in atlas if k not in ("subject", "image", "label", *common)]
    return [_pair_item(first[s], atlas, extra, common) for s in sorted(first) if s != atlas["subject"]]


# ------------------------------------------------------------------------------------ user folders
def _image_id(path: Path) -> str | None:
    """File name without its image suffix; None for hidden files and unsupported types."""
    name = path.name
    if name.startswith("."):
        return None
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _list_images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        iid = _image_id(path)
        if iid is None or not path.is_file():
            continue
        if iid in found:
            raise ValueError(f"folder {folder} holds two images with the id {iid!r}: {found[iid].name} and {path.name}")
        found[iid] = path
    return found


def build_folder_datalist(
    image_dir: str | Path,
    label_dir: str | Path | None = None,
    mode: str = "pairwise",
    atlas: str | Path | None = None,
    atlas_label: str | Path | None = None,
) -> dict:
    """Datalist for a plain folder of images (NIfTI, PNG, ...), e.g. a user's own data.

    Labels are matched by id (file name without extension) in ``label_dir``. Paths are absolute.

    Args:
        image_dir: folder of images (``.nii.gz``, ``.nii``, ``.png``, ``.jpg``, ``.mha``, ``.nrrd``).
        label_dir: optional folder of label maps with the same ids.
        mode: ``"pairwise"``: every ordered pair of distinct images (n*(n-1) pairs, sorted);
            ``"atlas"``: every image (moving) registered to the atlas (fixed).
        atlas: for ``mode="atlas"``: a path, or the file name / id of an image in ``image_dir``
            (that image is then left out of the moving images).
        atlas_label: the atlas's label map; default: the atlas id looked up in ``label_dir``.

    Returns:
        ``{"task": "folder", "mode", "description", "image_dir", "label_dir", "training": [subject
        items], "validation": [], "test": [pair items], ["atlas": item]}``.

    Raises:
        FileNotFoundError: a folder, an image's label, or the atlas is missing.
        ValueError: unknown mode, ``atlas`` missing in atlas mode, or too few images.
    """
    if mode not in ("pairwise", "atlas"):
        raise ValueError(f"mode must be 'pairwise' or 'atlas', got {mode!r}")
    image_dir = Path(image_dir).expanduser().resolve()
    images = _list_images(image_dir)
    if not images:
        raise FileNotFoundError(f"image folder {image_dir} holds no images with suffix {IMAGE_SUFFIXES}")
    labels: dict[str, Path] | None = None
    if label_dir is not None:
        label_dir = Path(label_dir).expanduser().resolve()
        labels = _list_images(label_dir)

    def subject_item(iid: str, path: Path) -> dict:
        item = {"subject": iid, "image": str(path)}
        if labels is not None:
            if iid not in labels:
                raise FileNotFoundError(
                    f"image {path} has no label in {label_dir} (looked for {iid}{{{','.join(IMAGE_SUFFIXES)}}})"
                )
            item["label"] = str(labels[iid])
        return item

    subjects = [subject_item(iid, p) for iid, p in images.items()]
    out: dict[str, Any] = {
        "task": "folder",
        "mode": mode,
        "image_dir": str(image_dir),
        "label_dir": None if label_dir is None else str(label_dir),
    }
    if mode == "pairwise":
        if len(subjects) < 2:
            raise ValueError(f"pairwise mode needs at least two images, {image_dir} holds {len(subjects)}")
        pairs = [_folder_pair(m, f) for m, f in itertools.permutations(subjects, 2)]
        out["description"] = f"all {len(pairs)} ordered pairs of the {len(subjects)} images in {image_dir}"
    else:
        if atlas is None:
            raise ValueError("mode='atlas' needs an atlas (a path, or the name of an image in image_dir)")
        atlas_path = Path(atlas).expanduser()
        atlas_id = next(
            (iid for iid, p in images.items() if str(atlas) in (iid, p.name) or atlas_path.resolve() == p), None
        )
        if atlas_id is not None:
            atlas_item = next(s for s in subjects if s["subject"] == atlas_id)
            subjects = [s for s in subjects if s["subject"] != atlas_id]
        else:
            if not atlas_path.is_file():
                raise FileNotFoundError(f"atlas {atlas} is neither a file nor an image of {image_dir}")
            atlas_path = atlas_path.resolve()
            atlas_item = {"subject": _image_id(atlas_path) or atlas_path.name, "image": str(atlas_path)}
            if labels is not None and atlas_label is None:
                if atlas_item["subject"] not in labels:
                    raise FileNotFoundError(f"atlas {atlas_path} has no label in {label_dir}; pass atlas_label")
                atlas_item["label"] = str(labels[atlas_item["subject"]])
        if atlas_label is not None:
            atlas_label_path = Path(atlas_label).expanduser().resolve()
            if not atlas_label_path.is_file():
                raise FileNotFoundError(f"atlas label {atlas_label_path} does not exist")
            atlas_item["label"] = str(atlas_label_path)
        if not subjects:
            raise ValueError(f"atlas mode: {image_dir} holds no image other than the atlas")
        pairs = [_folder_pair(s, atlas_item) for s in subjects]
        out["atlas"] = atlas_item
        out["description"] = (
            f"{len(pairs)} images of {image_dir} (moving) registered to the atlas {atlas_item['image']} (fixed)"
        )
    out["training"] = subjects
    out["validation"] = []
    out["test"] = pairs
    return out


def _folder_pair(moving: dict, fixed: dict) -> dict:
    item = {"moving": moving["image"], "fixed": fixed["image"]}
    if "label" in moving and "label" in fixed:
        item["moving_label"] = moving["label"]
        item["fixed_label"] = fixed["label"]
    item["moving_subject"] = moving["subject"]
    item["fixed_subject"] = fixed["subject"]
    return item


# ---------------------------------------------------------------------------------- save and load
def _dumps(datalist: dict) -> str:
    """JSON text with one top-level key per line and one list item per line (short, diff-friendly)."""
    lines = []
    for key, value in datalist.items():
        if isinstance(value, list) and value:
            body = ",\n".join(f"  {json.dumps(item)}" for item in value)
            text = f"[\n{body}\n ]"
        else:
            text = json.dumps(value)
        lines.append(f" {json.dumps(str(key))}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def save_datalist(datalist: dict, path: str | Path) -> Path:
    """Write a datalist as JSON atomically (temporary file in the same folder, then ``os.replace``).

    The layout puts one top-level key, and one list item, per line. The file gets the usual
    permissions (``0o666`` less the umask), not those of the temporary file.

    Args:
        datalist: the datalist dict (JSON-serialisable).
        path: destination ``.json`` file (its folder is created).

    Returns:
        The path written.
    """
    path = Path(path)
    text = _dumps(datalist)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_datalist(task_or_path: str | Path) -> dict:
    """Read a datalist: a task name (``datalists/<task>.json`` of the repository) or a JSON path.

    Args:
        task_or_path: e.g. ``"hippocampus3d"`` or ``"/some/where/list.json"``.

    Returns:
        The parsed datalist dict (paths still as stored; see :func:`resolve_paths`).

    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: the file is not valid JSON or not a JSON object.
    """
    s = str(task_or_path)
    is_path = isinstance(task_or_path, Path) or s.endswith(".json") or "/" in s or os.sep in s
    path = Path(s).expanduser() if is_path else datalist_path(s)
    if not path.is_file():
        hint = (
            ""
            if is_path
            else f" (known tasks: {', '.join(TASKS)}; build it with `python tools/prepare_data.py --tasks {s}`)"
        )
        raise FileNotFoundError(f"datalist {path} does not exist{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"datalist {path} must hold a JSON object, found {type(data).__name__}")
    return data


def resolve_paths(items: Sequence[dict], root: str | Path | None = None) -> list[dict]:
    """Turn the relative paths of datalist items into absolute ones under the data root.

    Only the keys in :data:`PATH_KEYS` (image, label, moving, fixed, moving_label,
    fixed_label) are touched; absolute paths are kept as they are. The data root is only
    required when some path is relative.

    Args:
        items: datalist items (not modified).
        root: data root; default :func:`morphzoo.paths.data_root`.

    Returns:
        New item dicts with absolute path strings.

    Raises:
        FileNotFoundError: a relative path needs the data root and it does not exist.
    """
    if isinstance(items, dict):
        raise TypeError("resolve_paths expects a list of items, e.g. datalist['test'], not a datalist dict")
    base: Path | None = None
    out = []
    for item in items:
        new = dict(item)
        for key in PATH_KEYS:
            value = new.get(key)
            if value is None or not isinstance(value, (str, os.PathLike)):
                continue
            path = Path(value).expanduser()
            if not path.is_absolute():
                if base is None:
                    base = require_data() if root is None else Path(root).expanduser().resolve()
                    if not base.exists():
                        raise _missing_root_error(base)
                path = base / path
            new[key] = str(path)
        out.append(new)
    return out
