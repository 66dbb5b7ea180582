"""The environment seen by rays that leave the scene: sky gradient, sun, equirectangular image, and the renderer's
miss path (opaque pixels showing the environment)."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from raytrace.camera import image_rays
from raytrace.environment import EnvironmentImage, Sky, equirect_uv, image_radiance, radiance, sky_radiance
from raytrace.render import render_image

from .raytrace_scenes import camera, make_scene

SKY = Sky(zenith=(0.1, 0.2, 0.9), horizon=(0.8, 0.8, 0.8), ground=(0.3, 0.2, 0.1), exponent=0.5)


def unit(*v: float) -> torch.Tensor:
    t = torch.tensor([v], dtype=torch.float64)
    return t / t.norm()


def test_sky_is_zenith_up_horizon_level_ground_down() -> None:
    d = torch.cat([unit(0, 0, 1), unit(1, 0, 0), unit(0, -1, 0), unit(0, 0, -1)])
    out = sky_radiance(SKY, d)
    expected = torch.tensor([SKY.zenith, SKY.horizon, SKY.horizon, SKY.ground], dtype=torch.float64)
    assert torch.allclose(out, expected, atol=1e-12)


def test_sky_blend_follows_the_exponent() -> None:
    # z = 0.25 and exponent 0.5: weight 0.5 between horizon and zenith (and ground below)
    d = torch.tensor([[math.sqrt(1 - 0.25**2), 0.0, 0.25], [0.0, math.sqrt(1 - 0.25**2), -0.25]], dtype=torch.float64)
    out = sky_radiance(SKY, d)
    h, z, g = (torch.tensor(c, dtype=torch.float64) for c in (SKY.horizon, SKY.zenith, SKY.ground))
    assert torch.allclose(out[0], 0.5 * (h + z)) and torch.allclose(out[1], 0.5 * (h + g))


def test_sun_disc_adds_its_colour_within_its_angular_radius() -> None:
    sun_dir = unit(1, 0, 1)[0]
    sky = Sky(SKY.zenith, SKY.horizon, SKY.ground, 0.5, tuple(sun_dir.tolist()), (5.0, 4.0, 3.0), sun_size=2.0)
    inside = unit(1, 0, 1 + math.radians(1.0) * 2)  # about 1 degree off the sun
    outside = unit(1, 0, 1 + math.radians(3.0) * 2)  # about 3 degrees off
    d = torch.cat([unit(1, 0, 1), inside, outside])
    diff = sky_radiance(sky, d) - sky_radiance(SKY, d)
    assert torch.allclose(diff[:2], torch.tensor([[5.0, 4.0, 3.0]] * 2, dtype=torch.float64))
    assert torch.equal(diff[2], torch.zeros(3, dtype=torch.float64))


def equirect_direction(u: float, v: float) -> list[float]:
    lon, lat = (u - 0.5) * 2 * math.pi, (0.5 - v) * math.pi
    return [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]


def test_equirect_texel_centres_return_their_texel() -> None:
    h, w = 6, 12
    texels = torch.arange(h * w * 3, dtype=torch.float32).reshape(h, w, 3)
    env = EnvironmentImage(texels, strength=2.0)
    d = torch.tensor([equirect_direction((c + 0.5) / w, (r + 0.5) / h) for r in range(h) for c in range(w)],
                     dtype=torch.float32)
    out = image_radiance(env, d)
    assert torch.allclose(out, 2.0 * texels.reshape(-1, 3), atol=2e-3)


def test_equirect_axes() -> None:
    """+X looks at the image centre, +Y a quarter to the right, +Z the top row, -Z the bottom row."""
    d = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
    uv = equirect_uv(d)
    assert torch.allclose(uv[:2], torch.tensor([[0.5, 0.5], [0.75, 0.5]]))
    assert torch.allclose(uv[2:, 1], torch.tensor([0.0, 1.0]))


def test_equirect_wraps_in_longitude() -> None:
    """Just either side of the seam (-X) the lookup blends the first and last columns equally."""
    texels = torch.zeros(1, 4, 3)
    texels[0, 0], texels[0, 3] = 1.0, 3.0
    out = image_radiance(EnvironmentImage(texels), torch.tensor([[-1.0, 1e-7, 0.0], [-1.0, -1e-7, 0.0]]))
    assert torch.allclose(out, torch.full((2, 3), 2.0), atol=1e-5)


ENV_SCENE = """
[render]
spp = {spp}
background = "transparent"  # the environment wins: every pixel is opaque
[environment]
type = "sky"
zenith = [0.1, 0.2, 0.9]
horizon = [0.8, 0.8, 0.8]
ground = [0.3, 0.2, 0.1]
[materials.m]
type = "mirror"
color = [1.0, 1.0, 1.0]
[[objects]]
type = "sphere"
center = [0.0, 0.0, 0.0]
radius = 1.0
material = "m"
"""


@pytest.mark.parametrize("spp", [1, 4])
def test_pixels_that_miss_show_the_environment_and_are_opaque(tmp_path, spp: int) -> None:
    scene = make_scene(tmp_path, ENV_SCENE.format(spp=spp))
    c2w, intr = camera((0.0, -4.0, 1.0), size=9, fov=30.0)
    res = render_image(scene, c2w, intr, srgb=False, spp=1)
    _, d = image_rays(c2w, intr)
    expected = radiance(scene.settings.environment, d).clamp(0, 1).view(9, 9, 3)
    missed = res.depth == 0
    assert missed.sum() > 10 and (~missed).sum() > 10
    assert torch.allclose(res.rgba[..., :3][missed], expected[missed], atol=1e-6)
    assert torch.equal(res.rgba[..., 3], torch.ones(9, 9))
    # The centre ray meets the mirror ball head-on and comes straight back: it sees the sky behind the camera.
    back = -d[40:41]
    assert res.depth[4, 4] > 0 and torch.allclose(res.rgba[4, 4, :3], sky_radiance(SKY, back)[0], atol=1e-5)
    assert render_image(scene, c2w, intr, spp=spp).rgba[..., 3].min() == 1.0


def test_environment_image_from_the_scene_file(tmp_path) -> None:
    img = np.zeros((8, 16, 3), np.uint8)
    img[:4] = 255  # white sky above the horizon, black below
    iio.imwrite(tmp_path / "sky.png", img)
    scene = make_scene(tmp_path, "[render]\nbounds = [[-1, -1, -1], [1, 1, 1]]\n[environment]\ntype = \"image\"\n"
                       "path = \"sky.png\"\nstrength = 0.5\n")
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    assert torch.allclose(radiance(scene.settings.environment, d), torch.tensor([[0.5] * 3, [0.0] * 3]))
    assert scene.bounded is False
