"""Long jobs of the viewer off the interface thread: rendering a camera path to MP4, with a progress dialog."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PyQt5.QtCore import Qt, QThread, pyqtSignal
from PyQt5.QtWidgets import QProgressDialog, QWidget

from viewer.core import RenderRequest, ViewRenderer
from viewer.recorder import write_video


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


def start_video(
    parent: QWidget, renderer: ViewRenderer, requests: list[RenderRequest], path: Path, fps: int,
    report: Callable[[str], None],
) -> VideoJob:
    """Start a :class:`VideoJob` of ``requests`` with a cancellable progress dialog; ``report(text)`` at the end."""
    job = VideoJob(renderer, requests, path, fps)
    dialog = QProgressDialog("Rendering video...", "Cancel", 0, len(requests), parent)
    dialog.setWindowModality(Qt.WindowModal)
    dialog.setMinimumDuration(0)
    job.progress.connect(dialog.setValue)
    dialog.canceled.connect(lambda: setattr(job, "cancelled", True))

    def finished(ok: bool, text: str) -> None:
        dialog.reset()
        report(text)

    job.done.connect(finished)
    job.start()
    return job
