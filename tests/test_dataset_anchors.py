"""Our datasets read by minimal independent readers of instant-ngp's and nerfstudio's conventions give the same rays
and depth as our own reader; our reader takes their depth forms (and our format-1 datasets) too."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import raytrace.dataset as ds
from nerf.data import image_rays_of, load_dataset
from raytrace.camera import image_rays
from raytrace.dataset_format import read_transforms, transforms_path
from raytrace.errors import InputError
from raytrace.scene import load_scene

# A sphere on a plane seen off-centre at a non-square size: depth varies over the image, corners included.
SCENE = """
[render]
background = "transparent"
spp = 1
bounds = [[-3.2, -3.2, -0.2], [3.2, 3.2, 1.5]]

[camera]
layout = "hemisphere"
radius = 2.5
target = [0.2, 0.0, 0.4]
fov = 70
width = 24
height = 18
seed = 3
views = { train = 3, val = 1, test = 1 }

[materials.grey]
type = "diffuse"
color = [0.6, 0.6, 0.6]

[[objects]]
type = "sphere"
center = [0.0, 0.0, 0.5]
radius = 0.5
material = "grey"

[[objects]]
type = "box"
min = [-3.0, -3.0, -0.1]
max = [3.0, 3.0, 0.0]
material = "grey"

[[lights]]
type = "point"
position = [2.0, 2.0, 4.0]
intensity = 20.0
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("anchors")
    (root / "scene.toml").write_text(SCENE, encoding="utf-8")
    scene = load_scene(root / "scene.toml")
    ds.write_dataset(scene, root / "data", ds.settings_for(scene), progress=False)
    return root / "data"


def _pixel_dirs(meta: dict) -> np.ndarray:
    """Camera-space directions ``(H, W, 3)`` with unit -Z component through pixel centres (OpenGL camera)."""
    u, v = np.meshgrid(np.arange(meta["w"]) + 0.5, np.arange(meta["h"]) + 0.5)
    return np.stack([(u - meta["cx"]) / meta["fl_x"], -(v - meta["cy"]) / meta["fl_y"], -np.ones_like(u)], -1)


def _points_from_z(meta: dict, frame: dict, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origins, unit directions and surface points ``(H*W, 3)`` of a frame whose z-depth is ``z`` (H, W)."""
    c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    d_cam = _pixel_dirs(meta)
    d_world = d_cam @ c2w[:3, :3].T
    points = c2w[:3, 3] + d_world * z[..., None]
    unit = d_world / np.linalg.norm(d_world, axis=-1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], unit.shape)
    return origins.reshape(-1, 3), unit.reshape(-1, 3), points.reshape(-1, 3)


def instant_ngp_reader(json_path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """instant-ngp's transforms: per frame ``depth_path``, a 16-bit image of z-depth in ``integer_depth_scale``
    metres; ``file_path`` without extension means ``.png``. Per frame: origins, directions, points, hit mask."""
    meta = json.loads(json_path.read_text())
    out = []
    for fr in meta["frames"]:
        assert (json_path.parent / (fr["file_path"] + ".png")).is_file()
        raw = iio.imread(json_path.parent / fr["depth_path"])
        assert raw.dtype == np.uint16
        z = raw.astype(np.float64) * meta["integer_depth_scale"]
        out.append((*_points_from_z(meta, fr, z), (raw > 0).reshape(-1)))
    return out


def nerfstudio_reader(json_path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """nerfstudio's transforms: per frame ``depth_file_path``, z-depth times ``depth_unit_scale_factor`` (a
    dataparser option, 1e-3 by default; taken from the JSON here)."""
    meta = json.loads(json_path.read_text())
    scale = meta.get("depth_unit_scale_factor", 1e-3)
    out = []
    for fr in meta["frames"]:
        raw = iio.imread(json_path.parent / fr["depth_file_path"])
        z = raw.astype(np.float64) * scale
        out.append((*_points_from_z(meta, fr, z), (raw > 0).reshape(-1)))
    return out


def _ours(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    data = load_dataset(root, splits=(split,)).splits[split]
    assert data.depths is not None
    out = []
    for pose, depth in zip(data.poses, data.depths, strict=True):
        o, d = image_rays(pose, data.intrinsics)
        t = depth.reshape(-1).double()
        points = o.double() + t.unsqueeze(-1) * d.double()
        out.append((o.double().numpy(), d.double().numpy(), points.numpy(), (t > 0).numpy()))
    return out


@pytest.mark.parametrize("reader", [instant_ngp_reader, nerfstudio_reader])
def test_anchor_readers_see_our_rays_and_depth(dataset: Path, reader) -> None:
    unit = read_transforms(transforms_path(dataset, "train")).integer_depth_scale
    assert unit == pytest.approx(1e-3)
    for split in ("train", "test"):
        theirs, ours = reader(transforms_path(dataset, split)), _ours(dataset, split)
        assert len(theirs) == len(ours)
        for (o1, d1, p1, hit1), (o2, d2, p2, hit2) in zip(theirs, ours, strict=True):
            np.testing.assert_allclose(o1, o2, atol=1e-6)
            np.testing.assert_allclose(d1, d2, atol=1e-6)
            np.testing.assert_array_equal(hit1, hit2)
            assert 0.2 < hit1.mean() < 1.0  # the scene covers part of every view
            # z-depth rounded to the PNG's unit: points agree within half a unit along the ray (stretched by
            # at most 1 / cos of the corner angle)
            np.testing.assert_allclose(p1[hit1], p2[hit2], atol=0.5 * unit * 1.5 + 1e-5)


def _copy_editing(root: Path, dest: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of the dataset at ``root`` in ``dest`` whose JSON files ``edit`` changed in place."""
    shutil.copytree(root, dest)
    for split in ("train", "val", "test"):
        path = transforms_path(dest, split)
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))
    return dest


def _strip(root: Path, dest: Path, drop: tuple[str, ...], top_drop: tuple[str, ...] = ()) -> Path:
    def edit(meta: dict) -> None:
        for key in top_drop:
            meta.pop(key, None)
        for fr in meta["frames"]:
            for key in drop:
                fr.pop(key, None)

    return _copy_editing(root, dest, edit)


@pytest.mark.parametrize(
    ("drop", "top_drop"),
    [
        (("distance_path", "depth_file_path"), ()),  # instant-ngp's keys only
        (("distance_path", "depth_path"), ("integer_depth_scale",)),  # nerfstudio's keys only
        (("distance_path", "depth_path"), ("integer_depth_scale", "depth_unit_scale_factor")),  # its default 1e-3
    ],
)
def test_our_reader_takes_the_anchors_depth(dataset: Path, tmp_path: Path, drop, top_drop) -> None:
    exact = load_dataset(dataset, splits=("train",)).splits["train"].depths
    stripped = load_dataset(_strip(dataset, tmp_path / "d", drop, top_drop), splits=("train",)).splits["train"]
    assert exact is not None and stripped.depths is not None
    assert ((stripped.depths > 0) == (exact > 0)).all()
    torch.testing.assert_close(stripped.depths, exact, atol=0.5e-3 * 1.5 + 1e-5, rtol=0)


def test_format_1_datasets_still_load(dataset: Path, tmp_path: Path) -> None:
    """Float32 ray-distance ``.npy`` under ``depth_path`` and the bounds under ``aabb``."""
    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    for split in ("train", "val", "test"):
        path = transforms_path(old, split)
        meta = json.loads(path.read_text())
        meta["aabb"] = [[-3.0, -2.0, -1.0], [3.0, 2.0, 1.0]]
        for key in ("scene_aabb", "integer_depth_scale", "depth_unit_scale_factor"):
            meta.pop(key)
        for fr in meta["frames"]:
            distance = np.load(path.parent / fr.pop("distance_path"))["distance"]
            fr.pop("depth_file_path")
            fr["depth_path"] = fr["depth_path"].replace("_depth.png", "_depth.npy")
            np.save(path.parent / fr["depth_path"], distance)
        path.write_text(json.dumps(meta))
    loaded = load_dataset(old, splits=("train",))
    torch.testing.assert_close(loaded.aabb, torch.tensor([[-3.0, -2.0, -1.0], [3.0, 2.0, 1.0]]))
    exact = load_dataset(dataset, splits=("train",)).splits["train"].depths
    assert exact is not None
    torch.testing.assert_close(loaded.splits["train"].depths, exact, atol=0, rtol=0)
    assert not (exact == 0).all()


def _with_keys(root: Path, dest: Path, **keys: object) -> Path:
    """A copy of the dataset at ``root`` whose JSON files carry ``keys`` at the top level."""
    return _copy_editing(root, dest, lambda meta: meta.update(keys))


def test_instant_ngp_distortion_keys_bend_the_rays(dataset: Path, tmp_path: Path) -> None:
    """instant-ngp's ``k1 k2 p1 p2`` (OpenCV, on normalised coordinates, +y down): each pixel-centre ray, projected
    back through that model (written here), lands on its pixel."""
    k1, k2, p1, p2 = 0.15, -0.04, 0.003, -0.002
    root = _with_keys(dataset, tmp_path / "distorted", k1=k1, k2=k2, p1=p1, p2=p2)
    meta = json.loads(transforms_path(root, "test").read_text())
    split = load_dataset(root).splits["test"]
    o, d = image_rays_of(split, 0)
    c2w = np.asarray(meta["frames"][0]["transform_matrix"], dtype=np.float64)
    cam = d.double().numpy() @ c2w[:3, :3]  # camera axes, OpenGL: x right, y up, -z forward
    x, y = cam[:, 0] / -cam[:, 2], cam[:, 1] / cam[:, 2]  # OpenCV's normalised coordinates (+y down)
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    u, v = np.meshgrid(np.arange(meta["w"]) + 0.5, np.arange(meta["h"]) + 0.5)
    assert np.allclose(xd * meta["fl_x"] + meta["cx"], u.reshape(-1), atol=1e-3)
    assert np.allclose(yd * meta["fl_y"] + meta["cy"], v.reshape(-1), atol=1e-3)
    plain_o, plain_d = image_rays_of(load_dataset(dataset).splits["test"], 0)
    assert torch.equal(o, plain_o) and (d - plain_d).abs().max() > 1e-2


@pytest.mark.parametrize(("keys", "field"), [({"k3": 0.1}, "k3"), ({"is_fisheye": True}, "is_fisheye"),
                                             ({"k1": "0.1"}, "k1")])
def test_unsupported_lens_keys_are_refused(dataset: Path, tmp_path: Path, keys: dict, field: str) -> None:
    root = _with_keys(dataset, tmp_path / "lens", **keys)
    with pytest.raises(InputError, match=f"transforms_train.json: {field}: "):
        load_dataset(root)
