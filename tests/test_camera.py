import math

import numpy as np
import pytest
import torch

from raytrace.camera import (
    Intrinsics,
    camera_rays,
    focal_from_fov,
    image_rays,
    look_at,
    rig_positions,
    z_per_distance,
)


def test_focal_from_fov_matches_nerf_synthetic_formula():
    # NeRF-synthetic Lego: camera_angle_x = 0.6911112070083618 at 800 px gives focal ~1111.1111.
    assert focal_from_fov(800, 0.6911112070083618) == pytest.approx(1111.1111, rel=1e-5)
    intr = Intrinsics.from_fov(800, 800, 0.6911112070083618)
    assert intr.camera_angle_x == pytest.approx(0.6911112070083618)


def test_centre_pixel_ray_is_camera_minus_z(device):
    c2w = torch.tensor(look_at([3.0, -2.0, 1.5], [0.2, 0.1, -0.3]), dtype=torch.float32, device=device)
    intr = Intrinsics.from_fov(5, 5, math.radians(50))  # odd size: pixel (2, 2) has its centre on the axis
    o, d = image_rays(c2w, intr)
    centre = d[2 * 5 + 2]
    torch.testing.assert_close(centre, -c2w[:3, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(o[0], c2w[:3, 3])
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(25, device=device))


def test_opengl_axes_right_is_plus_x_and_top_row_is_plus_y():
    c2w = torch.eye(4)
    intr = Intrinsics.from_fov(4, 4, math.radians(90))
    _, d = camera_rays(c2w, intr, torch.tensor([[3.9, 2.0], [2.0, 0.1]]))
    assert d[0, 0] > 0.5 and abs(d[0, 1]) < 1e-6  # right edge of the image looks towards +X
    assert d[1, 1] > 0.5 and abs(d[1, 0]) < 1e-6  # top row looks towards +Y
    # 90 degree field of view: the ray through the right edge is at 45 degrees.
    _, edge = camera_rays(c2w, intr, torch.tensor([[4.0, 2.0]]))
    assert edge[0, 0].item() == pytest.approx(-edge[0, 2].item(), rel=1e-6)


def test_per_ray_cameras_equal_single_camera():
    c2w = torch.tensor(look_at([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), dtype=torch.float32)
    intr = Intrinsics.from_fov(8, 6, 0.8)
    px = torch.rand(10, 2) * torch.tensor([8.0, 6.0])
    o1, d1 = camera_rays(c2w, intr, px)
    o2, d2 = camera_rays(c2w.expand(10, 4, 4), intr, px)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(d1, d2)


def test_look_at_is_a_proper_rotation_and_scaled_intrinsics_keep_fov():
    c2w = look_at([0.0, 0.0, 5.0], [0.0, 0.0, 0.0])  # straight down the up axis
    rot = c2w[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    intr = Intrinsics.from_fov(200, 100, 0.7).scaled(0.5)
    assert (intr.width, intr.height) == (100, 50)
    assert intr.camera_angle_x == pytest.approx(0.7)


def test_rig_positions_on_upper_hemisphere():
    pos = rig_positions(200, 4.0, np.array([0.0, 0.0, 0.5]), True, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(pos - [0, 0, 0.5], axis=1), 4.0)
    assert (pos[:, 2] >= 0.5).all()


def test_z_per_distance_projects_ray_hits_on_the_viewing_axis():
    c2w = torch.tensor(look_at([3.0, -2.0, 1.5], [0.2, 0.1, -0.3]), dtype=torch.float64)
    intr = Intrinsics(7, 5, 4.0, 5.0, 3.1, 2.4)
    o, d = image_rays(c2w.float(), intr)
    t = torch.linspace(1.0, 3.0, 35)
    points = o.double() + t.double().unsqueeze(-1) * d.double()
    z = ((points - c2w[:3, 3]) @ -c2w[:3, 2]).view(5, 7)  # distance along the camera's -Z axis
    factor = z_per_distance(intr)
    torch.testing.assert_close(factor.double() * t.double().view(5, 7), z, atol=1e-6, rtol=1e-6)
    # A 90-degree square image: the corner pixels' rays are the farthest from the axis.
    wide = z_per_distance(Intrinsics.from_fov(2, 2, math.radians(90)))
    torch.testing.assert_close(wide, torch.full((2, 2), 1 / math.sqrt(1.5)))
