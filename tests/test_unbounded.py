"""Unbounded scenes: the [environment] table, camera radius ranges, the ``bounded`` flag from the scene file to
the dataset JSON to ``Dataset``, and instant-ngp's ``aabb_scale``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf.data import load_dataset
from raytrace.bounds import ngp_box
from raytrace.camera import rig_positions
from raytrace.dataset import settings_for, write_dataset
from raytrace.dataset_format import transforms_path
from raytrace.errors import InputError
from raytrace.scene import load_scene

from .raytrace_scenes import make_scene

SCENES = Path(__file__).resolve().parent.parent / "datasets" / "scenes"
BALL = """
[materials.m]
type = "diffuse"
[[objects]]
type = "sphere"
center = [0.0, 0.0, 0.0]
radius = 0.5
material = "m"
"""
SKY = '[environment]\ntype = "sky"\nzenith = [0, 0, 1]\nhorizon = [1, 1, 1]\nground = [0.2, 0.2, 0.2]\n'


@pytest.mark.parametrize(("name", "bounded"), [("object", True), ("cornell", True), ("whitted", False),
                                               ("garden", False)])
def test_shipped_scenes_say_whether_they_are_bounded(name: str, bounded: bool) -> None:
    assert load_scene(SCENES / f"{name}.toml").bounded is bounded


def test_bounded_defaults_and_override(tmp_path: Path) -> None:
    assert make_scene(tmp_path, BALL).bounded is True
    assert make_scene(tmp_path, BALL + SKY).bounded is False
    assert make_scene(tmp_path, "[render]\nbounded = true\n" + BALL + SKY).bounded is True
    with pytest.raises(InputError, match=r"render\.bounded: expected true or false"):
        make_scene(tmp_path, "[render]\nbounded = 1\n" + BALL)


@pytest.mark.parametrize(("body", "message"), [
    ('[environment]\ntype = "sky"\nzenith = [0, 0, 1]\nhorizon = [1, 1, 1]\n', "environment.ground: missing"),
    (SKY + "sun = { direction = [0, 0, 1], size = 95 }\n", "environment.sun.size: must be < 90"),
    (SKY + "sun = { direction = [0, 0, 0] }\n", "environment.sun.direction: must not be the zero vector"),
    ('[environment]\ntype = "image"\npath = "nope.hdr"\n', "environment.path: image file not found"),
    ('[environment]\ntype = "cube"\n', "environment.type: must be one of sky, image"),
])
def test_environment_errors_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        make_scene(tmp_path, BALL + body)


def test_radius_range_places_cameras_between_near_and_far(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    target = np.array([0.0, 0.0, 0.5])
    pos = rig_positions(500, (2.0, 6.0), target, True, rng)
    dist = np.linalg.norm(pos - target, axis=1)
    assert dist.min() >= 2.0 and dist.max() <= 6.0 and dist.max() - dist.min() > 3.5
    assert (pos[:, 2] >= target[2]).all()
    fixed = rig_positions(50, 3.0, target, False, np.random.default_rng(0))
    assert np.allclose(np.linalg.norm(fixed - target, axis=1), 3.0)
    assert load_scene(SCENES / "garden.toml").rig.radius == (2.5, 9.0)


@pytest.mark.parametrize(("radius", "message"), [
    ("[5.0, 2.0]", "camera.radius: expected [near, far] with near <= far"),
    ("[1.0]", "camera.radius: expected a list of 2 numbers"),
    ("[0.0, 2.0]", "camera.radius: every component must be > 0"),
])
def test_radius_range_errors_name_the_field(tmp_path: Path, radius: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f"[camera]\nradius = {radius}\nfov = 40.0\nwidth = 8\nheight = 8\n" + BALL)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_scene(path)


@pytest.fixture(scope="module")
def garden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped garden scene at 12x12, three views."""
    out = tmp_path_factory.mktemp("garden") / "garden"
    scene = load_scene(SCENES / "garden.toml")
    write_dataset(scene, out, settings_for(scene, views=2, val=0, test=1, res=12, spp=1), progress=False)
    return out


def test_unbounded_dataset_is_opaque_and_says_so(garden: Path) -> None:
    data = json.loads(transforms_path(garden, "train").read_text())
    assert data["bounded"] is False
    assert all((iio.imread(p)[..., 3] == 255).all() for p in garden.glob("*/r_*[0-9].png"))
    ds = load_dataset(garden, splits=("train", "test"))
    assert ds.bounded is False and ds.outer is None and ds.inferred == []
    assert torch.equal(ds.aabb, torch.tensor([[-2.0, -2.0, -0.05], [2.0, 2.0, 2.0]]))


def test_bounded_dataset(ball: Path) -> None:
    assert json.loads(transforms_path(ball, "train").read_text())["bounded"] is True
    assert load_dataset(ball, splits=("train",)).bounded is True


def instant_ngp_copy(ball: Path, tmp_path: Path, **keys) -> Path:
    """The ball dataset as one instant-ngp ``transforms.json`` without ``aabb`` nor ``bounded``, plus ``keys``."""
    root = tmp_path / "ngp"
    shutil.copytree(ball, root)
    data = json.loads(transforms_path(root, "train").read_text())
    for split in ("train", "val", "test"):
        transforms_path(root, split).unlink()
    del data["scene_aabb"], data["bounded"]
    (root / "transforms.json").write_text(json.dumps({**data, **keys}))
    return root


def test_aabb_scale_means_unbounded(ball: Path, tmp_path: Path) -> None:
    ds = load_dataset(instant_ngp_copy(ball, tmp_path, aabb_scale=16), splits=("train",))
    default = torch.tensor(ngp_box(None, None, None), dtype=torch.float32)  # instant-ngp's unit cube: 0.33, 0.5
    assert ds.bounded is False
    # contracted around the cube grown twice (CONTRACTED_CUBES), rendered out to 16 cubes
    assert torch.allclose(ds.aabb, 2.0 * default) and torch.allclose(ds.outer, 16.0 * default)


@pytest.mark.parametrize(("keys", "bounded"), [({}, True), ({"aabb_scale": 1}, True),
                                               ({"aabb_scale": 4, "bounded": True}, True)])
def test_bounded_without_aabb_scale_or_when_stated(ball: Path, tmp_path: Path, keys: dict, bounded: bool) -> None:
    assert load_dataset(instant_ngp_copy(ball, tmp_path, **keys), splits=("train",)).bounded is bounded


@pytest.mark.parametrize(("keys", "field"), [({"bounded": "no"}, "bounded"), ({"aabb_scale": 0}, "aabb_scale")])
def test_bad_bounds_keys_name_the_field(ball: Path, tmp_path: Path, keys: dict, field: str) -> None:
    with pytest.raises(InputError, match=f"transforms.json: {field}: "):
        load_dataset(instant_ngp_copy(ball, tmp_path, **keys), splits=("train",))
