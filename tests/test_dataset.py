"""The dataset writer: rig poses, the NeRF-synthetic layout, analytic depth, restarts, parallel runs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import raytrace.dataset as ds
import raytrace.frames as frames
from raytrace.camera import Intrinsics, image_rays, z_per_distance
from raytrace.dataset_format import SPLITS, read_transforms, resolve_image, transforms_path, write_transforms
from raytrace.errors import InputError
from raytrace.scene import CameraRig, load_scene

CENTRE = (0.1, -0.2, 0.3)
RADIUS = 1.0
RIG_RADIUS = 4.0
COUNTS = {"train": 3, "val": 2, "test": 2}
Tiny = tuple[Path, Path, ds.DatasetSummary]

SPHERE_SCENE = f"""
[render]
background = "transparent"
spp = 1

[camera]
layout = "hemisphere"
radius = {RIG_RADIUS}
target = {list(CENTRE)}
fov = 40
width = 17
height = 17
seed = 7
views = {{ train = {COUNTS["train"]}, val = {COUNTS["val"]}, test = {COUNTS["test"]} }}

[materials.red]
type = "diffuse"
color = [0.8, 0.2, 0.2]

[[objects]]
type = "sphere"
center = {list(CENTRE)}
radius = {RADIUS}
material = "red"

[[lights]]
type = "point"
position = [3.0, 3.0, 5.0]
intensity = 30.0
"""


def write_scene(folder: Path, text: str = SPHERE_SCENE, name: str = "sphere.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def render(scene_path: Path, out: Path, normals: bool = True, **kw) -> ds.DatasetSummary:
    scene = load_scene(scene_path)
    return ds.write_dataset(scene, out, ds.settings_for(scene, normals=normals), progress=False, **kw)


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """The sphere scene rendered once at 17x17, 3/2/2 views: (scene file, dataset folder, summary)."""
    root = tmp_path_factory.mktemp("tiny")
    scene_path = write_scene(root / "scene")
    out = root / "data"
    return scene_path, out, render(scene_path, out)


def test_rig_poses_look_at_the_target_from_the_rig_radius() -> None:
    rig = CameraRig("hemisphere", 2.5, (0.5, -1.0, 0.25), 45.0, 8, 8, 3, {"train": 40, "val": 5, "test": 5})
    poses = ds.rig_poses(rig, rig.views)
    target = np.array(rig.target)
    for split in SPLITS:
        m = poses[split]
        assert m.shape == (rig.views[split], 4, 4)
        rot, pos = m[:, :3, :3], m[:, :3, 3]
        eye = np.broadcast_to(np.eye(3), rot.shape)
        np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, eye, atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
        np.testing.assert_allclose(m[:, 3], np.broadcast_to([0, 0, 0, 1], (len(m), 4)))
        np.testing.assert_allclose(np.linalg.norm(pos - target, axis=1), rig.radius, rtol=1e-12)
        to_target = (target - pos) / np.linalg.norm(target - pos, axis=1, keepdims=True)
        np.testing.assert_allclose(-rot[:, :, 2], to_target, atol=1e-12)  # OpenGL: the camera looks down -Z
        np.testing.assert_allclose(rot[:, 2, 0], 0.0, atol=1e-12)  # no roll: camera +X horizontal (Z-up)
        assert (rot[:, 2, 1] >= 0).all()  # camera +Y points up
        assert (pos[:, 2] >= target[2]).all()  # upper hemisphere
    full = ds.rig_poses(dataclasses.replace(rig, layout="sphere"), rig.views)["train"]
    assert (full[:, 2, 3] < target[2]).any()


def test_rig_poses_are_deterministic_per_seed() -> None:
    rig = CameraRig("sphere", 1.0, (0.0, 0.0, 0.0), 45.0, 8, 8, 11, {"train": 4, "val": 2, "test": 2})
    a, b = ds.rig_poses(rig, rig.views), ds.rig_poses(rig, rig.views)
    for split in SPLITS:
        np.testing.assert_array_equal(a[split], b[split])
    more_test = ds.rig_poses(rig, {"train": 4, "val": 2, "test": 5})  # splits drawn train, val, test
    np.testing.assert_array_equal(more_test["train"], a["train"])
    np.testing.assert_array_equal(more_test["test"][:2], a["test"])
    other = ds.rig_poses(dataclasses.replace(rig, seed=12), rig.views)
    assert not np.allclose(other["train"], a["train"])
    assert len({tuple(p[:3, 3]) for s in SPLITS for p in a[s]}) == 8  # every view distinct


def test_settings_overrides_scale_val_and_test(tmp_path: Path) -> None:
    scene = load_scene(write_scene(tmp_path, SPHERE_SCENE.replace("height = 17", "height = 9")))
    s = ds.settings_for(scene)
    assert (s.width, s.height, s.spp, s.counts) == (17, 9, 1, COUNTS)
    s = ds.settings_for(scene, views=6, res=34, spp=3)
    assert (s.width, s.height, s.spp, s.counts) == (34, 18, 3, {"train": 6, "val": 4, "test": 4})
    s = ds.settings_for(scene, views=1, test=0)
    assert s.counts == {"train": 1, "val": 1, "test": 0}


def test_dataset_layout_and_json(tiny: Tiny, tmp_path: Path) -> None:
    scene_path, out, summary = tiny
    scene = load_scene(scene_path)
    assert (summary.rendered, summary.skipped, summary.counts) == (7, 0, COUNTS)
    poses = ds.rig_poses(scene.rig, COUNTS)
    for split in SPLITS:
        path = transforms_path(out, split)
        t = read_transforms(path)
        write_transforms(tmp_path / "again.json", t)
        assert (tmp_path / "again.json").read_text() == path.read_text()  # read -> write is identical
        assert read_transforms(tmp_path / "again.json").to_json() == t.to_json()
        assert t.camera_angle_x == pytest.approx(math.radians(40.0), rel=1e-12)
        assert (t.w, t.h) == (17, 17)
        focal = 0.5 * 17 / math.tan(0.5 * t.camera_angle_x)
        assert t.fl_x == pytest.approx(focal, rel=1e-12) and t.fl_y == pytest.approx(focal, rel=1e-12)
        assert (t.cx, t.cy) == (8.5, 8.5)
        np.testing.assert_array_equal(t.aabb, scene.bounds)
        assert t.scene == "scene.toml"
        assert len(t.frames) == COUNTS[split]
        for i, fr in enumerate(t.frames):
            assert fr.file_path == f"./{split}/r_{i}" and Path(fr.file_path).suffix == ""
            np.testing.assert_allclose(fr.transform_matrix, poses[split][i], rtol=0, atol=1e-12)
            img_path = resolve_image(out, fr.file_path, path, "file_path")
            assert img_path == (out / split / f"r_{i}.png").resolve()
            img = iio.imread(img_path)
            assert img.dtype == np.uint8 and img.shape == (17, 17, 4)
            assert 0 < (img[..., 3] > 0).sum() < 17 * 17  # the sphere covers part of the image
            assert fr.depth_path == fr.depth_file_path == f"./{split}/r_{i}_depth.png"
            z = iio.imread(out / fr.depth_path)
            assert z.dtype == np.uint16 and z.shape == (17, 17)
            distance, normal = np.load(out / fr.distance_path)["distance"], np.load(out / fr.normal_path)["normal"]
            assert distance.dtype == np.float32 and distance.shape == (17, 17)
            assert normal.dtype == np.float16 and normal.shape == (17, 17, 3)
        data = json.loads(path.read_text())
        assert "scene_aabb" in data and "aabb" not in data  # instant-ngp would rescale the scene by `aabb`
        assert data["integer_depth_scale"] == data["depth_unit_scale_factor"] == frames.DEPTH_UNIT
    copied = load_scene(out / "scene.toml")
    assert (out / "scene.toml").read_bytes() == scene_path.read_bytes()
    np.testing.assert_array_equal(copied.bounds, scene.bounds)


def test_depth_and_normals_match_the_analytic_sphere(tiny: Tiny) -> None:
    _, out, _ = tiny
    c = torch.tensor(CENTRE, dtype=torch.float64)
    for split in SPLITS:
        t = read_transforms(transforms_path(out, split))
        intr = Intrinsics.from_fov(17, 17, t.camera_angle_x)
        for fr in t.frames:
            c2w = torch.from_numpy(fr.transform_matrix)
            o, d = image_rays(c2w, intr)
            oc = o - c
            b = (oc * d).sum(-1)
            disc = b * b - ((oc * oc).sum(-1) - RADIUS**2)
            t_hit = -b - disc.clamp(min=0).sqrt()
            depth = torch.from_numpy(np.load(out / fr.distance_path)["distance"]).reshape(-1).double()
            normal = torch.from_numpy(np.load(out / fr.normal_path)["normal"]).reshape(-1, 3).double()
            z = torch.from_numpy(iio.imread(out / fr.depth_path).astype(np.float64)).reshape(-1) * t.integer_depth_scale
            z_true = t_hit * z_per_distance(intr).reshape(-1).double()
            alpha = torch.from_numpy(iio.imread(out / f"{fr.file_path}.png")[..., 3]).reshape(-1)
            # Odd size: the centre pixel's ray is the camera axis, through the sphere's centre.
            assert depth[8 * 17 + 8].item() == pytest.approx(RIG_RADIUS - RADIUS, abs=1e-4)
            hit = disc > 1e-3  # rays grazing the silhouette are left out of the exact comparison
            miss = disc < -1e-3
            torch.testing.assert_close(depth[hit], t_hit[hit], atol=1e-4, rtol=0)
            torch.testing.assert_close(z[hit], z_true[hit], atol=0.5 * t.integer_depth_scale + 1e-4, rtol=0)
            assert (depth[miss] == 0).all() and (z[miss] == 0).all()
            assert (alpha[miss] == 0).all() and (alpha[hit] > 0).all()
            n_true = (o[hit] + t_hit[hit, None] * d[hit] - c) / RADIUS
            torch.testing.assert_close(normal[hit], n_true, atol=2e-3, rtol=0)  # float16
            assert (normal[miss] == 0).all()


def test_two_workers_write_the_same_bytes(tiny: Tiny, tmp_path: Path) -> None:
    scene_path, out, _ = tiny
    summary = render(scene_path, tmp_path / "par", workers=2)
    assert summary.rendered == 7
    assert all_files(tmp_path / "par") == all_files(out)


def test_rerun_renders_only_missing_frames(tiny: Tiny, tmp_path: Path) -> None:
    scene_path, out, _ = tiny
    work = tmp_path / "data"
    shutil.copytree(out, work)
    (work / "train" / "r_1.png").unlink()
    (work / "test" / "r_0_normal.npz").unlink()
    transforms_path(work, "val").unlink()
    summary = render(scene_path, work)
    assert (summary.rendered, summary.skipped) == (2, 5)
    assert all_files(work) == all_files(out)
    assert render(scene_path, work).rendered == 0  # complete: nothing to do


def test_changed_scene_or_settings_rerender_everything(
    tiny: Tiny, tmp_path: Path
) -> None:
    scene_path, out, _ = tiny
    work = tmp_path / "data"
    shutil.copytree(out, work)
    scene = load_scene(scene_path)
    s = ds.write_dataset(scene, work, ds.settings_for(scene, res=9), progress=False)
    assert (s.rendered, s.skipped) == (7, 0)
    assert iio.imread(work / "train" / "r_0.png").shape == (9, 9, 4)
    changed = write_scene(tmp_path / "scene", SPHERE_SCENE.replace("[0.8, 0.2, 0.2]", "[0.2, 0.8, 0.2]"))
    s = render(changed, work)
    assert (s.rendered, s.skipped) == (7, 0)
    img = iio.imread(work / "train" / "r_0.png")
    assert img.shape == (17, 17, 4)
    lit = img[..., 3] == 255
    assert (img[lit][:, 1] >= img[lit][:, 0]).all()  # green now
    assert (work / "scene.toml").read_text() == changed.read_text()


def test_failure_mid_run_leaves_no_transforms(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene_path, out, _ = tiny
    real = frames.render_image
    calls = []

    def failing(*args, **kwargs):
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(frames, "render_image", failing)
    work = tmp_path / "data"
    with pytest.raises(RuntimeError, match="simulated crash"):
        render(scene_path, work)
    assert not list(work.glob("transforms_*.json"))
    assert len(list(work.rglob("r_*_distance.npz"))) == 3
    assert not list(work.rglob("*.tmp*"))
    # Over a complete dataset too: a crashed rerun removes the JSONs before rendering anything.
    shutil.rmtree(work)
    shutil.copytree(out, work)
    (work / "val" / "r_1.png").unlink()
    calls[:] = [1, 1, 1]
    with pytest.raises(RuntimeError, match="simulated crash"):
        render(scene_path, work)
    assert not list(work.glob("transforms_*.json"))
    monkeypatch.setattr(frames, "render_image", real)
    s = render(scene_path, work)
    assert (s.rendered, s.skipped) == (1, 6)
    assert all_files(work) == all_files(out)


def test_referenced_files_are_copied_so_the_copy_loads(tmp_path: Path) -> None:
    folder = tmp_path / "scene"
    (folder / "textures").mkdir(parents=True)
    texture = np.zeros((4, 4, 3), np.uint8)
    texture[::2, ::2] = 255
    iio.imwrite(folder / "textures" / "check.png", texture)
    text = SPHERE_SCENE.replace('color = [0.8, 0.2, 0.2]', 'texture = "textures/check.png"')
    text = text.replace("train = 3, val = 2, test = 2", "train = 1, val = 0, test = 0")
    scene_path = write_scene(folder, text)
    render(scene_path, tmp_path / "data")
    copy = tmp_path / "data" / "textures" / "check.png"
    assert copy.read_bytes() == (folder / "textures" / "check.png").read_bytes()
    shutil.rmtree(folder)
    copied = load_scene(tmp_path / "data" / "scene.toml")
    assert copied.materials["red"].texture is not None


def test_referenced_file_outside_the_scene_folder_is_refused_before_writing(tmp_path: Path) -> None:
    iio.imwrite(tmp_path / "check.png", np.zeros((2, 2, 3), np.uint8))
    text = SPHERE_SCENE.replace('color = [0.8, 0.2, 0.2]', 'texture = "../check.png"')
    scene_path = write_scene(tmp_path / "scene", text)
    with pytest.raises(InputError, match="outside the scene's folder"):
        render(scene_path, tmp_path / "data")
    assert not (tmp_path / "data").exists()
