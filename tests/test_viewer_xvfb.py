"""A real window under Xvfb: the viewer opens on the tiny run and a screenshot of the screen shows it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from nerf.checkpoint import checkpoint_path

from .conftest import STEPS

SCRIPT = """
import sys
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication
from viewer.launch import open_run

app = QApplication(sys.argv[:1])
window = open_run(sys.argv[1], device="cpu", size=(160, 120))
window.show()

def grab():
    app.processEvents()
    shot = app.primaryScreen().grabWindow(window.winId())
    shot.save(sys.argv[2])
    print("SIZE", window.width(), window.height(), window.devicePixelRatioF())
    window.close()
    app.quit()

def on_frame(frame):
    if frame.complete and frame.request.serial == window.serial:
        QTimer.singleShot(300, grab)

window.frameShown.connect(on_frame)
QTimer.singleShot(90_000, lambda: app.exit(3))
sys.exit(app.exec_())
"""


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed")
def test_real_window_screenshot_under_xvfb(tiny_run, tmp_path):
    pytest.importorskip("PyQt5")
    _, result = tiny_run
    out = tmp_path / "window.png"
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["QT_QPA_PLATFORM"] = "xcb"
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "-c", SCRIPT,
         str(checkpoint_path(result.run_dir, STEPS)), str(out)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(s for s in proc.stdout.splitlines() if s.startswith("SIZE"))
    _, w, h, dpr = line.split()
    image = iio.imread(out)
    assert image.shape[:2] == (round(int(h) * float(dpr)), round(int(w) * float(dpr)))
    assert image.shape[1] >= 160 and image.shape[0] >= 120
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50  # controls, text and the rendered scene, not a blank grab


FIRST_IMAGE_SCRIPT = """
import sys
import time
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QApplication
from viewer.launch import open_run, open_training

app = QApplication(sys.argv[:1])
start = time.perf_counter()
window = open_run(sys.argv[1], device="cpu")  # the default size
shown = time.perf_counter()
window.show()

def geometry(w, name):
    app.processEvents()
    g, bar = w.frameGeometry(), w.statusBar()
    bottom = bar.mapTo(w, bar.rect().bottomLeft()).y()
    print("GEOMETRY", name, g.x(), g.y(), g.width(), g.height(), int(bar.isVisible()), bottom, w.height(), flush=True)

def training_window():
    geometry(window, "run")
    window.close()
    train = open_training(sys.argv[2], device="cpu", out=sys.argv[3])
    train.toggle_pause()
    train.show()
    QTimer.singleShot(500, lambda: (geometry(train, "train"), train.close(), app.quit()))

def first(frame):
    now = time.perf_counter()
    window.frameShown.disconnect(first)
    print("FIRST", now - shown, now - start, frame.intr.width, frame.intr.height, frame.pass_index, frame.passes,
          flush=True)
    QTimer.singleShot(300, training_window)

window.frameShown.connect(first)
QTimer.singleShot(120_000, lambda: app.exit(3))
sys.exit(app.exec_())
"""
FIRST_IMAGE_BOUND_S = 5.0  # generous: the coarse first pass takes well under a second on 2 idle cores


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed")
def test_first_image_comes_at_once_and_windows_fit_a_1280x800_screen(tiny_run, tmp_path):
    data, result = tiny_run
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["QT_QPA_PLATFORM"] = "xcb"
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-c", FIRST_IMAGE_SCRIPT,
         str(checkpoint_path(result.run_dir, STEPS)), str(data), str(tmp_path / "runs")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {s.split()[0] + (s.split()[1] if s.startswith("GEOMETRY") else ""): s.split()
             for s in proc.stdout.splitlines()}
    _, after_show, after_open, w, h, index, passes = lines["FIRST"]
    print(f"first image {float(after_show):.2f} s after show, {float(after_open):.2f} s after open_run, {w}x{h}")
    assert float(after_show) < FIRST_IMAGE_BOUND_S
    assert int(index) == 1 and int(passes) > 1 and int(w) <= 640 // 8  # a coarse first pass, refined after
    for name in ("run", "train"):
        _, _, x, y, width, height, visible, bar_bottom, inner_height = lines["GEOMETRY" + name]
        assert int(x) >= 0 and int(y) >= 0 and int(x) + int(width) <= 1280 and int(y) + int(height) <= 800, name
        assert visible == "1" and int(bar_bottom) < int(inner_height), name  # the status bar is on screen
