"""Dataset images read into one form: straight-alpha RGBA, float32 in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from raytrace.errors import InputError


def read_rgba(path: Path, source: Path, where: str) -> np.ndarray:
    """The image file ``path`` as ``(H, W, 4)`` float32 in [0, 1] (alpha 1 when the file has none; grey repeated);
    a file that cannot be read is an :class:`InputError` naming ``source`` and ``<where>.file_path``."""
    try:
        img = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types for unreadable files
        raise InputError(source, f"{where}.file_path", f"cannot read image {path}: {e}") from None
    if np.issubdtype(img.dtype, np.integer):
        arr = img.astype(np.float32) / np.iinfo(img.dtype).max
    elif np.issubdtype(img.dtype, np.floating):
        arr = img.astype(np.float32)
    else:
        raise InputError(path, None, f"unsupported pixel type {img.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(path, None, f"expected a grey, grey+alpha, RGB or RGBA image, got shape {img.shape}")
    channels = arr.shape[2]
    rgb = arr[..., :1].repeat(3, axis=2) if channels in (1, 2) else arr[..., :3]
    alpha = arr[..., channels - 1 :] if channels in (2, 4) else np.ones_like(arr[..., :1])
    return np.ascontiguousarray(np.concatenate([rgb, alpha], axis=2))
