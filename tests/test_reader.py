"""One reader for every format: instant-ngp's unit cube read as instant-ngp reads it, nerfstudio's transforms.json,
bounds inferred for our shipped scenes with our keys stripped, and the world's units not mattering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.common import DEPTH_KEYS, OUR_KEYS, dataset_copy
from nerf.data import image_rays_of, load_dataset
from raytrace.bounds import (
    CONTRACTED_CUBES,
    POINTS_MIN,
    focus_point,
    framing_box,
    ngp_box,
    points_box,
    scaled_box,
    triangulated_points,
)
from raytrace.dataset_format import transforms_path
from raytrace.errors import InputError
from raytrace.images import read_rgba
from raytrace.reader import HOLDOUT_EVERY, read_dataset

SCENES = Path(__file__).resolve().parent.parent / "datasets" / "scenes"


def single_json(ours: Path, out: Path, drop: tuple[str, ...] = (), frame_drop: tuple[str, ...] = (),
                **keys) -> Path:
    """The train frames of our dataset ``ours`` as one ``transforms.json`` in ``out`` (absolute image paths), less
    the top-level keys ``drop`` and the frame keys ``frame_drop``, plus ``keys``."""
    data = json.loads(transforms_path(ours, "train").read_text())
    for fr in data["frames"]:
        fr["file_path"] = str((ours / fr["file_path"]).resolve())
        for k in frame_drop:
            fr.pop(k, None)
        for k in DEPTH_KEYS:
            if k in fr:
                fr[k] = str((ours / fr[k]).resolve())
    data = {k: v for k, v in data.items() if k not in drop} | keys
    out.mkdir(parents=True, exist_ok=True)
    (out / "transforms.json").write_text(json.dumps(data))
    return out


def held_in(n: int) -> list[int]:
    """The frames of a single ``transforms.json`` that train (:data:`HOLDOUT_EVERY`)."""
    return [i for i in range(n) if i % HOLDOUT_EVERY]


def test_ngp_box_is_the_unit_cube_in_the_json_world() -> None:
    """``world * scale + offset`` in [0, 1]^3; the defaults 0.33 and 0.5; an ``aabb`` key: its longest side's cube."""
    np.testing.assert_allclose(ngp_box(0.5, np.array([0.5, 0.25, 0.0]), None), [[-1.0, -0.5, 0.0], [1.0, 1.5, 2.0]])
    np.testing.assert_allclose(ngp_box(None, None, None), [[-0.5 / 0.33] * 3, [0.5 / 0.33] * 3])
    aabb = np.array([[0.0, -1.0, 2.0], [4.0, 1.0, 3.0]])
    np.testing.assert_allclose(ngp_box(0.1, np.zeros(3), aabb), [[0.0, -2.0, 0.5], [4.0, 2.0, 4.5]])


@pytest.mark.parametrize("keys", [{"scale": 0.21, "offset": [0.4, 0.55, 0.3]}, {"scale": 0.4, "offset": 0.5},
                                  {"aabb": [[-0.9, -0.6, -0.7], [0.6, 0.9, 0.5]], "scale": 9.0},
                                  {"scale": 0.3, "offset": [0.5, 0.5, 0.4], "aabb_scale": 4}])
def test_instant_ngp_json_gives_our_rays_in_our_box(ball: Path, tmp_path: Path, keys: dict) -> None:
    """The same views as instant-ngp's JSON with ``scale``/``offset`` (or ``aabb``) and as our layout with the box
    instant-ngp's unit cube covers: the same rays, the same box."""
    ngp = load_dataset(single_json(ball, tmp_path / "ngp", drop=OUR_KEYS, **keys), splits=("train",))
    scale = keys.get("scale", 0.33) if "aabb" not in keys else 1.0 / 1.5  # the aabb's longest side: 1.5
    offset = np.broadcast_to(np.asarray(keys.get("offset", 0.5), dtype=float), (3,))
    if "aabb" in keys:
        offset = 0.5 - scale * np.array([-0.15, 0.15, -0.1])  # its centre goes to the cube's
    box = np.stack([-offset / scale, (1.0 - offset) / scale])
    bounded = keys.get("aabb_scale", 1) == 1
    learned = box if bounded else scaled_box(box, min(CONTRACTED_CUBES, keys["aabb_scale"]))  # the grown cube
    ours_root = tmp_path / "ours"
    single_json(ball, ours_root, drop=("aabb_scale",), scene_aabb=learned.tolist(), bounded=bounded)
    ours = load_dataset(ours_root, splits=("train",))
    torch.testing.assert_close(ngp.aabb, torch.tensor(learned, dtype=torch.float32))
    torch.testing.assert_close(ngp.aabb, ours.aabb)
    assert ngp.bounded == ours.bounded == ("aabb_scale" not in keys)
    if "aabb_scale" in keys:
        centre = 0.5 * (box[0] + box[1])
        torch.testing.assert_close(ngp.outer, torch.tensor(centre + 4 * (box - centre), dtype=torch.float32))
    a, b = ngp.splits["train"], ours.splits["train"]
    assert a.file_paths == b.file_paths and a.intrinsics == b.intrinsics
    for i in range(len(a)):
        for x, y in zip(image_rays_of(a, i), image_rays_of(b, i), strict=True):
            torch.testing.assert_close(x, y)


def nerfstudio_json(ours: Path, out: Path, camera_model: str = "OPENCV") -> Path:
    """Our train split as nerfstudio's ``transforms.json`` (its documented format): camera model and size at the
    top, intrinsics per frame, poses in the saved world (OpenGL camera axes), the ``applied_transform`` that took
    the original data's world there."""
    data = json.loads(transforms_path(ours, "train").read_text())
    frames = [{"file_path": str((ours / fr["file_path"]).resolve()) + ".png",
               "transform_matrix": fr["transform_matrix"],
               "fl_x": data["fl_x"], "fl_y": data["fl_y"], "cx": data["cx"], "cy": data["cy"],
               "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0} for fr in data["frames"]]
    meta = {"camera_model": camera_model, "w": data["w"], "h": data["h"], "frames": frames,
            "applied_transform": [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


def test_nerfstudio_transforms_read_back_to_our_cameras(ball: Path, tmp_path: Path) -> None:
    ns = read_dataset(nerfstudio_json(ball, tmp_path / "ns"), splits=("train",))
    ours = read_dataset(ball, splits=("train",))
    assert ns.format == "nerfstudio" and ns.captured and ours.format == "ours" and not ours.captured
    a, b = ns.splits["train"], ours.splits["train"]
    keep = held_in(len(b.poses))
    np.testing.assert_allclose(a.poses, b.poses[keep], atol=1e-12)
    assert a.intrinsics == b.intrinsics and a.image_paths == [b.image_paths[k] for k in keep]
    assert ns.bounds.bounded and [i.choice for i in ns.inferred] == ["scene", "box"]  # transparent: bounded


def test_framing_box_is_instant_ngps_cube_of_a_colmap2nerf_capture() -> None:
    """Cameras on a tilted ring of radius r about c, each looking at c: colmap2nerf moves c to the origin and
    scales r to 4; instant-ngp reads that world at scale 0.33 and offset 0.5. Its unit cube, mapped back by
    ngp_box (instant-ngp's loader, read independently), is the framing box."""
    c, r = np.array([1.0, -2.0, 0.5]), 3.0
    poses = []
    for a in np.linspace(0.0, 2.0 * np.pi, 12, endpoint=False):
        eye = c + r * np.array([np.cos(a), np.sin(a), 0.4 * np.sin(2 * a)]) / np.linalg.norm([1.0, 0.4 * np.sin(2 * a)])
        back = (eye - c) / np.linalg.norm(eye - c)  # the camera looks down its -Z
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
        pose[:3, 3] = eye
        poses.append(pose)
    poses = np.stack(poses)
    np.testing.assert_allclose(focus_point(poses), c, atol=1e-9)
    scale = 0.33 * 4.0 / r  # world -> colmap2nerf (x 4 / r) -> instant-ngp's cube (x 0.33 + 0.5)
    np.testing.assert_allclose(framing_box(poses, c), ngp_box(scale, 0.5 - scale * c, None), atol=1e-9)
    assert framing_box(np.stack([np.eye(4)] * 3), np.zeros(3)) is None  # cameras at the centre: no size


def test_photographs_with_sparse_points_are_framed_by_their_cameras(shipped: dict[str, Path], tmp_path: Path) -> None:
    """An opaque nerfstudio capture with sparse points (garden, raytraced): unbounded, in the framing box of its
    cameras shrunk to the points inside it, not the points' box: the far points do not count, and too few points
    inside leave the cube as it is."""
    import open3d as o3d

    root = nerfstudio_json(shipped["garden"], tmp_path / "ns")
    meta = json.loads((root / "transforms.json").read_text())
    poses = read_dataset(root, splits=("train",)).splits["train"].poses
    cube = framing_box(poses, focus_point(poses))
    rng = np.random.default_rng(0)
    near = rng.uniform(cube[0] + 0.3 * (cube[1] - cube[0]), cube[1] - 0.4 * (cube[1] - cube[0]), size=(300, 3))
    far = cube[1] + rng.uniform(1.0, 50.0, size=(200, 3))
    few = near[: POINTS_MIN - 1]
    for pts, box in ((np.concatenate([near, far]), points_box(near, cube)[0]), (np.concatenate([few, far]), cube)):
        o3d.io.write_point_cloud(str(root / "sparse_pc.ply"), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)))
        (root / "transforms.json").write_text(json.dumps({**meta, "ply_file_path": "sparse_pc.ply"}))
        desc = read_dataset(root, splits=("train",))
        assert not desc.bounds.bounded and desc.captured
        np.testing.assert_allclose(desc.bounds.aabb, box, atol=1e-6)
        np.testing.assert_allclose(desc.points, pts, atol=1e-6)


def test_points_box_spans_the_points_inside_the_cube_padded() -> None:
    """Points filling a known box inside the cube [-2, 2]^3 (reaching past its +x face), and far ones outside it:
    the 2nd to 98th percentiles of those inside, padded by a quarter of the cube's side, kept inside the cube."""
    rng = np.random.default_rng(0)
    cube = np.array([[-2.0] * 3, [2.0] * 3])
    inside = rng.uniform([-1.0, -0.5, 0.0], [2.0, 0.5, 0.3], size=(20000, 3))
    far = rng.uniform(3.0, 100.0, size=(500, 3)) * rng.choice([-1.0, 1.0], size=(500, 3))
    box, count = points_box(np.concatenate([inside, far]), cube)
    assert count == len(inside)
    pad = 0.25 * 4.0
    expected = np.array([[-1.0 + 0.02 * 3.0 - pad, -0.5 + 0.02 - pad, 0.3 * 0.02 - pad],
                         [2.0, 0.5 - 0.02 + pad, 0.3 * 0.98 + pad]])
    np.testing.assert_allclose(box, expected, atol=0.01)
    assert points_box(inside[: POINTS_MIN - 1], cube) is None


@pytest.fixture(scope="module")
def garden_96(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The garden raytraced at 96x96, 48 views, with its exact distance maps."""
    from raytrace.dataset import settings_for, write_dataset
    from raytrace.scene import load_scene

    root = tmp_path_factory.mktemp("garden_96")
    scene = load_scene(SCENES / "garden.toml")
    write_dataset(scene, root, settings_for(scene, views=48, val=0, test=1, res=96, spp=1), progress=False)
    return root


def test_triangulated_points_lie_on_the_surfaces_and_shrink_the_cube(garden_96: Path, tmp_path: Path) -> None:
    """SIFT points of the garden's views triangulated with their known poses lie on the surfaces the exact distance
    maps show (most within 5 % of the distance, in some view: the rest are the mirror's and the glass's virtual
    images), and shrink its framing cube to the ground and the objects: the empty sky above and the space under
    the ground go to the contraction. Poses in other units give the same box in those units (within 5 % of its side)."""
    desc = read_dataset(garden_96, splits=("train",))
    split = desc.splits["train"]
    intr = split.intrinsics
    images = [read_rgba(p, split.source, f) for p, f in zip(split.image_paths, split.fields, strict=True)]
    points = triangulated_points(images, split.poses, [intr] * len(images))
    assert points is not None and len(points) >= 50
    on_surface = np.zeros(len(points), dtype=bool)
    frames = json.loads(transforms_path(garden_96, "train").read_text())["frames"]
    for frame, c2w in zip(frames, split.poses, strict=True):
        with np.load(garden_96 / frame["distance_path"]) as npz:
            distance = npz["distance"].reshape(intr.height, intr.width)
        cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
        z = np.maximum(-cam[:, 2], 1e-9)
        u, v = cam[:, 0] / z * intr.fx + intr.cx, -cam[:, 1] / z * intr.fy + intr.cy
        seen = np.flatnonzero((cam[:, 2] < 0) & (u >= 0) & (v >= 0) & (u < intr.width) & (v < intr.height))
        true = distance[v[seen].astype(int), u[seen].astype(int)]
        found = np.linalg.norm(points[seen] - c2w[:3, 3], axis=1)
        on_surface[seen[np.abs(true - found) < 0.05 * found]] = True
    assert on_surface.mean() >= 0.75, on_surface.mean()
    stripped = read_dataset(single_json(garden_96, tmp_path / "stripped", drop=OUR_KEYS, frame_drop=DEPTH_KEYS),
                            splits=("train",))
    poses, box = stripped.splits["train"].poses, stripped.bounds.aabb
    cube = framing_box(poses, focus_point(poses))
    assert "sparse points" in str(stripped.inferred[-1])
    unshrunk = read_dataset(stripped.root, splits=("train",), triangulate=False)
    np.testing.assert_allclose(unshrunk.bounds.aabb, cube, atol=1e-9)
    assert cube[0, 2] < box[0, 2] <= 0.0 and 1.2 <= box[1, 2] < cube[1, 2], (box, cube)  # ground 0, tops 1.2
    own = framing_box(split.poses, focus_point(split.poses))
    side = float(np.max(own[1] - own[0]))
    for k in (0.01, 100.0):  # the world's units do not matter: the points and their box scale with the poses
        scaled = split.poses.copy()
        scaled[:, :3, 3] *= k
        found = triangulated_points(images, scaled, [intr] * len(images))
        assert found is not None and abs(len(found) - len(points)) <= 0.1 * len(points)
        np.testing.assert_allclose(points_box(found, k * own)[0] / k, points_box(points, own)[0], atol=0.05 * side)


@pytest.mark.parametrize(("model", "field"), [("OPENCV_FISHEYE", "camera_model"), ("EQUIRECTANGULAR", "camera_model")])
def test_unsupported_camera_models_name_the_field(ball: Path, tmp_path: Path, model: str, field: str) -> None:
    with pytest.raises(InputError, match=f"transforms.json: {field}: "):
        read_dataset(nerfstudio_json(ball, tmp_path / "ns", camera_model=model))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Our four shipped scenes raytraced tiny: 24 views of 32x32, one sample per pixel."""
    from raytrace.dataset import settings_for, write_dataset
    from raytrace.scene import load_scene

    root = tmp_path_factory.mktemp("shipped")
    out = {}
    for name in ("object", "cornell", "whitted", "garden"):
        scene = load_scene(SCENES / f"{name}.toml")
        write_dataset(scene, root / name, settings_for(scene, views=24, val=0, test=1, res=32, spp=1),
                      progress=False)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["object", "cornell", "whitted", "garden"])
def test_inferred_bounds_match_our_keys(shipped: dict[str, Path], tmp_path: Path, name: str) -> None:
    """With our keys (and every depth map) stripped, the inference finds what the keys say: bounded or not exactly;
    a box that holds the true one (within 2 % of its size: the visual hull's grid cells) and is not much larger.

    Not much larger: a bounded scene's box holds at most twice the true volume and its longest side is at most 1.6
    times the true one (a rig on the upper hemisphere never sees under the object, so the hull reaches below it by
    up to half its height). An unbounded scene's inner box is instant-ngp's cube of its cameras (framing_box),
    shrunk to the sparse points inside it where enough are found (few in these 32-pixel views): it lies about the
    true box's centre (within a quarter of the true box's longest side) and its longest side is within a factor of
    2 of the true box's."""
    truth = read_dataset(shipped[name], splits=("train",))
    stripped = single_json(shipped[name], tmp_path / name, drop=OUR_KEYS, frame_drop=DEPTH_KEYS)
    desc = read_dataset(stripped, splits=("train",))
    assert desc.bounds.bounded == truth.bounds.bounded
    assert [i.choice for i in desc.inferred] == ["scene", "box"]
    box, true = desc.bounds.aabb, truth.bounds.aabb
    size = float(np.max(true[1] - true[0]))
    if desc.bounds.bounded:
        slack = 0.02 * size
        assert (box[0] <= true[0] + slack).all() and (box[1] >= true[1] - slack).all(), (box, true)
        assert np.prod(box[1] - box[0]) <= 2.0 * np.prod(true[1] - true[0]), (box, true)
        assert np.max(box[1] - box[0]) <= 1.6 * size, (box, true)
    else:
        offset = np.abs(0.5 * (box[0] + box[1]) - 0.5 * (true[0] + true[1])).max()
        assert offset <= 0.25 * size and 0.5 * size <= np.max(box[1] - box[0]) <= 2.0 * size, (box, true)


@pytest.mark.parametrize("drop", [(), (*OUR_KEYS, "depth_path")], ids=["stated", "inferred"])
def test_world_units_do_not_matter(ball: Path, tmp_path: Path, drop: tuple[str, ...]) -> None:
    """Poses, bounds and depth scaled by 0.01 and by 100 give the same rays and depth relative to the box (the box
    stated, or inferred from the cameras and images)."""
    normalised = []
    for k in (0.01, 1.0, 100.0):
        exact = ("distance_path", "normal_path", "depth_file_path")  # depth from the z-depth PNGs at every scale
        ds = load_dataset(dataset_copy(ball, tmp_path / f"k{k}", k, (*drop, *exact)), splits=("train",))
        centre, size = ds.aabb.mean(dim=0), float((ds.aabb[1] - ds.aabb[0]).max())
        split = ds.splits["train"]
        o, d = image_rays_of(split, 3)
        depth = None if split.depths is None else split.depths / size
        normalised.append(((ds.aabb - centre) / size, (o - centre) / size, d, depth))
    for other in normalised[::2]:
        for x, y in zip(normalised[1], other, strict=True):
            if x is not None:
                torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4)
