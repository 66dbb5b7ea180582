"""COLMAP sparse models (``cameras``, ``images``, ``points3D``; ``.txt`` or ``.bin``): reading and writing (our
datasets as models: :mod:`raytrace.colmap_export`; their normalisation: :func:`raytrace.reader.colmap_world`).

Layout read: a model folder ``DATA/sparse/0/`` (or ``DATA/sparse/``) with its images in ``DATA/images/``, or,
when that folder does not exist, named relative to ``DATA/`` (as our writer names them: ``train/r_0.png``).
Camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV (their distortion becomes
:attr:`raytrace.camera.Intrinsics.dist`). Poses change convention in :func:`raytrace.camera.colmap_to_c2w`
only. Pixel centres are at +0.5 in COLMAP as in our convention, so ``cx``, ``cy`` carry over unchanged.

Every problem raises :class:`InputError` naming the file and the line (text) or the record (binary).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raytrace.atomic import write_bytes
from raytrace.camera import Distortion, Intrinsics, colmap_to_c2w
from raytrace.errors import InputError, is_finite_number

MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4}
PARAM_COUNTS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}
# COLMAP's other models, named in errors rather than read.
OTHER_MODELS = {5: "OPENCV_FISHEYE", 6: "FULL_OPENCV", 7: "FOV", 8: "SIMPLE_RADIAL_FISHEYE", 9: "RADIAL_FISHEYE",
                10: "THIN_PRISM_FISHEYE"}
NAMES = ("cameras", "images", "points3D")


@dataclass(frozen=True)
class ColmapCamera:
    """One camera: its model name, size and COLMAP parameters (f / fx, fy, cx, cy, then distortion)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def intrinsics(self, width: int | None = None, height: int | None = None) -> Intrinsics:
        """Our intrinsics, scaled to images of ``width`` x ``height`` when those differ from the camera's."""
        p, m = self.params, self.model
        if m in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = p[0]
            cx, cy = p[1], p[2]
            rest = p[3:]
        else:
            fx, fy, cx, cy = p[:4]
            rest = p[4:]
        dist: Distortion = (tuple(rest) + (0.0,) * 4)[:4]  # type: ignore[assignment]
        intr = Intrinsics(self.width, self.height, fx, fy, cx, cy, dist)
        width, height = width or self.width, height or self.height
        if (width, height) == (self.width, self.height):
            return intr
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, fx * sx, fy * sy, cx * sx, cy * sy, dist)


@dataclass(eq=False)
class ColmapImage:
    """One registered image: world-to-camera ``qvec`` (w, x, y, z) and ``tvec``, its camera, its file name
    and its 2D points ``xys`` ``(K, 2)`` with their 3D point ids ``point3d_ids`` ``(K,)`` (-1: none)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def c2w(self) -> np.ndarray:
        """Camera-to-world ``(4, 4)`` in our (OpenGL) convention."""
        return colmap_to_c2w(self.qvec, self.tvec)


@dataclass(eq=False)
class ColmapModel:
    """A sparse model. Points: ``point_ids`` ``(P,)`` int64, ``xyz`` ``(P, 3)`` float64, ``rgb`` ``(P, 3)``
    uint8, ``errors`` ``(P,)`` float64 and per point its track ``(K, 2)`` int64 (image id, 2D point index)."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    point_ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    errors: np.ndarray
    tracks: list[np.ndarray]


# ---- finding ---------------------------------------------------------------------------------------------

def model_files(folder: Path) -> dict[str, Path] | None:
    """The three files of the model in ``folder`` (binary where both exist), or None if it holds no model."""
    found = {}
    for name in NAMES:
        for ext in (".bin", ".txt"):
            if (folder / f"{name}{ext}").is_file():
                found[name] = folder / f"{name}{ext}"
                break
    return found if "cameras" in found or "images" in found else None


def data_root(folder: str | Path) -> Path:
    """The dataset folder of ``folder``: ``DATA`` for ``DATA/sparse/0`` or ``DATA/sparse``, else ``folder``."""
    folder = Path(folder)
    if folder.parent.name == "sparse":
        return folder.parent.parent
    return folder.parent if folder.name == "sparse" else folder


def find_model(root: str | Path) -> tuple[Path, Path] | None:
    """``(model folder, image folder)`` of a COLMAP dataset at ``root`` (a ``DATA/`` folder, or its
    ``sparse/0/`` or ``sparse/`` itself), or None when there is none."""
    root = Path(root)
    for model in (root, root / "sparse" / "0", root / "sparse"):
        if model_files(model) is None:
            continue
        data = data_root(root) if model == root else root
        images = data / "images"
        return model, images if images.is_dir() else data
    return None


# ---- text ------------------------------------------------------------------------------------------------

def _text_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, None, f"cannot read: {e}") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]


def _values(path: Path, line_no: int, tokens: list[str], names: str, kinds: str) -> list[int | float]:
    """``tokens`` read as ``kinds`` (``i`` int, ``f`` finite float), named by the space-separated ``names``."""
    labels = names.split()
    if len(tokens) < len(kinds):
        raise InputError(path, f"line {line_no}", f"expected {len(kinds)} values ({names}), got {len(tokens)}")
    out: list[int | float] = []
    for label, kind, tok in zip(labels, kinds, tokens, strict=False):
        try:
            v: int | float = int(tok) if kind == "i" else float(tok)
        except ValueError:
            raise InputError(path, f"line {line_no}: {label}",
                             f"expected {'an integer' if kind == 'i' else 'a number'}, got {tok!r}") from None
        if kind == "f" and not is_finite_number(v):
            raise InputError(path, f"line {line_no}: {label}", f"expected a finite number, got {tok!r}")
        out.append(v)
    return out


def _camera(path: Path, where: str, camera_id: int, model: str, width: int, height: int,
            params: list[float]) -> ColmapCamera:
    """A checked camera (``where`` names the line or record in errors)."""
    if model not in PARAM_COUNTS:
        raise InputError(path, f"{where}: model", f"unsupported camera model {model!r} (supported: "
                         f"{', '.join(PARAM_COUNTS)}; undistort the images with colmap image_undistorter)")
    if len(params) != PARAM_COUNTS[model]:
        raise InputError(path, f"{where}: params", f"{model} has {PARAM_COUNTS[model]} parameters, got {len(params)}")
    if width < 1 or height < 1:
        raise InputError(path, f"{where}: width", f"width and height must be >= 1, got {width} x {height}")
    n_focal = 2 if model in ("PINHOLE", "OPENCV") else 1
    if not all(np.isfinite(params)) or min(params[:n_focal]) <= 0:
        raise InputError(path, f"{where}: params", f"focal lengths must be > 0 and all finite, got {params}")
    return ColmapCamera(camera_id, model, width, height, tuple(float(p) for p in params))


def _read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for n, line in _text_lines(path):
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        cid, = _values(path, n, tok[:1], "CAMERA_ID", "i")
        if len(tok) < 4:
            raise InputError(path, f"line {n}", "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        width, height = _values(path, n, tok[2:4], "WIDTH HEIGHT", "ii")
        params = _values(path, n, tok[4:], " ".join(f"PARAMS[{i}]" for i in range(len(tok) - 4)), "f" * (len(tok) - 4))
        if cid in cameras:
            raise InputError(path, f"line {n}: CAMERA_ID", f"camera {cid} defined twice")
        cameras[int(cid)] = _camera(path, f"line {n}", int(cid), tok[1], int(width), int(height),
                                    [float(p) for p in params])
    return cameras


def _pose(path: Path, where: str, q: list[float]) -> np.ndarray:
    """The quaternion ``q`` as read (:func:`raytrace.camera.colmap_to_c2w` normalises it), checked non-zero."""
    qvec = np.asarray(q, dtype=np.float64)
    if not np.abs(qvec).max() > 1e-6:
        raise InputError(path, f"{where}: QW QX QY QZ", "the rotation quaternion is zero")
    return qvec


def _read_images_text(path: Path) -> dict[int, ColmapImage]:
    images: dict[int, ColmapImage] = {}
    lines = _text_lines(path)
    i = 0
    while i < len(lines):
        n, line = lines[i]
        i += 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 10:
            raise InputError(path, f"line {n}", "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        v = _values(path, n, tok[:9], "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID", "ifffffffi")
        image_id = int(v[0])
        if image_id in images:
            raise InputError(path, f"line {n}: IMAGE_ID", f"image {image_id} defined twice")
        name = " ".join(tok[9:])
        points = lines[i][1].split() if i < len(lines) else []
        pn = lines[i][0] if i < len(lines) else n + 1
        i += 1
        if len(points) % 3:
            raise InputError(path, f"line {pn}", "expected POINTS2D[] as (X, Y, POINT3D_ID) triples")
        k = len(points) // 3
        vals = _values(path, pn, points, " ".join(f"X[{j}] Y[{j}] POINT3D_ID[{j}]" for j in range(k)), "ffi" * k)
        arr = np.asarray(vals, dtype=np.float64).reshape(k, 3)
        images[image_id] = ColmapImage(image_id, _pose(path, f"line {n}", v[1:5]), np.asarray(v[5:8], dtype=np.float64),
                                       int(v[8]), name, arr[:, :2], arr[:, 2].astype(np.int64))
    return images


def _read_points_text(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    ids, xyz, rgb, errors, tracks = [], [], [], [], []
    for n, line in _text_lines(path):
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        v = _values(path, n, tok[:8], "POINT3D_ID X Y Z R G B ERROR", "ifffiiif")
        if not all(0 <= c <= 255 for c in v[4:7]):
            raise InputError(path, f"line {n}: R G B", f"colours must lie in 0..255, got {v[4:7]}")
        rest = tok[8:]
        if len(rest) % 2:
            raise InputError(path, f"line {n}", "expected TRACK[] as (IMAGE_ID, POINT2D_IDX) pairs")
        k = len(rest) // 2
        track = _values(path, n, rest, " ".join(f"IMAGE_ID[{j}] POINT2D_IDX[{j}]" for j in range(k)), "ii" * k)
        ids.append(v[0])
        xyz.append(v[1:4])
        rgb.append(v[4:7])
        errors.append(v[7])
        tracks.append(np.asarray(track, dtype=np.int64).reshape(k, 2))
    return (np.asarray(ids, dtype=np.int64), np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
            np.asarray(rgb, dtype=np.uint8).reshape(-1, 3), np.asarray(errors, dtype=np.float64), tracks)


# ---- binary ----------------------------------------------------------------------------------------------

class _Reader:
    """Little-endian records of a COLMAP ``.bin`` file; running out of bytes is an InputError."""

    def __init__(self, path: Path) -> None:
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise InputError(path, None, f"cannot read: {e}") from None
        self.path, self.pos, self.where = path, 0, "header"

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise InputError(self.path, self.where, f"file ends early (at byte {len(self.data)})")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: str, n: int) -> np.ndarray:
        """``n`` items of numpy ``dtype`` (little-endian)."""
        size = np.dtype(dtype).itemsize * n
        if self.pos + size > len(self.data):
            raise InputError(self.path, self.where, f"file ends early (at byte {len(self.data)})")
        out = np.frombuffer(self.data, dtype=dtype, count=n, offset=self.pos)
        self.pos += size
        return out

    def name(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise InputError(self.path, f"{self.where}: name", "file ends inside the image name")
        try:
            name = self.data[self.pos : end].decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(self.path, f"{self.where}: name", "not UTF-8") from None
        self.pos = end + 1
        return name

    def count(self, what: str, record_size: int) -> int:
        """A uint64 count of records of at least ``record_size`` bytes each, checked against the file size."""
        (n,) = self.read("Q")
        if n * record_size > len(self.data) - self.pos:
            raise InputError(self.path, self.where, f"{n} {what} do not fit in the file ({len(self.data)} bytes)")
        return n

    def done(self) -> None:
        if self.pos != len(self.data):
            raise InputError(self.path, None, f"{len(self.data) - self.pos} bytes left after the last record")


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    cameras = {}
    for i in range(r.count("cameras", 24)):
        r.where = f"camera record {i}"
        cid, model_id, width, height = r.read("iiQQ")
        model = next((m for m, k in MODEL_IDS.items() if k == model_id), OTHER_MODELS.get(model_id, str(model_id)))
        if model not in PARAM_COUNTS:  # _camera raises the error naming the model
            _camera(path, r.where, cid, model, width, height, [])
        params = list(r.read("d" * PARAM_COUNTS[model]))
        if cid in cameras:
            raise InputError(path, f"{r.where}: camera_id", f"camera {cid} defined twice")
        cameras[cid] = _camera(path, r.where, cid, model, width, height, params)
    r.done()
    return cameras


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    images: dict[int, ColmapImage] = {}
    for i in range(r.count("images", 69)):
        r.where = f"image record {i}"
        image_id, *pose, camera_id = r.read("i7di")
        name = r.name()
        pts = r.array("<f8,<f8,<i8", r.count("2D points", 24))
        xys = np.stack([pts["f0"], pts["f1"]], axis=-1)
        if image_id in images:
            raise InputError(path, f"{r.where}: image_id", f"image {image_id} defined twice")
        if not np.isfinite(pose).all() or not np.isfinite(xys).all():
            raise InputError(path, r.where, "pose or 2D points not finite")
        images[image_id] = ColmapImage(image_id, _pose(path, r.where, pose[:4]), np.asarray(pose[4:]),
                                       camera_id, name, xys, pts["f2"].astype(np.int64))
    r.done()
    return images


def _read_points_bin(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    r = _Reader(path)
    n = r.count("points", 51)
    ids, xyz, rgb, errors, tracks = np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 3), np.uint8), \
        np.zeros(n), []
    for i in range(n):
        r.where = f"point record {i}"
        pid, x, y, z, cr, cg, cb, err = r.read("Q3d3Bd")
        tracks.append(r.array("<i4", 2 * r.count("track entries", 8)).astype(np.int64).reshape(-1, 2))
        if not np.isfinite([x, y, z, err]).all():
            raise InputError(path, r.where, "position or error not finite")
        ids[i], xyz[i], rgb[i], errors[i] = pid, (x, y, z), (cr, cg, cb), err
    r.done()
    return ids, xyz, rgb, errors, tracks


# ---- the model -------------------------------------------------------------------------------------------

def read_model(folder: str | Path) -> ColmapModel:
    """Read the model in ``folder`` (``.bin`` files where present, else ``.txt``); points3D is optional."""
    folder = Path(folder)
    files = model_files(folder) or {}
    for name in ("cameras", "images"):
        if name not in files:
            raise InputError(folder, f"{name}.txt", f"missing (no {name}.bin nor {name}.txt in the model folder)")
    binary = {k: p.suffix == ".bin" for k, p in files.items()}
    cameras = (_read_cameras_bin if binary["cameras"] else _read_cameras_text)(files["cameras"])
    images = (_read_images_bin if binary["images"] else _read_images_text)(files["images"])
    if "points3D" in files:
        points = (_read_points_bin if binary["points3D"] else _read_points_text)(files["points3D"])
    else:
        points = (np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), [])
    for im in images.values():
        if im.camera_id not in cameras:
            raise InputError(files["images"], f"image {im.image_id} ({im.name}): CAMERA_ID",
                             f"camera {im.camera_id} is not in {files['cameras'].name}")
    return ColmapModel(cameras, images, *points)


def write_model(model: ColmapModel, folder: str | Path, binary: bool = False) -> None:
    """Write ``model`` into ``folder`` as ``.txt`` (or ``.bin``) files, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if binary:
        cams = [struct.pack("<Q", len(model.cameras))]
        for c in model.cameras.values():
            cams.append(struct.pack(f"<iiQQ{len(c.params)}d", c.camera_id, MODEL_IDS[c.model], c.width, c.height,
                                    *c.params))
        ims = [struct.pack("<Q", len(model.images))]
        for im in model.images.values():
            ims.append(struct.pack("<i7di", im.image_id, *im.qvec, *im.tvec, im.camera_id))
            ims.append(im.name.encode() + b"\0" + struct.pack("<Q", len(im.xys)))
            ims += [struct.pack("<ddq", *xy, pid) for xy, pid in zip(im.xys, im.point3d_ids, strict=True)]
        pts = [struct.pack("<Q", len(model.point_ids))]
        for i, pid in enumerate(model.point_ids):
            pts.append(struct.pack("<Q3d3BdQ", pid, *model.xyz[i], *model.rgb[i], model.errors[i],
                                   len(model.tracks[i])))
            pts.append(model.tracks[i].astype("<i4").tobytes())
        for name, parts in zip(NAMES, (cams, ims, pts), strict=True):
            write_bytes(folder / f"{name}.bin", b"".join(parts))
        return
    cams_t = ["# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]"]
    cams_t += [" ".join([str(c.camera_id), c.model, str(c.width), str(c.height), *map(repr, c.params)])
               for c in model.cameras.values()]
    ims_t = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for im in model.images.values():
        ims_t.append(" ".join([str(im.image_id), *map(repr, map(float, [*im.qvec, *im.tvec])), str(im.camera_id),
                               im.name]))
        ims_t.append(" ".join(f"{x!r} {y!r} {p}" for (x, y), p in zip(im.xys.tolist(), im.point3d_ids.tolist(),
                                                                    strict=True)))
    pts_t = ["# POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    for i, pid in enumerate(model.point_ids.tolist()):
        track = " ".join(map(str, model.tracks[i].reshape(-1).tolist()))
        pts_t.append(" ".join([str(pid), *map(repr, model.xyz[i].tolist()), *map(str, model.rgb[i].tolist()),
                               repr(float(model.errors[i])), track]).rstrip())
    for name, lines in zip(NAMES, (cams_t, ims_t, pts_t), strict=True):
        write_bytes(folder / f"{name}.txt", ("\n".join(lines) + "\n").encode())
