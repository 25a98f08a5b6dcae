"""Where MorphZoo finds the data root and the repository's datalists.

The data root is read from the environment variable ``MORPHZOO_DATA``; its default is the
folder ``shared/data`` next to the repository root (``<repo>/../shared/data``), resolved from
this file's location, never from the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "repo_root", "data_root", "require_data", "datalist_path"]

DATA_ENV = "MORPHZOO_DATA"


def repo_root() -> Path:
    """The repository root (the folder holding ``common/``, ``bundles/``, ``datalists/``)."""
    return Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The data root: ``$MORPHZOO_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (repo_root().parent / "shared" / "data").resolve()


def require_data(*parts: str) -> Path:
    """Return ``data_root()/parts`` or raise with a message saying what is missing and how to get it.

    Raises:
        FileNotFoundError: the folder or file does not exist.
    """
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"MorphZoo data not found: {path} does not exist. Set {DATA_ENV} to the folder holding "
            "'hippocampus/', 'hc18/', 'brain/' (see README.md, 'Data'), or fetch the public datasets with "
            "`python tools/prepare_data.py --download --root DIR`."
        )
    return path


def datalist_path(task: str) -> Path:
    """Path of the committed datalist JSON for a benchmark task (``datalists/<task>.json``).

    In an exported bundle (``tools/export_bundle.py`` vendors this package into the bundle
    root and copies the bundle's datalists to ``<bundle>/datalists/``) the repository's
    ``datalists/`` does not exist; the bundle's own copy is returned then.
    """
    path = repo_root() / "datalists" / f"{task}.json"
    if not path.is_file():
        vendored = Path(__file__).resolve().parents[1] / "datalists" / f"{task}.json"
        if vendored.is_file():
            return vendored
    return path
