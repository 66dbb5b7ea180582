"""Lens distortion in the intrinsics (COLMAP's camera models) and the COLMAP pose convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raytrace.camera import Intrinsics, c2w_to_colmap, camera_rays, colmap_to_c2w, distort, look_at, undistort
from raytrace.colmap import ColmapCamera

# One camera of each model COLMAP writes that we read, with realistic (and strong) distortion.
CAMERAS = [
    ColmapCamera(1, "SIMPLE_PINHOLE", 64, 48, (50.0, 31.0, 25.0)),
    ColmapCamera(2, "PINHOLE", 64, 48, (50.0, 55.0, 31.0, 25.0)),
    ColmapCamera(3, "SIMPLE_RADIAL", 64, 48, (50.0, 31.0, 25.0, -0.12)),
    ColmapCamera(4, "RADIAL", 64, 48, (50.0, 31.0, 25.0, -0.2, 0.05)),
    ColmapCamera(5, "OPENCV", 64, 48, (50.0, 55.0, 31.0, 25.0, 0.15, -0.04, 0.003, -0.002)),
]


@pytest.mark.parametrize("cam", CAMERAS, ids=lambda c: c.model)
def test_undistort_inverts_distort(cam: ColmapCamera) -> None:
    intr = cam.intrinsics()
    g = torch.Generator().manual_seed(0)
    xy = (torch.rand(1000, 2, generator=g, dtype=torch.float64) * 2 - 1) * 0.7  # out to the image corners
    assert torch.allclose(undistort(distort(xy, intr.dist), intr.dist), xy, atol=1e-9)


def test_radial_distortion_analytic() -> None:
    """k1 alone scales a point at radius r by 1 + k1 r^2; tangential p1, p2 shift the point (0, y) by
    (p2 y^2, 3 p1 y^2)."""
    xy = torch.tensor([[0.3, 0.4]], dtype=torch.float64)
    assert torch.allclose(distort(xy, (0.1, 0.0, 0.0, 0.0)), xy * (1 + 0.1 * 0.25))
    assert torch.allclose(distort(xy, (0.1, 0.02, 0.0, 0.0)), xy * (1 + 0.1 * 0.25 + 0.02 * 0.25**2))
    y = 0.5
    shifted = distort(torch.tensor([[0.0, y]], dtype=torch.float64), (0.0, 0.0, 0.01, 0.02))
    assert torch.allclose(shifted, torch.tensor([[0.02 * y * y, y + 3 * 0.01 * y * y]], dtype=torch.float64))


@pytest.mark.parametrize("cam", CAMERAS, ids=lambda c: c.model)
def test_rays_through_distorted_pixels_reach_their_points(cam: ColmapCamera) -> None:
    """Project known 3D points with the OpenCV model (+y down, +z forward), then make rays through those pixels:
    each ray points at its 3D point."""
    intr = cam.intrinsics()
    c2w = look_at(np.array([1.0, -3.0, 2.0]), np.array([0.0, 0.0, 0.3]))
    g = torch.Generator().manual_seed(1)
    p_cv = torch.cat([torch.rand(200, 2, generator=g, dtype=torch.float64) - 0.5,
                      torch.ones(200, 1, dtype=torch.float64)], dim=1) * (2 + torch.rand(200, 1, generator=g))
    xy = distort(p_cv[:, :2] / p_cv[:, 2:], intr.dist)
    pixels = torch.stack([xy[:, 0] * intr.fx + intr.cx, xy[:, 1] * intr.fy + intr.cy], dim=-1)
    p_gl = p_cv * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # OpenCV camera axes to ours
    c2w_t = torch.tensor(c2w)
    world = p_gl @ c2w_t[:3, :3].T + c2w_t[:3, 3]
    o, d = camera_rays(c2w_t, intr, pixels)
    to_point = (world - o) / (world - o).norm(dim=-1, keepdim=True)
    assert torch.allclose(d, to_point, atol=1e-8)


def test_no_distortion_is_the_pinhole_camera() -> None:
    intr = Intrinsics.from_fov(9, 7, math.radians(50))
    assert intr.dist == (0.0, 0.0, 0.0, 0.0)
    assert CAMERAS[1].intrinsics() == Intrinsics(64, 48, 50.0, 55.0, 31.0, 25.0)


def test_scaled_intrinsics_keep_distortion() -> None:
    intr = CAMERAS[4].intrinsics()
    half = intr.scaled(0.5)
    assert half.dist == intr.dist and half.fx == intr.fx / 2
    assert CAMERAS[4].intrinsics(32, 24) == half


def test_colmap_identity_pose_looks_down_world_plus_z() -> None:
    """COLMAP's identity camera sits at the origin, +Y down, looking along world +Z: ours has -Z along world
    +Z and +Y along world -Y."""
    c2w = colmap_to_c2w(np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
    assert np.allclose(c2w, np.diag([1.0, -1.0, -1.0, 1.0]))


def test_colmap_translation_is_world_to_camera() -> None:
    """X_cam = R X_world + t: with R = I and t = (0, 0, 5), the camera centre is at world (0, 0, -5)."""
    c2w = colmap_to_c2w(np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 5.0]))
    assert np.allclose(c2w[:3, 3], [0.0, 0.0, -5.0])


def test_colmap_pose_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        c2w = look_at(rng.normal(size=3) * 3, rng.normal(size=3) * 0.1)
        qvec, tvec = c2w_to_colmap(c2w)
        assert qvec[0] >= 0 and np.isclose(np.linalg.norm(qvec), 1.0)
        assert np.allclose(colmap_to_c2w(qvec, tvec), c2w, atol=1e-12)
