"""The status bar: a message on the left (with a timeout) and the render status on the right, in two labels side
by side so that they never overlap; text that does not fit is cut, the whole of it is the tooltip."""

from __future__ import annotations

from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QLabel, QSizePolicy, QStatusBar


def timing_text(seconds: float) -> str:
    """A frame time for people: ``"4.2 fps"`` from 1 fps up, ``"2.5 s/frame"`` below."""
    if seconds <= 1.0:
        return f"{1.0 / max(seconds, 1e-6):.1f} fps"
    return f"{seconds:.1f} s/frame"


class StatusLine:
    """``bar``'s two labels: :meth:`show_message` (left) and :meth:`set_status` (right)."""

    def __init__(self, bar: QStatusBar) -> None:
        self.bar = bar
        self.message = QLabel()
        self.message.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.message.setMinimumWidth(1)
        self.status = QLabel()
        self.status.setMinimumWidth(1)
        bar.addWidget(self.message, 1)
        bar.addPermanentWidget(self.status)
        self._clear = QTimer(bar)
        self._clear.setSingleShot(True)
        self._clear.timeout.connect(lambda: self.show_message(""))

    def show_message(self, text: str, timeout_ms: int = 0) -> None:
        """Show ``text`` on the left, for ``timeout_ms`` (0: until the next message)."""
        self.message.setText(text)
        self.message.setToolTip(text)
        self._clear.stop()
        if text and timeout_ms > 0:
            self._clear.start(timeout_ms)

    def set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)
