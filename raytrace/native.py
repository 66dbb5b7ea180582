"""The raytracer's native CPU kernels (``torch.ops.raytrace_native.*``, sources in ``raytrace/csrc/``), built at
install into ``raytrace/_native/libraytrace_native.so`` and loaded lazily from there.

Each kernel has its PyTorch twin in the module that calls it, used where the library is not built, does not load
or the tensors are not on the CPU; ``RAYTRACE_NATIVE=0`` forces the twins.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

LIBRARY = Path(__file__).with_name("_native") / "libraytrace_native.so"


@functools.cache
def load_error() -> str | None:
    """Load the library once; ``None`` when loaded, else why not (one line)."""
    if os.environ.get("RAYTRACE_NATIVE", "1") == "0":
        return "RAYTRACE_NATIVE=0"
    if not LIBRARY.is_file():
        return f"the raytracer's native kernels were not built at install ({LIBRARY} missing)"
    try:
        torch.ops.load_library(str(LIBRARY))
    except (OSError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"{LIBRARY} does not load ({first_line}): reinstall the package against this torch"
    return None


def available(device: torch.device) -> bool:
    """Whether the native kernels run on ``device`` (the CPU, with the library built)."""
    return device.type == "cpu" and load_error() is None
