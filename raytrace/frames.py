"""One frame of a raytraced dataset: what its pixels depend on (:class:`DatasetSettings`), its files
(:class:`FramePaths`), rendering and writing it (:func:`render_frame`), checking it reads back whole
(:func:`frame_ok`), and the worker processes that render frames in parallel (:func:`run_jobs`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrace.atomic import write_bytes
from raytrace.camera import Intrinsics, z_per_distance
from raytrace.render import render_image
from raytrace.scene import Scene, load_scene

DEPTH_UNIT = 1e-3  # metres per unit of the 16-bit depth PNGs (nerfstudio's default) unless the scene needs more
FRAMES_PER_WORKER = 8
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
PARENT_POLL_SECONDS = 0.5
_WORKER: dict[str, Any] = {}


@dataclass(frozen=True)
class DatasetSettings:
    """What a dataset's pixels depend on besides the scene: image size, field of view, samples, views."""

    width: int
    height: int
    fov_deg: float  # horizontal
    spp: int  # samples per pixel
    counts: dict[str, int]  # views per split
    normals: bool = False  # also write world-space normals

    @property
    def intrinsics(self) -> Intrinsics:
        return Intrinsics.from_fov(self.width, self.height, math.radians(self.fov_deg))


@dataclass(frozen=True)
class FrameJob:
    """One frame to render: where its files go and its camera."""

    split: str
    index: int
    c2w: np.ndarray  # (4, 4) float64

    def paths(self, out_dir: Path, normals: bool) -> FramePaths:
        """The frame's files (``normal`` None without ``normals``)."""
        base = out_dir / self.split / f"r_{self.index}"
        normal = Path(f"{base}_normal.npz") if normals else None
        return FramePaths(base.with_suffix(".png"), Path(f"{base}_depth.png"), Path(f"{base}_distance.npz"), normal)


@dataclass(frozen=True)
class FramePaths:
    """Where one frame's files go."""

    image: Path
    depth: Path  # 16-bit z-depth PNG
    distance: Path
    normal: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.image, self.depth, self.distance, self.normal) if p is not None]


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def depth_unit(scene: Scene) -> float:
    """Metres per unit of the 16-bit depth PNGs: ``DEPTH_UNIT``, or coarser where the farthest corner of the
    scene's bounds seen from the farthest camera lies beyond 65535 of them."""
    rig, bounds = scene.rig, np.asarray(scene.bounds, dtype=np.float64)
    far = max(np.atleast_1d(rig.radius)) + float(np.linalg.norm(bounds - np.asarray(rig.target), axis=1).max())
    return max(DEPTH_UNIT, far / 65535.0)


def z_depth_png(distance: torch.Tensor, intr: Intrinsics, unit: float) -> bytes:
    """A 16-bit PNG of the z-depth of ``distance`` ``(H, W)`` (along the ray) in ``unit`` metres; 0 where nothing
    was hit or the depth exceeds the PNG's range."""
    import imageio.v3 as iio

    z = (distance.double() * z_per_distance(intr, distance.device).double() / unit).round().cpu().numpy()
    return iio.imwrite("<bytes>", np.where(z <= 65535, z, 0).astype(np.uint16), extension=".png")


def render_frame(scene: Scene, job: FrameJob, settings: DatasetSettings, out_dir: Path, device: str) -> None:
    """Render one frame and write its depth, normals and (last) its PNG, each atomically. The renderer is
    deterministic (its sampling is seeded by the scene): a frame's bytes do not depend on who renders it."""
    import imageio.v3 as iio

    c2w = torch.as_tensor(job.c2w, dtype=torch.float32)
    res = render_image(scene, c2w, settings.intrinsics, device=device, spp=settings.spp)
    paths = job.paths(out_dir, settings.normals)
    distance = res.depth.detach().cpu()
    write_bytes(paths.depth, z_depth_png(distance, settings.intrinsics, depth_unit(scene)))
    write_bytes(paths.distance, _npz_bytes(distance=distance.numpy().astype(np.float32)))
    if paths.normal is not None:
        write_bytes(paths.normal, _npz_bytes(normal=res.normal.detach().cpu().numpy().astype(np.float16)))
    rgba8 = np.clip(np.rint(res.rgba.detach().cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
    write_bytes(paths.image, iio.imwrite("<bytes>", rgba8, extension=".png"))


def _worker_init(scene_path: str, settings: DatasetSettings, out_dir: str, device: str, threads: int,
                 parent: int) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent alone reports it
    torch.set_num_threads(threads)
    _WORKER.update(scene=load_scene(scene_path), settings=settings, out_dir=Path(out_dir), device=device)


def die_with_parent(parent: int) -> None:
    """Make this process end when process ``parent`` ends, however it ends (SIGKILL included): the kernel's
    parent-death signal on Linux, and a thread that polls the parent's pid everywhere (and covers the race of a
    parent that died before the signal was armed)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _worker_render_job(job: FrameJob) -> FrameJob:
    render_frame(_WORKER["scene"], job, _WORKER["settings"], _WORKER["out_dir"], _WORKER["device"])
    return job


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(frames: int, threads: int = 1) -> int:
    """Worker processes for ``frames`` frames: one per available core (``threads`` cores each), at most one per
    ``FRAMES_PER_WORKER`` frames (a spawned worker pays a few seconds of imports)."""
    return max(1, min(available_cores() // threads, frames // FRAMES_PER_WORKER))


def run_jobs(
    scene: Scene, jobs: list[FrameJob], settings: DatasetSettings, out_dir: Path, device: str, workers: int,
    threads: int,
) -> Iterator[FrameJob]:
    """Render ``jobs``, yielding each when done (in this process for one worker, else in spawned ones), each
    worker with ``threads`` torch threads."""
    if workers <= 1 or len(jobs) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for job in jobs:
                render_frame(scene, job, settings, out_dir, device)
                yield job
        finally:
            torch.set_num_threads(before)
        return
    ctx = get_context("spawn")  # fork after torch has started threads can deadlock
    pool = ctx.Pool(min(workers, len(jobs)), initializer=_worker_init,
                    initargs=(str(scene.path), settings, str(out_dir), device, threads, os.getpid()))
    try:
        for job in pool.imap_unordered(_worker_render_job, jobs):
            yield job
        pool.close()
    finally:
        pool.terminate()  # on an error or Ctrl-C too: no worker outlives the render
        pool.join()


def frame_ok(paths: FramePaths, width: int, height: int) -> bool:
    """Every file of a frame exists and reads back whole: its PNGs decode to ``(H, W, 4)`` RGBA and ``(H, W)``
    depth, its ``.npz`` hold ``distance`` ``(H, W)`` and (where asked) ``normal`` ``(H, W, 3)``."""
    import imageio.v3 as iio

    arrays = {"distance": (paths.distance, (height, width))}
    if paths.normal is not None:
        arrays["normal"] = (paths.normal, (height, width, 3))
    try:
        if (iio.imread(paths.image, extension=".png").shape != (height, width, 4)
                or iio.imread(paths.depth, extension=".png").shape != (height, width)):
            return False
        for key, (path, shape) in arrays.items():
            with np.load(path, allow_pickle=False) as npz:
                if npz[key].shape != shape:
                    return False
    except Exception:  # any reader's error (missing, truncated, junk file) means: render it again
        return False
    return True
