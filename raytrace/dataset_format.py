"""The dataset layout on disk: NeRF-synthetic ("Blender") ``transforms_<split>.json`` files, plus our extras.

Written by ``raytrace`` and read by ``nerf``. A split file is::

    {"camera_angle_x": 0.69, "frames": [{"file_path": "./train/r_0", "transform_matrix": [[...4x4...]]}]}

``file_path`` has no extension; images are 8-bit RGBA PNGs (alpha = coverage). Optional keys, read by ours
when present (and named as instant-ngp and nerfstudio name them, so that they read our depth too):

- top level: ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` (instant-ngp's explicit intrinsics),
  ``scene_aabb`` (``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``, the scene bounds; older datasets wrote it as
  ``aabb``, which instant-ngp reads as its own unit cube: ``aabb`` is read as ours beside our ``scene`` or
  ``bounded`` keys, else as instant-ngp's),
  ``bounded`` (false when something visible lies outside the box: a sky, an endless ground),
  ``scene`` (the scene file copied beside the dataset), ``integer_depth_scale`` (instant-ngp) and
  ``depth_unit_scale_factor`` (nerfstudio; its dataparser takes it as an option, 1e-3 by default): metres per
  unit of the 16-bit depth PNGs; instant-ngp's ``aabb_scale``, ``scale``, ``offset`` and ``aabb`` (its unit cube,
  see :func:`raytrace.bounds.ngp_box`); nerfstudio's ``camera_model``, ``applied_transform`` and ``ply_file_path``;
- per frame: nerfstudio's per-frame intrinsics (``fl_x`` ... ``p2``, overriding the top level's); ``depth_path``
  (instant-ngp) and ``depth_file_path`` (nerfstudio), both naming one 16-bit PNG of
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
CAPTURE_SIGNS = ("sharpness", "applied_transform", "ply_file_path", "colmap_im_id")
"""Keys that the tools making datasets from photographs write (instant-ngp's colmap2nerf: a frame's ``sharpness``;
nerfstudio's ns-process-data: ``applied_transform``, ``ply_file_path``, a frame's ``colmap_im_id``). With a non-zero
lens distortion coefficient they mark a JSON as photographs; a ``camera_model`` alone does not (renderers' exporters
write one too)."""
"""instant-ngp's OpenCV lens distortion (:data:`raytrace.camera.Distortion`)."""
_CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", *_DISTORTION_KEYS, "k3", "k4", "camera_model")
"""Keys that describe the camera, at the top level or (nerfstudio) per frame."""
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
"""nerfstudio's ``camera_model`` values our camera (:class:`raytrace.camera.Intrinsics`) covers."""
_TOP_KEYS = {
    "camera_angle_x", "camera_angle_y", "frames", "scene_aabb", "aabb", "scene", "bounded", "integer_depth_scale",
    "depth_unit_scale_factor", "aabb_scale", "scale", "offset", "applied_transform", "applied_scale",
    "ply_file_path", *_CAMERA_KEYS,
    # Keys other tools write; accepted so their datasets load (k3, k4 and is_fisheye only when they are zero/false).
    "is_fisheye", "enable_depth_loading", "up", "totp", "avglen", "orientation_override",
}
_FRAME_PATHS = ("depth_path", "depth_file_path", "distance_path", "normal_path")
_FRAME_KEYS = {"file_path", "transform_matrix", *_FRAME_PATHS, "rotation", "sharpness", "colmap_im_id", "mask_path",
               *_CAMERA_KEYS}


@dataclass
class Frame:
    """One view: its image path (no extension, as in the JSON), pose and optional extras."""

    file_path: str
    transform_matrix: np.ndarray  # (4, 4) float64, camera-to-world, OpenGL axes
    depth_path: str | None = None  # instant-ngp's 16-bit z-depth PNG (format 1: our float32 .npy distance)
    normal_path: str | None = None
    depth_file_path: str | None = None  # nerfstudio's name for the 16-bit z-depth PNG
    distance_path: str | None = None  # exact distance along the ray (.npz)
    camera: dict[str, Any] = field(default_factory=dict)  # nerfstudio's per-frame intrinsics (as in the JSON)


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
    scale: float | None = None  # instant-ngp's world-to-unit-cube scale and offset (see raytrace.bounds.ngp_box)
    offset: np.ndarray | None = None  # (3,)
    ngp_aabb: np.ndarray | None = None  # (2, 3) instant-ngp's ``aabb`` key
    camera_model: str | None = None  # nerfstudio's
    captured: bool = False  # written for photographs (see CAPTURE_SIGNS), not for renders
    applied_transform: np.ndarray | None = None  # (3, 4) nerfstudio's: original data world -> this JSON's world
    ply_file_path: str | None = None  # nerfstudio's sparse points, in this JSON's world
    extra: dict[str, Any] = field(default_factory=dict)

    def intrinsics(self, width: int, height: int, frame: Frame | None = None) -> Intrinsics:
        """Intrinsics for images of ``width`` x ``height`` (explicit keys win over ``camera_angle_x``; a
        ``frame``'s own keys over the top level's)."""
        own = frame.camera if frame is not None else {}
        fl_x, fl_y, cx, cy, w, h = (own.get(k, getattr(self, k)) for k in ("fl_x", "fl_y", "cx", "cy", "w", "h"))
        dist = tuple(own.get(k, d) for k, d in zip(_DISTORTION_KEYS, self.dist, strict=True))
        fx = fl_x if fl_x is not None else focal_from_fov(width, self.camera_angle_x)
        fy = fl_y if fl_y is not None else fx
        cx = cx if cx is not None else 0.5 * width
        cy = cy if cy is not None else 0.5 * height
        if w is not None and h is not None and (w, h) != (width, height):
            sx, sy = width / w, height / h
            return Intrinsics(width, height, fx * sx, fy * sy, cx * sx, cy * sy, dist)  # type: ignore[arg-type]
        return Intrinsics(width, height, fx, fy, cx, cy, dist)  # type: ignore[arg-type]

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
    frames = data.get("frames")
    per_frame_focal = isinstance(frames, list) and bool(frames) and all(isinstance(f, dict) and "fl_x" in f
                                                                         for f in frames)
    if "camera_angle_x" not in data and "fl_x" not in data and not per_frame_focal:
        raise InputError(path, "camera_angle_x", "missing (and no fl_x given)")
    t = Transforms(camera_angle_x=0.0, frames=[])
    camera = _camera_keys(path, "", data)
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model"):
        setattr(t, key, camera.get(key))
    frame_dicts = [f for f in frames if isinstance(f, dict)] if isinstance(frames, list) else []
    dicts = (data, *frame_dicts)
    t.captured = any(k in d for d in dicts for k in CAPTURE_SIGNS) or any(
        is_finite_number(d.get(k)) and d.get(k) != 0 for d in dicts for k in _DISTORTION_KEYS)
    if "camera_angle_x" in data:
        t.camera_angle_x = _number(path, "camera_angle_x", data["camera_angle_x"], positive=True)
        if t.camera_angle_x >= math.pi:
            raise InputError(path, "camera_angle_x", f"must be below pi radians, got {t.camera_angle_x}")
    elif t.w is not None and t.fl_x is not None:
        t.camera_angle_x = 2.0 * math.atan(0.5 * t.w / t.fl_x)
    elif not per_frame_focal:
        raise InputError(path, "w", "needed with fl_x when camera_angle_x is absent")
    t.dist = tuple(camera.get(k, 0.0) for k in _DISTORTION_KEYS)  # type: ignore[assignment]
    if data.get("is_fisheye", False) is not False:
        raise InputError(path, "is_fisheye", "fisheye cameras are not supported")
    for key in ("scene_aabb", "aabb"):
        if key in data:
            box = _matrix(path, key, data[key], (2, 3))
            if not (box[0] < box[1]).all():
                raise InputError(path, key, "min corner must be below max corner on every axis")
            ours = key == "scene_aabb" or "scene" in data or "bounded" in data  # format 1 wrote ours as aabb
            setattr(t, "aabb" if ours else "ngp_aabb", box)
    if "scale" in data:
        t.scale = _number(path, "scale", data["scale"], positive=True)
    if "offset" in data:
        offset = data["offset"]
        t.offset = (_matrix(path, "offset", [offset], (1, 3))[0] if isinstance(offset, list)
                    else np.full(3, _number(path, "offset", offset)))
    if "applied_transform" in data:
        t.applied_transform = _matrix(path, "applied_transform", data["applied_transform"], (3, 4))
    if "ply_file_path" in data:
        if not isinstance(data["ply_file_path"], str):
            raise InputError(path, "ply_file_path", "expected a path string")
        t.ply_file_path = data["ply_file_path"]
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
        t.frames.append(Frame(fp, m, **extras, camera=_camera_keys(path, f"{where}.", fr)))
    return t


def _camera_keys(path: Path, where: str, data: dict[str, Any]) -> dict[str, Any]:
    """The camera keys present in ``data`` (the top level or a frame; ``where`` prefixes field names), checked:
    focal lengths and sizes > 0, k3 and k4 zero, ``camera_model`` one of :data:`CAMERA_MODELS`."""
    out: dict[str, Any] = {}
    for key in ("fl_x", "fl_y", "cx", "cy", *_DISTORTION_KEYS):
        if key in data:
            out[key] = _number(path, where + key, data[key], positive=key.startswith("fl"))
    for key in ("w", "h"):
        if key in data:
            out[key] = int(_number(path, where + key, data[key], positive=True))
    for key in ("k3", "k4"):
        if _number(path, where + key, data.get(key, 0.0)) != 0.0:
            raise InputError(path, where + key, "not supported (lens distortion is OpenCV's k1, k2, p1, p2)")
    if "camera_model" in data:
        if data["camera_model"] not in CAMERA_MODELS:
            raise InputError(path, where + "camera_model", f"{data['camera_model']!r} is not supported (our camera "
                             f"is a pinhole with OpenCV's k1, k2, p1, p2: {', '.join(CAMERA_MODELS)})")
        out["camera_model"] = data["camera_model"]
    return out


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
