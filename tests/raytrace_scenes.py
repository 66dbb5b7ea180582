"""Helpers for the raytracer tests: scene files written to a temporary folder, cameras on an axis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from raytrace.camera import Intrinsics, look_at
from raytrace.scene import Scene, load_scene

CAMERA = """
[camera]
radius = 4.0
fov = 40.0
width = 8
height = 8
"""


def make_scene(tmp_path: Path, body: str, name: str = "scene.toml") -> Scene:
    """Write ``[camera]`` + ``body`` to ``tmp_path/name`` and load it."""
    path = tmp_path / name
    path.write_text(CAMERA + body)
    return load_scene(path)


def camera(
    eye: tuple[float, float, float],
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    size: int = 5,
    fov: float = 40.0,
) -> tuple[torch.Tensor, Intrinsics]:
    """A square camera at ``eye`` looking at ``target``; with an odd ``size`` the centre pixel's ray is the
    optical axis."""
    up = (0.0, 1.0, 0.0) if abs(eye[0] - target[0]) + abs(eye[1] - target[1]) < 1e-9 else (0.0, 0.0, 1.0)
    c2w = torch.tensor(look_at(np.array(eye), np.array(target), np.array(up)), dtype=torch.float32)
    return c2w, Intrinsics.from_fov(size, size, math.radians(fov))
