"""Where MorphZoo finds the data root and a task's datalist, without depending on where it is installed.

- The data root is the bundle configs' ``dataset_dir`` key; its default, :func:`data_root`, is the
  environment variable ``MORPHZOO_DATA``, else (only when this package runs from a MorphZoo
  checkout, e.g. an editable install) the repository's own default ``<repo>/../shared/data``,
  else ``~/.cache/morphzoo/data``.
- A bundle names its datalist relative to its own folder (:func:`datalist_path` with
  ``bundle_root``): ``<bundle>/datalists/<task>.json`` (an exported bundle carries its datalists)
  or ``<bundle>/../../datalists/<task>.json`` (a bundle inside a MorphZoo checkout); any other
  location is given with ``--datalist PATH``.

Nothing here looks at the working directory, and nothing requires a checkout: a bundle copied
elsewhere, with ``morphzoo`` installed from a wheel, registers a user's own pair with no
``datalists/`` and no data folder present.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "repo_root", "data_root", "require_data", "datalist_path"]

DATA_ENV = "MORPHZOO_DATA"
_USER_DATA = Path("~/.cache/morphzoo/data")


def repo_root() -> Path | None:
    """The MorphZoo checkout this package runs from (editable install), or ``None`` (installed copy).

    A checkout is recognised by ``<root>/common/morphzoo/`` being this package and
    ``<root>/bundles/`` existing next to it.
    """
    here = Path(__file__).resolve()
    root = here.parents[2]
    if here.parent == root / "common" / "morphzoo" and (root / "bundles").is_dir():
        return root
    return None


def data_root() -> Path:
    """The default data root: ``$MORPHZOO_DATA``, else ``<checkout>/../shared/data`` when running
    from a checkout, else ``~/.cache/morphzoo/data``. The folder may not exist: see :func:`require_data`."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    repo = repo_root()
    if repo is not None:
        return (repo.parent / "shared" / "data").resolve()
    return _USER_DATA.expanduser()


def require_data(*parts: str, root: str | os.PathLike | None = None) -> Path:
    """Return ``root/parts`` (default root :func:`data_root`) or raise with a message saying what is
    missing and how to get it.

    Raises:
        FileNotFoundError: the folder or file does not exist.
    """
    path = (Path(root) if root is not None else data_root()).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"MorphZoo data not found: {path} does not exist. Set {DATA_ENV} (or the config key dataset_dir, "
            "--dataset_dir DIR) to the folder holding 'hippocampus/', 'hc18/', 'brain/' (see README.md, 'Data'), "
            "or fetch the public datasets with `python tools/prepare_data.py --download --root DIR`."
        )
    return path


def datalist_path(task: str, bundle_root: str | os.PathLike | None = None) -> Path:
    """Path of the datalist JSON of a benchmark task.

    With ``bundle_root`` (what bundle configs pass): ``<bundle_root>/datalists/<task>.json`` if it
    exists (an exported, self-contained bundle), else ``<bundle_root>/../../datalists/<task>.json``
    (the bundle inside a MorphZoo checkout). Without it: the checkout's ``datalists/<task>.json``.
    The path returned may not exist (the datalist is read only when a split is needed; the reader
    names the path and the ``--datalist`` override).
    """
    name = f"{task}.json"
    if bundle_root is not None:
        b = Path(bundle_root).expanduser().resolve()
        own = b / "datalists" / name
        if own.is_file():
            return own
        return (b.parent.parent / "datalists" / name).resolve()
    repo = repo_root()
    if repo is not None:
        return repo / "datalists" / name
    return Path(__file__).resolve().parent.parent / "datalists" / name  # vendored next to the package (export)
