"""Fixtures for the data-pipeline tests: the real data sets under the data root.

The tests read the real data from ``morphzoo.paths.data_root()``. When it is missing they
FAIL (``require_data`` raises FileNotFoundError with instructions); they never skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from morphzoo.data import list_hc18, list_hippocampus
from morphzoo.paths import require_data


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    return require_data("hippocampus")


@pytest.fixture(scope="session")
def hc18_dir() -> Path:
    return require_data("hc18")


@pytest.fixture(scope="session")
def hippocampus_items(hippocampus_dir: Path) -> list[dict]:
    return list_hippocampus(hippocampus_dir)


@pytest.fixture(scope="session")
def hc18_items(hc18_dir: Path) -> list[dict]:
    return list_hc18(hc18_dir)
