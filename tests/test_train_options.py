"""Training options doing what they say: --time-budget, the turntable, --model nerf, --loss, --eval-every, --seed."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nerf.loop
from nerf.cli import finish_run
from nerf.field_pe import PENeRFField
from nerf.loop import TrainLoop, train
from nerf.model import build_model, load_run
from nerf.render import render_image
from nerf.resolve import resolve
from nerf.step import train_step
from nerf.train import open_session

from .conftest import tiny_config

FAST = dict(batch_rays=64, levels=4, log2_table_size=10, max_resolution=32, grid_resolution=8, march_steps=24,
            grid_warmup=2, hidden=16, color_hidden=16, checkpoint_every=1000)


def test_time_budget_stops_the_run_early(ball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count()
    monkeypatch.setattr(nerf.loop.time, "perf_counter", lambda: float(next(ticks)))  # one second per reading
    result = train(tiny_config(ball, tmp_path, steps=40, time_budget=6.0, **FAST), quiet=True)
    assert 0 < result.step < 10 and not result.interrupted
    assert result.seconds >= 6.0
    _, _, ckpt = load_run(result.run_dir, "cpu")
    assert ckpt["step"] == result.step  # the run stopped with a checkpoint of its last step


def test_a_time_budget_is_the_runs_length_and_its_learning_rate_decays_over_it(
        ball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a time budget with no step count the preset's steps do not end the run, and after each step the
    learning rate is ``lr * lr_final_factor ** share``, the share of the budget spent before the step."""
    assert resolve(tiny_config(ball, tmp_path, steps=None), None, "cpu").steps == 3000  # the CPU preset's
    ticks = itertools.count()
    monkeypatch.setattr(nerf.loop.time, "perf_counter", lambda: float(next(ticks)))  # two seconds a step
    session = open_session(tiny_config(ball, tmp_path, steps=None, time_budget=12.0, **FAST))
    assert session.cfg.steps is None
    loop = TrainLoop(session, quiet=True)
    lrs = []
    while not loop.finished():
        loop.step()
        lrs.append(session.opt.param_groups[0]["lr"])
    loop.save_last(new_run=True)
    loop.close()
    o = session.cfg.optim
    assert lrs == pytest.approx([o.lr * o.lr_final_factor ** (2 * k / 12) for k in range(6)])
    cfg, _, ckpt = load_run(session.run_dir, "cpu")  # its checkpoint loads (nerf-eval, nerf-view, --resume)
    assert cfg.steps is None and cfg.time_budget == 12.0 and ckpt["step"] == 6


def test_the_loop_stepped_as_the_viewer_does(ball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Driven one step at a time (the viewer's trainer), the loop keeps nerf-train's budget, checkpoints and log,
    and the time between two steps (a paused viewer) is not spent."""
    ticks = itertools.count()
    monkeypatch.setattr(nerf.loop.time, "perf_counter", lambda: float(next(ticks)))  # one second per reading
    cfg = tiny_config(ball, tmp_path, steps=40, time_budget=6.0, **{**FAST, "checkpoint_every": 2, "log_every": 1})
    session = open_session(cfg)
    loop = TrainLoop(session)
    rows = []
    while not loop.finished():
        rows.append(loop.step())
        for _ in range(5):  # paused: the clock runs on, the budget does not
            next(ticks)
    loop.save_last(new_run=True)
    loop.close()
    assert [r["step"] for r in rows] == [1, 2, 3] and loop.seconds == 6.0  # two readings a step
    saved = sorted(int(p.stem.split("_")[1]) for p in (session.run_dir / "checkpoints").glob("step_*.pt"))
    assert saved == [2, 3]
    events = EventAccumulator(str(session.run_dir / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_turntable_has_the_configured_frame_count(tiny_run, tmp_path: Path) -> None:
    _, result = tiny_run
    config = dataclasses.replace(result.config, turntable_frames=6)
    finish_run(dataclasses.replace(result, run_dir=tmp_path, config=config), quiet=True)
    frames = iio.imread(tmp_path / "turntable.mp4", extension=".mp4")
    intr = result.dataset.splits["test"].intrinsics
    assert frames.shape == (6, intr.height, intr.width, 3)
    assert np.abs(frames[0].astype(int) - frames[3].astype(int)).mean() > 1.0  # the camera moved half a turn
    assert (tmp_path / "metrics.json").is_file()


def test_model_nerf_trains_and_renders(ball: Path, tmp_path: Path) -> None:
    result = train(tiny_config(ball, tmp_path, model="nerf", steps=4, **FAST), quiet=True)
    assert isinstance(result.model.field, PENeRFField) and result.step == 4
    assert result.model.backend == "torch"
    test = result.dataset.splits["test"]
    image = render_image(result.model, test.poses[0], test.intrinsics)
    assert image["rgb"].shape == (test.intrinsics.height, test.intrinsics.width, 3)
    assert torch.isfinite(image["rgb"]).all() and image["rgb"].std() > 0  # rendered by the MLP, not a constant
    cfg, model, _ = load_run(result.run_dir, "cpu")
    assert cfg.model == "nerf" and isinstance(model.field, PENeRFField)
    again = render_image(model, test.poses[0], test.intrinsics)
    assert torch.equal(image["rgb"], again["rgb"])


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_loss_option_is_the_loss_minimised(ball: Path, tmp_path: Path, loss: str) -> None:
    session = open_session(tiny_config(ball, tmp_path, **FAST))
    session.cfg = dataclasses.replace(session.cfg, optim=dataclasses.replace(session.cfg.optim, loss=loss))
    stats = train_step(session.model, session.opt, session.sampler, session.cfg, session.generators[1])
    mse = 10.0 ** (-stats["psnr"] / 10.0)
    if loss == "mse":
        assert stats["loss"] == pytest.approx(mse, rel=1e-9)
    else:  # smooth L1 with beta 0.1: 5 x^2 for the small errors of an untrained model
        assert stats["loss"] > 2.0 * mse


def test_eval_every_logs_the_val_psnr(ball: Path, tmp_path: Path) -> None:
    result = train(tiny_config(ball, tmp_path, steps=4, eval_every=2, **FAST), quiet=True)
    events = EventAccumulator(str(result.run_dir / "tb"))
    events.Reload()
    psnr = events.Scalars("val/psnr")
    assert [e.step for e in psnr] == [2, 4]
    assert all(math.isfinite(e.value) and e.value > 5.0 for e in psnr)
    assert "val/ssim" in events.Tags()["scalars"]


def test_seed_reaches_the_occupancy_grid(tmp_path: Path) -> None:
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    cfg = resolve(tiny_config(tmp_path, tmp_path, **FAST), None, "cpu")
    draws = []
    for seed in (3, 3, 4):
        model = build_model(dataclasses.replace(cfg, seed=seed), aabb, torch.device("cpu"))
        draws.append(torch.randint(0, 1000, (8,), generator=model.grid.generator))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
