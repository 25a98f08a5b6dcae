"""Cached virtual environments keyed on a hash of their requirements (shared by the tools).

``tools/check_bundle.py`` (fresh venv without MorphZoo for the Model Zoo checks) and
``tools/label_app.py`` (the heavy MONAI Label venv) both build their environment with
:func:`ensure_venv`: ``python -m venv`` (no system site-packages), ``torch`` installed first (an
unpinned torch pulled by a dependency would resolve to the newest CUDA build), then the other
requirements in one resolver run. The venv lives in ``<venv_root>/<hash>`` (default
``$MORPHZOO_VENV_ROOT`` or ``~/.cache/morphzoo/venvs``), so CI can cache that folder and a change of
requirements always builds a new one. A file lock next to the venv serialises concurrent
builders; a ready marker listing the requirements is written last, so a venv left half-built is
rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["DEFAULT_VENV_ROOT", "READY", "venv_key", "venv_python", "clean_env", "ensure_venv"]

DEFAULT_VENV_ROOT = Path(os.environ.get("MORPHZOO_VENV_ROOT", Path.home() / ".cache" / "morphzoo" / "venvs"))
READY = ".morphzoo_ready"


def venv_key(torch_req: str, reqs: Sequence[str]) -> str:
    """Hash of the Python version and the requirements (the venv cache key)."""
    text = "\n".join([f"python{sys.version_info[0]}.{sys.version_info[1]}", torch_req, *sorted(reqs)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv."""
    return Path(venv) / "bin" / "python"


def clean_env() -> dict[str, str]:
    """The current environment without anything that would leak this interpreter's packages into a venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    return env


def ensure_venv(
    torch_req: str,
    reqs: Sequence[str],
    venv: Path | None = None,
    venv_root: Path = DEFAULT_VENV_ROOT,
    log: Callable[[str], object] = print,
    tag: str = "check",
    extra_steps: Sequence[Sequence[str]] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Path:
    """Create (or reuse, when its ready marker lists the same requirements) a cached venv.

    Args:
        torch_req: the torch requirement, installed on its own first (e.g. ``"torch==2.13.0"``).
        reqs: every other requirement, installed together with ``torch_req`` in one pip run.
        venv: use this folder instead of ``<venv_root>/<venv_key(...)>``.
        venv_root: cache folder of hashed venvs.
        log: called with one-line progress messages.
        tag: prefix of the log lines (``[tag] ...``).
        extra_steps: further ``pip install`` argument lists run after torch and before the rest (e.g.
            an sdist built with ``--no-build-isolation`` against the torch just installed, instead of
            pip downloading another torch into an isolated build environment); part of the cache key.
        extra_env: environment variables for the pip runs (e.g. build switches of such an sdist).

    Returns:
        The venv folder.

    Raises:
        subprocess.CalledProcessError: ``venv`` creation or a pip install failed (the venv is left
            without its ready marker and rebuilt next time).
    """
    steps = [" ".join(s) for s in extra_steps]
    env_text = [f"env {k}={v}" for k, v in sorted((extra_env or {}).items())]
    venv = Path(venv) if venv else Path(venv_root) / venv_key(torch_req, [*reqs, *steps, *env_text])
    venv.parent.mkdir(parents=True, exist_ok=True)
    wanted = "\n".join([torch_req, *reqs, *steps, *env_text]) + "\n"
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / READY
        if marker.is_file() and marker.read_text() == wanted and venv_python(venv).exists():
            log(f"[{tag}] venv {venv} reused")
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        t0 = time.perf_counter()
        env = {**clean_env(), **(extra_env or {})}
        log(f"[{tag}] building venv {venv} ({torch_req}, then {len(reqs)} requirements)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        pip = [str(venv_python(venv)), "-m", "pip", "install", "-qq", "--no-input"]
        # torch first: an unpinned torch from a dependency would pull the newest CUDA build
        subprocess.run(pip + [torch_req], check=True, env=env)
        log(f"[{tag}] {torch_req} installed after {time.perf_counter() - t0:.1f} s")
        for step in extra_steps:
            subprocess.run(pip + list(step), check=True, env=env)
            log(f"[{tag}] {' '.join(step)} installed after {time.perf_counter() - t0:.1f} s")
        subprocess.run(pip + [torch_req, *reqs], check=True, env=env)
        marker.write_text(wanted)
        log(f"[{tag}] venv {venv} created in {time.perf_counter() - t0:.1f} s")
    return venv
