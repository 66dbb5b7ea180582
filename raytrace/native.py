"""The raytracer's native CPU kernels (``torch.ops.nerf_native.rt_*``, built with the nerf kernels by the top-level
``CMakeLists.txt`` into ``nerf/_native/``), loaded lazily from that file without importing ``nerf``.

Each kernel has its PyTorch twin in the module that calls it, used where the library is not built, does not load
or lacks the kernel, or the tensors are not on the CPU; ``RAYTRACE_NATIVE=0`` forces the twins.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch


def library_path() -> Path | None:
    """Where the native library lies (``nerf/_native/libnerf_native.so`` beside the raytrace package), found
    without importing ``nerf``; ``None`` without a ``nerf`` package."""
    try:
        spec = importlib.util.find_spec("nerf")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "_native" / "libnerf_native.so"


@functools.cache
def _loaded() -> bool:
    path = library_path()
    if os.environ.get("RAYTRACE_NATIVE", "1") == "0" or path is None or not path.is_file():
        return False
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError):
        return False
    return hasattr(torch.ops.nerf_native, "rt_direct_samples")


def available(device: torch.device) -> bool:
    """Whether the native kernels run on ``device`` (the CPU, with the library built)."""
    return device.type == "cpu" and _loaded()
