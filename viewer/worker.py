"""The viewer's Qt threads: :class:`RenderWorker` takes the latest request and renders it in progressive passes
(:func:`viewer.core.refine_scales`: a coarse pass that fits one frame period first, then each pass twice as sharp up
to full resolution), emitting each pass's frame; requests arriving while it renders replace each other, so it never
falls behind. :class:`TrainWorker` drives :class:`nerf.loop.TrainLoop` on another thread, sharing the model
through a lock."""

from __future__ import annotations

import threading
import time

from PyQt5.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from nerf.loop import TrainLoop
from nerf.train import Session
from raytrace.camera import Intrinsics
from viewer.core import RenderRequest, ResolutionController, ViewRenderer, refine_scales


class RenderWorker(QObject):
    """Renders the most recent request on its own thread: one preview at the controller's scale while the camera
    moves; otherwise progressive passes from that scale up to full resolution (abandoned as soon as a newer
    request arrives)."""

    frameReady = pyqtSignal(object)  # Frame, once per pass
    progress = pyqtSignal(int, int, int, int, float)  # pass (1-based), passes, width, height, fraction done
    failed = pyqtSignal(str)
    _wake = pyqtSignal()

    def __init__(self, renderer: ViewRenderer, controller: ResolutionController) -> None:
        super().__init__()
        self.renderer = renderer
        self.controller = controller
        self._pending: RenderRequest | None = None
        self._mutex = threading.Lock()
        self._closing = False
        self.thread = QThread()
        self.thread.setObjectName("render-worker")
        self.moveToThread(self.thread)
        self._wake.connect(self._process)
        self.thread.start()

    def submit(self, req: RenderRequest) -> None:
        """Queue ``req`` (from any thread), replacing a request not yet started."""
        with self._mutex:
            self._pending = req
        self._wake.emit()

    def stop(self) -> None:
        """Abandon the current render and end the thread."""
        self._closing = True
        self.thread.quit()
        self.thread.wait()

    def _cancelled(self) -> bool:
        return self._closing or self._pending is not None

    @pyqtSlot()
    def _process(self) -> None:
        with self._mutex:
            req, self._pending = self._pending, None
        if req is None or self._closing:
            return
        first = self.controller.scale_for(req.width * req.height)
        scales = [first] if req.moving else refine_scales(first)
        for index, scale in enumerate(scales, start=1):
            intr = req.intrinsics(scale)

            def progress(fraction: float, index: int = index, intr: Intrinsics = intr) -> None:
                self.progress.emit(index, len(scales), intr.width, intr.height, fraction)

            try:
                frame = self.renderer.render(
                    req, scale, cancelled=(lambda: self._closing) if req.moving else self._cancelled,
                    progress=progress,
                )
            except Exception as err:  # a render error is shown in the window, never kills the thread
                self.failed.emit(f"render failed: {type(err).__name__}: {err}")
                return
            if frame is None:
                return
            frame.pass_index, frame.passes = index, len(scales)
            self.controller.record(frame.intr.width * frame.intr.height, frame.seconds)
            self.frameReady.emit(frame)
            if self._cancelled():
                return


class TrainWorker(QObject):
    """Drives :class:`nerf.loop.TrainLoop` over ``session`` on its own thread, with pause / resume / single step:
    the budget, the TensorBoard log and the checkpoints are ``nerf-train``'s, and the loop's end writes the last
    checkpoint once (single steps may go past it). Once ``paused`` is set, holding ``lock`` waits for the step in
    flight and no other starts.

    ``stats`` carries ``{"step", "loss", "psnr", "samples"}`` about ten times a second."""

    stats = pyqtSignal(dict)
    finished = pyqtSignal()
    _start = pyqtSignal()

    def __init__(self, session: Session, lock: threading.Lock, report_every: float = 0.1) -> None:
        super().__init__()
        self.session = session
        self.loop = TrainLoop(session)
        self.lock = lock
        self.report_every = report_every
        self.paused = False
        self._single_steps = 0
        self._stop = False
        self._ended = False
        self.thread = QThread()
        self.thread.setObjectName("train-worker")
        self.moveToThread(self.thread)
        self._start.connect(self._run)
        self.thread.start()
        self._start.emit()

    def step_once(self) -> None:
        self._single_steps += 1

    def stop(self) -> None:
        self._stop = True
        self.thread.quit()
        self.thread.wait()
        self.loop.close()

    def save(self) -> str:
        with self.lock:
            return str(self.session.save(self.loop.seconds))

    @pyqtSlot()
    def _run(self) -> None:
        last = 0.0
        unreported: dict | None = None
        while not self._stop:
            with self.lock:  # pausing is decided under the lock: once paused is seen set, no step starts
                if not self._single_steps and self.loop.finished():
                    if not self._ended:
                        self._ended = True
                        self.loop.save_last(new_run=True)
                    self.paused = True
                run = not self.paused or self._single_steps > 0
                if run:
                    self._single_steps = max(0, self._single_steps - 1)
                    row = self.loop.step()
            if not run:
                if unreported is not None:  # the last step before a pause is always reported
                    self.stats.emit(unreported)
                    unreported = None
                QThread.msleep(20)
                continue
            unreported = row
            now = time.perf_counter()
            if now - last >= self.report_every or self.paused:
                last = now
                self.stats.emit(unreported)
                unreported = None
        self.finished.emit()
