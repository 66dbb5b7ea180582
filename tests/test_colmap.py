"""COLMAP sparse models: text and binary read equal, a dataset written as a model gives back the same rays,
the loader's splits and normalisation, and malformed files fail with one line naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from nerf.config import TrainConfig
from nerf.data import image_rays_of, load_dataset
from nerf.train import new_run_dir
from raytrace.bounds import focus_point, framing_box, points_box
from raytrace.camera import c2w_to_colmap
from raytrace.cli import run
from raytrace.colmap import ColmapImage, ColmapModel, find_model, read_model, write_model
from raytrace.errors import InputError

from .conftest import SCENE
from .test_distortion import CAMERAS
from .test_fuzz_inputs import FUZZ, loads_or_fails_cleanly, mutate_bytes


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset of the test ball (12 views, 16x16) written with ``raytrace --colmap``."""
    root = tmp_path_factory.mktemp("colmap")
    (root / "ball.toml").write_text(SCENE)
    run([str(root / "ball.toml"), "-o", str(root / "ball"), "--res", "16", "--views", "9", "--val", "1",
         "--test", "2", "--colmap", "--quiet"])
    return root / "ball"


def assert_models_equal(a: ColmapModel, b: ColmapModel) -> None:
    assert a.cameras == b.cameras
    assert a.images.keys() == b.images.keys()
    for k, im in a.images.items():
        other = b.images[k]
        assert (im.name, im.camera_id) == (other.name, other.camera_id)
        for f in ("qvec", "tvec", "xys", "point3d_ids"):
            assert np.array_equal(getattr(im, f), getattr(other, f)), f
    for f in ("point_ids", "xyz", "rgb", "errors"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert len(a.tracks) == len(b.tracks)
    assert all(np.array_equal(x, y) for x, y in zip(a.tracks, b.tracks, strict=True))


def synthetic_model() -> ColmapModel:
    """Every supported camera model, an image per camera, three points with tracks."""
    rng = np.random.default_rng(0)
    images = {}
    for i, cam in enumerate(CAMERAS, start=1):
        q = rng.normal(size=4)
        images[i] = ColmapImage(i, q / np.linalg.norm(q), rng.normal(size=3), cam.camera_id, f"img {i}.jpg",
                                rng.uniform(0, 40, size=(2, 2)), np.array([1, -1]))
    return ColmapModel({c.camera_id: c for c in CAMERAS}, images, np.array([1, 2, 7]), rng.normal(size=(3, 3)),
                       np.array([[1, 2, 3], [4, 5, 6], [255, 0, 9]], np.uint8), np.array([0.5, 1.0, 0.25]),
                       [np.array([[1, 0]]), np.zeros((0, 2), np.int64), np.array([[2, 1], [3, 0]])])


def test_text_and_binary_read_equal(tmp_path: Path, data: Path) -> None:
    for i, model in enumerate([synthetic_model(), read_model(data / "sparse" / "0")]):
        write_model(model, tmp_path / f"text{i}")
        write_model(model, tmp_path / f"bin{i}", binary=True)
        text, binary = read_model(tmp_path / f"text{i}"), read_model(tmp_path / f"bin{i}")
        assert_models_equal(text, binary)
        assert_models_equal(model, text)


def test_round_trip_rays_equal_the_json_rays(data: Path) -> None:
    """Rays from the COLMAP model, with its normalisation undone, equal the rays from our JSON."""
    ours = load_dataset(data)
    colmap = load_dataset(data / "sparse" / "0")
    sim = colmap.world_transform.double()
    scale = sim[:3, 0].norm()
    rot, shift = sim[:3, :3] / scale, sim[:3, 3]
    by_file = {f: (split, k) for split in ours.splits.values() for k, f in enumerate(split.file_paths)}
    compared = 0
    for split in colmap.splits.values():
        for k, f in enumerate(split.file_paths):
            o, d = (x.double() for x in image_rays_of(split, k))
            o_ours, d_ours = image_rays_of(*by_file[f])
            assert torch.allclose((o - shift) @ rot / scale, o_ours.double(), atol=1e-5, rtol=0)
            assert torch.allclose(d @ rot, d_ours.double(), atol=1e-5, rtol=0)
            assert torch.equal(split.images[k], by_file[f][0].images[by_file[f][1]])
            compared += 1
    assert compared == 14  # 12 train, val and test images; two held out appear in val and in test


def test_loader_splits_bounds_and_up(data: Path) -> None:
    ds = load_dataset(data / "sparse" / "0")
    names = sorted(str(p) for split in ds.splits.values() for p in split.file_paths)
    all_names = sorted({*names})
    assert len(all_names) == 12
    held = all_names[::8]  # sorted by name, 0 and 8 held out, as mip-NeRF 360
    assert sorted(ds.splits["test"].file_paths) == held == sorted(ds.splits["val"].file_paths)
    assert len(ds.splits["train"]) == 10 and not set(held) & set(ds.splits["train"].file_paths)
    assert ds.bounded is False and ds.scene_file is None
    # The scene box is instant-ngp's cube as colmap2nerf frames the cameras, shrunk to the model's points inside it;
    # the middle 90% of the surface points of the ball spans [-1, 1] on its longest axis, centred.
    poses = torch.cat([ds.splits["train"].poses, ds.splits["test"].poses]).double().numpy()
    model = read_model(data / "sparse" / "0")
    pts = torch.tensor(model.xyz) @ ds.world_transform[:3, :3].double().T + ds.world_transform[:3, 3].double()
    shrunk = points_box(pts.numpy(), framing_box(poses, focus_point(poses)))
    assert shrunk is not None and torch.allclose(ds.aabb.double(), torch.tensor(shrunk[0]), atol=1e-5)
    lo, hi = torch.quantile(pts, 0.05, dim=0), torch.quantile(pts, 0.95, dim=0)
    assert torch.allclose((hi - lo).amax(), torch.tensor(2.0, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(lo + hi, torch.zeros(3, dtype=torch.float64), atol=1e-4)
    # Cameras of a hemisphere rig above the ball stay above it: world +Z is up. Rotations stay rotations.
    poses = ds.splits["train"].poses
    assert (poses[:, 2, 3] > 0).all()
    rot = poses[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(10, 3, 3), atol=1e-5)
    assert find_model(data) == find_model(data / "sparse" / "0") == (data / "sparse" / "0", data)
    assert find_model(data / "train") is None


def test_world_is_turned_z_up(tmp_path: Path, data: Path) -> None:
    """A model whose world has its up along -Y (as COLMAP's often has) loads with the cameras' mean up along +Z."""
    model = read_model(data / "sparse" / "0")
    turn = np.eye(4)
    turn[:3, :3] = Rotation.from_euler("x", 90, degrees=True).as_matrix()  # +Z to -Y
    for im in model.images.values():
        im.qvec, im.tvec = c2w_to_colmap(turn @ im.c2w())
    model.xyz = model.xyz @ turn[:3, :3].T
    write_model(model, tmp_path / "sparse" / "0")
    for split in ("train", "val", "test"):
        shutil.copytree(data / split, tmp_path / split)
    ds = load_dataset(tmp_path)
    up = torch.cat([ds.splits["train"].poses, ds.splits["test"].poses])[:, :3, 1].mean(0)  # every image once
    assert torch.allclose(up / up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert (ds.splits["train"].poses[:, 2, 3] > 0).all()


def test_dataset_folder_with_sparse_and_images(tmp_path: Path, data: Path) -> None:
    """``DATA/sparse/0`` + ``DATA/images/``: the layout COLMAP makes; ``DATA`` or its model folder load alike."""
    root = tmp_path / "scan"
    model = read_model(data / "sparse" / "0")
    for im in model.images.values():
        flat = im.name.replace("/", "_")
        (root / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(data / im.name, root / "images" / flat)
        im.name = flat
    write_model(model, root / "sparse" / "0", binary=True)
    assert find_model(root) == (root / "sparse" / "0", root / "images")
    a, b = load_dataset(root, downscale=2), load_dataset(root / "sparse" / "0", downscale=2)
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert a.splits["train"].images.shape[1:] == (8, 8, 4)
    assert a.splits["train"].intrinsics.width == 8


@pytest.mark.parametrize(("file", "line", "replace", "message"), [
    ("cameras.txt", 1, "1 OPENCV_FISHEYE 16 16 1 2 3 4 5 6 7 8", "cameras.txt: line 2: model: unsupported camera"),
    ("cameras.txt", 1, "1 PINHOLE 16 16 1 2 3", "cameras.txt: line 2: params: PINHOLE has 4 parameters, got 3"),
    ("cameras.txt", 1, "1 PINHOLE 16 sixteen 1 2 3 4", "cameras.txt: line 2: HEIGHT: expected an integer"),
    ("cameras.txt", 1, "1 PINHOLE 16 16 0 2 3 4", "cameras.txt: line 2: params: focal lengths must be > 0"),
    ("images.txt", 2, "1 1 0 0 0 0 0 0 9 train/r_0.png", "CAMERA_ID: camera 9 is not in cameras.txt"),
    ("images.txt", 2, "1 1 0 0 nan 0 0 0 1 train/r_0.png", "images.txt: line 3: QZ: expected a finite number"),
    ("images.txt", 2, "1 0 0 0 0 0 0 0 1 train/r_0.png", "images.txt: line 3: QW QX QY QZ: the rotation"),
    ("images.txt", 3, "0.5 0.5", "images.txt: line 4: expected POINTS2D[] as (X, Y, POINT3D_ID) triples"),
    ("points3D.txt", 1, "1 0 0 0 300 0 0 0", "points3D.txt: line 2: R G B: colours must lie in 0..255"),
])
def test_malformed_text_files_name_file_and_line(tmp_path: Path, data: Path, file: str, line: int, replace: str,
                                                 message: str) -> None:
    model_dir = tmp_path / "sparse" / "0"
    shutil.copytree(data / "sparse" / "0", model_dir)
    lines = (model_dir / file).read_text().splitlines()
    lines[line] = replace
    (model_dir / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        read_model(model_dir)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_images_of_several_cameras_are_refused(tmp_path: Path, data: Path) -> None:
    model = read_model(data / "sparse" / "0")
    cam = model.cameras[1]
    model.cameras[2] = type(cam)(2, cam.model, cam.width, cam.height, cam.params)
    model.images[3].camera_id = 2
    write_model(model, tmp_path)
    for im in model.images.values():
        (tmp_path / im.name).parent.mkdir(exist_ok=True)
        shutil.copy(data / im.name, tmp_path / im.name)
    with pytest.raises(InputError, match=r"images\.txt: CAMERA_ID: the images use 2 cameras"):
        load_dataset(tmp_path)


def test_truncated_binary_names_the_record(tmp_path: Path, data: Path) -> None:
    write_model(read_model(data / "sparse" / "0"), tmp_path, binary=True)
    raw = (tmp_path / "images.bin").read_bytes()
    (tmp_path / "images.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"images.bin: image record \d+: "):
        read_model(tmp_path)


# ---- fuzzing ---------------------------------------------------------------------------------------------------

TOKENS = st.sampled_from(["", "0", "-1", "1", "2", "99", "1e400", "nan", "inf", "-0.5", "abc", "PINHOLE", "OPENCV",
                          "FOV", "RADIAL", "train/r_0.png", "4294967296", "3.5", "#"]) | st.text(max_size=6)


def mutate_text(text: str, data: st.DataObject) -> str:
    """``text`` with a token replaced, deleted or inserted, or a line deleted or duplicated."""
    lines = text.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    tokens = lines[i].split(" ")
    op = data.draw(st.sampled_from(["replace", "delete", "insert", "drop line", "duplicate line"]))
    j = data.draw(st.integers(0, max(0, len(tokens) - 1)))
    if op == "replace":
        tokens[j] = data.draw(TOKENS)
    elif op == "delete":
        del tokens[j]
    elif op == "insert":
        tokens.insert(j, data.draw(TOKENS))
    elif op == "drop line":
        return "\n".join(lines[:i] + lines[i + 1 :])
    else:
        return "\n".join(lines[: i + 1] + lines[i:])
    lines[i] = " ".join(tokens)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fuzz_root(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colmap_fuzz") / "ball"
    shutil.copytree(data, root)
    write_model(read_model(data / "sparse" / "0"), root / "binary", binary=True)
    return root


@FUZZ
@given(data=st.data())
def test_mutated_text_models_load_or_fail_cleanly(fuzz_root: Path, data: st.DataObject) -> None:
    source, model = fuzz_root / "sparse" / "0", fuzz_root / "sparse" / "fuzz"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(source, model)
    name = data.draw(st.sampled_from(["cameras.txt", "images.txt", "points3D.txt"]))
    (model / name).write_text(mutate_text((source / name).read_text(), data))
    loads_or_fails_cleanly(load_dataset, model)


@FUZZ
@given(data=st.data())
def test_damaged_binary_models_load_or_fail_cleanly(fuzz_root: Path, data: st.DataObject) -> None:
    source, model = fuzz_root / "binary", fuzz_root / "sparse" / "fuzzbin"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(source, model)
    name = data.draw(st.sampled_from(["cameras.bin", "images.bin", "points3D.bin"]))
    (model / name).write_bytes(mutate_bytes((source / name).read_bytes(), data))
    loads_or_fails_cleanly(load_dataset, model)


@pytest.mark.parametrize("given", ["", "sparse", "sparse/0"])
def test_runs_are_named_after_the_dataset_folder(tmp_path: Path, data: Path, given: str) -> None:
    """``nerf-train DATA/sparse/0`` writes under ``runs/DATA/``, as ``nerf-train DATA`` does."""
    run_dir = new_run_dir(TrainConfig(data=str(data / given), out=str(tmp_path)))
    assert run_dir.parent == tmp_path / data.name
