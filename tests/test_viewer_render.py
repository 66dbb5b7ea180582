"""The viewer window's render path: a refresh of the same view (live training) never shows a coarser image over a
sharper one (the Qt-free part: test_viewer_core.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from .test_viewer_window import WAIT_MS, current_frame, open_window


def test_a_refresh_of_the_same_view_keeps_the_sharper_image_until_as_fine(qtbot, tiny_run) -> None:
    window = open_window(qtbot, tiny_run, width=64, height=64)
    current_frame(qtbot, window)
    window.worker.controller.target_fps = 1000.0  # a 1 ms frame period: the first pass is a coarse preview
    shown: list[tuple[int, float]] = []
    window.frameShown.connect(lambda f: shown.append((f.request.serial, f.scale)))
    window.request_render()  # the same view again, as live training asks after each step
    qtbot.waitUntil(window.rendering_done, timeout=WAIT_MS)
    assert shown == [(window.serial, 1.0)]
    window.camera.zoom(0.8)  # a new view: its coarse pass is shown at once
    window.request_render()
    qtbot.waitUntil(window.rendering_done, timeout=WAIT_MS)
    assert shown[1][1] < 1.0 and shown[-1] == (window.serial, 1.0)
