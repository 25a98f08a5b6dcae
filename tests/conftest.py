"""The one set of shared fixtures: the real data (a missing data folder fails, never skips), bundle
runners and checks, small synthetic images. Each fixture name means one thing everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nibabel as nib
import numpy as np
import torch

from morphzoo.paths import data_root, require_data

REPO = Path(__file__).resolve().parents[1]


def _require(*parts: str) -> Path:
    try:
        return require_data(*parts)
    except FileNotFoundError as e:  # missing data is a failure, never a skip
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data root (``morphzoo.paths.data_root()``) holding ``hippocampus/`` and ``hc18/``."""
    for p in ("hippocampus/img", "hippocampus/label", "hc18/training_set"):
        _require(p)
    return data_root()


@pytest.fixture(scope="session")
def hippo_dir(data_dir: Path) -> Path:
    """``<data>/hippocampus`` (``img/``, ``label/``)."""
    return data_dir / "hippocampus"


@pytest.fixture(scope="session")
def hc18_dir(data_dir: Path) -> Path:
    """``<data>/hc18`` (``training_set/`` and the pixel-size CSV)."""
    return data_dir / "hc18"


@pytest.fixture(scope="session")
def hc18_images(hc18_dir: Path) -> Path:
    """``<data>/hc18/training_set``: the PNG images and their annotation masks."""
    return hc18_dir / "training_set"


@pytest.fixture(scope="session")
def hippocampus_items(hippo_dir: Path) -> list[dict]:
    """Every hippocampus subject as a datalist item (``morphzoo.data.list_hippocampus``)."""
    from morphzoo.data import list_hippocampus

    return list_hippocampus(hippo_dir)


@pytest.fixture(scope="session")
def hc18_items(hc18_dir: Path) -> list[dict]:
    """Every HC18 image as a datalist item (``morphzoo.data.list_hc18``)."""
    from morphzoo.data import list_hc18

    return list_hc18(hc18_dir)


@pytest.fixture(scope="session")
def hippo_img(hippo_dir: Path):
    """(image path, label path) of a clean subject (no stray label values)."""
    return hippo_dir / "img" / "hippocampus_004.nii.gz", hippo_dir / "label" / "hippocampus_004.nii.gz"


@pytest.fixture(scope="session")
def hippo_img2(hippo_dir: Path):
    """(image path, label path) of a second clean subject."""
    return hippo_dir / "img" / "hippocampus_006.nii.gz", hippo_dir / "label" / "hippocampus_006.nii.gz"


TEST_THREADS = int(os.environ.get("MORPHZOO_TEST_THREADS", "1"))


@pytest.fixture(autouse=True)
def _torch_threads():
    """In-process tests run with ``$MORPHZOO_TEST_THREADS`` torch threads (default 1; bundle
    subprocesses set their own). The suite is run with 1 and with 2 (and ITK/OpenMP likewise) to show
    that no result depends on thread scheduling."""
    n = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(n)


def load_tool(name: str):
    """Import ``tools/<name>.py`` (the tools are scripts, not a package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"mz_tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bundle_cmd(bundle: str, configs: list[str], subcommand: str = "run", **overrides) -> list[str]:
    """Command line for `python -m monai.bundle <subcommand>` on bundles/<bundle> with config overlays."""
    bdir = REPO / "bundles" / bundle
    files = [str(bdir / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", subcommand]
    if subcommand == "run":
        cmd += ["--config_file", str(files) if len(files) > 1 else files[0]]
    cmd += ["--bundle_root", str(bdir)]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def run_bundle(bundle: str, configs: list[str], timeout: float = 600, check: bool = True, **overrides) -> subprocess.CompletedProcess:
    """Run a bundle config through MONAI's runner in a subprocess (bundles' `scripts` packages
    collide in one process) and return the completed process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        bundle_cmd(bundle, configs, **overrides), capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bundle run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_bundle_torchrun(bundle: str, configs: list[str], nproc: int = 2, timeout: float = 600, **overrides) -> subprocess.CompletedProcess:
    """Run a bundle config under ``torch.distributed.run`` with ``nproc`` CPU processes (one thread
    each) and return the completed process, checked: it exited 0 (else the assertion shows stderr
    and the ranks' log; a rank that dies prints its Python stack through faulthandler) and every
    rank joined the one-thread gloo group of ``morphzoo.engines.init_process_group``."""
    cmd = bundle_cmd(bundle, configs, **overrides)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}"] + cmd[1:]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}\n{proc.stderr[-4000:]}\nstdout tail:\n{proc.stdout[-3000:]}"
    assert proc.stdout.count("process group: backend morphzoo_gloo, rank") == nproc, "not the one-thread gloo group"
    return proc


@pytest.fixture(scope="session")
def bundle_torchrun():
    """The :func:`run_bundle_torchrun` helper as a fixture."""
    return run_bundle_torchrun


@pytest.fixture(scope="session")
def bundle_runner():
    """The :func:`run_bundle` helper as a fixture."""
    return run_bundle


@pytest.fixture(scope="session")
def bundle_command():
    """The :func:`bundle_cmd` helper as a fixture."""
    return bundle_cmd


class BundleChecks:
    """The Model Zoo checks every bundle's tests run, in subprocesses (bundle ``scripts`` collide in one process)."""

    schema = REPO / "schemas" / "meta_schema_20240725.json"

    @staticmethod
    def python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)

    @staticmethod
    def _config_arg(bundle: str, configs: list[str]) -> str:
        files = [str(REPO / "bundles" / bundle / "configs" / c) for c in configs]
        return str(files) if len(files) > 1 else files[0]

    def assert_file_set(self, bundle: str, extra: tuple[str, ...] = ()) -> None:
        """The Model Zoo file set plus the bundle's task overlays / weights in ``extra``."""
        base = ("configs/metadata.json", "configs/train.json", "configs/inference.json", "configs/evaluate.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "docs/data_license.txt",
                "LICENSE", "models/model.pt")
        for rel in base + tuple(extra):
            assert (REPO / "bundles" / bundle / rel).is_file(), f"bundles/{bundle}/{rel} is missing"

    def verify_metadata(self, bundle: str, meta_file: Path | None = None) -> subprocess.CompletedProcess:
        meta = meta_file or REPO / "bundles" / bundle / "configs" / "metadata.json"
        return self.python("-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(self.schema))

    def assert_metadata_ok(self, bundle: str) -> None:
        proc = self.verify_metadata(bundle)
        assert proc.returncode == 0 and "metadata is verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]

    def assert_net_in_out_ok(self, bundle: str, configs: list[str], tmp_path: Path, spatial_shape: list[int] | None = None,
                             out_channels: int | None = None) -> None:
        """``verify_net_in_out network_def``; a task overlay of another grid/dimension is described in a
        metadata copy (``spatial_shape``, output ``num_channels``) since metadata.json describes the default task."""
        import json

        meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
        fmt = meta["network_data_format"]
        if spatial_shape is not None:
            fmt["inputs"]["image"]["spatial_shape"] = list(spatial_shape)
            fmt["outputs"]["pred"]["spatial_shape"] = list(spatial_shape)
        if out_channels is not None:
            fmt["outputs"]["pred"]["num_channels"] = out_channels
        mfile = tmp_path / "metadata.json"
        mfile.write_text(json.dumps(meta))
        proc = self.python("-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", str(mfile),
                           "--config_file", self._config_arg(bundle, configs), "--bundle_root", str(REPO / "bundles" / bundle))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "data shape of network is verified with no error" in proc.stdout + proc.stderr

    @staticmethod
    def assert_short_training(proc: subprocess.CompletedProcess, out: Path, models_dir: Path, model_file: str,
                              iterations: int = 2, state_keys: tuple[str, ...] = ("network", "optimizer", "trainer")) -> dict:
        """A short ``train.json`` run logged one finite loss per iteration, a validation Dice in
        [0, 1] in ``training_log.jsonl``, the best model to ``models_dir/model_file`` and a resumable
        ``checkpoints/last.pt`` holding ``state_keys`` at ``iterations``; returns that checkpoint."""
        import json
        import re

        import numpy as np
        import torch

        losses = [float(v) for v in re.findall(r"train_loss: (\S+)", proc.stdout + proc.stderr)]
        assert len(losses) == iterations and all(np.isfinite(losses)), losses
        log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
        val = [r for r in log if "val_mean_dice" in r]
        assert val and 0.0 <= val[-1]["val_mean_dice"] <= 1.0
        assert (models_dir / model_file).is_file(), f"{models_dir / model_file} was not written"
        ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        assert set(ckpt) >= set(state_keys) and ckpt["trainer"]["iteration"] == iterations
        ckpt["losses"] = losses
        return ckpt

    @staticmethod
    def assert_png_pair_registered(bundle: str, bundle_runner, data_dir: Path, out: Path) -> dict:
        """Register two real HC18 PNGs of different pixel sizes with the bundle's default 2D task:
        the warped image and the field are on the fixed PNG's grid, Dice in [0, 1]; returns the metrics."""
        import json

        import nibabel as nib
        import numpy as np
        from PIL import Image

        hc = data_dir / "hc18" / "training_set"
        bundle_runner(bundle, ["inference.json"], moving=hc / "001_HC.png", fixed=hc / "002_HC.png",
                      moving_label=hc / "001_HC_Annotation.png", fixed_label=hc / "002_HC_Annotation.png", output_dir=out)
        h, w = np.asarray(Image.open(hc / "002_HC.png")).shape[:2]
        assert nib.load(str(out / "warped.nii.gz")).shape == (h, w)
        assert nib.load(str(out / "ddf.nii.gz")).shape == (h, w, 1, 1, 2)
        metrics = json.loads((out / "metrics.json").read_text())["metrics"]
        assert 0.0 <= metrics["dice"] <= 1.0
        return metrics

    @staticmethod
    def assert_preprocessing_agree(bundle: str, item: dict, data_dir: Path, shape: tuple[int, ...]) -> None:
        """MONAI Label runs inference.json's ``preprocessing`` (MONAI ``LoadImaged``) on ``item["image"]``;
        training runs train.json's (the validated ``LoadSubjectd``) on the datalist item: the network
        must see the same tensor, of ``shape``, from both."""
        import torch
        from monai.bundle import ConfigParser

        cfg = REPO / "bundles" / bundle / "configs"
        inf, tr = ConfigParser(), ConfigParser()
        inf.read_config(str(cfg / "inference.json"))
        tr.read_config(str(cfg / "train.json"))
        a = inf.get_parsed_content("preprocessing")({"image": str(data_dir / item["image"])})["image"]
        b = tr.get_parsed_content("preprocessing")(dict(item))["image"]
        assert a.shape == b.shape == shape
        torch.testing.assert_close(torch.as_tensor(a.as_tensor()), torch.as_tensor(b), rtol=0, atol=1e-6)

    def ckpt_export(self, bundle: str, configs: list[str], model_file: str, out: Path):
        """``ckpt_export network_def`` of ``models/<model_file>``; returns the loaded TorchScript module."""
        import torch

        bdir = REPO / "bundles" / bundle
        proc = self.python("-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(out), "--ckpt_file",
                           str(bdir / "models" / model_file), "--meta_file", str(bdir / "configs" / "metadata.json"),
                           "--config_file", self._config_arg(bundle, configs), "--bundle_root", str(bdir))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return torch.jit.load(str(out)).eval()


@pytest.fixture(scope="session")
def bundle_checks() -> BundleChecks:
    """:class:`BundleChecks`: file set, verify_metadata, verify_net_in_out and ckpt_export of a bundle."""
    return BundleChecks()


def _smooth_volume(shape, seed: int = 0) -> np.ndarray:
    """A smooth, everywhere non-constant test image (sum of low-frequency sinusoids)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(3):
        k = rng.uniform(0.15, 0.4, size=len(shape))
        ph = rng.uniform(0, 2 * np.pi)
        out += np.sin(sum(ki * g for ki, g in zip(k, grids)) + ph)
    return out.astype(np.float32)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture(scope="session")
def smooth_volume():
    """``smooth_volume(shape, seed=0)``: a smooth test image."""
    return _smooth_volume


@pytest.fixture(scope="session")
def save_nifti():
    """``save_nifti(path, array, affine=None)``: write a NIfTI file, return its path."""
    return _save_nifti


def _assert_every_parameter_learns(net: torch.nn.Module, x: torch.Tensor) -> None:
    """``net(x).pow(2).sum()`` gives every parameter a non-zero gradient, and one SGD step changes the output."""
    net(x).pow(2).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert not missing, missing
    with torch.no_grad():
        before = net(x).clone()
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    with torch.no_grad():
        assert not torch.allclose(net(x), before)


@pytest.fixture(scope="session")
def assert_every_parameter_learns():
    """``assert_every_parameter_learns(net, x)``: gradients reach every parameter and a step changes the output."""
    return _assert_every_parameter_learns
