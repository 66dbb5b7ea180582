"""``nerf-process`` (photos or a video into a dataset) on a raytraced, textured scene whose poses are known
exactly: registered images and camera centres after a similarity alignment; the one-line failures; reruns;
and the pieces (instant-ngp's normalisation, aabb_scale, frame selection, alignment) on analytic cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf.data import load_dataset
from raytrace.camera import Intrinsics, look_at
from raytrace.capture.align import centre_errors, similarity
from raytrace.capture.cli import main
from raytrace.capture.frames import downscale, extract_frames, sharpness
from raytrace.capture.ngp import aabb_scale_for, closest_point_to_axes, ngp_normalization
from raytrace.dataset_format import read_transforms

RADIUS = 4.0
VIEWS = 24
SIZE = 256
SCENE = """
[render]
background = "transparent"
ambient = [0.4, 0.4, 0.4]
max_depth = 1
spp = 4
[camera]
radius = 4.0
fov = 40.0
width = 64
height = 64
[materials.noise]
type = "diffuse"
texture = { path = "noise.png", scale = [1.0, 1.0] }
[[objects]]
name = "slab"
type = "mesh"
shape = "box"
params = { width = 2.4, height = 2.4, depth = 0.2, map_texture_to_each_face = true }
translate = [-1.2, -1.2, -0.9]
material = "noise"
[[objects]]
name = "block"
type = "mesh"
shape = "box"
params = { width = 0.9, height = 0.9, depth = 0.9, map_texture_to_each_face = true }
translate = [-0.45, -0.45, -0.7]
rotate = [0.0, 0.0, 25.0]
material = "noise"
[[lights]]
name = "key"
type = "directional"
direction = [-0.4, 0.5, -1.0]
intensity = 1.5
"""


def ring_poses(n: int) -> np.ndarray:
    """``(n, 4, 4)`` cameras on a wavy ring of radius :data:`RADIUS` around the origin, looking at it."""
    poses = []
    for i in range(n):
        az = 2.0 * math.pi * i / n
        el = math.radians(35.0 + 12.0 * math.sin(3.0 * az))
        eye = RADIUS * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        poses.append(look_at(eye, np.zeros(3)))
    return np.stack(poses)


@pytest.fixture(scope="session")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """``(folder of VIEWS photos v000.png ..., their true poses (VIEWS, 4, 4))`` of a scene textured with
    multi-scale colour noise (what SIFT needs), composited over black."""
    from skimage.transform import resize

    from raytrace.render import render_image
    from raytrace.scene import load_scene

    root = tmp_path_factory.mktemp("capture")
    rng = np.random.default_rng(0)
    tex = sum(resize(rng.random((s, s, 3)), (512, 512, 3), order=3) for s in (4, 8, 16, 32, 64))
    iio.imwrite(root / "noise.png", ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8))
    (root / "scene.toml").write_text(SCENE)
    scene = load_scene(root / "scene.toml")
    photos = root / "photos"
    photos.mkdir()
    poses = ring_poses(VIEWS)
    intr = Intrinsics.from_fov(SIZE, SIZE, math.radians(40.0))
    for i, c2w in enumerate(poses):
        rgba = render_image(scene, torch.tensor(c2w), intr).rgba
        iio.imwrite(photos / f"v{i:03d}.png", ((rgba[..., :3] * rgba[..., 3:]).numpy() * 255 + 0.5).astype(np.uint8))
    return photos, poses


def check_dataset(out: Path, poses: np.ndarray, names: list[str]) -> None:
    """>= 95% of the views registered, centres within 1% of the rig radius after a similarity alignment, the
    files instant-ngp and nerfstudio read in place."""
    t = read_transforms(out / "transforms.json")
    data = json.loads((out / "transforms.json").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2", "aabb_scale"} <= set(data)
    assert data["aabb_scale"] in (1, 2, 4, 8, 16, 32, 64, 128)
    assert len(t.frames) >= 0.95 * len(names)
    index = {f"images/{n}": i for i, n in enumerate(names)}
    est = np.stack([fr.transform_matrix[:3, 3] for fr in t.frames])
    true = poses[[index[fr.file_path] for fr in t.frames], :3, 3]
    err = centre_errors(est, true) / RADIUS
    assert err.max() < 0.01, f"centre errors (fraction of the rig radius): median {np.median(err)}, max {err.max()}"
    # instant-ngp's normalisation: mean camera distance 4, cameras' up turned to +Z
    assert np.linalg.norm(est, axis=1).mean() == pytest.approx(4.0, rel=0.05)
    assert np.stack([fr.transform_matrix[:3, 1] for fr in t.frames]).sum(axis=0)[2] > 0.5 * len(t.frames)
    for fr in t.frames:
        full = iio.imread(out / fr.file_path)
        for f in (2, 4, 8):
            assert iio.imread(out / f"images_{f}" / Path(fr.file_path).name).shape[:2] == \
                (full.shape[0] // f, full.shape[1] // f)
    assert {p.name for p in (out / "sparse" / "0").iterdir()} >= {"cameras.bin", "images.bin", "points3D.bin"}


@pytest.mark.slow
def test_photos_recover_known_poses(capture, tmp_path, capsys):
    photos, poses = capture
    out = tmp_path / "ds"
    assert main([str(photos), "-o", str(out)]) == 0
    first = capsys.readouterr().out
    assert f"{VIEWS}/{VIEWS} images registered" in first.splitlines()[-2]
    names = sorted(p.name for p in photos.iterdir())
    assert sorted(p.name for p in (out / "images").iterdir()) == names  # photos keep their names
    check_dataset(out, poses, names)
    dataset = load_dataset(out, splits=("train", "test"), downscale=2)  # what nerf-train reads
    assert len(dataset.splits["train"]) + len(dataset.splits["test"]) == VIEWS
    assert dataset.splits["train"].intrinsics.width == SIZE // 2
    before = (out / "transforms.json").read_bytes()
    assert main([str(photos), "-o", str(out)]) == 0  # a rerun skips every stage
    rerun = capsys.readouterr().out
    assert "SfM: complete" in rerun and "images: complete" in rerun and "downscaled copies: complete" in rerun
    assert (out / "transforms.json").read_bytes() == before


@pytest.mark.slow
def test_video_recovers_known_poses(capture, tmp_path):
    photos, poses = capture
    video = tmp_path / "orbit.mp4"
    frames = [iio.imread(p) for p in sorted(photos.iterdir())]
    iio.imwrite(video, np.stack(frames), plugin="FFMPEG", fps=10, quality=10, macro_block_size=16)
    out = tmp_path / "ds"
    assert main([str(video), "-o", str(out), "--frames", str(VIEWS)]) == 0
    names = [f"{i:06d}.jpg" for i in range(VIEWS)]  # named by frame number
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    check_dataset(out, poses, names)


def one_error_line(capsys) -> str:
    """The one error line on stderr (beside any progress bars), without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("nerf-process:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_folder_without_images_is_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("no photos here")
    assert main([str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 2
    assert "no images" in one_error_line(capsys)


def test_unreadable_video_is_one_line(tmp_path, capsys):
    (tmp_path / "clip.mp4").write_bytes(b"not a video at all" * 100)
    assert main([str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "out")]) == 2
    assert "clip.mp4" in one_error_line(capsys)


def test_missing_source_and_single_photo_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2
    assert "not found" in one_error_line(capsys)
    iio.imwrite(tmp_path / "one.jpg", np.zeros((8, 8, 3), np.uint8))
    assert main([str(tmp_path / "one.jpg"), "-o", str(tmp_path / "out")]) == 2
    assert "folder" in one_error_line(capsys)


def test_unreadable_photo_is_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"\xff\xd8 broken")
    assert main([str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 2
    assert "a.jpg" in one_error_line(capsys)


def test_unrelated_photos_fail_with_advice_and_write_no_model(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        iio.imwrite(src / f"{i}.png", (rng.random((96, 96, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out)]) == 2
    err = one_error_line(capsys)
    assert "of 5 images registered" in err and "--matcher exhaustive" in err and "overlap" in err
    assert not (out / "sparse").exists() and not (out / "transforms.json").exists() and not (out / ".sfm").exists()


def test_images_of_another_source_are_not_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    iio.imwrite(out / "images" / "mine.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "src").mkdir()
    iio.imwrite(tmp_path / "src" / "mine.png", np.full((8, 8, 3), 255, np.uint8))
    assert main([str(tmp_path / "src"), "-o", str(out)]) == 2
    assert "--force" in one_error_line(capsys)
    assert iio.imread(out / "images" / "mine.png").max() == 0


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--frames", "--matcher", "--mapper", "--camera-model", "--force"):
        assert flag in text
    assert "(default: 150)" in text and "(default: OPENCV)" in text and "(default: incremental)" in text


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    angle = 0.7
    rot = np.array([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0, 0, 1]])
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    scale, r, t = similarity(src, dst)
    assert scale == pytest.approx(2.5) and np.allclose(r, rot) and np.allclose(t, [1.0, -2.0, 0.5])
    assert centre_errors(src, dst).max() < 1e-9
    noisy = dst.copy()
    noisy[0] += [0.0, 0.0, 1.0]
    assert centre_errors(src, noisy)[0] > 0.5


def test_ngp_normalization_centres_the_cameras_on_their_target():
    """Cameras looking at a known point: it becomes the origin, the mean distance 4, their up +Z."""
    target = np.array([3.0, -1.0, 2.0])
    poses = np.stack([look_at(target + 2.0 * np.array([math.cos(a), math.sin(a), 0.5]), target,
                              up=(0.0, 0.0, 1.0)) for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)])
    assert np.allclose(closest_point_to_axes(poses), target, atol=1e-6)
    sim = ngp_normalization(poses)
    centres = poses[:, :3, 3] @ sim[:3, :3].T + sim[:3, 3]
    assert np.allclose(np.linalg.norm(centres, axis=1).mean(), 4.0)
    assert np.allclose(sim[:3, :3] @ target + sim[:3, 3], 0.0, atol=1e-6)
    up = sim[:3, :3] @ poses[:, :3, 1].sum(axis=0)
    assert np.allclose(up / np.linalg.norm(up), [0.0, 0.0, 1.0])


def test_aabb_scale_holds_most_points():
    """instant-ngp's unit cube at scale 0.33 spans 0.5 / 0.33 ~ 1.52 nerf units about the origin per aabb_scale."""
    rng = np.random.default_rng(3)
    assert aabb_scale_for(rng.uniform(-1.4, 1.4, size=(1000, 3))) == 1
    assert aabb_scale_for(rng.uniform(-2.9, 2.9, size=(1000, 3))) == 2
    assert aabb_scale_for(rng.uniform(-5.0, 5.0, size=(1000, 3))) == 4
    far = np.concatenate([rng.uniform(-1.0, 1.0, size=(990, 3)), np.full((10, 3), 500.0)])
    assert aabb_scale_for(far) == 1  # a few far points do not inflate it
    assert aabb_scale_for(np.full((5, 3), 1e6)) == 128


def test_video_frames_keep_the_sharpest_of_each_window(tmp_path):
    rng = np.random.default_rng(4)
    sharp = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    blurred = downscale(np.repeat(np.repeat(sharp, 4, 0), 4, 1), 4)
    blurred = np.repeat(np.repeat(downscale(blurred, 4), 4, 0), 4, 1)
    assert sharpness(sharp) > 10 * sharpness(blurred)
    frames = [blurred, blurred, sharp, blurred, sharp, blurred]
    video = tmp_path / "v.mp4"
    iio.imwrite(video, np.stack(frames), plugin="FFMPEG", fps=5, quality=10, macro_block_size=16)
    names = extract_frames(video, tmp_path / "out", 2)
    assert names == ["000002.jpg", "000004.jpg"]
