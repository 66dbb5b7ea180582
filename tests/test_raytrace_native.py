"""The raytracer's native CPU kernels against their PyTorch twins (values to ~1e-5), and the fallback to the twins
where the library does not load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrace import native
from raytrace.camera import Intrinsics
from raytrace.dataset import rig_poses
from raytrace.intersect import scene_geometry
from raytrace.render import MaterialTable, ShadingPoints, _direct, render_image
from raytrace.scene import Scene, load_scene
from tests.conftest import skip_without_native
from tests.raytrace_scenes import make_scene

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture
def native_kernels() -> None:
    """Skips the test where the raytracer's kernels are missing (fails it under NERFKIT_REQUIRE_NATIVE=1)."""
    skip_without_native(native.load_error())


LIGHTS = """
[render]
ambient = [0.05, 0.05, 0.05]
bounds = [[-2.0, -2.0, -0.1], [2.0, 2.0, 2.0]]

[materials.matte]
type = "diffuse"
color = [0.7, 0.6, 0.5]

[materials.shiny]
type = "diffuse"
color = [0.2, 0.3, 0.8]
ks = 0.4
shininess = 40.0

[[objects]]
name = "ball"
type = "sphere"
center = [0.0, 0.0, 0.5]
radius = 0.5
material = "shiny"

[[objects]]
name = "floor"
type = "plane"
point = [0.0, 0.0, 0.0]
normal = [0.0, 0.0, 1.0]
material = "matte"

[[lights]]
name = "lamp"
type = "point"
position = [1.0, -2.0, 3.0]
intensity = 20.0

[[lights]]
name = "sun"
type = "directional"
direction = [-0.3, 0.4, -0.866]
intensity = 1.5

[[lights]]
name = "square panel"
type = "area"
corner = [-1.0, 1.0, 2.0]
edge1 = [0.5, 0.0, 0.0]
edge2 = [0.0, 0.4, 0.0]
intensity = 8.0
samples = 9

[[lights]]
name = "strip"
type = "area"
corner = [1.5, -0.5, 1.0]
edge1 = [0.0, 1.0, 0.0]
edge2 = [0.0, 0.0, 0.2]
intensity = 5.0
samples = 5
visible = false
"""


def _without_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "available", lambda device: False)


def _views(scene: Scene, size: int, count: int) -> list[tuple[torch.Tensor, Intrinsics]]:
    intr = Intrinsics.from_fov(size, size, math.radians(scene.rig.fov))
    return [(torch.as_tensor(p, dtype=torch.float32), intr) for p in rig_poses(scene.rig, {"train": count})["train"]]


@pytest.mark.usefixtures("native_kernels")
def test_direct_light_kernel_matches_its_torch_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random diffuse hits (both sides of the surfaces, random shading normals) under point, directional and
    stratified / unstratified area lights, glossy and matte."""
    scene = make_scene(tmp_path, LIGHTS)
    geo = scene_geometry(scene, CPU)
    table = MaterialTable.of(geo.materials, CPU)
    g = torch.Generator().manual_seed(1)
    m = 4096
    p = torch.rand(m, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(m, 3, generator=g), dim=-1)
    ng = torch.nn.functional.normalize(torch.randn(m, 3, generator=g), dim=-1)
    ns = torch.nn.functional.normalize(ng + 0.3 * torch.randn(m, 3, generator=g), dim=-1)
    colour = torch.rand(m, 3, generator=g)
    for obj in (torch.zeros(m, dtype=torch.long), torch.randint(0, 2, (m,), generator=g)):
        args = (scene, geo, table, ShadingPoints(obj, p, d, ng, ns), colour)
        fast = _direct(*args, torch.Generator().manual_seed(7))
        with monkeypatch.context() as mp:
            _without_native(mp)
            twin = _direct(*args, torch.Generator().manual_seed(7))
        assert (twin > 0).any(-1).float().mean() > 0.3  # most points lit: the comparison compares something
        torch.testing.assert_close(fast, twin, rtol=1e-5, atol=1e-6)


SHAPES = LIGHTS + """
[[objects]]
name = "egg"
type = "sphere"
center = [0.2, 0.1, 0.0]
radius = 0.4
scale = [1.0, 0.6, 1.5]
rotate = [20.0, -35.0, 60.0]
translate = [-0.8, 0.5, 0.9]
material = "matte"

[[objects]]
name = "tilted wall"
type = "plane"
point = [0.0, 0.0, 0.0]
normal = [0.0, 0.0, 1.0]
rotate = [80.0, 0.0, 25.0]
translate = [0.0, 1.5, 0.0]
material = "shiny"
"""


@pytest.mark.usefixtures("native_kernels")
def test_analytic_hit_kernels_match_their_torch_twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closest hits (distance, object, normal, uv) and occlusion of random rays among spheres and planes, some
    scaled, rotated and translated."""
    geo = scene_geometry(make_scene(tmp_path, SHAPES), CPU)
    assert geo.prims is not None and geo.prims.shape[0] == 4
    g = torch.Generator().manual_seed(3)
    n = 20000
    o = torch.randn(n, 3, generator=g) * 1.5 + torch.tensor([0.0, 0.0, 1.0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    t_max = torch.rand(n, generator=g) * 3
    fast, fast_blocked = geo.intersect(o, d), geo.occluded(o, d, t_max)
    with monkeypatch.context() as mp:
        _without_native(mp)
        twin, twin_blocked = geo.intersect(o, d), geo.occluded(o, d, t_max)
    assert set(twin.obj.unique().tolist()) >= {-1, 0, 1, 2, 3}
    assert torch.equal(fast.obj, twin.obj)
    torch.testing.assert_close(fast.t, twin.t, rtol=1e-5, atol=1e-6)
    for f in ("ng", "ns", "uv"):
        torch.testing.assert_close(getattr(fast, f), getattr(twin, f), rtol=0, atol=1e-5)
    assert 0.2 < twin_blocked.float().mean() < 0.8
    assert torch.equal(fast_blocked, twin_blocked)


@pytest.mark.usefixtures("native_kernels")
@pytest.mark.parametrize("name", ["whitted", "cornell", "object", "garden"])
def test_shipped_scenes_render_alike_with_and_without_native(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = load_scene(ROOT / "datasets" / "scenes" / f"{name}.toml")
    for c2w, intr in _views(scene, 24, 2):
        fast = render_image(scene, c2w, intr, spp=2, srgb=False)
        with monkeypatch.context() as mp:
            _without_native(mp)
            twin = render_image(scene, c2w, intr, spp=2, srgb=False)
        assert fast.rgba[..., 3].any()
        np.testing.assert_allclose(fast.rgba.numpy(), twin.rgba.numpy(), atol=1e-5, rtol=0)


def test_raytrace_renders_without_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``RAYTRACE_NATIVE=0`` (as a machine without the built library) leaves the PyTorch twins, same image."""
    scene = make_scene(tmp_path, LIGHTS)
    c2w, intr = _views(scene, 12, 1)[0]
    before = render_image(scene, c2w, intr, spp=2)
    monkeypatch.setenv("RAYTRACE_NATIVE", "0")
    native.load_error.cache_clear()
    try:
        assert not native.available(CPU)
        after = render_image(scene, c2w, intr, spp=2)
    finally:
        monkeypatch.delenv("RAYTRACE_NATIVE")
        native.load_error.cache_clear()
    np.testing.assert_allclose(before.rgba.numpy(), after.rgba.numpy(), atol=1e-5, rtol=0)
