"""The project on a bare GPU machine: no open3d, PyQt5 or imageio-ffmpeg. Raytracing an analytic scene, training
and finishing a run still work; the turntable becomes one warning line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from nerf import evaluate

from .conftest import SCENE

ROOT = Path(__file__).resolve().parents[1]
MISSING = ("open3d", "PyQt5", "imageio_ffmpeg")

# On PYTHONPATH as sitecustomize, so that every process of the run (raytrace workers too) lacks the packages.
BLOCKER = f"""
import sys


class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {MISSING!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)


sys.meta_path.insert(0, Missing())
"""

PIPELINE = f"""
import sys

for name in {MISSING!r}:
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    sys.exit(f"{{name}} imported: the blocker does not work")
from raytrace.cli import main as raytrace_main
from nerf.cli import train_main

if raytrace_main(["ball.toml", "-o", "ball", "--quiet"]) != 0:
    sys.exit("raytrace failed")
sys.exit(train_main(["ball", "--out", "runs", "--device", "cpu", "--backend", "torch", "--preset", "cpu",
                     "--steps", "20", "--batch-rays", "256", "--levels", "4", "--log2-table-size", "12",
                     "--grid-resolution", "16", "--turntable-frames", "2", "--quiet"]))
"""


@pytest.mark.slow
def test_raytrace_and_train_without_open3d_pyqt5_and_ffmpeg(tmp_path: Path) -> None:
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "ball.toml").write_text(SCENE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", PIPELINE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "turntable" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: no turntable.mp4 written"), proc.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/*/")
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "turntable.mp4").exists()
    (folder_line,) = [line for line in proc.stdout.splitlines() if line.startswith("run folder:")]
    assert "metrics.json" in folder_line and "turntable.mp4" not in folder_line


def test_turntable_without_an_mp4_encoder_is_one_warning(tiny_run, tmp_path: Path, monkeypatch, capsys) -> None:
    def no_ffmpeg(*args, **kwargs):  # what imageio raises without imageio-ffmpeg
        raise ImportError("The `FFMPEG` plugin is not installed. Use `pip install imageio[ffmpeg]` to install it.")

    monkeypatch.setattr(evaluate.iio, "imwrite", no_ffmpeg)
    _, result = tiny_run
    split = result.dataset.splits["test"]
    assert not evaluate.render_turntable(result.model, split, tmp_path / "turntable.mp4", n_frames=2, quiet=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: no turntable.mp4 written"), err
    assert "FFMPEG" in err[0] and not (tmp_path / "turntable.mp4").exists()


def test_turntable_is_written_where_an_mp4_encoder_exists(tiny_run, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    _, result = tiny_run
    split = result.dataset.splits["test"]
    assert evaluate.render_turntable(result.model, split, tmp_path / "turntable.mp4", n_frames=3, quiet=True)
    frames = iio.imread(tmp_path / "turntable.mp4", plugin="FFMPEG", index=None)
    assert frames.shape == (3, split.intrinsics.height, split.intrinsics.width, 3)
