"""End-to-end checks of the fetal_us_cascade_reg bundle through MONAI's own bundle runner, on real
HC18 data: the stage-wise schedule (configs/train_stage1-3.json) trains one sub-network at a time
and leaves the frozen ones bit for bit unchanged."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "fetal_us_cascade_reg"


def _weights(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state.get("model", state)


def _stage(state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    return {n: v for n, v in state.items() if n.startswith(f"stages.{k}.")}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_stage_wise_training_freezes_the_coarser_stages(tmp_path, data_dir, bundle_runner, bundle_checks):
    stages_dir, models = tmp_path / "stages", tmp_path / "models"
    common = dict(epoch_length=2, max_epochs=1, max_train_subjects=4, num_val_pairs=2, batch_size=1, num_threads=1,
                  stages_dir=stages_dir)
    states = {}
    for k in (1, 2, 3):
        out = tmp_path / f"stage{k}"
        extra = {"ckpt_dir": models} if k == 3 else {}
        proc = bundle_runner("fetal_us_cascade_reg", ["train.json", f"train_stage{k}.json"], output_dir=out, **common, **extra)
        model = models / "model.pt" if k == 3 else stages_dir / f"model_stage{k}.pt"
        bundle_checks.assert_short_training(proc, out, model.parent, model.name)
        states[k] = _weights(model)
        if k > 1:
            assert "frozen: " in proc.stdout + proc.stderr
    # later stages leave the sub-networks of earlier ones exactly as those stages saved them
    assert _same(_stage(states[1], 0), _stage(states[2], 0)) and _same(_stage(states[1], 0), _stage(states[3], 0))
    assert _same(_stage(states[2], 1), _stage(states[3], 1))
    assert not _same(_stage(states[1], 1), _stage(states[2], 1)), "stage 2 did not train sub-network 2"
    assert not _same(_stage(states[2], 2), _stage(states[3], 2)), "stage 3 did not train sub-network 3"


def test_stage_two_without_stage_one_says_what_is_missing(tmp_path, bundle_runner):
    proc = bundle_runner("fetal_us_cascade_reg", ["train.json", "train_stage2.json"], check=False, epoch_length=1, max_epochs=1,
                         max_train_subjects=2, num_val_pairs=1, stages_dir=tmp_path / "none", output_dir=tmp_path / "out")
    assert proc.returncode != 0
    assert "model_stage1.pt: model weights not found" in proc.stdout + proc.stderr
