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
from viewer.window import open_run

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
