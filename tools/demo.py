#!/usr/bin/env python
"""MorphZoo demo on the default data: train briefly, register a pair, compare methods.

Steps (outputs under ``--out``, default ``outputs/demo``):

1. ``train/``: a short seeded training run of the voxelmorph bundle on ``hc18_reg2d`` (real data,
   ``--train-steps`` iterations) through ``python -m monai.bundle run``, with its training curves.
2. ``own_pair/``: one hippocampus test pair registered through the bundle's ``inference.json``
   exactly as a user registers their own files (``--moving/--fixed/--moving_label``).
3. ``hippocampus3d/`` and ``hc18_reg2d/``: ``tools/benchmark.py`` on the first ``--pairs`` test
   pairs with identity, ANTs SyN (if installed) and every registration bundle's shipped weights;
   prints the tables and writes figures (Dice box plots, registration panels).
4. ``segmentation/``: the fetal_us_seg bundle segments one HC18 test image as a user would
   (``--image``, mask + ellipse overlay + head circumference), then its ``evaluate.json`` compares
   it with the plain U-Net on the first ``--images`` test images (Dice, HD95, HC error, ms).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bundle_run(configs: list[str], bundle: str = "voxelmorph", **overrides) -> None:
    bdir = REPO / "bundles" / bundle
    files = [str(bdir / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files) if len(files) > 1 else files[0], "--bundle_root", str(bdir)]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "outputs" / "demo"))
    p.add_argument("--pairs", type=int, default=10, help="test pairs per benchmark task (default 10)")
    p.add_argument("--images", type=int, default=10, help="HC18 test images for the segmentation table (default 10)")
    p.add_argument("--train-steps", type=int, default=20, help="iterations of the demo training run (0: skip)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO / "tools"))
    from morphzoo.paths import data_root

    def datalist_path(task: str) -> Path:
        return REPO / "datalists" / f"{task}.json"

    root = data_root()
    if not (root / "hippocampus").is_dir() or not (root / "hc18").is_dir():
        raise SystemExit(f"demo: data not found under {root}; set MORPHZOO_DATA or run tools/prepare_data.py --download.")

    if args.train_steps > 0:
        print(f"\n== 1. short training run ({args.train_steps} iterations, hc18_reg2d) ==", flush=True)
        shutil.rmtree(out / "train", ignore_errors=True)
        _bundle_run(["train.json", "task_hc18_reg2d.json"], epoch_length=args.train_steps, max_epochs=1,
                    max_train_subjects=64, num_val_pairs=5, output_dir=out / "train", ckpt_dir=out / "train" / "models")

    print("\n== 2. register one pair as a user would (hippocampus3d test pair 0) ==", flush=True)
    item = json.loads(datalist_path("hippocampus3d").read_text())["test"][0]
    _bundle_run(["inference.json"], moving=root / item["moving"], fixed=root / item["fixed"],
                moving_label=root / item["moving_label"], fixed_label=root / item["fixed_label"],
                output_dir=out / "own_pair", overwrite="true")
    metrics = json.loads((out / "own_pair" / "metrics.json").read_text())["metrics"]
    print(f"own pair: Dice {metrics['dice']:.3f}, HD95 {metrics['hd95']:.2f} mm, folding {metrics['folding_percent']:.3f} %, "
          f"{metrics['time_ms']:.0f} ms -> {out / 'own_pair'}")

    import benchmark

    methods = ["identity"]
    if importlib.util.find_spec("ants") is not None:
        methods.append("ants_syn")
    else:
        print("demo: antspyx not installed (pip install -e .[baselines]); ANTs SyN left out.")
    for task in ("hippocampus3d", "hc18_reg2d"):
        print(f"\n== 3. benchmark {task}: {args.pairs} test pairs ==", flush=True)
        from morphzoo.inference.bundles import list_registration_bundles
        from morphzoo.inference.methods import bundle_has_weights

        bundles = [b for b, d in list_registration_bundles(REPO / "bundles").items() if bundle_has_weights(d, task)]
        benchmark.main(["--task", task, "--pairs", str(args.pairs), "--methods", ",".join(methods + bundles),
                        "--out", str(out / task), "--no-progress"])
    seg = REPO / "bundles" / "fetal_us_seg" / "models" / "model.pt"
    if seg.is_file():
        print("\n== 4. segment a fetal head as a user would, then the segmentation table ==", flush=True)
        item = json.loads(datalist_path("hc18_seg").read_text())["test"][0]
        _bundle_run(["inference.json"], bundle="fetal_us_seg", image=root / item["image"],
                    pixel_size_mm=item["pixel_size_mm"], output_dir=out / "segmentation" / "own_image", overwrite="true")
        res = json.loads((out / "segmentation" / "own_image" / "result.json").read_text())
        print(f"own image: head circumference {res['head_circumference']} {res['head_circumference_unit']} "
              f"(reference {item['hc_mm']} mm), {res['time_ms']:.0f} ms -> {out / 'segmentation' / 'own_image'}")
        _bundle_run(["inference.json", "evaluate.json"], bundle="fetal_us_seg", num_images=args.images,
                    output_dir=out / "segmentation" / "hc18_seg", compare_plain_unet=(REPO / "bundles" / "fetal_us_seg" / "models" / "model_plain_unet.pt").is_file())
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
