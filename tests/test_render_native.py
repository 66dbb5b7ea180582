"""Training and rendering through the native compositing (the ``native`` backend) equal the reference composite.

The trained tiny run (checkpoints move between backends) is loaded twice on the ``native`` backend; one copy is
switched to the reference :func:`nerf.volume.composite`, so the compositing is the only difference. Skipped where
the native library is not built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from nerf.backends import _native_error, native_composite, native_march_candidates
from nerf.data import RaySampler
from nerf.loop import TrainResult
from nerf.marching import march_candidates
from nerf.model import Model, build_model, load_run
from nerf.render import render_image
from nerf.resolve import resolve
from nerf.step import make_optimizer, train_step
from nerf.volume import CompositeFn, composite

from .conftest import skip_without_native, tiny_config


@pytest.fixture
def native_run(native_device: torch.device, request: pytest.FixtureRequest) -> tuple[torch.device, TrainResult]:
    """A device the native kernels run on and the tiny trained run (skipped before training where none)."""
    return native_device, request.getfixturevalue("tiny_run")[1]


def native_and_reference(run_dir: Path, device: torch.device, calls: list[str]) -> tuple[Model, Model]:
    """The run's model on the native backend twice: with its native compositing, then with the reference
    composite; each compositing appends its name to ``calls`` when it runs."""
    _, native, _ = load_run(run_dir, str(device), "native")
    _, reference, _ = load_run(run_dir, str(device), "native")
    assert native.march.composite_fn is native_composite
    for model, name, fn in ((native, "native", native_composite), (reference, "reference", composite)):
        model.march = dataclasses.replace(model.march, composite_fn=recording(fn, name, calls))
    return native, reference


def recording(fn: CompositeFn, name: str, calls: list[str]) -> CompositeFn:
    """``fn`` appending ``name`` to ``calls`` on each call."""

    def composite_fn(*args: Any) -> dict[str, torch.Tensor]:
        calls.append(name)
        return fn(*args)

    return composite_fn


def test_the_backend_picks_the_marching_and_compositing(tmp_path: Path) -> None:
    cfg = resolve(tiny_config(tmp_path / "data", tmp_path / "runs"), None, "cpu")
    aabb, cpu = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), torch.device("cpu")
    for reference in (build_model(cfg, aabb, cpu), build_model(dataclasses.replace(cfg, model="nerf"), aabb, cpu)):
        assert reference.march.composite_fn is composite
        assert reference.march.candidates_fn is march_candidates
    skip_without_native(_native_error(cpu))
    native = build_model(dataclasses.replace(cfg, backend="native"), aabb, cpu)
    assert native.backend == "native" and native.march.composite_fn is native_composite
    assert native.march.candidates_fn is native_march_candidates


def test_training_step_with_native_compositing_equals_the_reference(native_run) -> None:
    native_device, result = native_run
    cfg = result.config
    split = result.dataset.splits["train"]
    stats, grads, calls = [], [], []
    for model in native_and_reference(result.run_dir, native_device, calls):
        opt, _ = make_optimizer(cfg, model.field)
        sampler = RaySampler(split, torch.Generator().manual_seed(7), native_device)
        stats.append(train_step(model, opt, sampler, cfg, torch.Generator(device=native_device).manual_seed(8)))
        grads.append({name: p.grad.cpu() for name, p in model.field.named_parameters()})
    native, reference = stats
    assert calls == ["native", "reference"]
    assert native["finite"] and reference["finite"]
    assert native["samples"] == reference["samples"] > cfg.batch_rays  # the same batch, several samples a ray
    assert native["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) >= 5
    for name, ref in grads[1].items():
        assert ref.abs().max() > 0, name
        scale = float(ref.abs().max())
        torch.testing.assert_close(grads[0][name], ref, rtol=1e-5, atol=2e-5 * scale, msg=lambda m, n=name: f"{n}: {m}")


def test_rendered_image_with_native_compositing_equals_the_reference(native_run) -> None:
    native_device, result = native_run
    test = result.dataset.splits["test"]
    calls: list[str] = []
    native, reference = (
        render_image(m, test.poses[0], test.intrinsics, background=torch.ones(3), chunk=512)
        for m in native_and_reference(result.run_dir, native_device, calls)
    )
    half = len(calls) // 2  # 32 x 32 pixels in chunks of 512 rays, one call per round of samples
    assert half >= 2 and calls == ["native"] * half + ["reference"] * half
    opacity = reference["opacity"]
    assert (opacity > 0.9).any() and (opacity < 0.1).any()  # the ball and the empty space around it
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(native[key], reference[key], rtol=1e-5, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
