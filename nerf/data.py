"""Datasets on disk (``transforms_<split>.json`` + images + optional depth) into tensors and ray batches.

Over 400 lines because it reads four layouts (ours, NeRF-synthetic, instant-ngp, COLMAP) with their images and depth
maps, each checked field by field, and holds the ray sampler they feed.

Reads our layout, the NeRF-synthetic ("Blender") layout, instant-ngp's single ``transforms.json`` with
explicit intrinsics (``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``) and COLMAP sparse models with their
images (:mod:`raytrace.colmap`). Rays always come from :mod:`raytrace.camera`, the one place where camera
conventions live.

Scene bounds: ``Dataset.aabb`` is the box where the scene's detail is and ``Dataset.bounded`` says whether
everything visible lies inside it. From the JSON: ``aabb`` (else :data:`DEFAULT_AABB`) and ``bounded``; when
``bounded`` is absent, instant-ngp's ``aabb_scale`` > 1 means unbounded (its scene reaches out to the box scaled
by ``aabb_scale`` about its centre, :meth:`Dataset.outer_aabb`), else bounded. COLMAP models are unbounded
(photographs see the far world), with the box of their sparse points (see :func:`raytrace.colmap.normalization`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from raytrace.camera import NO_DISTORTION, Intrinsics, camera_rays, image_rays, z_per_distance
from raytrace.colmap import find_model, model_files, normalization, read_model, transform_poses
from raytrace.dataset_format import Frame, Transforms, read_transforms, resolve_image, transforms_path
from raytrace.errors import InputError

DEFAULT_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))
"""Scene bounds when the JSON states none: the NeRF-synthetic convention (instant-ngp's box for Blender
scenes, its unit cube at scale 0.33 and offset 0.5); instant-ngp's ``aabb_scale`` gives the outer box."""

HOLDOUT_EVERY = 8
"""With a single ``transforms.json`` or a COLMAP model (images sorted by name, as mip-NeRF 360 does), frames
0, 8, 16, ... are held out as "val" and "test"."""

_PROGRESS_ABOVE = 50  # show a progress bar when a split has more images than this


@dataclass
class Split:
    """One split, every image at the same size.

    ``images`` ``(N, H, W, 4)`` float32 in [0, 1], straight (not premultiplied) alpha, alpha = 1 when the
    file has none; ``poses`` ``(N, 4, 4)`` float32 camera-to-world (OpenGL axes); ``depths`` ``(N, H, W)``
    float32 metric distance along the unit ray, 0 = no hit, or None; ``file_paths`` the resolved images.
    """

    name: str
    images: torch.Tensor
    poses: torch.Tensor
    intrinsics: Intrinsics
    depths: torch.Tensor | None
    file_paths: list[str]
    background: torch.Tensor | None = None  # (3,) for opaque images, see opaque_background; None otherwise

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Dataset:
    """The splits of one dataset, its bounds ``aabb`` ``(2, 3)`` (min, max) and its scene file if any.

    ``bounded``: everything visible lies in ``aabb``; ``aabb_scale``: instant-ngp's (1 when not given);
    ``world_transform`` ``(4, 4)``: the similarity that took a COLMAP model's world into the dataset's (None:
    the poses are the files' own); ``captured``: photographs (a COLMAP model, or a JSON with lens distortion keys),
    not renders."""

    root: Path
    splits: dict[str, Split]
    aabb: torch.Tensor
    scene_file: Path | None
    bounded: bool = True
    aabb_scale: float = 1.0
    world_transform: torch.Tensor | None = None
    captured: bool = False

    def outer_aabb(self) -> torch.Tensor:
        """``aabb`` scaled by ``aabb_scale`` about its centre: ``(2, 3)``."""
        centre = self.aabb.mean(dim=0)
        return centre + (self.aabb - centre) * self.aabb_scale


@dataclass
class RayBatch:
    """``n`` training rays: ``origins`` ``(n, 3)``, unit ``dirs`` ``(n, 3)``, ``rgba`` ``(n, 4)`` (straight
    alpha); ``image_index`` ``(n,)`` int64 and ``pixels`` ``(n, 2)`` int64 (x = column, y = row) of each ray;
    ``depth`` ``(n,)`` (0 = no hit) when the split has depth maps."""

    origins: torch.Tensor
    dirs: torch.Tensor
    rgba: torch.Tensor
    image_index: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    depth: torch.Tensor | None = None


def _to_rgba(img: np.ndarray, image_path: Path) -> torch.Tensor:
    """An image array as it came from imageio into ``(H, W, 4)`` float32 in [0, 1]."""
    if np.issubdtype(img.dtype, np.integer):
        arr = img.astype(np.float32) / np.iinfo(img.dtype).max
    elif np.issubdtype(img.dtype, np.floating):
        arr = img.astype(np.float32)
    else:
        raise InputError(image_path, None, f"unsupported pixel type {img.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(
            image_path, None, f"expected a grey, grey+alpha, RGB or RGBA image, got shape {img.shape}"
        )
    channels = arr.shape[2]
    rgb = arr[..., :1].repeat(3, axis=2) if channels in (1, 2) else arr[..., :3]
    alpha = arr[..., channels - 1 :] if channels in (2, 4) else np.ones_like(arr[..., :1])
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([rgb, alpha], axis=2)))


def downscale_rgba(img: torch.Tensor, factor: int) -> torch.Tensor:
    """Area-average ``(H, W, 4)`` straight-alpha RGBA by an integer ``factor`` into ``(H // f, W // f, 4)``.

    Colours are averaged premultiplied by alpha, then divided by the mean alpha (0 where that is 0). Rows and
    columns beyond a multiple of ``factor`` (bottom, right) are dropped.
    """
    h, w = img.shape[0] // factor, img.shape[1] // factor
    blocks = img[: h * factor, : w * factor].reshape(h, factor, w, factor, 4)
    alpha = blocks[..., 3:].mean(dim=(1, 3))
    premult = (blocks[..., :3] * blocks[..., 3:]).mean(dim=(1, 3))
    rgb = torch.where(alpha > 0, premult / alpha.clamp_min(1e-12), torch.zeros_like(premult))
    return torch.cat([rgb, alpha], dim=-1)


def downscale_depth(depth: torch.Tensor, factor: int) -> torch.Tensor:
    """Downscale ``(H, W)`` depth like :func:`downscale_rgba`: the mean of the sub-pixels that hit
    (depth > 0), 0 where none did."""
    h, w = depth.shape[0] // factor, depth.shape[1] // factor
    blocks = depth[: h * factor, : w * factor].reshape(h, factor, w, factor)
    hit = (blocks > 0).to(depth.dtype)
    count = hit.sum(dim=(1, 3))
    total = (blocks * hit).sum(dim=(1, 3))
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def _read_image(root: Path, frame: Frame, json_path: Path, where: str) -> tuple[Path, torch.Tensor]:
    image_path = resolve_image(root, frame.file_path, json_path, f"{where}.file_path")
    try:
        img = iio.imread(image_path)
    except Exception as e:  # imageio raises many types for unreadable files
        raise InputError(json_path, f"{where}.file_path", f"cannot read image {image_path}: {e}") from None
    return image_path, _to_rgba(np.asarray(img), image_path)


def _depth_array(path: Path, json_path: Path, field_name: str, key: str | None) -> np.ndarray:
    """The array in a ``.npy`` file, array ``key`` of an ``.npz`` file, or the pixels of an image."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return npz[key]
        return np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise InputError(json_path, field_name, f"depth file not found: {path}") from None
    except KeyError:
        raise InputError(json_path, field_name, f"{path} holds no array {key!r}") from None
    except Exception as e:  # numpy and imageio raise many types for unreadable files
        raise InputError(json_path, field_name, f"cannot read depth file {path}: {e}") from None


def frame_has_depth(frame: Frame) -> bool:
    """Whether a frame names a depth map in any form :func:`_read_depth` reads."""
    return any(p is not None for p in (frame.distance_path, frame.depth_path, frame.depth_file_path))


class DepthScales(NamedTuple):
    """Metres per unit of a dataset's z-depth images: instant-ngp's and nerfstudio's keys (``None``: absent)."""

    integer_depth_scale: float | None
    depth_unit_scale_factor: float | None


NO_DEPTH_SCALES = DepthScales(None, None)


def _read_depth(
    root: Path, frame: Frame, json_path: Path, where: str, intr: Intrinsics, depth_scales: DepthScales
) -> torch.Tensor:
    """Metric distance along each pixel-centre ray ``(H, W)`` float32 (0 = no hit), from the first of: our
    ``distance_path`` (``.npz``), a format-1 ``depth_path`` ``.npy`` (ray distance), or a z-depth image under
    ``depth_path`` (instant-ngp, scaled by ``integer_depth_scale``) or ``depth_file_path`` (nerfstudio, scaled
    by ``depth_unit_scale_factor``, 1e-3 when absent as in nerfstudio); ``intr`` is the full-size camera."""
    shape = (intr.height, intr.width)
    if frame.distance_path is not None:
        key, rel, z_scale = "distance_path", frame.distance_path, None
    elif frame.depth_path is not None and frame.depth_path.lower().endswith(".npy"):
        key, rel, z_scale = "depth_path", frame.depth_path, None
    elif frame.depth_path is not None:
        if depth_scales.integer_depth_scale is None:
            raise InputError(json_path, "integer_depth_scale", f"missing: needed to read the depth image of {where}")
        key, rel, z_scale = "depth_path", frame.depth_path, depth_scales.integer_depth_scale
    else:
        assert frame.depth_file_path is not None
        scale = depth_scales.depth_unit_scale_factor
        key, rel, z_scale = "depth_file_path", frame.depth_file_path, 1e-3 if scale is None else scale
    field_name = f"{where}.{key}"
    depth = _depth_array(root / rel, json_path, field_name, "distance")
    if depth.shape != shape:
        raise InputError(json_path, field_name, f"depth {root / rel} has shape {depth.shape}, its image has (H, W) = "
                         f"{shape}")
    if z_scale is None:
        return torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
    z = torch.from_numpy(depth.astype(np.float64)) * z_scale
    factor = z_per_distance(intr).double()
    return (z / factor).float()


def _load_split(
    name: str,
    root: Path,
    json_path: Path,
    intrinsics_for: Callable[[int, int], Intrinsics],
    frames: list[tuple[int, Frame]],
    downscale: int,
    depth_scales: DepthScales = NO_DEPTH_SCALES,
) -> Split:
    """Read the images (and depth maps) of ``frames`` (index in the JSON, frame) into one :class:`Split`;
    ``intrinsics_for(width, height)`` gives the camera of the full-size images."""
    if not frames:
        raise InputError(json_path, "frames", f"no frames for split {name!r}")
    with_depth = [frame_has_depth(fr) for _, fr in frames]
    if any(with_depth) and not all(with_depth):
        i = frames[with_depth.index(False)][0]
        raise InputError(
            json_path, f"frames[{i}].depth_path", "missing while other frames of this split have one"
        )
    images, depths, paths = [], [], []
    full_size: tuple[int, int] | None = None
    bar = tqdm(frames, desc=f"loading {name}", unit="img", disable=len(frames) <= _PROGRESS_ABOVE)
    for i, frame in bar:
        where = f"frames[{i}]"
        image_path, img = _read_image(root, frame, json_path, where)
        size = (img.shape[0], img.shape[1])
        if full_size is None:
            full_size = size
            if size[0] < downscale or size[1] < downscale:
                raise InputError(
                    json_path, f"{where}.file_path", f"image {size} smaller than downscale {downscale}"
                )
        elif size != full_size:
            raise InputError(
                json_path,
                f"{where}.file_path",
                f"image {image_path} is {size[1]}x{size[0]}, other images of split {name!r} are "
                f"{full_size[1]}x{full_size[0]}",
            )
        images.append(downscale_rgba(img, downscale) if downscale > 1 else img)
        if frame_has_depth(frame):
            depth = _read_depth(root, frame, json_path, where, intrinsics_for(size[1], size[0]), depth_scales)
            depths.append(downscale_depth(depth, downscale) if downscale > 1 else depth)
        paths.append(str(image_path))
    assert full_size is not None
    height, width = full_size
    # Crop to a multiple of the factor (the principal point does not move), then scale exactly by 1 / factor.
    intr = intrinsics_for(width, height)
    cropped = replace(intr, width=width // downscale * downscale, height=height // downscale * downscale)
    poses = torch.tensor(np.stack([fr.transform_matrix for _, fr in frames]), dtype=torch.float32)
    stacked = torch.stack(images)
    stacked_depths = torch.stack(depths) if depths else None
    return Split(
        name=name,
        images=stacked,
        poses=poses,
        intrinsics=cropped.scaled(1.0 / downscale) if downscale > 1 else intr,
        depths=stacked_depths,
        file_paths=paths,
        background=opaque_background(stacked, stacked_depths),
    )


def opaque_background(images: torch.Tensor, depths: torch.Tensor | None) -> torch.Tensor | None:
    """The colour ``(3,)`` behind the scene when ``images`` ``(N, H, W, 4)`` are fully opaque, else None.

    Rays that leave the scene box show it, so it cannot be randomised in training nor replaced by white in
    evaluation. It is the mean colour of the pixels whose ray hit nothing (depth 0), black without depth maps
    or without such pixels.
    """
    if (images[..., 3] < 1.0).any():
        return None
    if depths is None or not (depths <= 0).any():
        return torch.zeros(3)
    return images[..., :3][depths <= 0].mean(dim=0)


def load_dataset(
    root: str | Path, splits: tuple[str, ...] | list[str] = ("train", "val", "test"), downscale: int = 1
) -> Dataset:
    """Load the requested ``splits`` of the dataset in ``root``, images downscaled by ``downscale`` (int).

    ``transforms_<split>.json`` files are read when present ("train" is required when requested, other
    missing splits are skipped). Without ``transforms_train.json``, a single instant-ngp ``transforms.json``
    is read: every 8th frame (0, 8, ...) is "val" and "test", the rest "train". Without either, a COLMAP
    model (``root`` being ``DATA/``, ``DATA/sparse/0/`` or ``DATA/sparse/``; see :func:`load_colmap`).
    ``aabb``, ``bounded`` and ``aabb_scale`` come from the JSON (train first; see the module docstring);
    ``scene_file`` is ``root / <"scene" key>`` when the JSON names one that exists.
    Bad input raises :class:`InputError` naming the file and the field.
    """
    if not isinstance(downscale, int) or downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    root = Path(root)
    single = root / "transforms.json"
    if not transforms_path(root, "train").is_file() and not single.is_file():
        found = find_model(root)
        if found is not None:
            return load_colmap(*found, splits=splits, downscale=downscale)
    sources: dict[str, tuple[Path, Transforms, list[tuple[int, Frame]]]] = {}
    if not transforms_path(root, "train").is_file() and single.is_file():
        t = read_transforms(single)
        held_out = [(i, fr) for i, fr in enumerate(t.frames) if i % HOLDOUT_EVERY == 0]
        kept = [(i, fr) for i, fr in enumerate(t.frames) if i % HOLDOUT_EVERY != 0]
        available = {"train": kept, "val": held_out, "test": held_out}
        for name in splits:
            if name in available:
                sources[name] = (single, t, available[name])
            elif name == "train":
                raise InputError(single, "frames", "no frames left for training")
    else:
        for name in splits:
            path = transforms_path(root, name)
            if not path.is_file():
                if name == "train":
                    raise InputError(
                        path, None, "file not found (nor a single transforms.json, nor a COLMAP model in sparse/0/)"
                    )
                continue
            t = read_transforms(path)
            sources[name] = (path, t, list(enumerate(t.frames)))
    loaded = {
        name: _load_split(name, root, path, t.intrinsics, frames, downscale,
                          DepthScales(t.integer_depth_scale, t.depth_unit_scale_factor))
        for name, (path, t, frames) in sources.items()
    }
    ordered = [t for _, t, _ in sorted(sources.values(), key=lambda s: s[0] != transforms_path(root, "train"))]
    aabb = next((t.aabb for t in ordered if t.aabb is not None), np.asarray(DEFAULT_AABB))
    aabb_scale = next((t.aabb_scale for t in ordered if t.aabb_scale is not None), 1.0)
    bounded = next((t.bounded for t in ordered if t.bounded is not None), aabb_scale <= 1.0)
    return Dataset(
        root=root, splits=loaded, aabb=torch.tensor(aabb, dtype=torch.float32), scene_file=_scene_file(root, ordered),
        bounded=bounded, aabb_scale=aabb_scale, captured=any(t.dist != NO_DISTORTION for t in ordered),
    )


def _scene_file(root: Path, transforms: list[Transforms]) -> Path | None:
    """``root / <"scene" key>`` of the first of ``transforms`` naming one, when that file exists."""
    name = next((t.scene for t in transforms if t.scene is not None), None)
    return root / name if name is not None and (root / name).is_file() else None


def dataset_scene_file(root: str | Path) -> Path | None:
    """The scene file of the dataset in ``root`` (as :attr:`Dataset.scene_file`) without reading its images: the
    one its ``transforms_train.json`` (or single ``transforms.json``) names; None when there is none."""
    root = Path(root)
    path = transforms_path(root, "train")
    path = path if path.is_file() else root / "transforms.json"
    return _scene_file(root, [read_transforms(path)]) if path.is_file() else None


def load_colmap(
    model_dir: Path, image_dir: Path, splits: tuple[str, ...] | list[str] = ("train", "val", "test"), downscale: int = 1
) -> Dataset:
    """A COLMAP sparse model in ``model_dir`` with its images (named relative to ``image_dir``) as a
    :class:`Dataset`: images sorted by name, every 8th (0, 8, ...) held out as "val" and "test"; the world
    turned Z-up, centred and scaled by :func:`raytrace.colmap.normalization` (``world_transform``), unbounded.
    Every image must share one camera."""
    model = read_model(model_dir)
    images_file = (model_files(model_dir) or {})["images"]
    images = sorted(model.images.values(), key=lambda im: im.name)
    if not images:
        raise InputError(images_file, None, "no images in the model")
    camera_ids = sorted({im.camera_id for im in images})
    if len(camera_ids) > 1:
        raise InputError(images_file, "CAMERA_ID", f"the images use {len(camera_ids)} cameras ({camera_ids}); "
                         "only one shared camera is supported")
    c2ws = np.stack([im.c2w() for im in images])
    sim, box = normalization(model.xyz, c2ws)
    poses = transform_poses(sim, c2ws)
    frames = [(k, Frame(im.name, poses[k])) for k, im in enumerate(images)]
    available = {"train": [f for f in frames if f[0] % HOLDOUT_EVERY != 0],
                 "val": frames[::HOLDOUT_EVERY], "test": frames[::HOLDOUT_EVERY]}
    if "train" in splits and not available["train"]:
        raise InputError(images_file, None, f"{len(images)} images leave none for training (every "
                         f"{HOLDOUT_EVERY}th is held out)")
    camera = model.cameras[camera_ids[0]]
    loaded = {name: _load_split(name, image_dir, images_file, camera.intrinsics, available[name], downscale)
              for name in splits if name in available}
    return Dataset(root=image_dir, splits=loaded, aabb=torch.tensor(box, dtype=torch.float32), scene_file=None,
                   bounded=False, world_transform=torch.tensor(sim, dtype=torch.float32), captured=True)


class RaySampler:
    """Uniformly random pixels over all images of a split, as rays; the split's tensors live on ``device``."""

    def __init__(self, split: Split, generator: torch.Generator, device: torch.device | str = "cpu") -> None:
        self.split = split
        self.generator = generator
        self.device = torch.device(device)
        n, h, w, _ = split.images.shape
        self.shape = (n, h, w)
        self.rgba = split.images.reshape(-1, 4).to(self.device)
        self.poses = split.poses.to(self.device)
        self.depths = split.depths.reshape(-1).to(self.device) if split.depths is not None else None

    def sample(self, n: int, generator: torch.Generator | None = None) -> RayBatch:
        """``n`` rays through pixel centres drawn uniformly (with replacement) over the whole split, from
        ``generator`` (default: the sampler's; one on ``device`` keeps the host out of it)."""
        count, h, w = self.shape
        gen = self.generator if generator is None else generator
        flat = torch.randint(0, count * h * w, (n,), generator=gen, device=gen.device).to(self.device)
        image_index = flat // (h * w)
        pix = flat % (h * w)
        pixels = torch.stack([pix % w, pix // w], dim=-1)
        origins, dirs = camera_rays(
            self.poses[image_index], self.split.intrinsics, pixels.to(torch.float32) + 0.5
        )
        depth = self.depths[flat] if self.depths is not None else None
        return RayBatch(origins, dirs, self.rgba[flat], image_index=image_index, pixels=pixels, depth=depth)


def image_rays_of(
    split: Split, index: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of image ``index``, row-major: origins, unit dirs ``(H*W, 3)``."""
    return image_rays(split.poses[index].to(device), split.intrinsics)
