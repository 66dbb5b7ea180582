"""The CUDA kernels built on first CUDA use, where the install built none (torch without CUDA or no nvcc then):
CMake on ``nerf/csrc`` (shipped in the package) for the GPU present, the library cached under
``$XDG_CACHE_HOME/nerfkit`` (default ``~/.cache/nerfkit``), one per sources, torch and GPU architecture."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")
LIBRARY_NAME = "libnerf_native_cuda.so"


class CudaBuildError(RuntimeError):
    """The CUDA kernels could not be built; the message is one line, the full log in the cache folder."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/nerfkit``, else ``~/.cache/nerfkit``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nerfkit"


def build_key(arch: str) -> str:
    """What a built library depends on: the sources, torch (its version and CUDA) and the architecture."""
    digest = hashlib.sha256(f"{torch.__version__} {torch.version.cuda} {arch}".encode())
    for path in sorted(CSRC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def first_error(output: str) -> str:
    """What a failed CMake run says first: a CMake error's message (its indented lines), else a compiler's error."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error"):
            message = []
            for follow in lines[i + 1:]:
                if follow.strip():
                    message.append(follow.strip())
                elif message:
                    break
            return " ".join(message) or line.strip()
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "no output")


def cuda_library(arch: str) -> Path:
    """``libnerf_native_cuda.so`` for the CUDA architecture ``arch`` (``"90"`` for compute capability 9.0): the cached
    one, else built now with a progress line on stderr. Raises :class:`CudaBuildError` (one line)."""
    folder = cache_root() / f"cuda-sm{arch}-{build_key(arch)}"
    library = folder / LIBRARY_NAME
    if library.is_file():
        return library
    cmake = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if cmake is None:
        raise CudaBuildError("building the CUDA kernels needs CMake >= 3.24 on the PATH (pip install cmake) and nvcc")
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    print(f"nerf: building the CUDA kernels for sm_{arch} (first use only, a few minutes); cached in {folder}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix="build-") as tmp:  # concurrent builders each in their own
        steps = (
            [cmake, "-S", str(CSRC), "-B", tmp, f"-DPython_EXECUTABLE={sys.executable}",
             f"-DNERF_CUDA_ARCHITECTURES={arch}", "-DNERF_REQUIRE_CUDA=ON", f"-DNERF_LIBRARY_DIR={tmp}"],
            [cmake, "--build", tmp, "--parallel", "--target", "nerf_native_cuda"],
        )
        with log.open("w") as out:
            for cmd in steps:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                out.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n")
                if proc.returncode != 0:
                    raise CudaBuildError(f"building the CUDA kernels failed: {first_error(proc.stdout)} (log: {log})")
        os.replace(Path(tmp) / LIBRARY_NAME, library)
    return library
