"""nerfkit's PEP 517 build backend: setuptools' own, whose ``build_ext`` runs CMake on ``CMakeLists.txt`` to build the
native kernels into the wheel (``pip install``, ``python -m build``) or the checkout (``pip install -e``).

- **Against the torch that will load them** (its C++ ABI): the torch of the interpreter that runs the backend, which
  pip's build isolation hides behind an overlay of the build requirements (pip keeps ``sys.executable`` and adds
  ``PYTHONPATH`` and ``PYTHONNOUSERSITE``): CMake runs that interpreter with the overlay when it imports torch,
  else without it. Where neither does (a ``python -m build`` venv, a venv without torch), torch becomes a build
  requirement; a missing CMake too (the ``cmake`` wheel).
- **No C++ compiler** (``CXX``, else ``c++``, ``g++`` or ``clang++`` on the PATH) or ``NERFKIT_NATIVE=0``: the
  wheel has no kernels, the build says so (a warning that pip shows) and nerf runs its torch backend.
  ``NERFKIT_REQUIRE_NATIVE=1`` makes that an error (``make native``). With a compiler, a failed build is an error.
- **CUDA kernels** where torch has CUDA and nvcc is found (``nerf/csrc/CMakeLists.txt`` decides), built last and on
  a best-effort basis: a failure is said and leaves them to :mod:`nerf.cuda_build` on first CUDA use.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

from setuptools import Extension
from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks that this backend keeps as they are)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent.parent
CMAKE_MINIMUM = (3, 24)
LIBRARIES = ("nerf/_native/libnerf_native.so", "nerf/_native/libnerf_native_cuda.so",
             "raytrace/_native/libraytrace_native.so")
CPU_TARGETS = ("nerf_native", "raytrace_native")
CUDA_TARGET = "nerf_native_cuda"
ISOLATION_VARIABLES = ("PYTHONPATH", "PYTHONNOUSERSITE")
CMAKE_SETTINGS = ("NERF_CUDA_ARCHITECTURES",)
"""Environment variables handed to CMake as they are: ``NERF_CUDA_ARCHITECTURES="80;90" pip install .``"""
EXTENSIONS = [Extension("nerfkit_native", sources=[])]
"""One stand-in for all the CMake targets: it makes the wheel a platform wheel and runs :class:`CMakeBuild`."""


def say(message: str) -> None:
    print(f"nerfkit: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Said by pip even without ``-v``: the hook's warnings reach the frontend (pyproject_hooks re-emits them)."""
    warnings.warn(f"nerfkit: {message}", UserWarning, stacklevel=2)


def native_required() -> bool:
    return os.environ.get("NERFKIT_REQUIRE_NATIVE") == "1"


def compiler() -> str | None:
    """The C++ compiler CMake would use, ``None`` where there is none."""
    if os.environ.get("CXX"):
        return shutil.which(shlex.split(os.environ["CXX"])[0])
    return next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None)


def cmake() -> str | None:
    """A CMake binary of at least CMAKE_MINIMUM: the ``cmake`` wheel's (a build requirement) or the PATH's."""
    try:
        import cmake as cmake_wheel  # the binary itself: the wheel's `cmake` script needs the overlay's PYTHONPATH

        candidates = [str(Path(cmake_wheel.CMAKE_BIN_DIR) / "cmake")]
    except ImportError:
        candidates = []
    candidates += [path for path in [shutil.which("cmake")] if path]
    for path in candidates:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        found = re.search(r"(\d+)\.(\d+)", out)
        if found and (int(found[1]), int(found[2])) >= CMAKE_MINIMUM:
            return path
    return None


def torch_environment() -> dict[str, str] | None:
    """The environment in which ``sys.executable`` imports the torch that the package will run with (the build's
    own, else the target environment's behind pip's isolation overlay); ``None`` where it imports none."""
    plain = {name: value for name, value in os.environ.items() if name not in ISOLATION_VARIABLES}
    for env in (dict(os.environ), plain):
        if subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True).returncode == 0:
            return env
    return None


def torch_requirement() -> str:
    """pyproject.toml's torch dependency, the build requirement where no torch is found."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(dep for dep in dependencies if re.match(r"torch\b", dep))


def skip_reason() -> str | None:
    """Why the kernels cannot be built here at all, ``None`` where they can (given the build requirements)."""
    if os.environ.get("NERFKIT_NATIVE") == "0":
        return "NERFKIT_NATIVE=0"
    if compiler() is None:
        return "no C++ compiler found (CXX, c++, g++ or clang++)"
    return None


def native_requires() -> list[str]:
    if skip_reason() is not None:
        return []
    return ([] if cmake() else [f"cmake>={'.'.join(map(str, CMAKE_MINIMUM))}"]) + (
        [] if torch_environment() else [torch_requirement()])


def get_requires_for_build_wheel(config_settings: dict | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_wheel(config_settings) + native_requires()


def get_requires_for_build_editable(config_settings: dict | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_editable(config_settings) + native_requires()


class CMakeBuild(build_ext):
    """``build_ext`` as CMake: the libraries into the packages of ``build_lib``, or of the checkout in place."""

    def run(self) -> None:
        root = ROOT if self.inplace else Path(self.build_lib).resolve()
        for name in LIBRARIES:  # never a stale library, built for another torch, in the wheel
            (root / name).unlink(missing_ok=True)
        why_not = skip_reason() or (None if cmake() else "no CMake >= 3.24 found")
        env = torch_environment()
        why_not = why_not or (None if env else f"{sys.executable} imports no torch to build against")
        if why_not is not None:
            if native_required():
                raise RuntimeError(f"nerfkit: the native kernels cannot be built: {why_not} (NERFKIT_REQUIRE_NATIVE=1)")
            warn(f"native kernels NOT built ({why_not}); nerf will run its PyTorch backend. Install a C++ compiler "
                "and CMake, then reinstall, for the faster native kernels.")
            return
        key = subprocess.run([sys.executable, "-c", "import torch; print(torch.utils.cmake_prefix_path)"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
        build_dir = ROOT / "build" / "native" / hashlib.sha1(key.encode()).hexdigest()[:12]
        self.run_cmake(env, "-S", str(ROOT), "-B", str(build_dir), f"-DPython_EXECUTABLE={sys.executable}",
                       f"-DNERF_LIBRARY_DIR={root / 'nerf' / '_native'}",
                       f"-DRAYTRACE_LIBRARY_DIR={root / 'raytrace' / '_native'}",
                       *[f"-D{name}={os.environ[name]}" for name in CMAKE_SETTINGS if os.environ.get(name)])
        self.run_cmake(env, "--build", str(build_dir), "--parallel", "--target", *CPU_TARGETS)
        say(f"native CPU kernels built into {root}")
        if "NERF_CUDA_TARGET:INTERNAL=ON" not in (build_dir / "CMakeCache.txt").read_text():
            say("CUDA kernels not built now (torch without CUDA, or no nvcc): nerf builds them on first CUDA use")
            return
        try:
            self.run_cmake(env, "--build", str(build_dir), "--parallel", "--target", CUDA_TARGET)
        except RuntimeError as err:
            (root / LIBRARIES[1]).unlink(missing_ok=True)
            if native_required():
                raise
            warn(f"CUDA kernels NOT built ({err}); nerf will try again on first CUDA use")

    @staticmethod
    def run_cmake(env: dict[str, str], *args: str) -> None:
        """Run CMake, its output on stderr (where pip shows it when the build fails)."""
        proc = subprocess.run([cmake() or "cmake", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        sys.stderr.write(proc.stdout)
        if proc.returncode != 0:
            raise RuntimeError(f"cmake {' '.join(args[:2])} failed (exit status {proc.returncode}; output above)")

    def get_outputs(self) -> list[str]:
        root = ROOT if self.inplace else Path(self.build_lib).resolve()
        return [str(root / name) for name in LIBRARIES if (root / name).is_file()]

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return []
