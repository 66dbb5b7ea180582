"""The viewer window (pytest-qt, offscreen) on the tiny trained run of ``conftest.tiny_run``."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

import torch
from PyQt5.QtCore import QEvent, QPointF, Qt
from PyQt5.QtGui import QImage, QMouseEvent
from PyQt5.QtWidgets import QApplication

from nerf.checkpoint import checkpoint_path
from nerf.config import TrainConfig
from nerf.evaluate import colorize_depth, to_uint8
from nerf.metrics import psnr
from nerf.render import Radiance, render_image
from nerf.train import open_session
from raytrace.render import render_image as raytrace_image
from raytrace.scene import load_scene
from viewer.cli import build_parser
from viewer.launch import NO_SCENE_NOTE, open_run, window_for_session
from viewer.status import timing_text
from viewer.window import ViewerWindow

from .conftest import STEPS, tiny_config

WAIT_MS = 60_000


def open_window(qtbot, tiny_run, width: int = 32, height: int = 32) -> ViewerWindow:
    """The viewer on the tiny run's step-STEPS checkpoint (other tests may add later ones to the run)."""
    _, result = tiny_run
    window = open_run(checkpoint_path(result.run_dir, STEPS), device="cpu", size=(width, height))
    qtbot.addWidget(window)
    window.view.setFixedSize(width, height)
    window.show()
    qtbot.waitExposed(window)
    return window


def current_frame(qtbot, window: ViewerWindow):
    """Wait for the full-resolution frame of the latest request (asking for one)."""
    window.request_render()
    qtbot.waitUntil(
        lambda: window.last_frame is not None and window.last_frame.complete
        and window.last_frame.request.serial == window.serial,
        timeout=WAIT_MS,
    )
    return window.last_frame


def send_mouse(widget, kind, pos, button, buttons) -> None:
    QApplication.sendEvent(widget, QMouseEvent(kind, QPointF(*pos), button, buttons, Qt.NoModifier))


def test_view_of_a_training_camera_matches_the_trainers_render(qtbot, tiny_run):
    _, result = tiny_run
    window = open_window(qtbot, tiny_run)
    window.renderer.strip_pixels = 256  # 8 rows per strip: the strips must join into the same image
    window.set_background((1.0, 1.0, 1.0))
    window.controls.camera_list.setCurrentRow(2)
    frame = current_frame(qtbot, window)
    split = result.dataset.splits["train"]
    np.testing.assert_array_equal(frame.request.c2w, split.poses[2].double().numpy())
    assert (frame.intr.width, frame.intr.height) == (split.intrinsics.width, split.intrinsics.height)
    assert frame.intr.fx == pytest.approx(split.intrinsics.fx, rel=1e-6)
    m = result.model
    grid = window.renderer.grid()  # a run's window marches a finer view grid (tests/test_viewer_render.py)
    ref = render_image(Radiance(m.field, grid, m.march), split.poses[2], split.intrinsics, background=torch.ones(3))
    np.testing.assert_allclose(frame.rgb, ref["rgb"].numpy(), atol=1e-5)
    np.testing.assert_allclose(frame.depth, ref["depth"].numpy(), atol=1e-4)
    assert frame.rgb.std() > 0.05  # the ball is in view, not an empty background


def test_a_mouse_drag_orbits_the_camera_and_changes_the_image(qtbot, tiny_run):
    window = open_window(qtbot, tiny_run)
    before = current_frame(qtbot, window).display.astype(np.float64)
    target, distance = window.camera.target.copy(), window.camera.distance
    c2w = window.camera.c2w()
    view = window.view
    send_mouse(view, QEvent.MouseButtonPress, (8, 16), Qt.LeftButton, Qt.LeftButton)
    for x in range(10, 30, 2):
        send_mouse(view, QEvent.MouseMove, (x, 16), Qt.NoButton, Qt.LeftButton)
    send_mouse(view, QEvent.MouseButtonRelease, (30, 16), Qt.LeftButton, Qt.NoButton)
    assert not np.allclose(window.camera.c2w(), c2w)
    np.testing.assert_allclose(window.camera.target, target, atol=1e-9)
    assert np.linalg.norm(window.camera.eye - target) == pytest.approx(distance)
    after = current_frame(qtbot, window).display.astype(np.float64)
    assert np.abs(after - before).mean() > 2.0
    # a right-drag pans: eye and target move together
    send_mouse(view, QEvent.MouseButtonPress, (16, 16), Qt.RightButton, Qt.RightButton)
    send_mouse(view, QEvent.MouseMove, (20, 16), Qt.NoButton, Qt.RightButton)
    send_mouse(view, QEvent.MouseButtonRelease, (20, 16), Qt.RightButton, Qt.NoButton)
    assert not np.allclose(window.camera.target, target)
    assert window.camera.distance == pytest.approx(distance)


def test_ground_truth_mode_shows_the_raytracers_image(qtbot, tiny_run):
    data, result = tiny_run
    window = open_window(qtbot, tiny_run)
    background = (0.2, 0.4, 0.6)
    window.set_background(background)
    window.controls.camera_list.setCurrentRow(len(result.dataset.splits["train"]))  # test camera 0
    window.controls.mode_box.setCurrentIndex(window.controls.mode_box.findData("gt"))
    frame = current_frame(qtbot, window)
    assert frame.gt is not None and window.view.divider == 0.5
    scene = load_scene(data / "scene.toml")
    test = result.dataset.splits["test"]
    np.testing.assert_array_equal(frame.request.c2w, test.poses[0].double().numpy())
    rgba = raytrace_image(scene, torch.tensor(frame.request.c2w, dtype=torch.float32), frame.intr, device="cpu").rgba
    expected = rgba[..., :3] * rgba[..., 3:] + torch.tensor(background) * (1 - rgba[..., 3:])
    np.testing.assert_array_equal(frame.gt, expected.numpy())
    assert frame.psnr == pytest.approx(psnr(torch.from_numpy(frame.rgb), expected))
    assert 15.0 < frame.psnr < 60.0
    # the split view: NeRF left of the divider, ground truth right of it; the heat map replaces the right side
    shown = window.view.image
    assert shown.pixelColor(2, 16).getRgb()[:3] == tuple(frame.display[16, 2])
    assert shown.pixelColor(30, 16).getRgb()[:3] == tuple((np.clip(frame.gt[16, 30], 0, 1) * 255 + 0.5).astype(int))
    window.controls.error_box.setChecked(True)
    assert window.view.image.pixelColor(30, 16).getRgb()[:3] == tuple(frame.error[16, 30])


def test_screenshot_is_written_at_full_resolution(qtbot, tiny_run, tmp_path):
    window = open_window(qtbot, tiny_run, width=40, height=24)
    path = tmp_path / "shot.png"
    with qtbot.waitSignal(window.screenshotSaved, timeout=WAIT_MS):
        window.save_screenshot(path)
    image = iio.imread(path)
    assert image.shape == (24, 40, 3)
    np.testing.assert_array_equal(image, window.last_frame.display)
    assert window.last_frame.complete


def test_camera_path_renders_to_a_video(qtbot, tiny_run, tmp_path):
    window = open_window(qtbot, tiny_run)
    window.controls.camera_list.setCurrentRow(0)
    window.add_keyframe()
    window.controls.camera_list.setCurrentRow(5)
    window.add_keyframe()
    path = tmp_path / "path.mp4"
    job = window.render_video(path, frames=4, fps=4)
    with qtbot.waitSignal(job.done, timeout=WAIT_MS) as blocker:
        pass
    assert blocker.args[0], blocker.args
    frames = iio.imread(path)
    assert frames.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("bad", ["missing", "garbage"])
def test_window_opens_with_a_missing_or_bad_checkpoint_and_shows_why(qtbot, tmp_path, bad):
    target = tmp_path / "run"
    if bad == "garbage":
        target = tmp_path / "step.pt"
        target.write_bytes(b"not a checkpoint")
    window = open_run(target, device="cpu")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.renderer is None and window.worker is None
    expected = "no checkpoint found" if bad == "missing" else "not a readable checkpoint"
    assert expected in window.error and str(target) in window.error
    assert "Traceback" not in window.error and "\n" not in window.error
    assert window.view.message == window.error
    assert expected in window.status.message.text()
    assert not window.controls.camera_list.isEnabled()


def test_a_dataset_without_scene_file_has_no_ground_truth_panel_and_says_why(qtbot, tiny_run, tmp_path):
    """Captured data (photos through nerf-process, other tools' datasets) names no scene to raytrace."""
    ball, _ = tiny_run
    data = tmp_path / "captured"
    shutil.copytree(ball, data)
    for path in data.glob("transforms_*.json"):
        meta = json.loads(path.read_text())
        meta.pop("scene", None)
        path.write_text(json.dumps(meta))
    session = open_session(tiny_config(data, tmp_path / "runs"))
    window = window_for_session(session, size=(32, 32))
    qtbot.addWidget(window)
    modes = [window.controls.mode_box.itemData(i) for i in range(window.controls.mode_box.count())]
    assert "gt" not in modes and window.renderer.scene is None
    assert window.status.message.text() == NO_SCENE_NOTE
    window.close()


def test_live_training_steps_and_updates_the_view(qtbot, tiny_run):
    _, result = tiny_run
    session = open_session(TrainConfig(data=str(result.config.data), device="cpu"),
                           resume=checkpoint_path(result.run_dir, STEPS))
    window = window_for_session(session, size=(32, 32))
    qtbot.addWidget(window)
    window.view.setFixedSize(32, 32)
    window.show()
    qtbot.waitUntil(lambda: window.trainer.paused, timeout=WAIT_MS)  # already at its step count
    assert session.step == STEPS
    with qtbot.waitSignal(window.trainer.stats, timeout=WAIT_MS) as blocker:
        window.trainer.step_once()
    assert blocker.args[0]["step"] == STEPS + 1
    assert np.isfinite(blocker.args[0]["loss"])
    assert f"step {STEPS + 1}" in window.status.status.text()
    assert f"step {STEPS + 1}" in window.controls.train_label.text()
    window.close()


def test_cli_help_shows_defaults():
    text = build_parser().format_help()
    assert "--train" in text and "(default: auto)" in text


def test_a_long_render_runs_off_the_interface_thread_and_gives_way_to_a_new_view(qtbot, tiny_run):
    window = open_window(qtbot, tiny_run, width=96, height=96)
    current_frame(qtbot, window)
    window.renderer.strip_pixels = 96  # one row per strip: 96 chances to give way
    progress: list[float] = []
    complete: list[int] = []  # serials of the full-resolution frames shown
    window.worker.progress.connect(lambda index, passes, w, h, fraction: index == passes and progress.append(fraction))
    window.frameShown.connect(lambda f: f.complete and complete.append(f.request.serial))
    window.request_render()
    long_serial = window.serial
    # the interface thread keeps handling events while the worker renders: progress arrives here mid-render
    qtbot.waitUntil(lambda: any(0.0 < p < 0.5 for p in progress), timeout=WAIT_MS)
    assert long_serial not in complete
    window.camera.zoom(0.8)
    window.request_render()  # a new view replaces the unfinished one
    qtbot.waitUntil(lambda: window.serial in complete, timeout=WAIT_MS)
    assert long_serial not in complete


def shown_pixels(window: ViewerWindow) -> np.ndarray:
    """The image the view shows, uint8 ``(h, w, 3)``."""
    image = window.view.image.convertToFormat(QImage.Format_RGB888)
    ptr = image.constBits()
    ptr.setsize(image.byteCount())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def test_depth_and_opacity_modes_show_the_renderers_depth_and_opacity(qtbot, tiny_run):
    _, result = tiny_run
    window = open_window(qtbot, tiny_run)
    window.controls.camera_list.setCurrentRow(2)
    split = result.dataset.splits["train"]
    m = result.model
    ref = render_image(Radiance(m.field, window.renderer.grid(), m.march), split.poses[2], split.intrinsics,
                       background=torch.ones(3))
    depth, opacity = ref["depth"].numpy(), ref["opacity"].numpy()
    assert opacity[16, 16] > 0.9 and opacity[0, 0] < 0.1  # the ball in the middle, empty corners

    window.controls.mode_box.setCurrentIndex(window.controls.mode_box.findData("opacity"))
    frame = current_frame(qtbot, window)
    assert frame.request.mode == "opacity"
    np.testing.assert_array_equal(shown_pixels(window), np.repeat(to_uint8(opacity)[..., None], 3, axis=2))

    window.controls.mode_box.setCurrentIndex(window.controls.mode_box.findData("depth"))
    frame = current_frame(qtbot, window)
    assert frame.request.mode == "depth"
    # coloured between half the nearest and the farthest corner of the scene box, seen from the camera
    corners = np.stack(np.meshgrid(*m.march.aabb.double().numpy().T, indexing="ij"), axis=-1).reshape(-1, 3)
    dist = np.linalg.norm(corners - split.poses[2][:3, 3].double().numpy(), axis=1)
    expected = colorize_depth(torch.from_numpy(depth * (opacity > 0.5)), 0.5 * dist.min(), dist.max())
    shown = shown_pixels(window)
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    # the ball's centre is nearer than its rim: the colour map differs there
    assert not np.array_equal(shown[16, 16], shown[16, 8])


def test_a_mode_switch_shows_a_preview_first_and_never_the_old_image(qtbot, tiny_run):
    window = open_window(qtbot, tiny_run, width=64, height=64)
    current_frame(qtbot, window)
    window.worker.controller.target_fps = 1000.0  # a 1 ms frame period: the first pass is a coarse preview
    shown: list[tuple[str, int, int, float]] = []
    window.frameShown.connect(lambda f: shown.append((f.request.mode, f.pass_index, f.passes, f.scale)))
    window.controls.mode_box.setCurrentIndex(window.controls.mode_box.findData("depth"))
    assert window.view.image is None and "Depth" in window.view.placeholder  # the RGB image is gone at once
    qtbot.waitUntil(window.rendering_done, timeout=WAIT_MS)
    modes, indices, passes, scales = zip(*shown, strict=True)
    assert set(modes) == {"depth"}
    assert indices == tuple(range(1, len(shown) + 1)) and set(passes) == {len(shown)}
    assert len(shown) >= 3 and scales[0] <= 1.0 / 8.0 and scales[-1] == 1.0
    assert list(scales) == sorted(scales)
    assert f"pass {len(shown)}/{len(shown)}, 64x64" in window.status.status.text()


def test_status_shows_seconds_per_frame_below_1_fps_and_messages_beside_it(qtbot, tiny_run):
    assert timing_text(0.25) == "4.0 fps"
    assert timing_text(2.5) == "2.5 s/frame"
    window = open_window(qtbot, tiny_run)
    frame = current_frame(qtbot, window)
    assert timing_text(frame.seconds) in window.status.status.text()
    window.status.show_message("saved /a/long/path/to/runs/ball/2026-11-29/checkpoints/step_000300.pt " * 3, 5000)
    window.status.set_status(window.status.status.text() + "  |  step 300  loss 0.0100  PSNR 30.00 dB")
    QApplication.processEvents()
    left, right = window.status.message.geometry(), window.status.status.geometry()
    assert left.isValid() and right.isValid() and not left.intersects(right)
    assert window.statusBar().rect().contains(right)


def test_live_training_learns_and_pauses_and_resumes(qtbot, tiny_run, tmp_path):
    data, result = tiny_run
    session = open_session(tiny_config(data, tmp_path / "runs", steps=100_000))
    window = window_for_session(session, size=(32, 32))
    qtbot.addWidget(window)
    window.toggle_pause()
    assert window.controls.pause_button.text() == "Resume"
    window.view.setFixedSize(32, 32)
    window.controls.camera_list.setCurrentRow(0)
    window.show()
    hint = window.minimumSizeHint()
    assert hint.width() <= 1280 - 16 and hint.height() <= 800 - 48  # the training box scrolls, never overflows
    train = result.dataset.splits["train"]
    target = train.images[0, ..., :3] * train.images[0, ..., 3:] + (1.0 - train.images[0, ..., 3:])

    def paused_view() -> tuple[int, float]:
        """The step where training stopped and the PSNR of the view rendered at that step."""
        with window.renderer.lock:  # the step in flight ends; no other starts
            step = session.step
        if step:
            qtbot.waitUntil(lambda: f"step {step}" in window.status.status.text(), timeout=WAIT_MS)
        qtbot.waitUntil(window.rendering_done, timeout=WAIT_MS)
        return step, float(psnr(torch.from_numpy(window.last_frame.rgb), target))

    first_step, first_psnr = paused_view()
    first_serial = window.serial
    qtbot.wait(1000)
    assert session.step == first_step
    window.toggle_pause()
    assert window.controls.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: session.step >= first_step + 60, timeout=4 * WAIT_MS)
    window.toggle_pause()
    paused_step, paused_psnr = paused_view()
    assert window.serial > first_serial  # the view was rendered again as the model learned
    assert paused_psnr > first_psnr + 3.0, (first_step, first_psnr, paused_step, paused_psnr)
    qtbot.wait(1000)
    assert session.step == paused_step
    window.toggle_pause()
    qtbot.waitUntil(lambda: session.step > paused_step, timeout=WAIT_MS)
    window.close()
