"""Engine glue (morphzoo.engines): batch preparation, inferer, label warping, resumable checkpoints, logs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from morphzoo.engines.checkpoint import ResumableCheckpoint
from morphzoo.engines.logs import TrainingLog
from morphzoo.engines.registration import RegistrationInferer, RegistrationPrepareBatch, WarpLabelsd, one_hot_labels


# ----------------------------------------------------------------------------- RegistrationPrepareBatch
def _batch(labels=True, b=2, s=(6, 6, 6)):
    d = {"moving": torch.full((b, 1, *s), 1.0), "fixed": torch.full((b, 1, *s), 2.0)}
    if labels:
        d["moving_label"] = torch.full((b, 1, *s), 3.0)
        d["fixed_label"] = torch.full((b, 1, *s), 4.0)
    return d


def test_prepare_batch_with_and_without_labels():
    inputs, targets = RegistrationPrepareBatch()(_batch(True), device="cpu")
    assert inputs.shape == (2, 2, 6, 6, 6) and targets.shape == (2, 4, 6, 6, 6)
    assert [float(targets[:, c].mean()) for c in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert [float(inputs[:, c].mean()) for c in range(2)] == [1.0, 2.0]
    inputs, targets = RegistrationPrepareBatch()(_batch(False), device="cpu")
    assert inputs.shape == (2, 2, 6, 6, 6) and targets.shape == (2, 2, 6, 6, 6)
    inputs, targets = RegistrationPrepareBatch(use_labels=False)(_batch(True), device="cpu")
    assert targets.shape == (2, 2, 6, 6, 6)
    with pytest.raises(KeyError):
        RegistrationPrepareBatch()({"moving": torch.zeros(1, 1, 4, 4)})
    bad = _batch(False)
    bad["fixed"] = torch.zeros(2, 1, 6, 6, 5)
    with pytest.raises(ValueError):
        RegistrationPrepareBatch()(bad)


# ----------------------------------------------------------------------------- RegistrationInferer
class _ConstField(nn.Module):
    def __init__(self, value, spatial_dims=3, multi=False):
        super().__init__()
        self.value, self.spatial_dims, self.multi = value, spatial_dims, multi

    def forward(self, x):
        f = torch.zeros(x.shape[0], self.spatial_dims, *x.shape[2:])
        f[:, 0] = self.value
        if self.multi:
            return [f, f[:, :, ::2, ::2, ::2]]
        return f


def test_inferer_zero_velocity_gives_zero_ddf():
    x = torch.randn(1, 2, 8, 8, 8)
    ddf = RegistrationInferer(integration_steps=7)(x, _ConstField(0.0))
    assert ddf.shape == (1, 3, 8, 8, 8)
    assert torch.count_nonzero(ddf) == 0


def test_inferer_constant_velocity_integrates_to_translation():
    x = torch.zeros(1, 2, 16, 16, 16)
    ddf = RegistrationInferer(integration_steps=4)(x, _ConstField(1.0))
    # a stationary constant velocity is a translation: exp(v) = v away from the border
    inner = ddf[:, :, 3:-3, 3:-3, 3:-3]
    torch.testing.assert_close(inner[:, 0], torch.ones_like(inner[:, 0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(inner[:, 1:], torch.zeros_like(inner[:, 1:]))
    direct = RegistrationInferer(integration_steps=0)(x, _ConstField(1.0))
    assert torch.all(direct[:, 0] == 1.0)


def test_inferer_multi_output():
    x = torch.zeros(1, 2, 8, 8, 8)
    net = _ConstField(0.5, multi=True)
    first = RegistrationInferer()(x, net)
    assert torch.is_tensor(first) and first.shape == (1, 3, 8, 8, 8)
    both = RegistrationInferer(return_all=True)(x, net)
    assert [tuple(f.shape) for f in both] == [(1, 3, 8, 8, 8), (1, 3, 4, 4, 4)]


# ----------------------------------------------------------------------------- labels
def test_one_hot_labels_shapes_and_values():
    lab = torch.tensor([[[0.0, 1.0], [2.0, 5.0]]])  # (1, 2, 2); 5 is clamped to the last class
    oh = one_hot_labels(lab, 3, channel_dim=0)
    assert oh.shape == (3, 2, 2) and oh.dtype == torch.float32
    torch.testing.assert_close(oh.argmax(0), torch.tensor([[0, 1], [2, 2]]))
    torch.testing.assert_close(oh.sum(0), torch.ones(2, 2))
    blab = torch.randint(0, 3, (4, 1, 5, 6, 7)).float()
    boh = one_hot_labels(blab, 3, channel_dim=1)
    assert boh.shape == (4, 3, 5, 6, 7)
    torch.testing.assert_close(boh.argmax(1).float(), blab[:, 0])
    with pytest.raises(ValueError):
        one_hot_labels(torch.zeros(2, 4, 4), 3, channel_dim=0)


def test_warp_labels_zero_and_shift():
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 3, (1, 6, 7, 8), generator=g).float()
    d = {"pred": torch.zeros(3, 6, 7, 8), "moving_label": lab.clone(), "fixed_label": lab.clone(), "other": 1}
    out = WarpLabelsd(num_labels=3)(d)
    assert out["pred"].shape == (3, 6, 7, 8) and out["label"].shape == (3, 6, 7, 8)
    torch.testing.assert_close(out["pred"], out["label"])
    torch.testing.assert_close(out["label"], one_hot_labels(lab, 3))
    assert out["other"] == 1
    # a +1 voxel displacement along axis 0: warped(x) = moving(x + 1)
    ddf = torch.zeros(3, 6, 7, 8)
    ddf[0] = 1.0
    out = WarpLabelsd(num_labels=3)({"pred": ddf, "moving_label": lab, "fixed_label": lab})
    torch.testing.assert_close(out["pred"][:, :-1], one_hot_labels(lab, 3)[:, 1:])
    torch.testing.assert_close(out["pred"][:, -1], one_hot_labels(torch.zeros(1, 7, 8), 3))  # zero padding: background


def test_warp_labels_prefers_the_engine_targets():
    """With a pre-alignment stage the batch's moving label is not what the field applies to: the
    4-channel targets (moving, fixed, pre-aligned moving label, fixed label) are used instead."""
    g = torch.Generator().manual_seed(1)
    raw = torch.randint(0, 3, (1, 6, 7, 8), generator=g).float()
    aligned = torch.randint(0, 3, (1, 6, 7, 8), generator=g).float()
    fixed = torch.randint(0, 3, (1, 6, 7, 8), generator=g).float()
    targets = torch.cat([torch.rand(2, 6, 7, 8, generator=g), aligned, fixed])
    out = WarpLabelsd(num_labels=3)({"pred": torch.zeros(3, 6, 7, 8), "moving_label": raw, "fixed_label": raw, "label": targets})
    torch.testing.assert_close(out["pred"], one_hot_labels(aligned, 3))
    torch.testing.assert_close(out["label"], one_hot_labels(fixed, 3))


def test_prepare_batch_prealigns_moving_image_and_label():
    """RegistrationPrepareBatch(prealign=...) warps the moving image and label by the stage's affine
    (a shift of 2 voxels here) before building inputs and targets."""
    from morphzoo.transforms.affine import centred_affine

    size = (12, 16)
    mov = torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(2))
    lab = (mov > 0.5).float()
    shift = centred_affine(torch.tensor([[2.0, 0.0]]), "translation", size)
    pb = RegistrationPrepareBatch(prealign=lambda m, f: shift.expand(m.shape[0], -1, -1))
    x, t = pb({"moving": mov, "fixed": mov, "moving_label": lab, "fixed_label": lab})
    torch.testing.assert_close(x[:, 0, :-2], mov[:, 0, 2:])  # warped(x) = moving(x + 2) along axis 0
    torch.testing.assert_close(t[:, 2, :-2], lab[:, 0, 2:])
    torch.testing.assert_close(t[:, 3], lab[:, 0])  # the fixed side is untouched


# ----------------------------------------------------------------------------- ResumableCheckpoint
_X = torch.linspace(-1, 1, 12).view(4, 3)
_Y = torch.tensor([[1.0], [-1.0], [0.5], [2.0]])


def _make(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def step(engine, batch):
        opt.zero_grad()
        loss = ((model(batch[0]) - batch[1]) ** 2).mean()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    return model, opt, Engine(step)


def _snapshot(model, opt, engine):
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "exp_avg": [opt.state[p]["exp_avg"].clone() if p in opt.state else None for p in model.parameters()],
        "exp_avg_sq": [opt.state[p]["exp_avg_sq"].clone() if p in opt.state else None for p in model.parameters()],
        "iteration": engine.state.iteration,
    }


def test_resumable_checkpoint_kill_and_resume(tmp_path):
    data = [(_X, _Y)] * 3  # epoch length 3; identical batches so a resumed run equals an uninterrupted one
    ckpt_dir = tmp_path / "ckpt"

    # reference: uninterrupted 4 epochs
    ref_model, ref_opt, ref_engine = _make()
    ref_engine.run(data, max_epochs=4)
    assert ref_engine.state.iteration == 12

    # run 1: save every 2 iterations; "killed" after iteration 5 (saves happened at 2, 3 (epoch end), 4)
    model, opt, engine = _make()
    ResumableCheckpoint(str(ckpt_dir), {"model": model, "optimizer": opt}, save_interval=2).attach(engine)
    saved = {}

    @engine.on(Events.ITERATION_COMPLETED)
    def _remember(e):
        saved[e.state.iteration] = _snapshot(model, opt, e)
        if e.state.iteration == 5:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        engine.run(data, max_epochs=3)
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt"]  # no temporary file left
    at4 = saved[4]
    assert not torch.equal(saved[5]["params"]["weight"], at4["params"]["weight"])

    # run 2: a new model / optimizer / engine (other init) resumes from last.pt, configured for 4 epochs
    model2, opt2, engine2 = _make(seed=123)
    assert not torch.equal(model2.weight, at4["params"]["weight"])
    ResumableCheckpoint(str(ckpt_dir), {"model": model2, "optimizer": opt2}, save_interval=2).attach(engine2)
    loaded = {}
    engine2.add_event_handler(Events.STARTED, lambda e: loaded.update(_snapshot(model2, opt2, e)))
    counted = []
    engine2.add_event_handler(Events.ITERATION_COMPLETED, lambda e: counted.append(e.state.iteration))
    engine2.run(data, max_epochs=4)

    assert loaded["iteration"] == 4
    assert None not in loaded["exp_avg"], "the optimizer state was not restored"
    for k in at4["params"]:
        torch.testing.assert_close(loaded["params"][k], at4["params"][k], rtol=0, atol=0)
    for a, b in zip(loaded["exp_avg"], at4["exp_avg"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(loaded["exp_avg_sq"], at4["exp_avg_sq"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # it continues from iteration 5 to the configured 4 epochs (the checkpoint said 3)
    assert counted == list(range(5, 13))
    assert engine2.state.epoch == 4 and engine2.state.iteration == 12
    # and ends where the uninterrupted run ended
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(model2.state_dict()[k], v, rtol=1e-6, atol=1e-7)

    # resume=False starts from scratch
    model3, opt3, engine3 = _make()
    ResumableCheckpoint(str(ckpt_dir), {"model": model3, "optimizer": opt3}, resume=False).attach(engine3)
    first = []
    engine3.add_event_handler(Events.ITERATION_COMPLETED, lambda e: first.append(e.state.iteration))
    engine3.run(data, max_epochs=1)
    assert first == [1, 2, 3]


def test_resumable_checkpoint_finished_run_is_extended(tmp_path):
    data = [(_X, _Y)] * 2
    model, opt, engine = _make()
    ResumableCheckpoint(str(tmp_path), {"model": model, "optimizer": opt}, save_interval=0).attach(engine)
    engine.run(data, max_epochs=2)
    model2, opt2, engine2 = _make()
    ResumableCheckpoint(str(tmp_path), {"model": model2, "optimizer": opt2}, save_interval=0).attach(engine2)
    its = []
    engine2.add_event_handler(Events.ITERATION_COMPLETED, lambda e: its.append(e.state.iteration))
    engine2.run(data, max_epochs=3)
    assert its == [5, 6] and engine2.state.epoch == 3


def test_resumable_checkpoint_configured_learning_rate_wins(tmp_path):
    data = [(_X, _Y)] * 2
    model, opt, engine = _make()  # lr 0.05
    ResumableCheckpoint(str(tmp_path), {"model": model, "optimizer": opt}, save_interval=0).attach(engine)
    engine.run(data, max_epochs=1)
    saved_avg = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]

    # resumed with a lower configured rate: the moments come from the checkpoint, the rate does not
    model2, opt2, engine2 = _make(seed=5)
    for g in opt2.param_groups:
        g["lr"] = 0.005
    ResumableCheckpoint(str(tmp_path), {"model": model2, "optimizer": opt2}, save_interval=0).attach(engine2)
    seen = {}
    engine2.add_event_handler(
        Events.STARTED, lambda e: seen.update(lr=opt2.param_groups[0]["lr"], avg=[opt2.state[p]["exp_avg"].clone() for p in model2.parameters()])
    )
    engine2.run(data, max_epochs=2)
    assert seen["lr"] == 0.005
    for a, b in zip(seen["avg"], saved_avg):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # with a scheduler in the checkpoint, the scheduler owns the rate: the checkpoint's is kept
    model3, opt3, engine3 = _make(seed=6)
    sched = torch.optim.lr_scheduler.StepLR(opt3, step_size=100)
    ckpt_dir = tmp_path / "with_sched"
    ResumableCheckpoint(str(ckpt_dir), {"model": model3, "optimizer": opt3, "lr_scheduler": sched}, save_interval=0).attach(engine3)
    engine3.run(data, max_epochs=1)
    model4, opt4, engine4 = _make(seed=7)
    for g in opt4.param_groups:
        g["lr"] = 0.005
    sched4 = torch.optim.lr_scheduler.StepLR(opt4, step_size=100)
    ResumableCheckpoint(str(ckpt_dir), {"model": model4, "optimizer": opt4, "lr_scheduler": sched4}, save_interval=0).attach(engine4)
    engine4.add_event_handler(Events.STARTED, lambda e: seen.update(lr4=opt4.param_groups[0]["lr"]))
    engine4.run(data, max_epochs=2)
    assert seen["lr4"] == 0.05


# ----------------------------------------------------------------------------- TrainingLog
class _Terms:
    last_terms = {"similarity": -0.5, "regularization": 0.25}


def test_training_log_records(tmp_path):
    trainer = Engine(lambda e, b: {"loss": torch.tensor(float(e.state.iteration))})
    evaluator = Engine(lambda e, b: None)

    @evaluator.on(Events.COMPLETED)
    def _metrics(e):
        e.state.metrics = {"mean_dice": 0.75}

    log = TrainingLog(str(tmp_path / "log.jsonl"), loss_function=_Terms(), evaluator=evaluator, log_interval=2, plot=False)
    log.attach(trainer)
    # the evaluator's COMPLETED handlers run in order: set metrics first, then the log
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    trainer.run([0] * 5, max_epochs=1)
    recs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    its = [r for r in recs if "loss" in r]
    assert [(r["iteration"], r["loss"]) for r in its] == [(2, 2.0), (4, 4.0)]
    assert its[0]["similarity"] == -0.5 and its[0]["regularization"] == 0.25
    vals = [r for r in recs if "val_mean_dice" in r]
    assert len(vals) == 1 and vals[0]["val_mean_dice"] == 0.75 and vals[0]["iteration"] == 5
