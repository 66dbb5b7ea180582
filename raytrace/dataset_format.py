"""The dataset layout on disk: NeRF-synthetic ("Blender") ``transforms_<split>.json`` files, plus our extras.

Written by ``raytrace`` and read by ``nerf``. A split file is::

    {"camera_angle_x": 0.69, "frames": [{"file_path": "./train/r_0", "transform_matrix": [[...4x4...]]}]}

``file_path`` has no extension; images are 8-bit RGBA PNGs (alpha = coverage). Optional keys, read by ours
when present (and named as instant-ngp and nerfstudio name them, so that they read our depth too):

- top level: ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` (instant-ngp's explicit intrinsics),
  ``scene_aabb`` (``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``, the scene bounds; older datasets wrote it as
  ``aabb``, which instant-ngp reads as its own rendering box, so it is still read but no longer written),
  ``bounded`` (false when something visible lies outside the box: a sky, an endless ground),
  ``scene`` (the scene file copied beside the dataset), ``integer_depth_scale`` (instant-ngp) and
  ``depth_unit_scale_factor`` (nerfstudio; its dataparser takes it as an option, 1e-3 by default): metres per
  unit of the 16-bit depth PNGs; instant-ngp's ``aabb_scale`` is read too (see :func:`nerf.data.load_dataset`);
- per frame: ``depth_path`` (instant-ngp) and ``depth_file_path`` (nerfstudio), both naming one 16-bit PNG of
  z-depth (along the camera's viewing axis, see :func:`raytrace.camera.z_per_distance`) in units of the scale
  above, 0 where nothing was hit or the depth exceeds the PNG's range; ``distance_path`` (``.npz`` holding
  float32 ``distance`` ``(H, W)``: our exact depth, the metric distance along the unit pixel-centre ray, 0
  where nothing was hit); ``normal_path`` (``.npz`` holding float16 ``normal`` ``(H, W, 3)``, world-space
  unit normals, 0 where nothing was hit). Datasets of format 1 had ``depth_path`` naming a float32 ``.npy``
  of ray distance and ``normal_path`` a float32 ``.npy``; both are still read.

Paths are relative to the folder of the JSON file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raytrace.atomic import write_json
from raytrace.camera import NO_DISTORTION, Distortion, Intrinsics, focal_from_fov
from raytrace.errors import InputError, is_finite_number

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr")
_DISTORTION_KEYS = ("k1", "k2", "p1", "p2")
"""instant-ngp's OpenCV lens distortion (:data:`raytrace.camera.Distortion`)."""
_TOP_KEYS = {
    "camera_angle_x", "camera_angle_y", "frames", "fl_x", "fl_y", "cx", "cy", "w", "h", "scene_aabb", "aabb",
    "scene", "bounded", "integer_depth_scale", "depth_unit_scale_factor", "aabb_scale", *_DISTORTION_KEYS,
    # Keys other tools write; accepted so their datasets load (k3, k4 and is_fisheye only when they are zero/false).
    "k3", "k4", "is_fisheye", "scale", "offset", "enable_depth_loading",
}
_FRAME_PATHS = ("depth_path", "depth_file_path", "distance_path", "normal_path")
_FRAME_KEYS = {"file_path", "transform_matrix", *_FRAME_PATHS, "rotation", "sharpness"}


@dataclass
class Frame:
    """One view: its image path (no extension, as in the JSON), pose and optional extras."""

    file_path: str
    transform_matrix: np.ndarray  # (4, 4) float64, camera-to-world, OpenGL axes
    depth_path: str | None = None  # instant-ngp's 16-bit z-depth PNG (format 1: our float32 .npy distance)
    normal_path: str | None = None
    depth_file_path: str | None = None  # nerfstudio's name for the 16-bit z-depth PNG
    distance_path: str | None = None  # exact distance along the ray (.npz)


@dataclass
class Transforms:
    """Contents of one ``transforms_<split>.json``."""

    camera_angle_x: float
    frames: list[Frame]
    fl_x: float | None = None
    fl_y: float | None = None
    cx: float | None = None
    cy: float | None = None
    w: int | None = None
    h: int | None = None
    aabb: np.ndarray | None = None  # (2, 3) float64, written as scene_aabb
    scene: str | None = None
    bounded: bool | None = None
    aabb_scale: float | None = None
    integer_depth_scale: float | None = None  # metres per unit of the depth PNGs (instant-ngp's key)
    depth_unit_scale_factor: float | None = None  # the same for nerfstudio
    dist: Distortion = NO_DISTORTION  # (k1, k2, p1, p2), instant-ngp's keys
    extra: dict[str, Any] = field(default_factory=dict)

    def intrinsics(self, width: int, height: int) -> Intrinsics:
        """Intrinsics for images of ``width`` x ``height`` (explicit keys win over ``camera_angle_x``)."""
        fx = self.fl_x if self.fl_x is not None else focal_from_fov(width, self.camera_angle_x)
        fy = self.fl_y if self.fl_y is not None else fx
        cx = self.cx if self.cx is not None else 0.5 * width
        cy = self.cy if self.cy is not None else 0.5 * height
        if self.w is not None and self.h is not None and (self.w, self.h) != (width, height):
            sx, sy = width / self.w, height / self.h
            return Intrinsics(width, height, fx * sx, fy * sy, cx * sx, cy * sy, self.dist)
        return Intrinsics(width, height, fx, fy, cx, cy, self.dist)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"camera_angle_x": self.camera_angle_x}
        for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "scene", "bounded", "aabb_scale", "integer_depth_scale",
                    "depth_unit_scale_factor"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.dist != NO_DISTORTION:
            out.update(zip(_DISTORTION_KEYS, self.dist, strict=True))
        if self.aabb is not None:
            out["scene_aabb"] = np.asarray(self.aabb, dtype=float).tolist()
        out.update(self.extra)
        frames = []
        for fr in self.frames:
            d: dict[str, Any] = {"file_path": fr.file_path, "transform_matrix": fr.transform_matrix.tolist()}
            for key in _FRAME_PATHS:
                if getattr(fr, key) is not None:
                    d[key] = getattr(fr, key)
            frames.append(d)
        out["frames"] = frames
        return out


def transforms_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"transforms_{split}.json"


def write_transforms(path: str | Path, transforms: Transforms) -> None:
    """Write ``transforms`` to ``path`` atomically."""
    write_json(path, transforms.to_json())


def _number(path: Path, where: str, value: Any, positive: bool = False) -> float:
    if not is_finite_number(value):
        raise InputError(path, where, f"expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise InputError(path, where, f"must be > 0, got {value!r}")
    return float(value)


def _numbers_only(value: Any) -> bool:
    """``value`` is a number or nested lists of numbers (no strings, booleans or nulls, which numpy would take)."""
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matrix(path: Path, where: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    if not _numbers_only(value):
        raise InputError(path, where, f"expected a {shape[0]}x{shape[1]} matrix of numbers")
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, where, f"expected a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape != shape:
        raise InputError(path, where, f"expected a {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, where, "contains NaN or infinity")
    return m


def read_transforms(path: str | Path) -> Transforms:
    """Read and validate a ``transforms_*.json`` (ours, NeRF-synthetic or instant-ngp's variant).

    Raises :class:`InputError` naming the file and the field on any problem.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, None, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, None, "expected a JSON object at the top level")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise InputError(path, unknown[0], "unknown key")
    has_focal = "fl_x" in data
    if "camera_angle_x" not in data and not has_focal:
        raise InputError(path, "camera_angle_x", "missing (and no fl_x given)")
    t = Transforms(camera_angle_x=0.0, frames=[])
    for key in ("fl_x", "fl_y", "cx", "cy"):
        if key in data:
            setattr(t, key, _number(path, key, data[key], positive=key.startswith("fl")))
    for key in ("w", "h"):
        if key in data:
            t.__setattr__(key, int(_number(path, key, data[key], positive=True)))
    if "camera_angle_x" in data:
        t.camera_angle_x = _number(path, "camera_angle_x", data["camera_angle_x"], positive=True)
        if t.camera_angle_x >= math.pi:
            raise InputError(path, "camera_angle_x", f"must be below pi radians, got {t.camera_angle_x}")
    elif t.w is not None:
        t.camera_angle_x = 2.0 * math.atan(0.5 * t.w / t.fl_x)
    else:
        raise InputError(path, "w", "needed with fl_x when camera_angle_x is absent")
    t.dist = tuple(_number(path, k, data.get(k, 0.0)) for k in _DISTORTION_KEYS)  # type: ignore[assignment]
    for key in ("k3", "k4"):
        if _number(path, key, data.get(key, 0.0)) != 0.0:
            raise InputError(path, key, "not supported (lens distortion is OpenCV's k1, k2, p1, p2)")
    if data.get("is_fisheye", False) is not False:
        raise InputError(path, "is_fisheye", "fisheye cameras are not supported")
    box_key = "scene_aabb" if "scene_aabb" in data else "aabb"
    if box_key in data:
        t.aabb = _matrix(path, box_key, data[box_key], (2, 3))
        if not (t.aabb[0] < t.aabb[1]).all():
            raise InputError(path, box_key, "min corner must be below max corner on every axis")
    if "bounded" in data:
        if not isinstance(data["bounded"], bool):
            raise InputError(path, "bounded", f"expected true or false, got {data['bounded']!r}")
        t.bounded = data["bounded"]
    for key in ("aabb_scale", "integer_depth_scale", "depth_unit_scale_factor"):
        if key in data:
            setattr(t, key, _number(path, key, data[key], positive=True))
    if "scene" in data:
        if not isinstance(data["scene"], str):
            raise InputError(path, "scene", "expected a file name")
        t.scene = data["scene"]
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise InputError(path, "frames", "missing or not a list")
    for i, fr in enumerate(frames):
        where = f"frames[{i}]"
        if not isinstance(fr, dict):
            raise InputError(path, where, "expected an object")
        unknown = sorted(set(fr) - _FRAME_KEYS)
        if unknown:
            raise InputError(path, f"{where}.{unknown[0]}", "unknown key")
        fp = fr.get("file_path")
        if not isinstance(fp, str) or not fp:
            raise InputError(path, f"{where}.file_path", "missing or not a string")
        if "transform_matrix" not in fr:
            raise InputError(path, f"{where}.transform_matrix", "missing")
        m = _matrix(path, f"{where}.transform_matrix", fr["transform_matrix"], (4, 4))
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
            raise InputError(path, f"{where}.transform_matrix", "last row must be [0, 0, 0, 1]")
        rot = m[:3, :3]
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-3) or np.linalg.det(rot) < 0:
            raise InputError(path, f"{where}.transform_matrix", "rotation part is not a proper rotation")
        extras = {}
        for key in _FRAME_PATHS:
            if key in fr:
                if not isinstance(fr[key], str):
                    raise InputError(path, f"{where}.{key}", "expected a path string")
                extras[key] = fr[key]
        t.frames.append(Frame(fp, m, **extras))
    return t


def resolve_image(root: Path, file_path: str, json_path: Path, where: str) -> Path:
    """The image file for a frame's ``file_path`` (which may lack its extension)."""
    base = (root / file_path).resolve()
    if base.suffix.lower() in IMAGE_SUFFIXES and base.is_file():
        return base
    for suffix in IMAGE_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    raise InputError(json_path, where, f"image not found: {file_path} (tried {', '.join(IMAGE_SUFFIXES)})")
