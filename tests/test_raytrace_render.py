"""Shading and image rendering: Lambert and Blinn-Phong values, shadows, penumbrae, depth, alpha, seeds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from raytrace.camera import image_rays
from raytrace.geometry import ray_sphere
from raytrace.intersect import scene_geometry
from raytrace.render import render_image, trace
from raytrace.scene import Scene
from tests.raytrace_scenes import camera, make_scene

LIT_SPHERE = """
[render]
background = [0.0, 0.0, 0.0]
[materials.grey]
type = "diffuse"
color = [0.5, 0.25, 0.125]
ks = {ks}
shininess = 10.0
[[objects]]
type = "sphere"
radius = 1.0
material = "grey"
[[lights]]
type = "point"
position = {light}
color = [1.0, 0.8, 0.6]
intensity = 10.0
"""


def test_diffuse_sphere_matches_lambert(tmp_path: Path, device: torch.device) -> None:
    scene = make_scene(tmp_path, LIT_SPHERE.format(ks=0.0, light="[3.0, 0.0, 4.0]"))
    c2w, intr = camera((5.0, 0.0, 0.0))
    rgb = render_image(scene, c2w, intr, device=device, spp=1, srgb=False).rgba[2, 2, :3].cpu()
    # the centre ray hits (1, 0, 0) with normal +x; the light is at (3, 0, 4): r^2 = 20, cos = 2 / sqrt(20)
    cos, r2 = 2.0 / math.sqrt(20.0), 20.0
    expected = torch.tensor([0.5, 0.25, 0.125]) / math.pi * 10.0 * torch.tensor([1.0, 0.8, 0.6]) * cos / r2
    torch.testing.assert_close(rgb, expected, rtol=1e-4, atol=0)


def test_blinn_phong_peak(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, LIT_SPHERE.format(ks=0.3, light="[3.0, 0.0, 0.0]"))
    c2w, intr = camera((5.0, 0.0, 0.0))
    rgb = render_image(scene, c2w, intr, spp=1, srgb=False).rgba[2, 2, :3]
    # light, viewer and normal aligned: n.h = 1, cos = 1, r = 2
    brdf = torch.tensor([0.5, 0.25, 0.125]) / math.pi + 0.3 * (10.0 + 8.0) / (8.0 * math.pi)
    torch.testing.assert_close(rgb, brdf * 10.0 * torch.tensor([1.0, 0.8, 0.6]) / 4.0, rtol=1e-4, atol=0)


SHADOW = """
[render]
background = [0.0, 0.0, 0.0]
ambient = [0.1, 0.2, 0.3]
bounds = [[-5, -5, -1], [5, 5, 5]]
[materials.floor]
type = "diffuse"
color = [0.5, 0.5, 0.5]
[[objects]]
type = "plane"
material = "floor"
"""
OCCLUDER = """
[[objects]]
type = "sphere"
center = [0.0, 0.0, 1.0]
radius = 0.5
material = "floor"
"""
POINT = """
[[lights]]
type = "point"
position = [0.0, 0.0, 3.0]
intensity = 20.0
"""


def _floor_radiance(scene: Scene, xs: list[float]) -> torch.Tensor:
    """Radiance seen by rays straight down onto floor points (x, 0, 0) from just above them."""
    o = torch.tensor([[x, 0.0, 0.2] for x in xs])
    d = torch.tensor([[0.0, 0.0, -1.0]] * len(xs))
    colour, hit = trace(scene, scene_geometry(scene, torch.device("cpu")), o, d, torch.Generator().manual_seed(0))
    assert hit.all()
    return colour


def test_point_light_shadow_leaves_only_ambient(tmp_path: Path) -> None:
    ambient_only = torch.tensor([0.1, 0.2, 0.3]) * 0.5
    shadowed = _floor_radiance(make_scene(tmp_path, SHADOW + OCCLUDER + POINT, "a.toml"), [0.0, 2.0])
    torch.testing.assert_close(shadowed[0], ambient_only)
    unblocked = _floor_radiance(make_scene(tmp_path, SHADOW + POINT, "b.toml"), [0.0, 2.0])
    torch.testing.assert_close(unblocked[0], ambient_only + 0.5 / math.pi * 20.0 / 9.0)
    torch.testing.assert_close(shadowed[1], unblocked[1])  # (2, 0, 0) is outside the shadow


AREA = """
[[lights]]
type = "area"
corner = [-0.5, -0.5, 2.0]
edge1 = [1.0, 0.0, 0.0]
edge2 = [0.0, 1.0, 0.0]
intensity = 20.0
samples = 16
"""
SQUARE_OCCLUDER = """
[[objects]]
type = "box"
min = [-0.5, -0.5, 0.9]
max = [0.5, 0.5, 1.0]
material = "floor"
"""


def test_area_light_penumbra_lies_between_umbra_and_lit(tmp_path: Path) -> None:
    # The occluder halfway up hides the whole light from x = 0, part of it from x = 1, none of it from x = 3.
    occluded = _floor_radiance(make_scene(tmp_path, SHADOW + SQUARE_OCCLUDER + AREA, "a.toml"), [0.0, 1.0, 3.0])
    free = _floor_radiance(make_scene(tmp_path, SHADOW + AREA, "b.toml"), [0.0, 1.0, 3.0])
    umbra = torch.tensor([0.1, 0.2, 0.3]) * 0.5
    torch.testing.assert_close(occluded[0], umbra)
    torch.testing.assert_close(occluded[2], free[2])
    assert (occluded[1] > umbra + 0.02).all() and (occluded[1] < free[1] - 0.02).all()
    # unoccluded: close to the irradiance of a small square source, L A cos^2 / r^2 at x = 0
    direct = free[0] - umbra
    assert direct.mean().item() == pytest.approx(0.5 / math.pi * 20.0 * 1.0 / 4.0, rel=0.1)


def test_depth_and_normals_of_pixel_centre_rays(tmp_path: Path, device: torch.device) -> None:
    scene = make_scene(tmp_path, LIT_SPHERE.format(ks=0.0, light="[3.0, 0.0, 4.0]"))
    c2w, intr = camera((0.0, -4.0, 0.5), (0.0, 0.0, 0.0), size=15)
    res = render_image(scene, c2w, intr, device=device, spp=1)
    o, d = image_rays(c2w.double(), intr)
    t = ray_sphere(o, d, torch.zeros(3, dtype=torch.float64), 1.0).view(15, 15)
    hit = torch.isfinite(t)
    assert 20 < hit.sum() < 200
    depth = res.depth.cpu().double()
    torch.testing.assert_close(depth[hit], t[hit], atol=1e-4, rtol=0)
    assert (depth[~hit] == 0).all()
    p = (o + t.view(-1, 1).nan_to_num(posinf=0) * d).view(15, 15, 3)
    torch.testing.assert_close(res.normal.cpu().double()[hit], p[hit], atol=1e-4, rtol=0)
    assert (res.normal[~hit.to(res.normal.device)] == 0).all()


def test_supersampling_is_reproducible(tmp_path: Path) -> None:
    body = (
        SHADOW + SQUARE_OCCLUDER + AREA + '\n[[objects]]\ntype = "sphere"\ncenter = [1, 0, 0.3]\nradius = 0.3\n'
        'material = "floor"\n'
    )
    c2w, intr = camera((3.0, -3.0, 3.0), (0.5, 0.0, 0.0), size=12)
    a = render_image(make_scene(tmp_path, body, "a.toml"), c2w, intr, spp=4)
    b = render_image(make_scene(tmp_path, body, "a.toml"), c2w, intr, spp=4)
    assert torch.equal(a.rgba, b.rgba) and torch.equal(a.depth, b.depth)
    other_seed = make_scene(tmp_path, body.replace("[render]", "[render]\nseed = 7"), "c.toml")
    assert not torch.equal(a.rgba, render_image(other_seed, c2w, intr, spp=4).rgba)


GLOW = """
[render]
background = {background}
[materials.glow]
type = "emissive"
color = [0.2, 0.4, 0.6]
[[objects]]
type = "sphere"
radius = 1.0
material = "glow"
"""


def test_alpha_is_coverage_on_a_transparent_background(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, GLOW.format(background='"transparent"'), "a.toml")
    c2w, intr = camera((0.0, 0.0, 4.0), size=9, fov=45.0)
    res = render_image(scene, c2w, intr, spp=16, srgb=False)
    alpha = res.rgba[..., 3]
    assert alpha[4, 4] == 1.0 and alpha[0, 0] == 0.0
    assert torch.equal(res.rgba[0, 0], torch.zeros(4))
    edge = (alpha > 0) & (alpha < 1)
    assert edge.sum() >= 4
    assert set((alpha * 16).round().unique().tolist()) <= set(range(17))
    # the colour of partly covered pixels is the object's, not darkened by the background
    torch.testing.assert_close(res.rgba[edge][:, :3], torch.tensor([0.2, 0.4, 0.6]).expand(int(edge.sum()), 3))
    solid = render_image(
        make_scene(tmp_path, GLOW.format(background="[0, 0, 0]"), "b.toml"), c2w, intr, spp=16, srgb=False
    )
    assert (solid.rgba[..., 3] == 1).all()
    torch.testing.assert_close(solid.rgba[..., :3], res.rgba[..., :3] * alpha.unsqueeze(-1))


MIRROR_AND_GLASS = """
[render]
background = [0.0, 0.0, 0.0]
ambient = [0.0, 0.0, 0.0]
max_depth = 2
bounds = [[-5, -5, -5], [5, 5, 5]]
[materials.lamp]
type = "emissive"
color = [1.0, 0.5, 0.25]
strength = 2.0
[materials.mirror]
type = "mirror"
color = [0.9, 0.8, 0.7]
[materials.glass]
type = "glass"
color = [0.9, 0.8, 0.7]
ior = 1.5
[[objects]]
name = "lamp behind the slab, seen through it"
type = "box"
min = [-1.0, -1.0, -3.0]
max = [1.0, 1.0, -2.9]
material = "lamp"
[[objects]]
name = "lamp above the slab, seen in its reflection"
type = "box"
min = [-1.0, -1.0, 2.5]
max = [1.0, 1.0, 2.6]
material = "lamp"
[[objects]]
name = "glass slab"
type = "box"
min = [-1.0, -1.0, -0.5]
max = [1.0, 1.0, 0.0]
material = "glass"
[[objects]]
name = "mirror tilted 45 degrees: a ray along +x turns to -z"
type = "plane"
point = [3.0, 0.0, 0.0]
normal = [-1.0, 0.0, -1.0]
material = "mirror"
[[objects]]
name = "lamp below the mirror"
type = "box"
min = [2.0, -1.0, -3.0]
max = [3.0, 1.0, -2.9]
material = "lamp"
"""


def test_mirror_and_glass_weights_at_normal_incidence(tmp_path: Path) -> None:
    """A glass slab at normal incidence reflects F0 = ((n - 1) / (n + 1))^2 of the lamp above it (untinted) and
    passes the lamp below through two interfaces, each passing (1 - F0) tinted by the glass colour (internal
    reflections need more bounces than max_depth). Off a mirror: the mirror's colour times what it reflects."""
    scene = make_scene(tmp_path, MIRROR_AND_GLASS)
    o = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.5]])
    d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    colour, hit = trace(scene, scene_geometry(scene, torch.device("cpu")), o, d, torch.Generator().manual_seed(0))
    assert hit.all()
    lamp, tint = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([0.9, 0.8, 0.7])
    f0 = ((1.5 - 1.0) / (1.5 + 1.0)) ** 2
    torch.testing.assert_close(colour[0], lamp * (f0 + ((1 - f0) * tint) ** 2))
    torch.testing.assert_close(colour[1], lamp * tint)
