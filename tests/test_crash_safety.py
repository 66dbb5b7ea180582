"""Crash safety of training and rendering: SIGKILL and resume, SIGINT, NaN losses, running out of memory."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nerf.render
import nerf.train
from nerf.checkpoint import latest_checkpoint, load_checkpoint
from nerf.config import TrainConfig
from nerf.loop import train
from nerf.model import build_model
from nerf.render import Radiance, RayBatch, render_image
from nerf.resolve import resolve
from nerf.step import finite
from nerf.train import TrainingDiverged, open_session
from raytrace.camera import Intrinsics, look_at

from .conftest import tiny_config

TRAIN_ARGS = ["--device", "cpu", "--backend", "torch", "--batch-rays", "256", "--levels", "4", "--log2-table-size",
              "12", "--max-resolution", "64", "--grid-resolution", "16", "--march-steps", "48", "--grid-warmup", "8",
              "--turntable-frames", "0", "--steps", "100000"]


def start_training(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``python -m nerf.cli`` (what torchrun runs per rank) in the background, on one torch thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "nerf.cli", str(data), *TRAIN_ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120.0) -> Path:
    """The run folder, once its first checkpoint exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for ckpt_dir in out.glob("*/*/checkpoints"):
            if latest_checkpoint(ckpt_dir.parent) is not None:
                return ckpt_dir.parent
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


def test_sigkill_at_a_random_moment_then_resume_continues_from_the_last_checkpoint(ball: Path, tmp_path: Path):
    proc = start_training(ball, tmp_path, "--checkpoint-every", "2", "--quiet")
    run_dir = wait_for_checkpoint(tmp_path, proc)
    time.sleep(random.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    files = sorted((run_dir / "checkpoints").iterdir())
    checkpoints = [p for p in files if re.fullmatch(r"step_\d{7}\.pt", p.name)]
    assert checkpoints and all(p.name.startswith(".") for p in files if p not in checkpoints), files
    for path in checkpoints:  # atomic writes: none of them is truncated
        assert load_checkpoint(path)["step"] == int(path.stem.split("_")[1])
    json.loads((run_dir / "config.json").read_text())
    last = int(latest_checkpoint(run_dir).stem.split("_")[1])
    session = open_session(TrainConfig(data=str(ball), device="cpu"), resume=run_dir)
    assert session.step == last
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # partial files gone
    resumed = train(TrainConfig(data=str(ball), device="cpu", steps=last + 2), resume=run_dir, quiet=True)
    assert resumed.step == last + 2
    assert load_checkpoint(latest_checkpoint(run_dir))["step"] == last + 2


def test_sigint_saves_a_checkpoint_at_the_current_step_and_exits_cleanly(ball: Path, tmp_path: Path):
    proc = start_training(ball, tmp_path, "--checkpoint-every", "3", "--quiet")
    run_dir = wait_for_checkpoint(tmp_path, proc)
    time.sleep(random.uniform(0.2, 1.0))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]  # stopped early: 130, as a shell reports a SIGINT
    assert "Traceback" not in err
    stopped = int(re.search(r"interrupted at step (\d+)", err).group(1))
    assert latest_checkpoint(run_dir).name == f"step_{stopped:07d}.pt"
    assert load_checkpoint(latest_checkpoint(run_dir))["step"] == stopped


def _tiny_session(data: Path, out: Path):
    return open_session(tiny_config(data, out, batch_rays=256, levels=4, log2_table_size=12, grid_resolution=16,
                                    march_steps=48, grid_warmup=4, checkpoint_every=1000))


def _params(session) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in session.model.field.state_dict().items()}


def test_nan_loss_drops_the_step_restores_the_state_and_lowers_the_lr(ball: Path, tmp_path: Path):
    session = _tiny_session(ball, tmp_path)
    session.advance()
    before, lr, step = _params(session), session.opt.param_groups[0]["lr"], session.step
    field = session.model.field
    real_colour = field.colour

    def nan_once(geo, view):
        field.colour = real_colour
        return real_colour(geo, view) * float("nan")

    field.colour = nan_once
    with pytest.warns(RuntimeWarning, match="NaN"):
        stats = session.advance()
    assert not stats["finite"] and session.step == step
    for name, value in _params(session).items():
        assert torch.equal(value, before[name]), name
    assert session.opt.param_groups[0]["lr"] == pytest.approx(lr * nerf.train.NAN_LR_FACTOR)
    assert session.advance()["finite"] and session.step == step + 1
    o, steps = session.cfg.optim, session.cfg.steps  # the decay goes on, lowered
    assert session.opt.param_groups[0]["lr"] == pytest.approx(
        o.lr * nerf.train.NAN_LR_FACTOR * o.lr_final_factor ** ((step + 1) / steps))
    path = session.save(1.0)
    ckpt = load_checkpoint(path)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert ckpt["optimizer"]["optimizer"]["param_groups"][0]["lr"] < lr


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, None])
def test_an_inf_or_nan_gradient_under_a_finite_loss_drops_the_step(ball: Path, tmp_path: Path, bad):
    """A bad entry in the hash table's gradient (the loss stays finite) drops the step; ``None``: +Inf and -Inf in
    one tensor, whose sum is NaN. ``finite`` reads the same from tensors, and passes finite ones."""

    def poisoned(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        flat = t.view(-1)
        flat[3], flat[7] = (math.inf, -math.inf) if bad is None else (bad, 1.0)
        return t

    ones = torch.ones(1000)
    assert bool(finite([ones, ones.double()])) and bool(finite([])) and not bool(finite([ones, poisoned(ones)]))
    session = _tiny_session(ball, tmp_path)
    session.advance()
    before, step = _params(session), session.step
    handle = session.model.field.encoding.table.register_hook(poisoned)
    with pytest.warns(RuntimeWarning, match="NaN/Inf loss or gradient"):
        stats = session.advance()
    handle.remove()
    assert not stats["finite"] and session.step == step and math.isfinite(stats["loss"])
    for name, value in _params(session).items():
        assert torch.equal(value, before[name]), name


def test_nan_parameters_are_never_checkpointed(ball: Path, tmp_path: Path):
    session = _tiny_session(ball, tmp_path)
    session.advance()
    good_path = session.save(1.0)
    good = _params(session)
    session.advance()
    session.advance()
    with torch.no_grad():
        next(session.model.field.parameters()).view(-1)[0] = float("inf")
    with pytest.warns(RuntimeWarning, match="NaN/Inf parameters"):
        path = session.save(2.0)
    assert path == good_path and session.step == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [good_path.name]
    for name, value in _params(session).items():
        assert torch.equal(value, good[name]), name
    assert all(torch.isfinite(v).all() for v in load_checkpoint(path)["model"].values())


def test_a_loss_that_stays_nan_stops_with_a_clear_error(ball: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(nerf.train, "MAX_BAD_STEPS", 2)
    session = _tiny_session(ball, tmp_path)
    real_colour = session.model.field.colour

    def always_nan(geo, view):
        return real_colour(geo, view) * math.nan

    session.model.field.colour = always_nan
    with pytest.warns(RuntimeWarning), pytest.raises(TrainingDiverged, match="diverged"):
        for _ in range(3):
            session.advance()


def test_render_falls_back_to_smaller_chunks_when_out_of_memory(monkeypatch):
    cfg = resolve(tiny_config(Path("."), Path("."), levels=4, log2_table_size=12, grid_resolution=16), None, "cpu")
    torch.manual_seed(0)
    model = build_model(cfg, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), torch.device("cpu"))
    c2w = torch.as_tensor(look_at([0.0, -3.0, 1.0], [0.0, 0.0, 0.0]), dtype=torch.float32)
    intr = Intrinsics.from_fov(24, 20, 0.7)
    expected = render_image(model, c2w, intr, chunk=4096)
    real = nerf.render.render_rays_rounds
    sizes = []

    def small_memory(radiance: Radiance, rays: RayBatch) -> dict[str, torch.Tensor]:
        sizes.append(len(rays))
        if len(rays) > 50:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(radiance, rays)

    monkeypatch.setattr(nerf.render, "render_rays_rounds", small_memory)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        got = render_image(model, c2w, intr, chunk=400)
    assert max(s for s in sizes[3:]) <= 50 and sizes[:4] == [400, 200, 100, 50]
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
