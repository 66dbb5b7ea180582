import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf.data import RaySampler, image_rays_of, load_dataset
from raytrace.camera import Intrinsics, camera_rays, image_rays, look_at
from raytrace.dataset_format import Frame, Transforms, write_transforms
from raytrace.errors import InputError

W, H = 8, 6  # non-square so that swapped x / y cannot pass


def _rgba(seed: int, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 4), dtype=np.uint8)


def _pose(k: int) -> np.ndarray:
    angle = 2 * math.pi * k / 5
    return look_at([3 * math.cos(angle), 3 * math.sin(angle), 1.0 + 0.1 * k], [0.0, 0.0, 0.0])


def _write_ours(root: Path, counts: dict[str, int], depth: bool = True) -> dict[str, list[np.ndarray]]:
    """Our layout: RGBA PNGs, depth .npy, aabb and scene keys; returns the images (and depths) written."""
    written: dict[str, list[np.ndarray]] = {}
    (root / "scene.toml").write_text("# scene\n")
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for k in range(n):
            img = _rgba(100 * len(split) + k)
            iio.imwrite(root / split / f"r_{k}.png", img)
            written.setdefault(split, []).append(img)
            depth_path = None
            if depth:
                d = np.random.default_rng(k).uniform(1.0, 4.0, size=(H, W)).astype(np.float32)
                d[0, :3] = 0.0
                np.save(root / split / f"r_{k}_depth.npy", d)
                written.setdefault(f"{split}_depth", []).append(d)
                depth_path = f"./{split}/r_{k}_depth.npy"
            frames.append(Frame(f"./{split}/r_{k}", _pose(k), depth_path=depth_path))
        t = Transforms(0.8, frames, aabb=np.array([[-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]]), scene="scene.toml")
        write_transforms(root / f"transforms_{split}.json", t)
    return written


def test_our_layout_with_depth_loads(tmp_path: Path) -> None:
    written = _write_ours(tmp_path, {"train": 3, "val": 2})
    ds = load_dataset(tmp_path)
    assert set(ds.splits) == {"train", "val"}  # no transforms_test.json: skipped
    train = ds.splits["train"]
    assert train.images.shape == (3, H, W, 4) and train.images.dtype == torch.float32
    np.testing.assert_allclose(train.images[1].numpy(), written["train"][1] / 255.0, atol=1e-7)
    np.testing.assert_allclose(train.poses[2].numpy(), _pose(2), atol=1e-6)
    np.testing.assert_array_equal(train.depths[2].numpy(), written["train_depth"][2])
    assert train.intrinsics == Intrinsics.from_fov(W, H, 0.8)
    assert train.file_paths[0].endswith("r_0.png")
    torch.testing.assert_close(ds.aabb, torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]]))
    assert ds.scene_file == tmp_path / "scene.toml"


def test_nerf_synthetic_layout_loads_with_an_inferred_aabb(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    rgb = _rgba(3)[..., :3]  # RGB without alpha: alpha becomes 1
    iio.imwrite(tmp_path / "train" / "r_0.png", rgb)
    data = {
        "camera_angle_x": 0.6911,
        "frames": [{"file_path": "./train/r_0", "transform_matrix": _pose(0).tolist()}],
    }
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    ds = load_dataset(tmp_path)
    split = ds.splits["train"]
    assert split.depths is None and ds.scene_file is None
    torch.testing.assert_close(ds.aabb, torch.full((2, 3), 1.5 / 0.99) * torch.tensor([[-1.0], [1.0]]))
    assert [i.choice for i in ds.inferred] == ["box"] and "one point" in ds.inferred[0].value  # one camera: no size
    np.testing.assert_allclose(split.images[0, ..., :3].numpy(), rgb / 255.0, atol=1e-7)
    assert (split.images[0, ..., 3] == 1).all()
    assert split.intrinsics.fx == pytest.approx(0.5 * W / math.tan(0.5 * 0.6911))


def test_instant_ngp_single_transforms_json(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    frames = []
    for k in range(10):
        iio.imwrite(tmp_path / "images" / f"{k:04d}.png", _rgba(k)[..., :3])
        frames.append({"file_path": f"images/{k:04d}.png", "transform_matrix": _pose(k % 5).tolist()})
    data = {"fl_x": 9.0, "fl_y": 7.5, "cx": 4.2, "cy": 2.8, "w": W, "h": H, "aabb_scale": 4, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    ds = load_dataset(tmp_path)
    assert ds.splits["train"].images.shape[0] == 8
    assert [Path(p).name for p in ds.splits["test"].file_paths] == ["0000.png", "0008.png"]
    assert ds.splits["val"].file_paths == ds.splits["test"].file_paths
    assert ds.splits["train"].intrinsics == Intrinsics(W, H, 9.0, 7.5, 4.2, 2.8)
    half = load_dataset(tmp_path, downscale=2).splits["train"].intrinsics
    assert half == Intrinsics(W // 2, H // 2, 4.5, 3.75, 2.1, 1.4)


def test_downscale_by_two_averages_premultiplied_and_halves_intrinsics(tmp_path: Path) -> None:
    written = _write_ours(tmp_path, {"train": 2})
    full = load_dataset(tmp_path).splits["train"]
    half = load_dataset(tmp_path, downscale=2).splits["train"]
    assert half.images.shape == (2, H // 2, W // 2, 4)
    f = full.intrinsics
    assert half.intrinsics == pytest.approx(
        Intrinsics(W // 2, H // 2, f.fx / 2, f.fy / 2, f.cx / 2, f.cy / 2)
    )
    # A factor that does not divide the 6 rows: bottom rows are dropped, the principal point still scales.
    quarter = load_dataset(tmp_path, downscale=4).splits["train"]
    assert quarter.images.shape == (2, 1, 2, 4)
    assert quarter.intrinsics == pytest.approx(Intrinsics(2, 1, f.fx / 4, f.fy / 4, f.cx / 4, f.cy / 4))
    # Pixel (x=1, y=2) of image 1 by hand: the 2x2 block rows 4-5, columns 2-3, colours weighted by alpha.
    block = written["train"][1][4:6, 2:4].reshape(4, 4).astype(np.float64) / 255.0
    alpha = block[:, 3].mean()
    rgb = (block[:, :3] * block[:, 3:]).sum(0) / block[:, 3].sum()
    np.testing.assert_allclose(half.images[1, 2, 1].numpy(), [*rgb, alpha], atol=1e-6)
    # Depth: the mean over covered sub-pixels; the top-left block has two misses, (x=0, y=0) of depth map 0.
    d = written["train_depth"][0]
    assert half.depths[0, 0, 0].item() == pytest.approx((d[1, 0] + d[1, 1]) / 2, rel=1e-6)
    assert half.depths[0, 1, 2].item() == pytest.approx(d[2:4, 4:6].mean(), rel=1e-6)
    # The downscaled centre ray is the same ray as the full-resolution one through the same image point.
    _, d_half = camera_rays(half.poses[0], half.intrinsics, torch.tensor([[1.5, 1.5]]))
    _, d_full = camera_rays(full.poses[0], full.intrinsics, torch.tensor([[3.0, 3.0]]))
    torch.testing.assert_close(d_half, d_full)


def test_ray_sampler_rays_are_camera_rays_of_their_pixels(tmp_path: Path) -> None:
    _write_ours(tmp_path, {"train": 3})
    split = load_dataset(tmp_path).splits["train"]
    batch = RaySampler(split, torch.Generator().manual_seed(0), "cpu").sample(4096)
    assert batch.origins.shape == batch.dirs.shape == (4096, 3) and batch.rgba.shape == (4096, 4)
    torch.testing.assert_close(batch.dirs.norm(dim=-1), torch.ones(4096))
    assert set(batch.image_index.tolist()) == {0, 1, 2}
    assert batch.pixels[:, 0].max() == W - 1 and batch.pixels[:, 1].max() == H - 1
    for r in range(0, 4096, 409):
        i, (x, y) = int(batch.image_index[r]), batch.pixels[r].tolist()
        o, d = camera_rays(split.poses[i], split.intrinsics, torch.tensor([[x + 0.5, y + 0.5]]))
        torch.testing.assert_close(batch.origins[r], o[0])
        torch.testing.assert_close(batch.dirs[r], d[0])
        torch.testing.assert_close(batch.rgba[r], split.images[i, y, x])
        assert batch.depth[r] == split.depths[i, y, x]
    # Same generator seed, same batch.
    again = RaySampler(split, torch.Generator().manual_seed(0), "cpu").sample(4096)
    torch.testing.assert_close(again.dirs, batch.dirs)


def test_image_rays_of_is_image_rays(tmp_path: Path) -> None:
    _write_ours(tmp_path, {"train": 2}, depth=False)
    split = load_dataset(tmp_path).splits["train"]
    o, d = image_rays_of(split, 1)
    o_ref, d_ref = image_rays(split.poses[1], split.intrinsics)
    assert d.shape == (H * W, 3)
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(d, d_ref)


def _json(root: Path) -> dict:
    return json.loads((root / "transforms_train.json").read_text())


def test_missing_image_names_json_and_file_path(tmp_path: Path) -> None:
    _write_ours(tmp_path, {"train": 2})
    (tmp_path / "train" / "r_1.png").unlink()
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path)
    assert "transforms_train.json" in str(err.value)
    assert "frames[1].file_path" in str(err.value) and "./train/r_1" in str(err.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["frames"][1].update(transform_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
            "transform_matrix",
        ),
        (lambda d: d["frames"][0].update(colour="red"), "frames[0].colour"),
        (lambda d: d.update(camera_angle_z=1.0), "camera_angle_z"),
    ],
    ids=["bad-matrix", "unknown-frame-key", "unknown-top-key"],
)
def test_bad_json_raises_input_error_naming_file_and_field(tmp_path: Path, change, field: str) -> None:
    _write_ours(tmp_path, {"train": 2})
    data = _json(tmp_path)
    change(data)
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path)
    assert "transforms_train.json" in str(err.value) and field in str(err.value)


def test_mismatched_image_size_names_the_frame(tmp_path: Path) -> None:
    _write_ours(tmp_path, {"train": 3}, depth=False)
    iio.imwrite(tmp_path / "train" / "r_2.png", _rgba(0, w=W + 2))
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path)
    msg = str(err.value)
    assert "transforms_train.json" in msg and "frames[2].file_path" in msg and "r_2.png" in msg
    assert f"{W + 2}x{H}" in msg


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio trying its legacy plugins on garbage
def test_unreadable_image_and_bad_depth(tmp_path: Path) -> None:
    _write_ours(tmp_path, {"train": 2})
    np.save(tmp_path / "train" / "r_1_depth.npy", np.ones((H + 1, W), np.float32))
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path)
    assert "frames[1].depth_path" in str(err.value) and "r_1_depth.npy" in str(err.value)
    (tmp_path / "train" / "r_0.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path)
    assert "frames[0].file_path" in str(err.value) and "r_0.png" in str(err.value)


def test_missing_train_split_is_an_error(tmp_path: Path) -> None:
    _write_ours(tmp_path, {"val": 1})
    with pytest.raises(InputError, match=r"transforms_train\.json"):
        load_dataset(tmp_path)


def test_opaque_background_is_the_colour_of_rays_that_hit_nothing() -> None:
    from nerf.data import opaque_background

    images = torch.ones(2, 4, 4, 4)
    images[..., :3] = torch.tensor([0.2, 0.4, 0.6])
    depths = torch.zeros(2, 4, 4)
    depths[:, :2] = 3.0  # the top rows hit something
    images[:, :2, :, :3] = 0.9
    torch.testing.assert_close(opaque_background(images, depths), torch.tensor([0.2, 0.4, 0.6]))
    assert torch.equal(opaque_background(images, None), torch.zeros(3))  # no depth maps: black
    images[0, 0, 0, 3] = 0.5  # any transparency: the background is free (random in training, white in evaluation)
    assert opaque_background(images, depths) is None
