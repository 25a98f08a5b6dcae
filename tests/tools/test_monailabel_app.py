"""The MorphZoo MONAI Label app (``tools/monailabel_app``) served by a real ``monailabel start_server``.

Builds (or reuses) the cached MONAI Label venv with ``tools/label_app.py`` (monailabel 0.8.5; the
first build downloads several GB, see ``tools/monailabel_app/README.md``), serves a temporary studies
folder of real HC18 test images (PNG, with final labels for training) from a copy of the app on a
free local port, and checks over HTTP:

- ``GET /info/`` lists ``fetal_us_seg`` and ``atlas_registration`` with the label ``head`` = 1, and
  ``fmirnet_joint_seg`` with the two hippocampus labels;
- ``POST /infer/fetal_us_seg`` returns, in the image's grid, the mask that the bundle's own
  ``python -m monai.bundle run`` writes (Dice >= 0.99);
- ``POST /infer/fmirnet_joint_seg`` on a 3D hippocampus MRI volume (NIfTI) in the same studies
  folder returns, in the volume's grid and header, the label map (0/1/2) that the bundle's own
  ``python -m monai.bundle run`` writes;
- ``POST /infer/atlas_registration`` returns the atlas label warped by the registration bundle, as
  ``morphzoo.inference.Registrar`` computes it in this process (Dice >= 0.99), and its Dice with the
  ground truth reaches the measured floor;
- the same task with ``--conf registration_bundle voxelmorph`` (its ``task_hc18_reg2d.json`` overlay) and
  an explicit ``atlas_image``/``atlas_label``, run by the app in the venv without a server;
- an unknown image id gives a 404 naming it and the server keeps serving;
- ``POST /train/fetal_us_seg`` (1 epoch on CPU) writes a checkpoint into the app's model folder,
  inference then uses it, and the bundle's committed ``models/model.pt`` is byte-identical.

The server's log lines with the inference timings are printed at the end (run with ``-s``).
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import REPO, load_tool

SEG_BUNDLE = REPO / "bundles" / "fetal_us_seg"
FEWLABEL_BUNDLE = REPO / "bundles" / "fmirnet_joint_seg"
HIPPOCAMPUS_LABELS = {"anterior hippocampus": 1, "posterior hippocampus": 2}
REG_BUNDLE = REPO / "bundles" / "dense_eca_unet"
REG_TASK = "hc18_reg2d"
N_STUDIES = 4  # labelled images in the datastore (training uses them all)
N_VOLUMES = 1  # unlabelled hippocampus volumes in the datastore (fmirnet_joint_seg)
N_SEG = 2  # images compared with the bundle's own inference
N_REG = 3  # images compared with the Registrar
# Measured on hc18_seg test items 0-2 (001, 015, 047) with dense_eca_unet hc18_reg2d, atlas 000 moving,
# the bundle's default pipeline (learned affine, then the network): Dice with the ground truth
# 0.45 / 0.78 / 0.71 (mean 0.65); without the affine stage 0.10 / 0.47 / 0.64 (mean 0.40, the atlas
# label without registration: 0.41). The floor sits between the two: a lost affine stage fails it.
REG_GT_MEAN_DICE_FLOOR = 0.55
SERVER_START_TIMEOUT = 600.0
TRAIN_TIMEOUT = 600.0


label_app = load_tool("label_app")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * (a & b).sum() / s)


def _test_items(n: int) -> list[dict]:
    return json.loads((REPO / "datalists" / "hc18_seg.json").read_text())["test"][:n]


# ------------------------------------------------------------------------------------------ HTTP
def _request(method: str, url: str, fields: dict[str, str] | None = None, json_body: dict | None = None, timeout: float = 600):
    """(status, headers, body bytes) of an HTTP request; ``fields`` are sent as multipart form data."""
    headers: dict[str, str] = {}
    data = None
    if fields is not None:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
        data = ("".join(parts) + f"--{boundary}--\r\n").encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif method == "POST":
        data = b""
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _decode_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (file name, payload) of a multipart response (MONAI Label's ``output=all``)."""
    msg = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    out = {}
    for part in msg.get_payload():
        out[part.get_param("name", header="content-disposition")] = (part.get_filename(), part.get_payload(decode=True))
    return out


def _decode_label(name: str, payload: bytes, tmp: Path) -> np.ndarray:
    path = tmp / f"{uuid.uuid4().hex}_{name}"
    path.write_bytes(payload)
    if name.endswith(".png"):
        from PIL import Image

        return np.asarray(Image.open(path))
    return np.asarray(nib.load(str(path)).dataobj)


def _infer(server: dict, model: str, image_id: str, tmp: Path) -> tuple[np.ndarray, dict, float]:
    """(label array, result params, round-trip seconds) of ``POST /infer/<model>?image=<id>&output=all``."""
    url = f"{server['url']}/infer/{model}?" + urllib.parse.urlencode({"image": image_id, "output": "all"})
    t0 = time.perf_counter()
    status, headers, body = _request("POST", url, fields={"params": json.dumps({"device": "cpu"})})
    dt = time.perf_counter() - t0
    assert status == 200, f"{model} on {image_id}: HTTP {status}: {body[:2000]!r}\n{server['log_tail']()}"
    parts = _decode_multipart(headers.get("content-type") or headers["Content-Type"], body)
    assert "image" in parts and "params" in parts, f"{model}: multipart parts {list(parts)}"
    fname, payload = parts["image"]
    return _decode_label(fname, payload, tmp), json.loads(parts["params"][1]), dt


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def label_venv() -> Path:
    """The cached MONAI Label venv (built on first use; a failed build fails the test with pip's output)."""
    t0 = time.perf_counter()
    try:
        venv = label_app.ensure_label_venv(log=print)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the MONAI Label venv failed: {e} (see pip's output above). Requirements: "
                    f"{label_app.label_requirements()}")
    print(f"[label-test] MONAI Label venv ready in {time.perf_counter() - t0:.1f} s: {venv}")
    return venv


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data_dir) -> dict:
    """A studies folder with the first hc18_seg test images (PNG) and their final labels (0/1 PNG)."""
    from PIL import Image

    from morphzoo.transforms.io import read_label

    root = tmp_path_factory.mktemp("studies")
    final = root / "labels" / "final"
    final.mkdir(parents=True)
    items = []
    for it in _test_items(N_STUDIES):
        src, lab = data_dir / it["image"], data_dir / it["label"]
        for p in (src, lab):
            if not p.is_file():
                pytest.fail(f"HC18 file missing: {p} (data root {data_dir}; see tests/conftest.py data_dir)")
        image_id = Path(it["image"]).stem
        shutil.copy2(src, root / f"{image_id}.png")
        mask = read_label(lab, allowed=[0, 1]).array.astype(np.uint8)
        Image.fromarray(mask).save(final / f"{image_id}.png")
        items.append({"id": image_id, "image": root / f"{image_id}.png", "gt": mask, "item": it})
    volumes = []
    for it in json.loads((REPO / "datalists" / "hippocampus_fewlabel.json").read_text())["test"][:N_VOLUMES]:
        src = data_dir / it["image"]
        if not src.is_file():
            pytest.fail(f"hippocampus file missing: {src} (data root {data_dir}; see tests/conftest.py data_dir)")
        shutil.copy2(src, root / src.name)
        volumes.append({"id": src.name[: -len(".nii.gz")], "image": root / src.name, "label": data_dir / it["label"]})
    return {"root": root, "items": items, "volumes": volumes}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(label_venv, studies, tmp_path_factory):
    """``monailabel start_server`` on a copy of the app, on 127.0.0.1:<free port>; stopped (process group) at the end."""
    work = tmp_path_factory.mktemp("label_app")
    app = work / "app"
    shutil.copytree(label_app.APP_DIR, app, ignore=shutil.ignore_patterns("model", "logs", "bin", "__pycache__"))
    model_dir = work / "model"
    port = _free_port()
    cmd = label_app.server_command(label_venv, studies["root"], port=port, conf=[("model_dir", str(model_dir)), ("bundles_dir", str(REPO / "bundles"))], app=app)
    env = label_app.server_env(label_venv)
    env["MONAI_LABEL_DATASTORE_AUTO_RELOAD"] = "false"
    log_path = work / "server.log"
    log = open(log_path, "w")
    print("[label-test] " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)

    def log_tail(n: int = 6000) -> str:
        log.flush()
        return "--- server log (tail) ---\n" + log_path.read_text(errors="replace")[-n:]

    info = None
    try:
        while time.perf_counter() - t0 < SERVER_START_TIMEOUT:
            if proc.poll() is not None:
                pytest.fail(f"monailabel start_server exited with {proc.returncode} before serving.\n{log_tail()}")
            try:
                status, _, body = _request("GET", f"http://127.0.0.1:{port}/info/", timeout=10)
                if status == 200:
                    info = json.loads(body)
                    break
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            time.sleep(2)
        if info is None:
            pytest.fail(f"monailabel start_server did not answer /info/ within {SERVER_START_TIMEOUT:.0f} s.\n{log_tail()}")
        print(f"[label-test] server up on port {port} in {time.perf_counter() - t0:.1f} s")
        yield {"url": f"http://127.0.0.1:{port}", "info": info, "model_dir": model_dir, "proc": proc, "log_tail": log_tail,
               "log_path": log_path}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if "[morphzoo]" in ln or "Latencies" in ln]
        print("[label-test] server log lines with timings:\n" + "\n".join(lines))


# ----------------------------------------------------------------------------------------- tests
def test_info_lists_both_models_with_head_label(server, studies):
    info = server["info"]
    for model in ("fetal_us_seg", "atlas_registration"):
        assert model in info["models"], f"{model} missing from /info/ models {list(info['models'])}"
        assert info["models"][model]["labels"] == {"head": 1}, info["models"][model]
        assert info["models"][model]["dimension"] == 2
    assert info["models"]["fmirnet_joint_seg"]["labels"] == HIPPOCAMPUS_LABELS, info["models"]["fmirnet_joint_seg"]
    assert "fetal_us_seg" in info["trainers"]
    assert info["labels"] == {"head": 1}
    assert info["datastore"]["total"] == N_STUDIES + N_VOLUMES, info["datastore"]


def test_fetal_us_seg_matches_bundle_inference(server, studies, tmp_path, bundle_runner):
    for s in studies["items"][:N_SEG]:
        label, params, dt = _infer(server, "fetal_us_seg", s["id"], tmp_path)
        out = tmp_path / f"bundle_{s['id']}"
        t0 = time.perf_counter()
        bundle_runner("fetal_us_seg", ["inference.json"], image=s["image"], output_dir=out)
        t_bundle = time.perf_counter() - t0
        ref = np.asarray(nib.load(str(out / "mask.nii.gz")).dataobj)
        assert label.shape == ref.shape == s["gt"].shape, (label.shape, ref.shape, s["gt"].shape)
        assert set(np.unique(label)) <= {0, 1}
        d_bundle, d_gt = _dice(label, ref), _dice(label, s["gt"])
        print(f"[label-test] fetal_us_seg {s['id']}: HTTP round trip {dt:.2f} s (server {params['latencies']['total']:.2f} s; "
              f"bundle run {t_bundle:.1f} s incl. start-up); Dice vs bundle {d_bundle:.4f}, vs ground truth {d_gt:.3f}, "
              f"differing pixels {int((label != ref).sum())}")
        assert d_bundle >= 0.99, f"{s['id']}: server label vs bundle mask Dice {d_bundle:.4f}"
        assert params["label_names"] == {"head": 1}
        assert Path(params["model_file"]).resolve() == (SEG_BUNDLE / "models" / "model.pt").resolve()


def test_fmirnet_joint_seg_matches_bundle_inference_on_a_volume(server, studies, tmp_path, bundle_runner):
    for v in studies["volumes"]:
        label, params, dt = _infer(server, "fmirnet_joint_seg", v["id"], tmp_path)
        out = tmp_path / f"bundle_{v['id']}"
        bundle_runner("fmirnet_joint_seg", ["inference.json"], image=v["image"], output_dir=out)
        ref_img = nib.load(str(out / "mask.nii.gz"))
        ref = np.asarray(ref_img.dataobj)
        gt = np.clip(np.asarray(nib.load(str(v["label"])).dataobj), 0, 2)
        assert label.shape == ref.shape == gt.shape == nib.load(str(v["image"])).shape, (label.shape, ref.shape)
        assert set(np.unique(label)) <= {0, 1, 2} and {1, 2} <= set(np.unique(label))
        agree = float((label == ref).mean())
        per_label = [float(2 * ((label == k) & (ref == k)).sum() / max(1, (label == k).sum() + (ref == k).sum())) for k in (1, 2)]
        d_gt = [float(2 * ((label == k) & (gt == k)).sum() / max(1, (label == k).sum() + (gt == k).sum())) for k in (1, 2)]
        print(f"[label-test] fmirnet_joint_seg {v['id']}: HTTP round trip {dt:.2f} s (server {params['latencies']['total']:.2f} s); "
              f"voxels agreeing with the bundle {agree:.5f}, Dice vs bundle {per_label}, vs ground truth {d_gt}")
        assert min(per_label) >= 0.99, f"{v['id']}: server label vs bundle mask Dice {per_label}"
        assert params["label_names"] == HIPPOCAMPUS_LABELS
        assert Path(params["model_file"]).resolve() == (FEWLABEL_BUNDLE / "models" / "model.pt").resolve()


def test_atlas_registration_matches_registrar(server, studies, tmp_path, data_dir):
    import torch

    from morphzoo.inference.bundles import load_bundle_registrar

    torch.set_num_threads(1)
    atlas = json.loads((REPO / "datalists" / f"{REG_TASK}.json").read_text())["atlas"]
    reg = load_bundle_registrar(REG_BUNDLE, REG_TASK, device="cpu")
    gt_dice, id_dice = [], []
    for s in studies["items"][:N_REG]:
        label, params, dt = _infer(server, "atlas_registration", s["id"], tmp_path)
        mov, fix, mlab, _ = reg.read_pair(data_dir / atlas["image"], s["image"], data_dir / atlas["label"])
        expected = reg.register_records(mov, fix, mlab, None, distances=False).warped_label
        assert label.shape == expected.shape == s["gt"].shape, (label.shape, expected.shape, s["gt"].shape)
        assert set(np.unique(label)) <= {0, 1} and label.any(), f"{s['id']}: empty or non-binary label"
        from morphzoo.transforms.spatial import resample_to_reference

        unregistered = resample_to_reference(mlab, fix, label=True)
        d_exp, d_gt, d_id = _dice(label, expected), _dice(label, s["gt"]), _dice(unregistered, s["gt"])
        gt_dice.append(d_gt)
        id_dice.append(d_id)
        lat = params["latencies"]
        print(f"[label-test] atlas_registration {s['id']}: HTTP round trip {dt:.2f} s (server {lat['total']:.2f} s, "
              f"registration {lat['register']:.2f} s); Dice vs Registrar {d_exp:.4f}, vs ground truth {d_gt:.3f} "
              f"(atlas label without registration {d_id:.3f})")
        assert d_exp >= 0.99, f"{s['id']}: server label vs Registrar Dice {d_exp:.4f}"
        assert params["label_names"] == {"head": 1}
        assert params["registration"]["bundle"] == REG_BUNDLE.name and params["registration"]["task"] == REG_TASK
    mean = float(np.mean(gt_dice))
    print(f"[label-test] atlas_registration mean Dice vs ground truth {mean:.3f} over {len(gt_dice)} images "
          f"(without registration {np.mean(id_dice):.3f}); floor {REG_GT_MEAN_DICE_FLOOR}")
    assert mean >= REG_GT_MEAN_DICE_FLOOR, gt_dice


def test_unknown_image_is_an_error_not_a_crash(server):
    for model in ("fetal_us_seg", "atlas_registration"):
        url = f"{server['url']}/infer/{model}?" + urllib.parse.urlencode({"image": "no_such_image"})
        status, _, body = _request("POST", url, fields={"params": "{}"})
        assert status == 404 and b"no_such_image" in body, (model, status, body[:500])
    status, _, body = _request("POST", f"{server['url']}/infer/no_such_model?image=x", fields={"params": "{}"})
    assert status >= 400, (status, body[:500])
    assert server["proc"].poll() is None, "server died after bad requests"
    assert _request("GET", f"{server['url']}/info/")[0] == 200


def test_training_writes_app_model_folder_only(server, studies, tmp_path):
    committed = SEG_BUNDLE / "models" / "model.pt"
    before = _sha256(committed)
    git_cmd = ["git", "status", "--porcelain", "--untracked-files=all", "--", str(SEG_BUNDLE)]
    git_before = subprocess.run(git_cmd, capture_output=True, text=True, cwd=REPO)
    files_before = {p: p.stat().st_mtime_ns for p in SEG_BUNDLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    trained = server["model_dir"] / "fetal_us_seg" / "model.pt"
    assert not trained.exists()
    t0 = time.perf_counter()
    status, _, body = _request("POST", f"{server['url']}/train/fetal_us_seg",
                               json_body={"max_epochs": 1, "val_split": 0.25, "device": "cpu"})
    assert status == 200, (status, body[:2000])
    task = {}
    while time.perf_counter() - t0 < TRAIN_TIMEOUT:
        status, _, body = _request("GET", f"{server['url']}/train/")
        task = json.loads(body) if status == 200 else {}
        if task.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(3)
    dt = time.perf_counter() - t0
    details = "\n".join(task.get("details", []))
    print(f"[label-test] training through MONAI Label: {task.get('status')} in {dt:.1f} s")
    assert task.get("status") == "DONE", f"training status {task.get('status')}:\n{details}\n{server['log_tail']()}"
    assert trained.is_file(), f"{trained} not written:\n{details}"
    assert list((server["model_dir"] / "fetal_us_seg" / "runs").glob("*/training_log.jsonl")), "no run log in the app's model folder"
    assert _sha256(committed) == before, f"{committed} changed"
    files_after = {p: p.stat().st_mtime_ns for p in SEG_BUNDLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files_after == files_before, f"training touched files in {SEG_BUNDLE}: {set(files_after.items()) ^ set(files_before.items())}"
    git_after = subprocess.run(git_cmd, capture_output=True, text=True, cwd=REPO)
    assert git_after.stdout == git_before.stdout, f"git status of {SEG_BUNDLE} changed:\n{git_after.stdout}"
    # inference now serves the app's trained weights
    label, params, _ = _infer(server, "fetal_us_seg", studies["items"][0]["id"], tmp_path)
    assert Path(params["model_file"]).resolve() == trained.resolve(), params.get("model_file")
    assert label.shape == studies["items"][0]["gt"].shape


_APP_SNIPPET = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from main import MorphZooApp
app = MorphZooApp(app_dir=sys.argv[1], studies=sys.argv[2], conf=json.loads(sys.argv[3]))
res = app.infer({"model": "atlas_registration", "image": sys.argv[4], "device": "cpu"})
print("MZRESULT " + json.dumps({"file": res["file"], "params": res["params"], "models": list(app.info()["models"])}))
"""


def test_atlas_registration_voxelmorph_overlay_and_explicit_atlas(label_venv, studies, tmp_path, data_dir):
    """The app in the MONAI Label venv (no server) with ``--conf registration_bundle voxelmorph`` (its
    ``task_hc18_reg2d.json`` overlay) and the atlas given explicitly by ``atlas_image``/``atlas_label``."""
    from morphzoo.inference.bundles import load_bundle_registrar

    atlas = json.loads((REPO / "datalists" / f"{REG_TASK}.json").read_text())["atlas"]
    conf = {"models": "atlas_registration", "registration_bundle": "voxelmorph", "registration_task": REG_TASK,
            "atlas_image": str(data_dir / atlas["image"]), "atlas_label": str(data_dir / atlas["label"]),
            "model_dir": str(tmp_path / "model")}
    s = studies["items"][0]
    one = tmp_path / "studies"
    one.mkdir()
    shutil.copy2(s["image"], one / s["image"].name)
    env = label_app.server_env(label_venv)
    env["MONAI_LABEL_DATASTORE_AUTO_RELOAD"] = "false"
    t0 = time.perf_counter()
    proc = subprocess.run([str(label_venv / "bin" / "python"), "-c", _APP_SNIPPET, str(label_app.APP_DIR), str(one),
                           json.dumps(conf), s["id"]], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("MZRESULT "))[len("MZRESULT "):])
    assert out["models"] == ["atlas_registration"]
    assert out["params"]["registration"]["bundle"] == "voxelmorph" and out["params"]["registration"]["task"] == REG_TASK
    label_file = Path(out["file"])
    label = _decode_label(label_file.name, label_file.read_bytes(), tmp_path)
    label_file.unlink()
    reg = load_bundle_registrar(REPO / "bundles" / "voxelmorph", REG_TASK, device="cpu")
    mov, fix, mlab, _ = reg.read_pair(data_dir / atlas["image"], s["image"], data_dir / atlas["label"])
    expected = reg.register_records(mov, fix, mlab, None, distances=False).warped_label
    d_exp, d_gt = _dice(label, expected), _dice(label, s["gt"])
    print(f"[label-test] atlas_registration (voxelmorph {REG_TASK}, in-process app) {s['id']}: {time.perf_counter() - t0:.1f} s "
          f"incl. start-up; Dice vs Registrar {d_exp:.4f}, vs ground truth {d_gt:.3f}")
    assert label.shape == expected.shape and d_exp >= 0.99
