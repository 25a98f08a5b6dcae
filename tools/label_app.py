"""Set up and start the MorphZoo MONAI Label app (``tools/monailabel_app``).

    python tools/label_app.py setup                      # build (or reuse) the MONAI Label venv
    python tools/label_app.py start --studies DIR        # start the server on http://127.0.0.1:8000

``setup`` builds a cached virtual environment (see ``tools/venv_cache.py``) from MorphZoo's
``install_requires`` plus its ``label`` extra in ``setup.cfg`` (``monailabel==0.8.5`` and the
``torch``/``torchvision`` builds it runs with), keyed on a hash of those requirements, so a change
of ``setup.cfg`` builds a new one. MorphZoo itself is put on that venv's path by a ``.pth`` file
pointing at this checkout's ``common/`` (rewritten on every call, so a moved checkout still works;
its requirements are installed, the package is not copied).

``start`` runs ``monailabel start_server --app tools/monailabel_app --studies DIR --conf models
fetal_us_seg,atlas_registration,fmirnet_joint_seg`` with that venv's interpreter; extra ``--conf KEY VALUE`` pairs
are passed on (e.g. ``--conf atlas_image PATH --conf atlas_label PATH``, see
``tools/monailabel_app/README.md``). Without ``--venv`` the venv lives in
``$MORPHZOO_VENV_ROOT`` or ``~/.cache/morphzoo/venvs/<hash>``.
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

if str(Path(__file__).resolve().parent) not in sys.path:  # also when loaded by file path (tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from venv_cache import DEFAULT_VENV_ROOT, clean_env, ensure_venv, venv_python  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "tools" / "monailabel_app"
DEFAULT_MODELS = "fetal_us_seg,atlas_registration,fmirnet_joint_seg"
PTH_NAME = "morphzoo_checkout.pth"
# monailabel 0.8.5 requires sam2 (only its SAM2 tasks import it), published as an sdist whose build
# requires torch: in pip's isolated build environment that downloads the newest torch (several GB)
# just to build. It is built first against the venv's pinned torch instead, without its optional
# CUDA extension.
SAM2_REQ = "sam2==1.1.0"
SAM2_ENV = {"SAM2_BUILD_CUDA": "0"}

__all__ = ["label_requirements", "ensure_label_venv", "server_command", "main"]


def _req_lines(text: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


def label_requirements(setup_cfg: Path = REPO / "setup.cfg") -> tuple[str, list[str]]:
    """(torch requirement, the other requirements) of the MONAI Label venv, read from ``setup.cfg``.

    The torch requirement is the ``torch==`` pin of the ``label`` extra (installed first); the rest is
    ``install_requires`` plus the other entries of the ``label`` extra.

    Raises:
        ValueError: ``setup.cfg`` has no ``label`` extra or it does not pin torch.
    """
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    try:
        label = _req_lines(cfg["options.extras_require"]["label"])
    except KeyError as e:
        raise ValueError(f"{setup_cfg}: no [options.extras_require] 'label' extra") from e
    torch_reqs = [r for r in label if r.replace(" ", "").startswith("torch==")]
    if len(torch_reqs) != 1:
        raise ValueError(f"{setup_cfg}: the 'label' extra must pin torch exactly once (torch==X), got {torch_reqs}")
    base = _req_lines(cfg["options"]["install_requires"])
    reqs = [r for r in base + label if r not in torch_reqs]
    return torch_reqs[0], reqs


def _link_checkout(venv: Path) -> None:
    """Put this checkout's ``common/`` on the venv's ``sys.path`` (a ``.pth`` file in site-packages)."""
    purelib = subprocess.run(
        [str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=clean_env(),
    ).stdout.strip()
    (Path(purelib) / PTH_NAME).write_text(str(REPO / "common") + "\n")


def ensure_label_venv(venv: Path | None = None, venv_root: Path = DEFAULT_VENV_ROOT, log: Callable[[str], object] = print) -> Path:
    """Build (or reuse) the MONAI Label venv and link this checkout's ``morphzoo`` into it.

    Returns:
        The venv folder; ``<venv>/bin/python -m monailabel.main`` runs MONAI Label.
    """
    torch_req, reqs = label_requirements()
    pins = [torch_req] + [r for r in reqs if r.replace(" ", "").startswith("torchvision==")]
    steps = [["setuptools>=61", "wheel", *pins], ["--no-build-isolation", SAM2_REQ, *pins]]
    path = ensure_venv(torch_req, reqs, venv=venv, venv_root=venv_root, log=log, tag="label", extra_steps=steps, extra_env=SAM2_ENV)
    _link_checkout(path)
    return path


def server_command(
    venv: Path,
    studies: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    models: str = DEFAULT_MODELS,
    conf: Sequence[tuple[str, str]] = (),
    app: Path = APP_DIR,
) -> list[str]:
    """The ``monailabel start_server`` command line (run with the venv's interpreter)."""
    cmd = [str(venv_python(venv)), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
           "--host", host, "--port", str(port), "--conf", "models", models]
    for k, v in conf:
        cmd += ["--conf", k, v]
    return cmd


def server_env(venv: Path) -> dict[str, str]:
    """Environment for the server: the venv's ``bin`` first on ``PATH``, no leaking ``PYTHONPATH``."""
    env = clean_env()
    env["PATH"] = f"{Path(venv) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("setup", "start"):
        p = sub.add_parser(name)
        p.add_argument("--venv", default=None, help="use/create this venv instead of the hashed cache folder")
        p.add_argument("--venv_root", default=str(DEFAULT_VENV_ROOT), help="cache folder of hashed venvs")
        if name == "start":
            p.add_argument("--studies", required=True, help="folder of images (PNG/NIfTI) MONAI Label serves")
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8000)
            p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated models of the app to load")
            p.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                           help="app configuration passed to MONAI Label (repeatable)")
    args = ap.parse_args(argv)
    venv = ensure_label_venv(Path(args.venv) if args.venv else None, Path(args.venv_root), log=lambda m: print(m, flush=True))
    if args.cmd == "setup":
        print(f"[label] MONAI Label venv ready: {venv}")
        return 0
    studies = Path(args.studies).expanduser().resolve()
    if not studies.is_dir():
        print(f"[label] --studies {studies}: not a folder", file=sys.stderr)
        return 2
    cmd = server_command(venv, studies, args.host, args.port, args.models, [tuple(c) for c in args.conf])
    print("[label] " + " ".join(cmd), flush=True)
    os.execve(cmd[0], cmd, server_env(venv))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
