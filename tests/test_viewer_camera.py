"""The viewer's Qt-free parts: camera model maths, projection, camera paths, dynamic resolution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from raytrace.camera import Intrinsics, image_rays, look_at
from viewer.camera import OrbitCamera, frustum_points, project
from viewer.core import ResolutionController, refine_scales
from viewer.recorder import CameraPath, matrix_to_quaternion, quaternion_to_matrix

TARGET = np.array([0.3, -0.2, 0.1])


def make_camera() -> OrbitCamera:
    return OrbitCamera.looking_at(TARGET + np.array([2.0, -1.0, 1.5]), TARGET, math.radians(40.0))


def test_looking_at_puts_the_target_on_the_view_axis():
    cam = make_camera()
    np.testing.assert_allclose(cam.target, TARGET, atol=1e-12)
    assert cam.distance == pytest.approx(np.linalg.norm([2.0, -1.0, 1.5]))


@pytest.mark.parametrize("yaw,pitch", [(0.7, 0.0), (0.0, 0.3), (-2.0, -0.5), (3.0, 0.9)])
def test_orbit_keeps_the_distance_to_the_target(yaw, pitch):
    cam = make_camera()
    before = cam.elevation
    cam.orbit(yaw, pitch)
    np.testing.assert_allclose(cam.target, TARGET, atol=1e-12)
    assert np.linalg.norm(cam.eye - TARGET) == pytest.approx(cam.distance, rel=1e-12)
    np.testing.assert_allclose(cam.rotation.T @ cam.rotation, np.eye(3), atol=1e-12)
    assert cam.elevation == pytest.approx(before + pitch, abs=1e-9)
    # the orbit camera still has no roll: its right axis stays horizontal
    assert abs(cam.right[2]) < 1e-9


def test_orbit_yaw_turns_the_eye_about_the_world_up_axis():
    cam = make_camera()
    offset = cam.eye - TARGET
    cam.orbit(math.pi / 2, 0.0)
    rotated = np.array([-offset[1], offset[0], offset[2]])  # +90 degrees about +Z
    np.testing.assert_allclose(cam.eye - TARGET, rotated, atol=1e-12)


def test_orbit_stops_short_of_the_pole():
    cam = make_camera()
    cam.orbit(0.0, 10.0)
    assert cam.elevation == pytest.approx(math.radians(89.0))
    assert np.linalg.norm(cam.eye - TARGET) == pytest.approx(cam.distance)


def test_zoom_changes_the_distance_and_keeps_target_and_direction():
    cam = make_camera()
    d, back = cam.distance, cam.back.copy()
    cam.zoom(0.5)
    assert cam.distance == pytest.approx(0.5 * d)
    assert np.linalg.norm(cam.eye - TARGET) == pytest.approx(0.5 * d)
    np.testing.assert_allclose(cam.target, TARGET, atol=1e-12)
    np.testing.assert_array_equal(cam.back, back)


def test_pan_and_fly_move_eye_and_target_together():
    cam = make_camera()
    eye = cam.eye.copy()
    cam.pan(0.1, -0.2)
    shift = cam.distance * (0.1 * cam.right - 0.2 * cam.up)
    np.testing.assert_allclose(cam.eye, eye + shift, atol=1e-12)
    np.testing.assert_allclose(cam.target, TARGET + shift, atol=1e-12)
    eye, target = cam.eye.copy(), cam.target.copy()
    cam.fly(0.5, 0.0, 0.25)
    move = 0.5 * (target - eye) / np.linalg.norm(target - eye) + np.array([0.0, 0.0, 0.25])
    np.testing.assert_allclose(cam.eye, eye + move, atol=1e-12)
    np.testing.assert_allclose(cam.target, target + move, atol=1e-12)


def test_snapping_to_a_dataset_camera_reproduces_it_exactly():
    pose = look_at(np.array([1.0, 2.5, 1.2]), np.zeros(3)).astype(np.float32).astype(np.float64)
    intr = Intrinsics.from_fov(64, 48, math.radians(40.0))
    cam = OrbitCamera.from_c2w(pose, 2.0, intr.camera_angle_x)
    np.testing.assert_array_equal(cam.c2w(), pose)
    got = cam.intrinsics(64, 48)
    assert (got.width, got.height, got.cx, got.cy) == (64, 48, 32.0, 24.0)
    assert got.fx == pytest.approx(intr.fx, rel=1e-12) and got.fy == pytest.approx(intr.fy, rel=1e-12)
    # the OpenGL convention: the centre pixel looks down the camera's -Z axis, the top row is above it
    o, d = image_rays(torch.tensor(cam.c2w()), Intrinsics.from_fov(3, 3, cam.fov_x))
    np.testing.assert_allclose(d[4].numpy(), -pose[:3, 2], atol=1e-6)
    assert float(d[1].double() @ torch.tensor(pose[:3, 1])) > 0.0
    np.testing.assert_allclose(o[0].numpy(), pose[:3, 3], atol=1e-6)


def test_projection_inverts_the_frustum_corners():
    cam = make_camera()
    intr = cam.intrinsics(80, 60)
    pts = frustum_points(cam.c2w(), intr, 0.7)
    xy, front = project(pts[1:], cam.c2w(), intr)
    assert front.all()
    np.testing.assert_allclose(xy, [[0, 0], [80, 0], [80, 60], [0, 60]], atol=1e-9)
    _, behind = project(cam.eye[None] + cam.back[None], cam.c2w(), intr)
    assert not behind.any()


def test_camera_path_passes_through_its_keyframes_smoothly():
    path = CameraPath()
    eyes = [np.array([3.0, 0.0, 1.0]), np.array([0.0, 3.0, 1.5]), np.array([-3.0, 0.0, 1.0])]
    for i, eye in enumerate(eyes):
        path.add(look_at(eye, np.zeros(3)), math.radians(40.0 + 10 * i))
    frames = path.sample(9)
    for k in range(3):
        np.testing.assert_allclose(frames[4 * k].c2w, path.keyframes[k].c2w, atol=1e-12)
    assert frames[2].fov_x == pytest.approx(math.radians(45.0))
    for f in frames:
        r = f.c2w[:3, :3]
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
    steps = [np.linalg.norm(b.c2w[:3, 3] - a.c2w[:3, 3]) for a, b in itertools.pairwise(frames)]
    assert max(steps) < 2.0 * min(steps)  # no jumps along the way


def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        r = quaternion_to_matrix(q)
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(r)), r, atol=1e-12)


def test_resolution_controller_finds_the_scale_that_holds_the_target_rate():
    ctl = ResolutionController(target_fps=20.0)
    full = 800 * 800
    cost = 1e-6  # seconds per pixel
    for _ in range(20):
        scale = ctl.scale_for(full)
        pixels = int(full * scale * scale)
        ctl.record(pixels, cost * pixels)
    scale = ctl.scale_for(full)
    assert full * scale * scale * cost == pytest.approx(1.0 / 20.0, rel=1e-6)
    ctl.record(100, 100.0)  # far too slow: clamp at the minimum
    ctl.record(100, 100.0)
    assert ctl.scale_for(full) == ctl.min_scale
    fast = ResolutionController(target_fps=20.0)
    fast.record(100, 1e-9)
    assert fast.scale_for(full) == 1.0


def test_refining_passes_double_from_the_first_scale_up_to_full_resolution():
    assert refine_scales(1.0 / 16.0) == [1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0, 1.0 / 2.0, 1.0]
    assert refine_scales(0.3) == [0.3, 0.6, 1.0]
    assert refine_scales(0.4) == [0.4, 1.0]  # 0.8 is too close to full resolution to be worth a pass
    assert refine_scales(0.7) == [1.0]
    assert refine_scales(1.0) == [1.0]
    # before any frame is timed, the first pass is the coarsest: a first image at once on any machine
    assert refine_scales(ResolutionController(target_fps=4.0).scale_for(640 * 480))[0] == 1.0 / 16.0
