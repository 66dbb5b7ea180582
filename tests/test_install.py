"""``pip install`` is the whole set-up: pip builds the wheel (the native kernels against this torch, through the
build backend and build isolation), a fresh venv installs it and, from a folder outside the checkout, raytraces a
tiny scene and trains two steps on the native backend. Without a C++ compiler the wheel builds without kernels and
the torch backend runs.

The fresh venv reuses this environment's packages (torch included) through links, not a download; it does not see
this checkout's own install."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import SCENE

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KERNELS = {"nerf/_native/libnerf_native.so", "raytrace/_native/libraytrace_native.so"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what points into the checkout or requires the kernels, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NERFKIT_REQUIRE_NATIVE")}
    return {**env, "OMP_NUM_THREADS": "2", **extra}


def build_wheel(out: Path, **env: str) -> tuple[Path, str]:
    """``pip wheel`` of the checkout (build isolation on, as a user's ``pip install``; not verbose, as a user's):
    the wheel, pip's output."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
                          env=clean_env(**env), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return next(out.glob("nerfkit-*.whl")), proc.stdout + proc.stderr


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A new venv with ``wheel`` installed; every other package is a link into this environment's site-packages
    (nerfkit's own install excluded). Returns its python."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    target = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    ours = ("nerfkit", "__editable__", "nerf", "raytrace", "viewer")
    for source in map(Path, site.getsitepackages()):
        for entry in source.iterdir():
            if not entry.name.startswith(ours) and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], env=clean_env(), check=True)
    return python


def test_the_wheel_installs_and_trains_outside_the_checkout(tmp_path: Path) -> None:
    wheel, log = build_wheel(tmp_path / "dist", NERFKIT_REQUIRE_NATIVE="1")
    files = set(zipfile.ZipFile(wheel).namelist())
    assert files >= KERNELS, log[-2000:]
    assert "nerf/csrc/CMakeLists.txt" in files  # for the CUDA build on first use
    python = fresh_venv(tmp_path / "venv", wheel)
    bin_dir, work = python.parent, tmp_path / "elsewhere"
    work.mkdir()
    (work / "ball.toml").write_text(SCENE)

    def run(*cmd: str | Path) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(c) for c in cmd], cwd=work, env=clean_env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc

    where = run(python, "-c", "import nerf.backends as b, raytrace.native as r; "
                "print(b.NATIVE_LIBRARY, r.LIBRARY, b._native_load_error(), r.load_error(), sep='\\n')")
    nerf_lib, raytrace_lib, nerf_err, raytrace_err = where.stdout.splitlines()
    installed = tmp_path / "venv"
    assert Path(nerf_lib).is_relative_to(installed) and Path(raytrace_lib).is_relative_to(installed)
    assert (nerf_err, raytrace_err) == ("None", "None")
    run(bin_dir / "raytrace", "ball.toml", "-o", "ball", "--views", "4", "--val", "1", "--test", "1", "--res", "16",
        "--quiet")
    train = run(bin_dir / "nerf-train", "ball", "--backend", "native", "--device", "cpu", "--steps", "2",
                "--turntable-frames", "0", "--levels", "4", "-o", "runs")
    first_line = train.stderr.strip().splitlines()[0]
    assert first_line.startswith("training on cpu with the native backend"), train.stderr[-2000:]


def test_without_a_compiler_the_wheel_builds_without_kernels(tmp_path: Path) -> None:
    wheel, log = build_wheel(tmp_path / "dist", CXX="/nonexistent/c++")
    assert not KERNELS & set(zipfile.ZipFile(wheel).namelist())
    assert "nerfkit: native kernels NOT built (no C++ compiler found" in log
    python = fresh_venv(tmp_path / "venv", wheel)
    proc = subprocess.run([python, "-c", "from nerf.backends import resolve_backend; "
                           "print(resolve_backend('auto', 'cpu').name, resolve_backend('auto', 'cpu').name)"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["torch", "torch"]
    said = [line for line in proc.stderr.splitlines() if "native kernels not built at install" in line]
    assert len(said) == 1, proc.stderr  # said once
    required = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "x"),
                               str(ROOT)], env=clean_env(CXX="/nonexistent/c++", NERFKIT_REQUIRE_NATIVE="1"),
                              capture_output=True, text=True)
    assert required.returncode != 0 and "NERFKIT_REQUIRE_NATIVE=1" in required.stdout + required.stderr
