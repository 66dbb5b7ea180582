"""The one training loop, which ``nerf-train`` (:func:`train`) and the viewer's trainer both drive: each
:meth:`TrainLoop.step` is one step of a :class:`nerf.train.Session` with its logging (progress bar, TensorBoard, the
val split every ``eval_every``) and checkpoints (every ``checkpoint_every``); :meth:`TrainLoop.finished` says when
the budget (steps, seconds) is spent or a stop was asked for. The step itself is :meth:`nerf.train.Session.advance`.

SIGINT / SIGTERM stop :func:`train` after the current step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nerf.config import TrainConfig
from nerf.data import Dataset
from nerf.distributed import any_rank
from nerf.evaluate import evaluate
from nerf.model import Model
from nerf.resolve import startup_line
from nerf.train import Session, open_session, remove_unstarted_run


@dataclass
class TrainResult:
    run_dir: Path
    model: Model
    dataset: Dataset
    config: TrainConfig
    step: int
    seconds: float
    interrupted: bool = False  # stopped by SIGINT / SIGTERM (a checkpoint of ``step`` was written)


class TrainLoop:
    """Steps ``session`` within its budget, logging (rank 0: TensorBoard in ``<run>/tb``; a progress bar unless
    ``quiet``) and checkpointing as its config says. Training time counts only while :meth:`step` runs, so a
    paused viewer spends none of the budget. Call :meth:`close` when done."""

    def __init__(self, session: Session, quiet: bool = True) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.session = session
        self.start_step = session.step
        self.seconds = session.seconds_before  # the run's training time, earlier sessions included
        self.samples = 0
        self.interrupted = False
        main = session.world.is_main
        self.writer = SummaryWriter(str(session.run_dir / "tb")) if main else None
        self.bar = progress_bar(session.cfg, session.step, session.seconds_before, disable=quiet or not main)

    def finished(self, stop_requested: bool = False) -> bool:
        """Whether to stop before the next step: the steps or the time budget are spent, or ``stop_requested``
        on any rank (then :attr:`interrupted` is set). Collective in a data-parallel run."""
        s, cfg = self.session, self.session.cfg
        spent = (cfg.steps is not None and s.step >= cfg.steps) or (
            cfg.time_budget is not None and self.seconds >= cfg.time_budget)
        device = s.model.march.aabb.device
        if not any_rank(spent or stop_requested, s.world, device):
            return False
        self.interrupted = any_rank(stop_requested, s.world, device)
        return True

    def step(self) -> dict[str, Any]:
        """One step with its logging and due checkpoint: ``{"step", "loss", "psnr", "samples", "finite", ...}``
        (a step with a NaN/Inf loss or gradient is dropped: ``finite`` False, nothing logged)."""
        s, cfg = self.session, self.session.cfg
        start = time.perf_counter()
        stats = s.advance(self.seconds)
        start = self._clock(start)
        if stats["finite"]:
            self.samples += stats["samples"]
            if s.step % cfg.log_every == 0 or s.step == cfg.steps:
                self._log(stats)
            if self.writer is not None and cfg.eval_every > 0 and s.step % cfg.eval_every == 0:
                _log_validation(self.writer, s, s.step)
            if s.step % cfg.checkpoint_every == 0:
                s.save(self.seconds)
            self._clock(start)
            by_time = cfg.time_budget is not None
            self.bar.update(min(self.seconds, cfg.time_budget) - self.bar.n if by_time else 1)
        return {"step": s.step, **stats}

    def save_last(self, new_run: bool) -> Path | None:
        """The checkpoint that ends the loop: of the last step, unless this session (a resumed one, not a
        ``new_run``) took none."""
        if new_run or self.session.step > self.start_step:
            return self.session.save(self.seconds)
        return None

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _clock(self, since: float) -> float:
        now = time.perf_counter()
        self.seconds += now - since
        return now

    def _log(self, stats: dict[str, Any]) -> None:
        s, cfg, step = self.session, self.session.cfg, self.session.step
        rate = self.samples / max(self.seconds - s.seconds_before, 1e-9)
        postfix = {"step": step if cfg.steps is None else f"{step}/{cfg.steps}"} if cfg.time_budget is not None else {}
        self.bar.set_postfix(postfix, loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}",
                             samples_s=f"{rate:.3g}", refresh=False)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", stats["loss"], step)
            self.writer.add_scalar("train/psnr", stats["psnr"], step)
            self.writer.add_scalar("train/samples_per_ray", stats["samples"] / max(1, stats["rays"]), step)
            self.writer.add_scalar("train/lr", s.opt.param_groups[0]["lr"], step)


class _StopRequest:
    """Set by SIGINT / SIGTERM during training: the loop finishes its step, saves and returns."""

    signal: int | None = None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    """Turn the first SIGINT / SIGTERM into a stop request; a second one acts as usual (e.g. Ctrl-C twice)."""
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: types.FrameType | None) -> None:
        request.signal = signum
        signal.signal(signum, previous[signum] or signal.SIG_DFL)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h or signal.SIG_DFL)


def train(cfg: TrainConfig, resume: str | Path | None = None, quiet: bool = False) -> TrainResult:
    """Train (or resume) a run; writes checkpoints and TensorBoard logs, and returns the trained model.

    SIGINT / SIGTERM end the run early after a checkpoint (``interrupted`` in the result)."""
    session = open_session(cfg, resume)
    if session.world.is_main and not quiet:
        print(start_line(session), file=sys.stderr)
    loop = TrainLoop(session, quiet=quiet)
    try:
        with _stop_on_signals() as stop:
            while not loop.finished(stop.signal is not None):
                loop.step()
            loop.save_last(new_run=resume is None)
    except BaseException:
        loop.close()
        if resume is None and session.world.is_main:
            remove_unstarted_run(session.run_dir)
        raise
    loop.close()
    return TrainResult(session.run_dir, session.model, session.dataset, session.cfg, session.step, loop.seconds,
                       loop.interrupted)


def start_line(session: Session) -> str:
    """The line printed when training starts: device, backend, preset, run folder and what ends the run."""
    cfg = session.cfg
    until = " or ".join(([] if cfg.steps is None else [f"{cfg.steps} steps"])
                        + ([] if cfg.time_budget is None else [f"{cfg.time_budget:g} s"]))
    resumed = f", resumed at step {session.step}" if session.step else ""
    return (f"training on {session.model.march.aabb.device} with the {session.model.backend} backend, "
            f"{cfg.preset} preset, {until}{resumed}; run folder {session.run_dir}\n{startup_line(cfg)}")


def progress_bar(cfg: TrainConfig, start_step: int, seconds_before: float, disable: bool = False) -> tqdm:
    """The training bar: counts steps to ``cfg.steps``, or, under a time budget, seconds to the budget (so that
    its ETA is the budget's end, not the preset's step count)."""
    if cfg.time_budget is not None:
        return tqdm(total=cfg.time_budget, initial=min(seconds_before, cfg.time_budget), disable=disable,
                    desc="train", unit="s", dynamic_ncols=True, file=sys.stderr,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
    return tqdm(total=cfg.steps, initial=start_step, disable=disable, desc="train", unit="step", dynamic_ncols=True,
                file=sys.stderr)


def _log_validation(writer: Any, session: Session, step: int) -> None:
    """PSNR / SSIM of the val split (the test split when there is none) at ``step`` in TensorBoard (``val/``)."""
    splits = session.dataset.splits
    split = splits.get("val") or splits.get("test")
    if split is None:
        return
    for name, value in evaluate(session.model, split, None, session.cfg.render_chunk, quiet=True).items():
        writer.add_scalar(f"val/{name}", value, step)
