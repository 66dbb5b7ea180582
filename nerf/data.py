"""Datasets into tensors: the images (and depth maps) of a :class:`raytrace.reader.DatasetDescription`, and the
ray sampler they feed. Every format is read, and its bounds decided, by :func:`raytrace.reader.read_dataset`; this
module only reads pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from tqdm import tqdm

from raytrace.bounds import Inferred
from raytrace.camera import Intrinsics, camera_rays, image_rays, z_per_distance
from raytrace.errors import InputError
from raytrace.images import read_rgba
from raytrace.reader import DatasetDescription, DepthFile, SplitDescription, read_dataset

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

    ``bounded``: everything visible lies in ``aabb``; ``outer`` ``(2, 3)``: the box the dataset renders at most
    (instant-ngp's ``aabb_scale``), or None; ``world_transform`` ``(4, 4)``: the similarity that took the files'
    world into the dataset's (None: the poses are the files' own); ``captured``: photographs (see
    :class:`raytrace.reader.DatasetDescription`); ``inferred``: the choices the data did not state."""

    root: Path
    splits: dict[str, Split]
    aabb: torch.Tensor
    scene_file: Path | None
    bounded: bool = True
    outer: torch.Tensor | None = None
    world_transform: torch.Tensor | None = None
    captured: bool = False
    inferred: list[Inferred] = field(default_factory=list)


@dataclass
class TrainingBatch:
    """``n`` training rays: ``origins`` ``(n, 3)``, unit ``dirs`` ``(n, 3)``, ``rgba`` ``(n, 4)`` (straight
    alpha); ``image_index`` ``(n,)`` int64 and ``pixels`` ``(n, 2)`` int64 (x = column, y = row) of each ray;
    ``depth`` ``(n,)`` (0 = no hit) when the split has depth maps."""

    origins: torch.Tensor
    dirs: torch.Tensor
    rgba: torch.Tensor
    image_index: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    depth: torch.Tensor | None = None


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


def _depth_array(path: Path, source: Path, field_name: str) -> np.ndarray:
    """The array in a ``.npy`` file, array ``distance`` of an ``.npz`` file, or the pixels of an image."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return npz["distance"]
        return np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise InputError(source, field_name, f"depth file not found: {path}") from None
    except KeyError:
        raise InputError(source, field_name, f"{path} holds no array 'distance'") from None
    except Exception as e:  # numpy and imageio raise many types for unreadable files
        raise InputError(source, field_name, f"cannot read depth file {path}: {e}") from None


def _read_depth(depth: DepthFile, source: Path, intr: Intrinsics) -> torch.Tensor:
    """Metric distance along each pixel-centre ray ``(H, W)`` float32 (0 = no hit) of one depth file; a z-depth
    image is scaled by its ``z_scale`` and divided by :func:`raytrace.camera.z_per_distance` of the full-size
    camera ``intr``."""
    shape = (intr.height, intr.width)
    array = _depth_array(depth.path, source, depth.field)
    if array.shape != shape:
        raise InputError(source, depth.field, f"depth {depth.path} has shape {array.shape}, its image has (H, W) = "
                         f"{shape}")
    if depth.z_scale is None:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    z = torch.from_numpy(array.astype(np.float64)) * depth.z_scale
    return (z / z_per_distance(intr).double()).float()


def _load_split(desc: SplitDescription, downscale: int) -> Split:
    """Read the images (and depth maps) of one split into a :class:`Split`."""
    full = desc.intrinsics
    if full.height < downscale or full.width < downscale:
        raise InputError(desc.source, f"{desc.fields[0]}.file_path",
                         f"image {(full.height, full.width)} smaller than downscale {downscale}")
    images, depths = [], []
    views = zip(desc.fields, desc.image_paths, desc.depths or [None] * len(desc.fields), strict=True)
    bar = tqdm(list(views), desc=f"loading {desc.name}", unit="img", disable=len(desc.fields) <= _PROGRESS_ABOVE)
    for where, path, depth_file in bar:
        img = torch.from_numpy(read_rgba(path, desc.source, where))
        if (img.shape[0], img.shape[1]) != (full.height, full.width):
            raise InputError(desc.source, f"{where}.file_path", f"image {path} is {img.shape[1]}x{img.shape[0]}, "
                             f"other images of split {desc.name!r} are {full.width}x{full.height}")
        images.append(downscale_rgba(img, downscale) if downscale > 1 else img)
        if depth_file is not None:
            depth = _read_depth(depth_file, desc.source, full)
            depths.append(downscale_depth(depth, downscale) if downscale > 1 else depth)
    # Crop to a multiple of the factor (the principal point does not move), then scale exactly by 1 / factor.
    cropped = replace(full, width=full.width // downscale * downscale, height=full.height // downscale * downscale)
    stacked = torch.stack(images)
    stacked_depths = torch.stack(depths) if depths else None
    return Split(
        name=desc.name,
        images=stacked,
        poses=torch.tensor(desc.poses, dtype=torch.float32),
        intrinsics=cropped.scaled(1.0 / downscale) if downscale > 1 else full,
        depths=stacked_depths,
        file_paths=[str(p) for p in desc.image_paths],
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
    root: str | Path, splits: tuple[str, ...] | list[str] = ("train", "val", "test"), downscale: int = 1,
    triangulate: bool = True,
) -> Dataset:
    """Load the requested ``splits`` of the dataset in ``root`` (any format :func:`raytrace.reader.read_dataset`
    reads, ``triangulate`` passed on), images downscaled by ``downscale`` (int). Bad input raises
    :class:`InputError` naming the file and the field."""
    return load_description(read_dataset(root, splits, triangulate), downscale)


def load_description(desc: DatasetDescription, downscale: int = 1) -> Dataset:
    """The tensors of a dataset's description: its splits' images (downscaled by ``downscale``) and depth maps."""
    if not isinstance(downscale, int) or downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    b = desc.bounds
    return Dataset(
        root=desc.root,
        splits={name: _load_split(split, downscale) for name, split in desc.splits.items()},
        aabb=torch.tensor(b.aabb, dtype=torch.float32),
        scene_file=desc.scene_file,
        bounded=b.bounded,
        outer=None if b.outer is None else torch.tensor(b.outer, dtype=torch.float32),
        world_transform=None if desc.world_transform is None else torch.tensor(desc.world_transform,
                                                                               dtype=torch.float32),
        captured=desc.captured,
        inferred=list(desc.inferred),
    )


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

    def sample(self, n: int, generator: torch.Generator | None = None) -> TrainingBatch:
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
        return TrainingBatch(origins, dirs, self.rgba[flat], image_index=image_index, pixels=pixels, depth=depth)


def image_rays_of(
    split: Split, index: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of image ``index``, row-major: origins, unit dirs ``(H*W, 3)``."""
    return image_rays(split.poses[index].to(device), split.intrinsics)
