"""The controls dock: render mode, field of view, background, camera list, screenshot, camera path and, with live
training, the training box. Only widgets; :class:`~viewer.window.ViewerWindow` connects them."""

from __future__ import annotations

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from viewer.core import MODE_LABELS

CAMERA_LIST_ROWS = 6  # rows the camera list asks for; it scrolls beyond


class Controls(QWidget):
    """The widgets of the dock. ``modes``: the render modes offered; ``cameras``: names for the snap list;
    ``training``: add the training box (progress label, pause / step / save)."""

    def __init__(self, modes: list[str], cameras: list[str], training: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.mode_box = QComboBox()
        for m in modes:
            self.mode_box.addItem(MODE_LABELS[m], m)
        form.addRow("Mode", self.mode_box)
        self.error_box = QCheckBox("error heat map (ground truth side)")
        form.addRow(self.error_box)
        self.fov_box = QDoubleSpinBox()
        self.fov_box.setRange(5.0, 150.0)
        self.fov_box.setSuffix(" deg")
        form.addRow("Field of view", self.fov_box)
        self.bg_button = QPushButton("Background...")
        form.addRow(self.bg_button)
        self.frustum_box = QCheckBox("training cameras")
        form.addRow(self.frustum_box)
        layout.addLayout(form)

        layout.addWidget(QLabel("Snap to camera"))
        self.camera_list = QListWidget()
        self.camera_list.addItems(cameras)
        self.camera_list.setMinimumHeight(self.camera_list.sizeHintForRow(0) * 3 + 4)
        self.camera_list.setMaximumHeight(self.camera_list.sizeHintForRow(0) * CAMERA_LIST_ROWS + 4)
        layout.addWidget(self.camera_list)

        row = QHBoxLayout()
        self.screenshot_button = QPushButton("Screenshot...")
        self.reset_button = QPushButton("Reset (R)")
        row.addWidget(self.screenshot_button)
        row.addWidget(self.reset_button)
        layout.addLayout(row)

        rec = QGroupBox("Camera path")
        rec_layout = QFormLayout(rec)
        self.keyframe_label = QLabel("0 keyframes")
        self.add_key_button = QPushButton("Add keyframe")
        self.clear_keys_button = QPushButton("Clear")
        self.frames_box = QSpinBox()
        self.frames_box.setRange(2, 10000)
        self.frames_box.setValue(90)
        self.fps_box = QSpinBox()
        self.fps_box.setRange(1, 120)
        self.fps_box.setValue(30)
        self.video_button = QPushButton("Render video...")
        rec_layout.addRow(self.keyframe_label)
        rec_layout.addRow(self.add_key_button, self.clear_keys_button)
        rec_layout.addRow("Frames", self.frames_box)
        rec_layout.addRow("FPS", self.fps_box)
        rec_layout.addRow(self.video_button)
        layout.addWidget(rec)

        if training:
            box = QGroupBox("Training")
            tl = QVBoxLayout(box)
            self.train_label = QLabel("starting...")
            self.pause_button = QPushButton("Pause")
            self.step_button = QPushButton("Step")
            self.save_button = QPushButton("Save checkpoint")
            for w in (self.train_label, self.pause_button, self.step_button, self.save_button):
                tl.addWidget(w)
            layout.addWidget(box)
        layout.addStretch(1)

    def dock(self) -> QDockWidget:
        """This panel in a dock that scrolls when the screen is too short for it (the window never outgrows a
        1280x800 screen)."""
        scroll = QScrollArea()
        scroll.setWidget(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.sizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        dock = QDockWidget("Controls")
        dock.setObjectName("controls")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        return dock
