"""The viewer's main window: wires the view (:mod:`viewer.view`), the controls dock (:mod:`viewer.controls`) and
the status bar (:mod:`viewer.status`) to the render and training workers (:mod:`viewer.worker`).

Widgets only turn input into changes of the :class:`~viewer.camera.OrbitCamera` and into render requests;
rendering happens in :class:`~viewer.worker.RenderWorker` on its own thread, in progressive passes whose frames
this window shows as they come (never a frame of another mode than the one selected).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QLineF, QPointF, Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import QApplication, QColorDialog, QFileDialog, QMainWindow

from nerf.data import Dataset
from nerf.evaluate import write_png
from nerf.train import Session
from raytrace.camera import Intrinsics
from viewer.camera import OrbitCamera, frustum_points, project
from viewer.controls import Controls
from viewer.core import MODE_LABELS, Frame, RenderRequest, ResolutionController, ViewRenderer
from viewer.jobs import VideoJob, start_video
from viewer.recorder import CameraPath
from viewer.status import StatusLine, timing_text
from viewer.view import ViewWidget, composed_image, to_qimage
from viewer.worker import RenderWorker, TrainWorker

SETTLE_MS = 200  # the camera counts as still this long after the last change; then the refining passes
WINDOW_FRAME_PX = (16, 48)  # room left on the screen for the window manager's frame and title bar


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
        self._requested_size: tuple[int, int] | None = None
        self._pass_text = ""
        self._screenshot_path: Path | None = None
        self._video: VideoJob | None = None
        self._train_stats = ""
        self._model_changed = False

        self.view = ViewWidget(self.camera)
        self.view.resize(*size)
        self.view.placeholder = "rendering the first view..." if renderer is not None else ""
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
        self.status = StatusLine(self.statusBar())
        self.controls = self._build_controls()
        dock = self.controls.dock()
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self._fit_to_screen(size[0] + dock.sizeHint().width(), size[1] + self.statusBar().sizeHint().height())
        if error:
            self.view.message = error
            self.status.show_message(error)
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

    def _build_controls(self) -> Controls:
        modes = ["rgb", "depth", "opacity"]
        if self.renderer is not None and self.renderer.scene is not None:
            modes.append("gt")
        c = Controls(modes, [name for name, _, _ in self.cameras], training=self.trainer is not None)
        c.mode_box.currentIndexChanged.connect(lambda i: self.set_mode(c.mode_box.itemData(i)))
        c.error_box.toggled.connect(self._set_show_error)
        c.fov_box.setValue(math.degrees(self.camera.fov_x))
        c.fov_box.valueChanged.connect(self._fov_changed)
        c.bg_button.clicked.connect(self._pick_background)
        c.frustum_box.setChecked(self.show_frustums)
        c.frustum_box.toggled.connect(self._set_frustums)
        c.camera_list.currentRowChanged.connect(self.snap_to)
        c.screenshot_button.clicked.connect(self._ask_screenshot)
        c.reset_button.clicked.connect(self.reset_camera)
        c.add_key_button.clicked.connect(self.add_keyframe)
        c.clear_keys_button.clicked.connect(self._clear_keyframes)
        c.video_button.clicked.connect(self._ask_video)
        if self.trainer is not None:
            c.pause_button.clicked.connect(self.toggle_pause)
            c.step_button.clicked.connect(self.trainer.step_once)
            c.save_button.clicked.connect(lambda: self.status.show_message(f"saved {self.trainer.save()}", 5000))
        c.setEnabled(self.renderer is not None)
        return c

    def _fit_to_screen(self, width: int, height: int) -> None:
        """Resize to ``width`` x ``height``, or less where the screen (with the window's frame) is smaller."""
        screen = QApplication.primaryScreen()
        if screen is not None:
            avail = screen.availableGeometry()
            width = min(width, avail.width() - WINDOW_FRAME_PX[0])
            height = min(height, avail.height() - WINDOW_FRAME_PX[1])
        self.resize(width, height)

    def showEvent(self, event) -> None:
        """The first image is asked for as soon as the window shows (its coarse pass takes a fraction of a
        second), not after the settle delay."""
        super().showEvent(event)
        if self.last_frame is None and self._requested_size is None:
            self.request_render(moving=False)

    # -- camera and settings ------------------------------------------------------------------------------------

    def _set_camera(self, camera: OrbitCamera) -> None:
        self.camera.rotation, self.camera.eye = camera.rotation.copy(), camera.eye.copy()
        self.camera.distance, self.camera.fov_x = camera.distance, camera.fov_x
        self.controls.fov_box.blockSignals(True)
        self.controls.fov_box.setValue(math.degrees(camera.fov_x))
        self.controls.fov_box.blockSignals(False)
        self._camera_moved()

    def snap_to(self, index: int) -> None:
        """Move to training / test camera ``index`` of the list (exactly its pose and field of view)."""
        if 0 <= index < len(self.cameras):
            _, pose, intr = self.cameras[index]
            self._set_camera(self._camera_at(pose, intr))

    def reset_camera(self) -> None:
        self._set_camera(self.home)

    def set_mode(self, mode: str) -> None:
        """Show ``mode``: the view clears at once (no image of the previous mode under the new label) and the
        new mode's coarse pass follows."""
        self.mode = mode
        self.view.divider = 0.5 if mode == "gt" else None
        self.view.image = None
        self.view.placeholder = f"rendering {MODE_LABELS[mode]}..."
        self.view.update()
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
        if self._requested_size is not None and self._requested_size != self._view_size():
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

    def _view_size(self) -> tuple[int, int]:
        return max(1, self.view.width()), max(1, self.view.height())

    def current_request(self, moving: bool = False) -> RenderRequest:
        self.serial += 1
        self._requested_size = self._view_size()
        return RenderRequest(self.camera.c2w(), self.camera.fov_x, *self._requested_size, self.mode,
                             self.background, moving, self.serial)

    def request_render(self, moving: bool = False) -> None:
        if self.worker is not None:
            self.worker.submit(self.current_request(moving))

    def _latest_done(self) -> bool:
        f = self.last_frame
        return bool(self.error) or (f is not None and f.complete and f.request.serial == self.serial)

    def rendering_done(self) -> bool:
        """The latest request's full-resolution pass is shown (or rendering failed), of the model as it is."""
        return self._latest_done() and not self._model_changed

    def _on_frame(self, frame: Frame) -> None:
        if frame.request.mode != self.mode:
            return
        shown = self.last_frame
        if shown is not None and frame.request.serial < shown.request.serial:
            return
        if shown is not None and frame.scale < shown.scale and frame.request.same_view(shown.request):
            return  # a refresh of the same view (live training): the sharper image stays until one as fine comes
        self.last_frame = frame
        self._pass_text = f"pass {frame.pass_index}/{frame.passes}, {frame.intr.width}x{frame.intr.height}"
        self._show(frame)
        self._update_status()
        self.frameShown.emit(frame)
        if self._screenshot_path is not None and frame.complete and frame.request.serial == self.serial:
            path, self._screenshot_path = self._screenshot_path, None
            self._write_screenshot(path, frame)
        if self._model_changed and self._latest_done():
            self._refresh_training_view()

    def _show(self, frame: Frame | None) -> None:
        if frame is None or frame.request.mode != self.mode:
            return
        divider = self.view.divider if self.view.divider is not None else 1.0
        self.view.image = to_qimage(composed_image(frame, divider, self.show_error))
        self.view.message = self.error
        self.view.update()

    def _on_progress(self, index: int, passes: int, width: int, height: int, fraction: float) -> None:
        self._pass_text = f"pass {index}/{passes}, {width}x{height}"
        if fraction < 1.0:
            self._pass_text += f" {100 * fraction:.0f}%"
        self._update_status()

    def _on_failed(self, text: str) -> None:
        self.error = text
        self.view.message = text
        self.status.show_message(text)
        self.view.update()

    def _update_status(self) -> None:
        f = self.last_frame
        if self.renderer is None:
            return
        parts = [timing_text(f.seconds)] if f is not None else []
        parts += [self._pass_text, str(self.renderer.device), self.renderer.model.backend]
        if f is not None and f.psnr is not None:
            parts.append(f"PSNR {f.psnr:.2f} dB vs ground truth")
        if self._train_stats:
            parts.append(self._train_stats)
        self.status.set_status("  |  ".join(p for p in parts if p))

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
            self.status.show_message(f"screenshot failed: {err}", 10000)
            return
        self.status.show_message(f"screenshot written to {path}", 5000)
        self.screenshotSaved.emit(str(path))

    def _ask_screenshot(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Screenshot", "screenshot.png", "PNG images (*.png)")
        if name:
            self.save_screenshot(name)

    def add_keyframe(self) -> None:
        self.path.add(self.camera.c2w(), self.camera.fov_x)
        self.controls.keyframe_label.setText(f"{len(self.path)} keyframes")

    def _clear_keyframes(self) -> None:
        self.path.clear()
        self.controls.keyframe_label.setText("0 keyframes")

    def _ask_video(self) -> None:
        if len(self.path) < 2:
            self.status.show_message("add at least two keyframes first", 5000)
            return
        name, _ = QFileDialog.getSaveFileName(self, "Video", "path.mp4", "MP4 video (*.mp4)")
        if name:
            self.render_video(name, self.controls.frames_box.value(), self.controls.fps_box.value())

    def render_video(self, path: str | Path, frames: int, fps: int = 30) -> VideoJob:
        """Render the keyframe path to an MP4 on a background thread, with a progress dialog."""
        assert self.renderer is not None
        w, h = self._view_size()
        requests = [RenderRequest(k.c2w, k.fov_x, w - w % 2, h - h % 2, self.mode if self.mode != "gt" else "rgb",
                                  self.background) for k in self.path.sample(frames)]
        self._video = start_video(self, self.renderer, requests, Path(path), fps,
                                  lambda text: self.status.show_message(text, 10000))
        return self._video

    # -- live training ------------------------------------------------------------------------------------------

    def toggle_pause(self) -> None:
        if self.trainer is not None:
            self.trainer.paused = not self.trainer.paused
            self.controls.pause_button.setText("Resume" if self.trainer.paused else "Pause")

    def _on_train_stats(self, stats: dict) -> None:
        """The model changed: a new progressive render starts once the current one has reached full resolution
        (so the view keeps refining while training runs) and unless the camera is moving."""
        self._train_stats = f"step {stats['step']}  loss {stats['loss']:.4f}  PSNR {stats['psnr']:.2f} dB"
        self.controls.train_label.setText(self._train_stats.replace("  ", "\n"))
        self.controls.pause_button.setText("Resume" if self.trainer.paused else "Pause")
        self._update_status()
        self._model_changed = True
        if self._latest_done():
            self._refresh_training_view()

    def _refresh_training_view(self) -> None:
        if not self._settle.isActive():
            self._model_changed = False
            self.request_render(moving=False)

    def closeEvent(self, event) -> None:
        if self._video is not None:
            self._video.cancelled = True
            self._video.wait()
        if self.trainer is not None:
            self.trainer.stop()
        if self.worker is not None:
            self.worker.stop()
        super().closeEvent(event)
