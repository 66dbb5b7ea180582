"""The view widget: the rendered image with its overlays (training-camera frustums, split-view divider, a message);
drags, the wheel and keys move the camera."""

from __future__ import annotations

import math

import numpy as np
from PyQt5.QtCore import QLineF, QPointF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, QWheelEvent
from PyQt5.QtWidgets import QWidget

from nerf.evaluate import to_uint8
from viewer.camera import OrbitCamera
from viewer.core import Frame

ORBIT_RADIANS_PER_PIXEL = 0.01
ZOOM_PER_WHEEL_STEP = 0.9  # distance factor per wheel notch (15 degrees)
FLY_STEP = 0.05  # fraction of the orbit distance per key press
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
    left-drag that starts on the divider moves it instead. Without an image, ``placeholder`` says what is coming;
    ``message`` (an error) is drawn over everything."""

    cameraChanged = pyqtSignal()
    resetRequested = pyqtSignal()
    dividerMoved = pyqtSignal(float)
    resized = pyqtSignal()

    def __init__(self, camera: OrbitCamera, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.camera = camera
        self.image: QImage | None = None
        self.message = ""
        self.placeholder = ""
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
        elif not self.message:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignCenter | Qt.TextWordWrap, self.placeholder)
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
