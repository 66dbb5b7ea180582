"""End to end: a tiny scene raytraced in the test, trained on the CPU, evaluated on held-out views."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nerf.checkpoint import latest_checkpoint
from nerf.cli import eval_main, train_main
from nerf.config import TrainConfig
from nerf.data import load_dataset
from nerf.evaluate import evaluate
from nerf.loop import train
from nerf.model import load_run
from nerf.render import render_image

from .conftest import STEPS, tiny_config


def test_trained_model_beats_constant_colour_on_held_out_views(tiny_run):
    data, result = tiny_run
    test = load_dataset(data, splits=("train", "test")).splits["test"]
    metrics = evaluate(result.model, test, quiet=True)
    # The best constant-colour prediction of the white-composited test images.
    gt = test.images[..., :3] * test.images[..., 3:] + (1 - test.images[..., 3:])
    constant_mse = float(((gt - gt.mean(dim=(0, 1, 2))) ** 2).mean())
    constant_psnr = -10 * torch.log10(torch.tensor(constant_mse)).item()
    assert metrics["psnr"] > constant_psnr + 8.0, (metrics, constant_psnr)
    assert metrics["psnr"] > 22.0, metrics
    # Depth is learned too: mean error well under the sphere's radius.
    assert metrics["depth_mae"] < 0.15, metrics


def test_reloaded_checkpoint_renders_the_identical_image(tiny_run):
    _, result = tiny_run
    test = result.dataset.splits["test"]
    before = render_image(result.model, test.poses[0], test.intrinsics)
    _, model, ckpt = load_run(result.run_dir, "cpu")
    after = render_image(model, test.poses[0], test.intrinsics)
    assert ckpt["step"] == STEPS
    for key in ("rgb", "depth", "opacity"):
        assert torch.equal(before[key], after[key]), key


def test_format_2_checkpoints_load_with_the_density_they_were_trained_with(tiny_run, tmp_path):
    """Format 2 had no ``density_scale`` (the field's density was ``trunc_exp(raw)``): such a checkpoint loads
    with a scale of 1 and renders what its weights rendered then."""
    _, result = tiny_run
    run = tmp_path / "old"
    shutil.copytree(result.run_dir, run)
    ckpt_path = latest_checkpoint(run)
    ckpt = torch.load(ckpt_path, weights_only=True)
    del ckpt["model"]["density_scale"]
    torch.save({**ckpt, "format_version": 2}, ckpt_path)
    _, model, _ = load_run(run, "cpu")
    assert float(model.field.density_scale) == 1.0
    x = torch.rand(256, 3) * (model.field.aabb[1] - model.field.aabb[0]) + model.field.aabb[0]
    with torch.no_grad():
        old = model.field.density(x)[0]
        new = result.model.field.density(x)[0]
    torch.testing.assert_close(old, new / result.model.field.density_scale)


def test_resume_continues_the_step_count(tiny_run, tmp_path):
    data, result = tiny_run
    resumed = train(TrainConfig(data=str(data), steps=STEPS + 20, device="cpu"), resume=result.run_dir, quiet=True)
    assert resumed.run_dir == result.run_dir
    assert resumed.step == STEPS + 20
    assert (result.run_dir / "checkpoints" / f"step_{STEPS + 20:07d}.pt").is_file()
    assert resumed.config.hash.levels == 8  # the run's own config, not the defaults


def test_resume_is_exact(tmp_path, tiny_run):
    """A run killed after its step-20 checkpoint and resumed ends exactly where an uninterrupted run does."""
    data, _ = tiny_run
    small = dict(steps=40, checkpoint_every=20, grid_warmup=8, grid_update_every=4)
    straight = train(tiny_config(data, tmp_path / "a", **small), quiet=True)
    killed = train(tiny_config(data, tmp_path / "b", **small), quiet=True)
    (killed.run_dir / "checkpoints" / "step_0000040.pt").unlink()  # as if killed between steps 20 and 40
    resumed = train(TrainConfig(data=str(data), device="cpu"), resume=killed.run_dir, quiet=True)
    assert resumed.step == 40
    pairs = zip(straight.model.field.state_dict().items(), resumed.model.field.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(straight.model.grid.density, resumed.model.grid.density)


def test_cli_eval_writes_metrics_and_bad_dataset_is_one_line(tiny_run, tmp_path, capsys):
    _, result = tiny_run
    assert eval_main([str(result.run_dir), "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((result.run_dir / "metrics_test.json").read_text())
    assert metrics["step"] >= STEPS and metrics["psnr"] > 20
    assert (result.run_dir / "renders" / "test_000.png").is_file()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": [{"file_path": "./x"}]}')
    assert train_main([str(bad), "--quiet", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "transforms_train.json" in err and "transform_matrix" in err
    assert not (tmp_path / "runs").exists()


def test_unavailable_backend_is_a_one_line_error(tiny_run, tmp_path, capsys):
    data, _ = tiny_run
    assert train_main([str(data), "--backend", "tcnn", "--device", "cpu", "--quiet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backend" in err and "tcnn" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("backend", "device"), [("native", "cpu"), ("native", "cuda"), ("tcnn", "cuda")])
def test_checkpoint_renders_the_same_image_with_every_backend(tiny_run, backend, device):
    """The run was trained with the reference (``torch``); any other backend renders its checkpoint alike."""
    from nerf.backends import BackendUnavailable, resolve_backend

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    try:
        resolve_backend(backend, device)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    _, result = tiny_run
    test = result.dataset.splits["test"]
    _, reference, _ = load_run(result.run_dir, "cpu", backend="torch")
    before = render_image(reference, test.poses[0], test.intrinsics)
    _, model, _ = load_run(result.run_dir, device, backend=backend)
    assert model.backend == backend
    after = render_image(model, test.poses[0].to(device), test.intrinsics)
    tol = 1e-4 if backend == "native" else 2e-3  # tcnn: float32 rounding of its own fused arithmetic
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(after[key].cpu(), before[key], rtol=0.0, atol=tol, msg=key)
