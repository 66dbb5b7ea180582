"""The images of a capture: photos copied under their own names, the sharpest frame of each window of a video
(named by its frame number), and the downscaled copies ``images_2/``, ``images_4/``, ``images_8/`` that
instant-ngp and nerfstudio read (each side divided by the factor, rounded down, as a block mean)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage.color import rgb2gray
from skimage.filters import laplace
from skimage.transform import downscale_local_mean
from tqdm import tqdm

from raytrace.atomic import atomic_path
from raytrace.errors import InputError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DOWNSCALES = (2, 4, 8)
JPEG_QUALITY = 95


def list_photos(folder: Path) -> list[str]:
    """The names of the photos in ``folder`` (not its subfolders), sorted; none is an :class:`InputError`."""
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_SUFFIXES)
    if not names:
        raise InputError(folder, None, f"no images ({', '.join(PHOTO_SUFFIXES)}) in this folder")
    return names


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as ``(H, W, 3)`` uint8 (alpha dropped, grey repeated); unreadable: InputError."""
    try:
        img = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types for unreadable files
        raise InputError(path, None, f"cannot read the image: {str(e).splitlines()[0] if str(e) else e}") from None
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255.0 + 0.5).astype(np.uint8) \
            if np.issubdtype(img.dtype, np.integer) else (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise InputError(path, None, f"expected a grey, RGB or RGBA image, got shape {img.shape}")
    return np.repeat(img[..., :1], 3, axis=2) if img.shape[2] < 3 else img[..., :3]


def sharpness(rgb: np.ndarray) -> float:
    """The variance of the Laplacian of ``rgb`` ``(H, W, 3)`` in grey: higher is sharper."""
    return float(laplace(rgb2gray(rgb)).var())


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write ``rgb`` ``(H, W, 3)`` uint8 to ``path`` atomically (JPEG at :data:`JPEG_QUALITY`)."""
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, **({"quality": JPEG_QUALITY} if jpeg else {}))


def copy_photos(src: Path, names: list[str], out: Path) -> None:
    """Copy the photos ``names`` from ``src`` into ``out`` (each atomically), checking that each reads and
    that all share one size (one camera)."""
    size = None
    for name in tqdm(names, desc="photos", unit="img"):
        shape = read_rgb(src / name).shape[:2]
        if size is None:
            size = shape
        elif shape != size:
            raise InputError(src / name, None, f"is {shape[1]}x{shape[0]}, the other photos {size[1]}x{size[0]} "
                             "(one camera needs one image size)")
        if src.resolve() != out.resolve():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(src / name, tmp)


def video_frame_count(video: Path) -> int:
    """The number of frames of ``video`` as its container states it (duration x rate when it states none)."""
    try:
        meta = iio.immeta(video, plugin="FFMPEG")
    except Exception as e:  # imageio / ffmpeg raise many types for unreadable files
        raise InputError(video, None, f"cannot read as a video: {str(e).strip().splitlines()[0] if str(e) else e}"
                         ) from None
    n = meta.get("nframes", math.inf)
    if not isinstance(n, int) or n <= 0:
        n = round(float(meta.get("fps", 0.0)) * float(meta.get("duration", 0.0)))
    if n <= 0:
        raise InputError(video, None, "the video states no frames")
    return n


def extract_frames(video: Path, out: Path, count: int) -> list[str]:
    """About ``count`` frames of ``video`` into ``out``: of each window of ``frames / count`` consecutive frames
    the sharpest (:func:`sharpness`), as ``<frame number>.jpg`` (6 digits, from 0). Returns their names."""
    total = video_frame_count(video)
    window = max(1, math.ceil(total / count))
    names: list[str] = []
    best: tuple[float, int, np.ndarray] | None = None

    def flush() -> None:
        assert best is not None
        name = f"{best[1]:06d}.jpg"
        write_image(out / name, best[2])
        names.append(name)

    try:
        for index, frame in enumerate(tqdm(iio.imiter(video, plugin="FFMPEG"), total=total, desc="video frames",
                                           unit="frame")):
            rgb = np.ascontiguousarray(np.asarray(frame)[..., :3])
            if best is not None and index // window != best[1] // window:
                flush()
                best = None
            score = sharpness(rgb)
            if best is None or score > best[0]:
                best = (score, index, rgb)
    except InputError:
        raise
    except Exception as e:  # a decoding failure part-way through
        raise InputError(video, None, f"cannot decode the video: {str(e).strip().splitlines()[0] if str(e) else e}"
                         ) from None
    if best is None:
        raise InputError(video, None, "no frame could be decoded")
    flush()
    return names


def downscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` uint8 as the block mean over ``factor`` x ``factor`` pixels: ``(H // f, W // f, 3)``
    (the rows and columns beyond a multiple of ``factor`` dropped)."""
    h, w = rgb.shape[0] // factor * factor, rgb.shape[1] // factor * factor
    if h == 0 or w == 0:
        raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} is smaller than the factor {factor}")
    return (downscale_local_mean(rgb[:h, :w].astype(np.float32), (factor, factor, 1)) + 0.5).astype(np.uint8)


def write_downscaled(root: Path, names: list[str], factors: tuple[int, ...] = DOWNSCALES) -> None:
    """``root/images_<f>/<name>`` for each image ``root/images/<name>`` and each factor ``f``."""
    for name in tqdm(names, desc="downscaled copies", unit="img"):
        rgb = read_rgb(root / "images" / name)
        for f in factors:
            write_image(root / f"images_{f}" / name, downscale(rgb, f))
