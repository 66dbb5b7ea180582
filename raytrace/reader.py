"""Every dataset format behind one function: :func:`read_dataset` ``(root) ->`` :class:`DatasetDescription`.

Formats (found in this order in ``root``):

- ours and NeRF-synthetic's: ``transforms_{train,val,test}.json`` (:mod:`raytrace.dataset_format`);
- one ``transforms.json``: instant-ngp's (with its ``scale``, ``offset``, ``aabb`` and ``aabb_scale``) or
  nerfstudio's (``camera_model``, per-frame intrinsics, ``applied_transform``, ``ply_file_path``); every
  :data:`HOLDOUT_EVERY` th frame (0, 8, ...) is held out as "val" and "test";
- a COLMAP sparse model (``root`` being ``DATA/``, ``DATA/sparse/0/`` or ``DATA/sparse/``), images sorted by name
  and held out the same way, its world turned Z-up, centred and scaled by :func:`colmap_world`.

The description holds, per split, the cameras (camera-to-world in our OpenGL convention, intrinsics with lens
distortion), the image and depth files, and, for the whole dataset, its bounds with what was inferred
(:mod:`raytrace.bounds`) and whether it was captured by a camera (``captured``: a COLMAP model, or a
``transforms.json`` with a non-zero lens distortion or the keys photograph tools write,
:data:`raytrace.dataset_format.CAPTURE_SIGNS`). Reading the pixels is the trainer's
(:mod:`nerf.data`). nerfstudio's ``applied_transform`` maps the original data's world into the JSON's: the poses
and points are already in the JSON's world, which is the description's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from scipy.spatial.transform import Rotation

from raytrace.bounds import (
    CONTRACTED_CUBES,
    NGP_MAX_AABB_SCALE,
    NGP_OFFSET,
    NGP_SCALE,
    Bounds,
    Inferred,
    framed_bounds,
    infer_bounds,
    ngp_box,
    scaled_box,
)
from raytrace.camera import Intrinsics
from raytrace.colmap import find_model, model_files, read_model
from raytrace.dataset_format import Frame, Transforms, read_transforms, resolve_image, transforms_path
from raytrace.errors import InputError

ROBUST_PERCENTILE = 5.0
"""A COLMAP model's world is scaled by the box between these percentiles of its sparse points (5 to 95)."""

HOLDOUT_EVERY = 8
"""With a single ``transforms.json`` or a COLMAP model (images sorted by name, as mip-NeRF 360 does), frames
0, 8, 16, ... are held out as "val" and "test"."""

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DepthFile:
    """One view's depth map: ``path``, the JSON ``field`` that names it (for errors) and ``z_scale``: None for our
    exact distance along the ray (an ``.npz`` holding ``distance``, or a float32 ``.npy``), else the metres per
    unit of a z-depth image (along the viewing axis)."""

    path: Path
    field: str
    z_scale: float | None


@dataclass
class SplitDescription:
    """One split: ``poses`` ``(N, 4, 4)`` float64 camera-to-world (OpenGL axes), ``intrinsics`` of the full-size
    images, ``image_paths`` (N,), ``depths`` (N,) or None, ``fields`` (N,) the name of each view in ``source``
    (the file that errors name), e.g. ``frames[3]``."""

    name: str
    source: Path
    poses: np.ndarray
    intrinsics: Intrinsics
    image_paths: list[Path]
    fields: list[str]
    depths: list[DepthFile] | None = None


@dataclass
class DatasetDescription:
    """A dataset in memory, before any pixel is read. ``world_transform`` ``(4, 4)``: the similarity that took the
    files' world into this one (None: the poses are the files' own). ``inferred`` lists what the data did not
    state (see :class:`raytrace.bounds.Inferred`)."""

    root: Path
    format: str  # ours | nerf-synthetic | instant-ngp | nerfstudio | colmap
    splits: dict[str, SplitDescription]
    bounds: Bounds
    captured: bool
    scene_file: Path | None = None
    world_transform: np.ndarray | None = None
    points: np.ndarray | None = field(default=None, repr=False)  # (P, 3) sparse points, when the data has them

    @property
    def inferred(self) -> list[Inferred]:
        return self.bounds.inferred


def read_dataset(root: str | Path, splits: tuple[str, ...] | list[str] = SPLIT_NAMES, triangulate: bool = True
                 ) -> DatasetDescription:
    """The description of the dataset in ``root`` (see the module docstring), with the requested ``splits`` ("train"
    is required when requested, other missing splits are skipped; bounds come from the train split first).
    ``triangulate=False`` leaves an unbounded scene's inferred box unshrunk by triangulated points (for a run's
    evaluation and viewer, whose box is the checkpoint's). Bad input raises :class:`InputError` naming the file
    and the field."""
    root = Path(root)
    single = root / "transforms.json"
    if not transforms_path(root, "train").is_file() and not single.is_file():
        found = find_model(root)
        if found is not None:
            return read_colmap(*found, splits=splits)
    sources: dict[str, tuple[Path, Transforms, list[tuple[int, Frame]]]] = {}
    if not transforms_path(root, "train").is_file() and single.is_file():
        t = read_transforms(single)
        held_out = [(i, fr) for i, fr in enumerate(t.frames) if i % HOLDOUT_EVERY == 0]
        kept = [(i, fr) for i, fr in enumerate(t.frames) if i % HOLDOUT_EVERY != 0]
        available = {"train": kept, "val": held_out, "test": held_out}
        for name in splits:
            if available.get(name):
                sources[name] = (single, t, available[name])
            elif name == "train":
                raise InputError(single, "frames", "no frames left for training")
        nerfstudio = t.camera_model is not None or t.applied_transform is not None or t.ply_file_path is not None
        fmt = "nerfstudio" if nerfstudio else "instant-ngp"
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
        ours = any(t.aabb is not None or t.scene is not None or t.bounded is not None for _, t, _ in sources.values())
        fmt = "ours" if ours else "nerf-synthetic"
    described = {name: _split(name, root, path, t, frames) for name, (path, t, frames) in sources.items()}
    ordered = sorted(sources.values(), key=lambda s: s[0] != transforms_path(root, "train"))
    transforms = [t for _, t, _ in ordered]
    points = _ply_points(root, ordered[0][0], transforms[0]) if transforms[0].ply_file_path else None
    bounds = _stated_bounds(transforms)
    if bounds is None:
        bounded = next((t.bounded for t in transforms if t.bounded is not None), None)
        train = described.get("train") or next(iter(described.values()))
        bounds = infer_bounds(train.poses, [train.intrinsics] * len(train.poses), train.image_paths, train.source,
                              train.fields, bounded, points, triangulate)
    return DatasetDescription(root, fmt, described, bounds, any(t.captured for t in transforms),
                              scene_file=_scene_file(root, transforms), points=points)


def _split(name: str, root: Path, path: Path, t: Transforms, frames: list[tuple[int, Frame]]) -> SplitDescription:
    if not frames:
        raise InputError(path, "frames", f"no frames for split {name!r}")
    fields = [f"frames[{i}]" for i, _ in frames]
    images = [resolve_image(root, fr.file_path, path, f"{w}.file_path") for w, (_, fr) in zip(fields, frames,
                                                                                                strict=True)]
    height, width = _image_size(images[0], path, f"{fields[0]}.file_path")
    intrinsics = [t.intrinsics(width, height, fr) for _, fr in frames]
    differs = next((k for k, intr in enumerate(intrinsics) if intr != intrinsics[0]), None)
    if differs is not None:
        raise InputError(path, f"{fields[differs]}.fl_x", "per-frame intrinsics that differ within a split are not "
                         "supported")
    with_depth = [_depth_file(root, path, w, t, fr) for w, (_, fr) in zip(fields, frames, strict=True)]
    if any(d is not None for d in with_depth) and not all(d is not None for d in with_depth):
        missing = fields[[d is None for d in with_depth].index(True)]
        raise InputError(path, f"{missing}.depth_path", "missing while other frames of this split have one")
    poses = np.stack([fr.transform_matrix for _, fr in frames])
    return SplitDescription(name, path, poses, intrinsics[0], images, fields,
                            with_depth if with_depth[0] is not None else None)  # type: ignore[arg-type]


def _image_size(path: Path, source: Path, where: str) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header."""
    try:
        shape = iio.improps(path).shape
    except Exception as e:  # imageio raises many types for unreadable files
        raise InputError(source, where, f"cannot read image {path}: {e}") from None
    return int(shape[0]), int(shape[1])


def _depth_file(root: Path, path: Path, where: str, t: Transforms, frame: Frame) -> DepthFile | None:
    """A frame's depth map, the first of: our ``distance_path`` (``.npz``), a format-1 ``depth_path`` ``.npy``
    (ray distance), a z-depth image under ``depth_path`` (instant-ngp, scaled by ``integer_depth_scale``) or
    ``depth_file_path`` (nerfstudio, scaled by ``depth_unit_scale_factor``, 1e-3 when absent as in nerfstudio)."""
    if frame.distance_path is not None:
        return DepthFile(root / frame.distance_path, f"{where}.distance_path", None)
    if frame.depth_path is not None and frame.depth_path.lower().endswith(".npy"):
        return DepthFile(root / frame.depth_path, f"{where}.depth_path", None)
    if frame.depth_path is not None:
        if t.integer_depth_scale is None:
            raise InputError(path, "integer_depth_scale", f"missing: needed to read the depth image of {where}")
        return DepthFile(root / frame.depth_path, f"{where}.depth_path", t.integer_depth_scale)
    if frame.depth_file_path is not None:
        scale = t.depth_unit_scale_factor
        return DepthFile(root / frame.depth_file_path, f"{where}.depth_file_path", 1e-3 if scale is None else scale)
    return None


def _stated_bounds(transforms: list[Transforms]) -> Bounds | None:
    """The bounds the JSON states (train's first): our ``scene_aabb``; instant-ngp's unit cube when any of its
    ``scale``, ``offset``, ``aabb`` or ``aabb_scale`` is given. None when it states none (nerfstudio's sparse
    points do not give the box: :func:`raytrace.bounds.framing_box` does, and they shrink it)."""
    def first(key: str) -> Any:
        return next((getattr(t, key) for t in transforms if getattr(t, key) is not None), None)

    aabb_scale, bounded = first("aabb_scale"), first("bounded")
    scale = min(aabb_scale or 1.0, NGP_MAX_AABB_SCALE)
    inferred: list[Inferred] = []
    if bounded is None and scale > 1.0:
        inferred.append(Inferred("scene", f"unbounded (instant-ngp's aabb_scale {aabb_scale:g})",
                                 "--scene-contraction none"))
    bounded = scale <= 1.0 if bounded is None else bounded

    def outer(box: np.ndarray) -> np.ndarray | None:
        return scaled_box(box, scale) if scale > 1.0 else None

    if first("aabb") is not None:
        box = np.asarray(first("aabb"), dtype=np.float64)
        return Bounds(box, bounded, outer(box), inferred)
    default = all(first(k) is None for k in ("scale", "offset", "ngp_aabb"))
    if default and aabb_scale is None:
        return None
    cube = ngp_box(first("scale"), first("offset"), first("ngp_aabb"))
    grown = 1.0 if bounded else min(CONTRACTED_CUBES, scale)  # unbounded: contracted around the grown cube
    box = scaled_box(cube, grown) if grown > 1.0 else cube
    what = f"instant-ngp's unit cube{f' at its default scale {NGP_SCALE} and offset {NGP_OFFSET}' if default else ''}"
    if grown > 1.0:
        inferred.append(Inferred("box", f"{what}, grown {grown:g} times about its centre for the contraction",
                                 "--aabb"))
    elif default:
        inferred.append(Inferred("box", what, "--aabb"))
    return Bounds(box, bounded, outer(cube), inferred)


def _ply_points(root: Path, path: Path, t: Transforms) -> np.ndarray:
    """nerfstudio's sparse points ``(P, 3)`` (``ply_file_path``, in the JSON's world), read with open3d."""
    import open3d as o3d

    assert t.ply_file_path is not None
    ply = root / t.ply_file_path
    if not ply.is_file():
        raise InputError(path, "ply_file_path", f"file not found: {ply}")
    return np.asarray(o3d.io.read_point_cloud(str(ply)).points, dtype=np.float64).reshape(-1, 3)


def _scene_file(root: Path, transforms: list[Transforms]) -> Path | None:
    """``root / <"scene" key>`` of the first of ``transforms`` naming one, when that file exists."""
    name = next((t.scene for t in transforms if t.scene is not None), None)
    return root / name if name is not None and (root / name).is_file() else None


def dataset_scene_file(root: str | Path) -> Path | None:
    """The scene file of the dataset in ``root`` without reading its images: the one its
    ``transforms_train.json`` (or single ``transforms.json``) names; None when there is none."""
    root = Path(root)
    path = transforms_path(root, "train")
    path = path if path.is_file() else root / "transforms.json"
    return _scene_file(root, [read_transforms(path)]) if path.is_file() else None


# ---- COLMAP ----------------------------------------------------------------------------------------------

def colmap_world(xyz: np.ndarray, c2ws: np.ndarray) -> np.ndarray:
    """A similarity ``(4, 4)`` from a COLMAP model's world into ours.

    It turns the mean camera up vector (``c2ws`` ``(N, 4, 4)``, OpenGL axes) to +Z (the world is Z-up), then
    centres and scales the box between the 5th and 95th percentiles of the sparse points ``xyz`` ``(P, 3)``
    (of the camera positions when there are none) so that its longest side spans [-1, 1].
    """
    up = c2ws[:, :3, 1].mean(axis=0)
    rot = np.eye(3)
    if np.linalg.norm(up) > 1e-6:
        rot = Rotation.align_vectors([[0.0, 0.0, 1.0]], [up / np.linalg.norm(up)])[0].as_matrix()
    pts = (xyz if len(xyz) >= 2 else c2ws[:, :3, 3]) @ rot.T
    lo, hi = np.percentile(pts, [ROBUST_PERCENTILE, 100.0 - ROBUST_PERCENTILE], axis=0)
    centre = 0.5 * (lo + hi)
    scale = 2.0 / max(float(np.max(hi - lo)), 1e-9)
    sim = np.eye(4)
    sim[:3, :3] = scale * rot
    sim[:3, 3] = -scale * centre
    return sim


def transform_poses(sim: np.ndarray, c2ws: np.ndarray) -> np.ndarray:
    """Camera-to-world poses ``(N, 4, 4)`` moved by the similarity ``sim`` ``(4, 4)`` (rotations stay unit)."""
    out = sim @ c2ws
    scale = np.linalg.norm(sim[:3, 0])
    out[:, :3, :3] /= scale
    return out


def read_colmap(model_dir: Path, image_dir: Path, splits: tuple[str, ...] | list[str] = SPLIT_NAMES
                ) -> DatasetDescription:
    """A COLMAP sparse model in ``model_dir`` with its images (named relative to ``image_dir``): images sorted
    by name, every :data:`HOLDOUT_EVERY` th held out as "val" and "test", the world moved by
    :func:`colmap_world`, unbounded. Every image must share one camera."""
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
    sim = colmap_world(model.xyz, c2ws)
    poses = transform_poses(sim, c2ws)
    indices = {"train": [k for k in range(len(images)) if k % HOLDOUT_EVERY != 0],
               "val": list(range(0, len(images), HOLDOUT_EVERY)), "test": list(range(0, len(images), HOLDOUT_EVERY))}
    if "train" in splits and not indices["train"]:
        raise InputError(images_file, None, f"{len(images)} images leave none for training (every "
                         f"{HOLDOUT_EVERY}th is held out)")
    camera = model.cameras[camera_ids[0]]
    described = {}
    for name in (s for s in splits if s in indices):
        ks = indices[name]
        fields = [f"image {images[k].image_id} ({images[k].name})" for k in ks]
        paths = [resolve_image(image_dir, images[k].name, images_file, w) for k, w in zip(ks, fields, strict=True)]
        height, width = _image_size(paths[0], images_file, fields[0])
        described[name] = SplitDescription(name, images_file, poses[ks], camera.intrinsics(width, height), paths,
                                           fields)
    points = (np.c_[model.xyz, np.ones(len(model.xyz))] @ sim.T)[:, :3] if len(model.xyz) else None
    bounds = framed_bounds(poses, False, [Inferred("scene", "unbounded (a COLMAP model: photographs)",
                                                   "--scene-contraction none")], points)
    return DatasetDescription(image_dir, "colmap", described, bounds, True,
                              world_transform=sim, points=points)
