"""The viewer's main window: the image with its overlays, the controls dock and the status bar.

Widgets only turn input into changes of the :class:`~viewer.camera.OrbitCamera` and into render requests;
rendering happens in :class:`~viewer.worker.RenderWorker` on its own thread.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PyQt5.QtCore import QLineF, QPointF, Qt, QThread, QTimer, pyqtSignal
from PyQt5.QtGui import QColor, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, QWheelEvent
from PyQt5.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QProgressDialog,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from nerf.data import Dataset, load_dataset
from nerf.evaluate import to_uint8, write_png
from nerf.train import Session
from raytrace.camera import Intrinsics
from raytrace.errors import InputError
from raytrace.scene import load_scene
from viewer.camera import OrbitCamera, frustum_points, project
from viewer.recorder import CameraPath, write_video
from viewer.worker import (
    MODE_LABELS,
    Frame,
    RenderRequest,
    RenderWorker,
    ResolutionController,
    TrainWorker,
    ViewRenderer,
)

ORBIT_RADIANS_PER_PIXEL = 0.01
ZOOM_PER_WHEEL_STEP = 0.9  # distance factor per wheel notch (15 degrees)
FLY_STEP = 0.05  # fraction of the orbit distance per key press
SETTLE_MS = 200  # the camera counts as still this long after the last change; then full resolution
DIVIDER_GRAB_PX = 6


def to_qimage(image: np.ndarray) -> QImage:
    """uint8 ``(H, W, 3)`` -> a QImage that owns a copy of the pixels."""
    image = np.ascontiguousarray(image)
    h, w, _ = image.shape
    return QImage(image.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def composed_image(frame: Frame, divider: float, show_error: bool) -> np.ndarray:
    """What the view shows for ``frame``, uint8 ``(h, w, 3)``: the mode's image, or in ground-truth mode the
    NeRF left of ``divider`` (fraction of the width) and the ground truth (or the error map) right of it."""
    if frame.gt is None:
        return frame.display
    right = frame.error if show_error else to_uint8(frame.gt)
    split = round(float(np.clip(divider, 0.0, 1.0)) * frame.display.shape[1])
    return np.concatenate([frame.display[:, :split], right[:, split:]], axis=1)


class ViewWidget(QWidget):
    """Shows the rendered image; drags, the wheel and keys move ``camera`` and emit ``cameraChanged``.

    Left-drag orbits, right- or middle-drag pans, the wheel zooms, W/S/A/D/Q/E fly, R resets. In split view a
    left-drag that starts on the divider moves it instead."""

    cameraChanged = pyqtSignal()
    resetRequested = pyqtSignal()
    dividerMoved = pyqtSignal(float)
    resized = pyqtSignal()

    def __init__(self, camera: OrbitCamera, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.camera = camera
        self.image: QImage | None = None
        self.message = ""
        self.divider: float | None = None  # fraction of the width, when the split view is on
        self.frustums: list[QLineF] = []
        self._last: QPointF | None = None
        self._button = Qt.NoButton
        self._dragging_divider = False
        self.setFocusPolicy(Qt.StrongFocus)
        self.setMinimumSize(16, 16)
        self.setMouseTracking(False)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(40, 40, 40))
        if self.image is not None:
            p.drawImage(self.rect(), self.image)
        if self.frustums:
            p.setPen(QPen(QColor(255, 200, 0), 1))
            p.drawLines(self.frustums)
        if self.divider is not None:
            x = self.divider * self.width()
            p.setPen(QPen(QColor(255, 255, 255), 2))
            p.drawLine(QLineF(x, 0, x, self.height()))
        if self.message:
            p.setPen(QColor(255, 120, 120))
            p.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignCenter | Qt.TextWordWrap, self.message)
        p.end()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.resized.emit()

    def _on_divider(self, x: float) -> bool:
        return self.divider is not None and abs(x - self.divider * self.width()) <= DIVIDER_GRAB_PX

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus()
        self._last = QPointF(event.pos())
        self._button = event.button()
        self._dragging_divider = event.button() == Qt.LeftButton and self._on_divider(event.pos().x())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._last is None:
            return
        pos = QPointF(event.pos())
        dx, dy = pos.x() - self._last.x(), pos.y() - self._last.y()
        self._last = pos
        if self._dragging_divider:
            self.divider = float(np.clip(pos.x() / max(self.width(), 1), 0.0, 1.0))
            self.dividerMoved.emit(self.divider)
            return
        if self._button == Qt.LeftButton:
            self.camera.orbit(-dx * ORBIT_RADIANS_PER_PIXEL, dy * ORBIT_RADIANS_PER_PIXEL)
        elif self._button in (Qt.RightButton, Qt.MiddleButton):
            # one pixel of drag moves the target by one pixel's width at the target's distance
            per_pixel = 2.0 * math.tan(0.5 * self.camera.fov_x) / max(self.width(), 1)
            self.camera.pan(-dx * per_pixel, dy * per_pixel)
        else:
            return
        self.cameraChanged.emit()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._last = None
        self._button = Qt.NoButton
        self._dragging_divider = False

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.camera.zoom(ZOOM_PER_WHEEL_STEP**steps)
            self.cameraChanged.emit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        step = FLY_STEP * self.camera.distance
        moves = {
            Qt.Key_W: (step, 0, 0), Qt.Key_S: (-step, 0, 0), Qt.Key_D: (0, step, 0), Qt.Key_A: (0, -step, 0),
            Qt.Key_E: (0, 0, step), Qt.Key_Q: (0, 0, -step),
        }
        if event.key() in moves:
            self.camera.fly(*moves[event.key()])
            self.cameraChanged.emit()
        elif event.key() == Qt.Key_R:
            self.resetRequested.emit()
        else:
            super().keyPressEvent(event)


class VideoJob(QThread):
    """Renders a camera path to MP4 off the interface thread; ``progress(frames done)``, ``done(ok, text)``."""

    progress = pyqtSignal(int)
    done = pyqtSignal(bool, str)

    def __init__(self, renderer: ViewRenderer, requests: list[RenderRequest], path: Path, fps: int) -> None:
        super().__init__()
        self.renderer, self.requests, self.path, self.fps = renderer, requests, path, fps
        self.cancelled = False

    def run(self) -> None:
        def frames():
            for req in self.requests:
                frame = self.renderer.render(req, 1.0, cancelled=lambda: self.cancelled)
                if frame is None:
                    return
                yield frame.display

        def progress(i: int) -> bool:
            self.progress.emit(i + 1)
            return not self.cancelled

        try:
            ok = write_video(self.path, frames(), self.fps, progress) and not self.cancelled
        except (OSError, RuntimeError, ValueError) as err:
            self.done.emit(False, f"video failed: {err}")
            return
        self.done.emit(ok, f"video written to {self.path}" if ok else "video cancelled")


class ViewerWindow(QMainWindow):
    """The viewer. ``renderer`` None means nothing could be loaded: the window shows ``error`` instead."""

    screenshotSaved = pyqtSignal(str)
    frameShown = pyqtSignal(object)  # Frame

    def __init__(
        self,
        renderer: ViewRenderer | None,
        dataset: Dataset | None = None,
        error: str = "",
        target_fps: float = 4.0,
        size: tuple[int, int] = (640, 480),
        session: Session | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("nerf-view")
        self.renderer = renderer
        self.dataset = dataset
        self.error = error
        self.cameras: list[tuple[str, np.ndarray, Intrinsics]] = []
        if dataset is not None:
            for name in ("train", "test"):
                split = dataset.splits.get(name)
                if split is not None:
                    for i in range(len(split)):
                        self.cameras.append((f"{name} {i}", split.poses[i].double().numpy(), split.intrinsics))
        self.home = self._home_camera()
        self.camera = self.home.copy()
        self.background = (1.0, 1.0, 1.0)
        self.mode = "rgb"
        self.show_error = False
        self.show_frustums = dataset is not None
        self.last_frame: Frame | None = None
        self.path = CameraPath()
        self.serial = 0
        self._screenshot_path: Path | None = None
        self._video: VideoJob | None = None
        self._train_stats = ""
        self._last_train_render = 0.0

        self.view = ViewWidget(self.camera)
        self.view.resize(*size)
        self.setCentralWidget(self.view)
        self.view.cameraChanged.connect(self._camera_moved)
        self.view.resetRequested.connect(self.reset_camera)
        self.view.dividerMoved.connect(lambda _: self._show(self.last_frame))
        self.view.resized.connect(self._view_resized)
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(lambda: self.request_render(moving=False))
        self.worker: RenderWorker | None = None
        self.trainer: TrainWorker | None = None
        if renderer is not None:
            self.worker = RenderWorker(renderer, ResolutionController(target_fps))
            self.worker.frameReady.connect(self._on_frame)
            self.worker.progress.connect(self._on_progress)
            self.worker.failed.connect(self._on_failed)
        if session is not None and lock is not None:
            self.trainer = TrainWorker(session, lock)
            self.trainer.stats.connect(self._on_train_stats)
        dock = self._build_controls()
        hint = dock.sizeHint()
        self.resize(size[0] + hint.width(), max(size[1], hint.height()) + self.statusBar().sizeHint().height())
        if error:
            self.view.message = error
            self.statusBar().showMessage(error)
        self._update_overlay()

    # -- construction -------------------------------------------------------------------------------------------

    def _home_camera(self) -> OrbitCamera:
        center = self._center()
        if self.cameras:
            _, pose, intr = self.cameras[0]
            return self._camera_at(pose, intr)
        return OrbitCamera.looking_at(center + np.array([0.0, -3.0, 2.0]), center)

    def _center(self) -> np.ndarray:
        if self.renderer is None:
            return np.zeros(3)
        return self.renderer.model.march.aabb.detach().cpu().double().mean(dim=0).numpy()

    def _camera_at(self, pose: np.ndarray, intr: Intrinsics) -> OrbitCamera:
        """The orbit camera at ``pose``, its target the point of the view axis nearest the scene centre."""
        distance = float(np.dot(self._center() - pose[:3, 3], -pose[:3, 2]))
        return OrbitCamera.from_c2w(pose, distance if distance > 1e-3 else 1.0, intr.camera_angle_x)

    def _build_controls(self) -> QDockWidget:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        form = QFormLayout()
        self.mode_box = QComboBox()
        modes = ["rgb", "depth", "opacity"]
        if self.renderer is not None and self.renderer.scene is not None:
            modes.append("gt")
        for m in modes:
            self.mode_box.addItem(MODE_LABELS[m], m)
        self.mode_box.currentIndexChanged.connect(lambda i: self.set_mode(self.mode_box.itemData(i)))
        form.addRow("Mode", self.mode_box)
        self.error_box = QCheckBox("error heat map (ground truth side)")
        self.error_box.toggled.connect(self._set_show_error)
        form.addRow(self.error_box)
        self.fov_box = QDoubleSpinBox()
        self.fov_box.setRange(5.0, 150.0)
        self.fov_box.setSuffix(" deg")
        self.fov_box.setValue(math.degrees(self.camera.fov_x))
        self.fov_box.valueChanged.connect(self._fov_changed)
        form.addRow("Field of view", self.fov_box)
        self.bg_button = QPushButton("Background...")
        self.bg_button.clicked.connect(self._pick_background)
        form.addRow(self.bg_button)
        self.frustum_box = QCheckBox("training cameras")
        self.frustum_box.setChecked(self.show_frustums)
        self.frustum_box.toggled.connect(self._set_frustums)
        form.addRow(self.frustum_box)
        layout.addLayout(form)

        layout.addWidget(QLabel("Snap to camera"))
        self.camera_list = QListWidget()
        for name, _, _ in self.cameras:
            self.camera_list.addItem(name)
        self.camera_list.currentRowChanged.connect(self.snap_to)
        layout.addWidget(self.camera_list)

        row = QHBoxLayout()
        shot = QPushButton("Screenshot...")
        shot.clicked.connect(self._ask_screenshot)
        reset = QPushButton("Reset (R)")
        reset.clicked.connect(self.reset_camera)
        row.addWidget(shot)
        row.addWidget(reset)
        layout.addLayout(row)

        rec = QGroupBox("Camera path")
        rec_layout = QFormLayout(rec)
        self.keyframe_label = QLabel("0 keyframes")
        add_key = QPushButton("Add keyframe")
        add_key.clicked.connect(self.add_keyframe)
        clear_keys = QPushButton("Clear")
        clear_keys.clicked.connect(self._clear_keyframes)
        self.frames_box = QSpinBox()
        self.frames_box.setRange(2, 10000)
        self.frames_box.setValue(90)
        self.fps_box = QSpinBox()
        self.fps_box.setRange(1, 120)
        self.fps_box.setValue(30)
        video = QPushButton("Render video...")
        video.clicked.connect(self._ask_video)
        rec_layout.addRow(self.keyframe_label)
        rec_layout.addRow(add_key, clear_keys)
        rec_layout.addRow("Frames", self.frames_box)
        rec_layout.addRow("FPS", self.fps_box)
        rec_layout.addRow(video)
        layout.addWidget(rec)

        if self.trainer is not None:
            box = QGroupBox("Training")
            tl = QVBoxLayout(box)
            self.train_label = QLabel("starting...")
            self.pause_button = QPushButton("Pause")
            self.pause_button.clicked.connect(self.toggle_pause)
            step = QPushButton("Step")
            step.clicked.connect(self.trainer.step_once)
            save = QPushButton("Save checkpoint")
            save.clicked.connect(lambda: self.statusBar().showMessage(f"saved {self.trainer.save()}", 5000))
            for w in (self.train_label, self.pause_button, step, save):
                tl.addWidget(w)
            layout.addWidget(box)
        layout.addStretch(1)
        panel.setEnabled(self.renderer is not None)
        dock = QDockWidget("Controls")
        dock.setObjectName("controls")
        dock.setWidget(panel)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self.status = QLabel()
        self.statusBar().addPermanentWidget(self.status)
        return dock

    # -- camera and settings ------------------------------------------------------------------------------------

    def _set_camera(self, camera: OrbitCamera) -> None:
        self.camera.rotation, self.camera.eye = camera.rotation.copy(), camera.eye.copy()
        self.camera.distance, self.camera.fov_x = camera.distance, camera.fov_x
        self.fov_box.blockSignals(True)
        self.fov_box.setValue(math.degrees(camera.fov_x))
        self.fov_box.blockSignals(False)
        self._camera_moved()

    def snap_to(self, index: int) -> None:
        """Move to training / test camera ``index`` of the list (exactly its pose and field of view)."""
        if 0 <= index < len(self.cameras):
            _, pose, intr = self.cameras[index]
            self._set_camera(self._camera_at(pose, intr))

    def reset_camera(self) -> None:
        self._set_camera(self.home)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.view.divider = 0.5 if mode == "gt" else None
        self.request_render(moving=False)

    def set_background(self, rgb: tuple[float, float, float]) -> None:
        self.background = tuple(float(c) for c in rgb)
        self.request_render(moving=False)

    def _pick_background(self) -> None:
        c = QColorDialog.getColor(QColor.fromRgbF(*self.background), self, "Background colour")
        if c.isValid():
            self.set_background((c.redF(), c.greenF(), c.blueF()))

    def _set_show_error(self, on: bool) -> None:
        self.show_error = on
        self._show(self.last_frame)

    def _set_frustums(self, on: bool) -> None:
        self.show_frustums = on
        self._update_overlay()

    def _fov_changed(self, degrees: float) -> None:
        self.camera.fov_x = math.radians(degrees)
        self._camera_moved()

    def _camera_moved(self) -> None:
        self._update_overlay()
        self.request_render(moving=True)
        self._settle.start()

    def _view_resized(self) -> None:
        self._update_overlay()
        self._settle.start()

    def _update_overlay(self) -> None:
        """Frustums of the training cameras, projected through the current camera."""
        lines: list[QLineF] = []
        if self.show_frustums and self.cameras:
            intr = self.camera.intrinsics(self.view.width(), self.view.height())
            c2w = self.camera.c2w()
            size = 0.1 * self.camera.distance
            for name, pose, cam_intr in self.cameras:
                if not name.startswith("train"):
                    continue
                xy, front = project(frustum_points(pose, cam_intr, size), c2w, intr)
                if not front.all():
                    continue
                pts = [QPointF(*p) for p in xy]
                lines += [QLineF(pts[0], pts[k]) for k in range(1, 5)]
                lines += [QLineF(pts[k], pts[1 + k % 4]) for k in range(1, 5)]
        self.view.frustums = lines
        self.view.update()

    # -- rendering ----------------------------------------------------------------------------------------------

    def current_request(self, moving: bool = False) -> RenderRequest:
        self.serial += 1
        return RenderRequest(self.camera.c2w(), self.camera.fov_x, max(1, self.view.width()),
                             max(1, self.view.height()), self.mode, self.background, moving, self.serial)

    def request_render(self, moving: bool = False) -> None:
        if self.worker is not None:
            self.worker.submit(self.current_request(moving))

    def _on_frame(self, frame: Frame) -> None:
        if frame.request.serial < (self.last_frame.request.serial if self.last_frame else 0):
            return
        self.last_frame = frame
        self._show(frame)
        self._update_status()
        self.frameShown.emit(frame)
        if self._screenshot_path is not None and frame.complete and frame.request.serial == self.serial:
            path, self._screenshot_path = self._screenshot_path, None
            self._write_screenshot(path, frame)

    def _show(self, frame: Frame | None) -> None:
        if frame is None:
            return
        divider = self.view.divider if self.view.divider is not None else 1.0
        self.view.image = to_qimage(composed_image(frame, divider, self.show_error))
        self.view.message = self.error
        self.view.update()

    def _on_progress(self, fraction: float) -> None:
        if fraction < 1.0:
            self.statusBar().showMessage(f"refining {100 * fraction:.0f}%", 1000)

    def _on_failed(self, text: str) -> None:
        self.error = text
        self.view.message = text
        self.statusBar().showMessage(text)
        self.view.update()

    def _update_status(self) -> None:
        f = self.last_frame
        if f is None or self.renderer is None:
            return
        fps = 1.0 / max(f.seconds, 1e-6)
        parts = [
            f"{fps:.1f} fps",
            f"{f.intr.width}x{f.intr.height} ({100 * f.scale:.0f}%)",
            str(self.renderer.device),
            self.renderer.model.backend,
        ]
        if f.psnr is not None:
            parts.append(f"PSNR {f.psnr:.2f} dB vs ground truth")
        if self._train_stats:
            parts.append(self._train_stats)
        self.status.setText("  |  ".join(parts))

    # -- screenshot and video -----------------------------------------------------------------------------------

    def save_screenshot(self, path: str | Path) -> None:
        """Write the current view at full resolution as PNG (when its full-resolution frame is ready);
        ``screenshotSaved(path)`` follows."""
        path = Path(path)
        f = self.last_frame
        if f is not None and f.complete and f.request.serial == self.serial:
            self._write_screenshot(path, f)
        else:
            self._screenshot_path = path
            self.request_render(moving=False)

    def _write_screenshot(self, path: Path, frame: Frame) -> None:
        divider = self.view.divider if self.view.divider is not None else 1.0
        try:
            write_png(path, composed_image(frame, divider, self.show_error))
        except OSError as err:
            self.statusBar().showMessage(f"screenshot failed: {err}", 10000)
            return
        self.statusBar().showMessage(f"screenshot written to {path}", 5000)
        self.screenshotSaved.emit(str(path))

    def _ask_screenshot(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Screenshot", "screenshot.png", "PNG images (*.png)")
        if name:
            self.save_screenshot(name)

    def add_keyframe(self) -> None:
        self.path.add(self.camera.c2w(), self.camera.fov_x)
        self.keyframe_label.setText(f"{len(self.path)} keyframes")

    def _clear_keyframes(self) -> None:
        self.path.clear()
        self.keyframe_label.setText("0 keyframes")

    def _ask_video(self) -> None:
        if len(self.path) < 2:
            self.statusBar().showMessage("add at least two keyframes first", 5000)
            return
        name, _ = QFileDialog.getSaveFileName(self, "Video", "path.mp4", "MP4 video (*.mp4)")
        if name:
            self.render_video(name, self.frames_box.value(), self.fps_box.value())

    def render_video(self, path: str | Path, frames: int, fps: int = 30) -> VideoJob:
        """Render the keyframe path to an MP4 on a background thread, with a progress dialog."""
        assert self.renderer is not None
        w, h = max(1, self.view.width()), max(1, self.view.height())
        requests = [RenderRequest(k.c2w, k.fov_x, w - w % 2, h - h % 2, self.mode if self.mode != "gt" else "rgb",
                                  self.background) for k in self.path.sample(frames)]
        job = VideoJob(self.renderer, requests, Path(path), fps)
        dialog = QProgressDialog("Rendering video...", "Cancel", 0, frames, self)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(0)
        job.progress.connect(dialog.setValue)
        dialog.canceled.connect(lambda: setattr(job, "cancelled", True))

        def finished(ok: bool, text: str) -> None:
            dialog.reset()
            self.statusBar().showMessage(text, 10000)

        job.done.connect(finished)
        self._video = job
        job.start()
        return job

    # -- live training ------------------------------------------------------------------------------------------

    def toggle_pause(self) -> None:
        if self.trainer is not None:
            self.trainer.paused = not self.trainer.paused
            self.pause_button.setText("Resume" if self.trainer.paused else "Pause")

    def _on_train_stats(self, stats: dict) -> None:
        self._train_stats = f"step {stats['step']}  loss {stats['loss']:.4f}  PSNR {stats['psnr']:.2f} dB"
        self.train_label.setText(self._train_stats.replace("  ", "\n"))
        self.pause_button.setText("Resume" if self.trainer.paused else "Pause")
        self._update_status()
        now = time.perf_counter()
        if now - self._last_train_render > 0.5 and not self._settle.isActive():
            self._last_train_render = now
            self.request_render(moving=not self.trainer.paused)
            if self.trainer.paused:
                return
            self._settle.start()

    def closeEvent(self, event) -> None:
        if self._video is not None:
            self._video.cancelled = True
            self._video.wait()
        if self.trainer is not None:
            self.trainer.stop()
        if self.worker is not None:
            self.worker.stop()
        super().closeEvent(event)


def _load_cameras(cfg_data: str, downscale: int) -> tuple[Dataset | None, str]:
    try:
        return load_dataset(cfg_data, splits=("train", "test"), downscale=downscale), ""
    except InputError as err:
        return None, f"dataset not loaded, no camera list or ground truth: {err}"


def _renderer_for(model, dataset: Dataset | None, lock: threading.Lock | None = None) -> tuple[ViewRenderer, str]:
    scene, note = None, ""
    if dataset is not None and dataset.scene_file is not None:
        try:
            scene = load_scene(dataset.scene_file)
        except InputError as err:
            note = f"no ground truth: {err}"
    gt_device = "cuda" if torch.cuda.is_available() else "cpu"
    return ViewRenderer(model, scene, lock, gt_device=gt_device), note


def open_run(
    run: str | Path, device: str = "auto", backend: str | None = None, target_fps: float | None = None,
    size: tuple[int, int] = (640, 480),
) -> ViewerWindow:
    """A window on a trained run folder or checkpoint file; a load error is shown in the window."""
    from nerf.backends import BackendUnavailable
    from nerf.model import load_run
    from viewer.worker import default_target_fps

    try:
        cfg, model, _ = load_run(run, device, backend)
    except (InputError, BackendUnavailable) as err:
        return ViewerWindow(None, error=f"cannot open {run}: {err}", size=size)
    dataset, note = _load_cameras(cfg.data, cfg.downscale)
    renderer, gt_note = _renderer_for(model, dataset)
    fps = target_fps or default_target_fps(renderer.device)
    window = ViewerWindow(renderer, dataset, target_fps=fps, size=size)
    if note or gt_note:
        window.statusBar().showMessage(note or gt_note)
    return window


def open_training(
    data: str | Path, device: str = "auto", backend: str = "auto", target_fps: float | None = None,
    size: tuple[int, int] = (640, 480), out: str = "runs",
) -> ViewerWindow:
    """A window that trains a new run on dataset ``data`` in the background and shows it as it learns."""
    from nerf.backends import BackendUnavailable
    from nerf.config import TrainConfig
    from nerf.train import open_session

    try:
        session = open_session(TrainConfig(data=str(data), device=device, backend=backend, out=out))
    except (InputError, BackendUnavailable) as err:
        return ViewerWindow(None, error=f"cannot train on {data}: {err}", size=size)
    return window_for_session(session, target_fps, size)


def window_for_session(
    session: Session, target_fps: float | None = None, size: tuple[int, int] = (640, 480)
) -> ViewerWindow:
    """A window that trains ``session`` on a background thread (paused once it reaches its step count)."""
    from viewer.worker import default_target_fps

    lock = threading.Lock()
    renderer, note = _renderer_for(session.model, session.dataset, lock)
    fps = target_fps or default_target_fps(renderer.device)
    window = ViewerWindow(renderer, session.dataset, target_fps=fps, size=size, session=session, lock=lock)
    if note:
        window.statusBar().showMessage(note)
    return window
