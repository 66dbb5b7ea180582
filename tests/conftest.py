"""Shared fixtures. Qt must run offscreen before anything imports it, or pytest aborts without a display."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from nerf.config import MarchConfig, TrainConfig
from nerf.hashgrid import HashGridConfig
from nerf.loop import train


def available_devices() -> list[str]:
    """The torch devices this machine really has."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


@pytest.fixture(params=available_devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each available torch device in turn (only the CPU on a machine without a GPU)."""
    return torch.device(request.param)


@pytest.fixture
def cuda_device() -> torch.device:
    """The CUDA device; the test is skipped where there is none."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    return torch.device("cuda")


REQUIRE_NATIVE = os.environ.get("NERFKIT_REQUIRE_NATIVE") == "1"
"""Set by ``make test``: the native kernels must be there, so their tests fail where they are missing."""


def skip_without_native(err: str | None) -> None:
    """Skip the test where native kernels are missing (``err`` says why; ``None``: they are there), or fail it
    under ``NERFKIT_REQUIRE_NATIVE=1``."""
    if err is None:
        return
    if REQUIRE_NATIVE:
        pytest.fail(f"NERFKIT_REQUIRE_NATIVE=1, yet {err}", pytrace=False)
    pytest.skip(err)


@pytest.fixture(params=["cpu", "cuda"])
def native_device(request: pytest.FixtureRequest) -> torch.device:
    """The devices the native kernels run on here: CUDA is skipped without a GPU; a device whose kernels are
    missing is skipped (failed under ``NERFKIT_REQUIRE_NATIVE=1``)."""
    from nerf.backends import _native_error

    device = request.getfixturevalue("cuda_device") if request.param == "cuda" else torch.device("cpu")
    skip_without_native(_native_error(device))
    return device


@pytest.fixture
def gen() -> torch.Generator:
    """A generator with a fresh seed each run, printed so that a failure can be replayed."""
    seed = random.SystemRandom().randrange(2**31)
    print(f"seed = {seed}")
    return torch.Generator().manual_seed(seed)


SCENE = """
[render]
background = "transparent"
ambient = [0.25, 0.25, 0.25]
spp = 2

[camera]
layout = "hemisphere"
radius = 3.2
target = [0.0, 0.0, 0.0]
fov = 40.0
width = 32
height = 32
seed = 3
views = { train = 16, val = 1, test = 3 }

[materials.paint]
type = "diffuse"
checker = { color1 = [0.8, 0.2, 0.1], color2 = [0.1, 0.3, 0.8], scale = 0.5, space = "object" }

[[objects]]
name = "ball"
type = "sphere"
center = [0.0, 0.0, 0.0]
radius = 0.6
material = "paint"

[[lights]]
name = "key"
type = "directional"
direction = [-0.4, -0.3, -1.0]
intensity = 2.5
"""

STEPS = 300


TOP_LEVEL = {f.name for f in dataclasses.fields(TrainConfig)}
TINY_HASH = HashGridConfig(levels=8, log2_table_size=14, max_resolution=128)
TINY_MARCH = MarchConfig(steps=96, grid_resolution=32, grid_warmup=64)


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A small CPU config; ``overrides`` are top-level fields or any section's field by its flag name
    (``levels=4``, ``march_steps=16``, ``hidden=8``...)."""
    top = dict(
        data=str(data), preset="cpu", device="cpu", backend="torch", steps=STEPS, batch_rays=1024,
        hash=TINY_HASH, march=TINY_MARCH, checkpoint_every=100, turntable_frames=0, out=str(out), log_every=50,
        samples_per_step=0,  # a fixed batch (the sample budget has its own tests: tests/test_static_step.py)
    )
    top.update({name: value for name, value in overrides.items() if name in TOP_LEVEL})
    sections = {name: value for name, value in overrides.items() if name not in TOP_LEVEL}
    return TrainConfig.from_dict({**TrainConfig(**top).to_dict(), **sections})


@pytest.fixture(scope="session")
def ball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset raytraced from SCENE: 32x32 views of a checkered ball (tests never write into it)."""
    from raytrace.dataset import settings_for, write_dataset  # imported here: collecting needs no raytracer
    from raytrace.scene import load_scene

    root = tmp_path_factory.mktemp("ball")
    (root / "ball.toml").write_text(SCENE)
    scene = load_scene(root / "ball.toml")
    write_dataset(scene, root / "ball", settings_for(scene), progress=False)
    return root / "ball"


@pytest.fixture(scope="session")
def tiny_run(ball: Path, tmp_path_factory: pytest.TempPathFactory):
    """The ``ball`` dataset and a model trained on it for STEPS steps."""
    return ball, train(tiny_config(ball, tmp_path_factory.mktemp("tiny") / "runs"), quiet=True)
