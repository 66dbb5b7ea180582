"""Scene files: validation errors name the file, the object and the field; textures; the shipped scenes."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from raytrace.camera import Intrinsics, look_at
from raytrace.errors import InputError
from raytrace.materials import albedo
from raytrace.render import render_image
from raytrace.scene import load_scene
from tests.raytrace_scenes import make_scene

SCENES = Path(__file__).resolve().parent.parent / "datasets" / "scenes"

VALID = """
[render]
background = [0.1, 0.1, 0.1]
[materials.red]
type = "diffuse"
color = [0.8, 0.1, 0.1]
[materials.glass]
type = "glass"
ior = 1.5
[[objects]]
name = "ball"
type = "sphere"
radius = 1.0
material = "red"
[[objects]]
name = "mesh"
type = "mesh"
shape = "torus"
material = "glass"
[[lights]]
type = "point"
position = [0.0, 0.0, 5.0]
intensity = 10.0
"""


def test_valid_scene_loads(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, VALID)
    assert [o.name for o in scene.objects] == ["ball", "mesh"]
    assert scene.rig.views == {"train": 100, "val": 10, "test": 20} and scene.rig.layout == "hemisphere"
    assert scene.materials["glass"].ior == 1.5
    # computed bounds: the default torus (|x|, |y| <= 1.5, |z| <= 0.5) and the unit sphere, padded a little
    lo, hi = scene.bounds
    assert np.all(lo < [-1.5, -1.5, -1.0]) and np.all(hi > [1.5, 1.5, 1.0])
    assert np.all(lo > [-1.6, -1.6, -1.1]) and np.all(hi < [1.6, 1.6, 1.1])


@pytest.mark.parametrize(
    ("old", "new", "where", "problem"),
    [
        ("radius = 1.0", "radus = 1.0", 'objects[0] "ball".radus', "unknown key"),
        ("radius = 1.0", 'radius = "big"', 'objects[0] "ball".radius', "expected a number"),
        ("radius = 1.0", "radius = -1", 'objects[0] "ball".radius', "must be > 0, got -1"),
        ("ior = 1.5", "ior = 0.9", "materials.glass.ior", "must be >= 1"),
        ("ior = 1.5", "ior = 1.5\nks = 0.5", "materials.glass.ks", "unknown key"),
        ('material = "red"', 'material = "blue"', 'objects[0] "ball".material', "unknown material 'blue'"),
        ('shape = "torus"', 'file = "missing.ply"', 'objects[1] "mesh".file', "not found"),
        (
            'shape = "torus"',
            'shape = "torus"\nparams = { tube_radius = -2 }',
            'objects[1] "mesh".params.tube_radius',
            "must be > 0",
        ),
        ('shape = "torus"', 'shape = "teapot"', 'objects[1] "mesh".shape', "must be one of"),
        ("intensity = 10.0", "intensity = [1, 2]", "lights[0].intensity", "expected a number"),
        ('type = "diffuse"', 'type = "diffuse"\nks = true', "materials.red.ks", "expected a number"),
        ("[render]", "[render]\nspp = 0", "render.spp", "must be >= 1"),
        ("background = [0.1, 0.1, 0.1]", 'background = "blue"', "render.background", "transparent"),
        (
            'name = "ball"\ntype = "sphere"',
            'name = "ball"\ntype = "plane"',
            "render.bounds",
            'objects[0] "ball" is an infinite plane',
        ),
    ],
)
def test_invalid_scene_names_file_object_and_field(
    tmp_path: Path, old: str, new: str, where: str, problem: str
) -> None:
    assert old in VALID
    body = VALID.replace(old, new, 1)
    if "plane" in new:
        body = body.replace("radius = 1.0\n", "")
    with pytest.raises(InputError) as err:
        make_scene(tmp_path, body, "bad.toml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'bad.toml'}: {where}: ")
    assert problem in message


def test_unknown_section_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"bad\.toml: camra: unknown key"):
        make_scene(tmp_path, VALID + "\n[camra]\nfov = 3\n", "bad.toml")
    with pytest.raises(InputError, match=r"bad\.toml: invalid TOML"):
        make_scene(tmp_path, VALID + "\nthis is not toml\n", "bad.toml")
    with pytest.raises(InputError, match=r"nowhere\.toml: scene file not found"):
        load_scene(tmp_path / "nowhere.toml")
    (tmp_path / "nocam.toml").write_text(VALID)
    with pytest.raises(InputError, match=r"nocam\.toml: camera: missing"):
        load_scene(tmp_path / "nocam.toml")


def test_image_texture_is_decoded_from_srgb_and_looked_up_by_uv(tmp_path: Path) -> None:
    img = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [188, 188, 188]]], dtype=np.uint8)
    iio.imwrite(tmp_path / "tex.png", img)
    scene = make_scene(
        tmp_path,
        """
[materials.t]
type = "diffuse"
texture = { path = "tex.png" }
[[objects]]
type = "box"
min = [0, 0, 0]
max = [1, 1, 1]
material = "t"
""",
    )
    mat = scene.materials["t"]
    # texel centres: u = 0.25 / 0.75 left / right, v = 0.75 top row, 0.25 bottom row
    uv = torch.tensor([[0.25, 0.75], [0.75, 0.75], [0.25, 0.25], [0.75, 0.25], [1.25, 0.75]])
    got = albedo(mat, uv, torch.zeros(5, 3))
    grey = ((188 / 255 + 0.055) / 1.055) ** 2.4
    expected = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [grey, grey, grey], [1.0, 0, 0]])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_checker_alternates(tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path,
        """
[materials.c]
type = "diffuse"
checker = { color1 = [1, 1, 1], color2 = [0, 0, 0], scale = 2.0 }
[[objects]]
type = "sphere"
radius = 1.0
material = "c"
""",
    )
    uv = torch.tensor([[0.1, 0.1], [0.6, 0.1], [0.6, 0.6], [-0.1, 0.1]])
    got = albedo(scene.materials["c"], uv, torch.zeros(4, 3))[:, 0]
    assert got.tolist() == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("name", ["whitted", "cornell", "object"])
def test_shipped_scenes_load_and_render(name: str) -> None:
    scene = load_scene(SCENES / f"{name}.toml")
    rig = scene.rig
    assert (rig.width, rig.height) == (200, 200) and sum(rig.views.values()) > 0
    eye = np.asarray(rig.target) + rig.radius * np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])
    c2w = torch.tensor(look_at(eye, np.asarray(rig.target)), dtype=torch.float32)
    res = render_image(scene, c2w, Intrinsics.from_fov(24, 24, math.radians(rig.fov)), spp=2)
    assert res.rgba.shape == (24, 24, 4) and res.depth.shape == (24, 24) and res.normal.shape == (24, 24, 3)
    assert torch.isfinite(res.rgba).all() and res.rgba.min() >= 0 and res.rgba.max() <= 1
    assert (res.depth > 0).float().mean() > 0.2  # the content is in view
    assert res.rgba[..., :3].std() > 0.02  # and not a flat colour
    if name == "object":
        assert scene.settings.background is None and rig.views == {"train": 100, "val": 10, "test": 20}
        assert (res.rgba[0, 0] == 0).all() and (res.rgba[..., 3] == 1).any()
        assert np.all(scene.bounds[0] >= -1.1) and np.all(scene.bounds[1] <= 1.1)
