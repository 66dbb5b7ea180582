"""Opening the viewer: on a trained run (``open_run``) or on a dataset to train live (``open_training``,
``window_for_session``). Load errors become a window that shows them, never a traceback."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from nerf.data import Dataset, load_dataset
from nerf.train import Session
from raytrace.errors import InputError
from raytrace.scene import load_scene
from viewer.core import ViewRenderer, default_target_fps
from viewer.window import ViewerWindow

NO_SCENE_NOTE = ("no ground-truth panel: the dataset names no scene file to raytrace (photographs, nerf-process or "
                 "another tool's data); only raytraced datasets have one")


def _load_cameras(cfg_data: str, downscale: int) -> tuple[Dataset | None, str]:
    try:
        return load_dataset(cfg_data, splits=("train", "test"), downscale=downscale, triangulate=False), ""
    except InputError as err:
        return None, f"dataset not loaded, no camera list or ground truth: {err}"


def _renderer_for(model, dataset: Dataset | None, lock: threading.Lock | None = None) -> tuple[ViewRenderer, str]:
    """The renderer of a window. It marches the training grid: a finer view grid (``fine_grid``) bought nothing on a
    trained run and cost time per frame (bench/RESULTS.md, viewer_bench)."""
    scene, note = None, ""
    if dataset is not None and dataset.scene_file is None:
        note = NO_SCENE_NOTE
    elif dataset is not None:
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

    try:
        cfg, model, _ = load_run(run, device, backend)
    except (InputError, BackendUnavailable) as err:
        return ViewerWindow(None, error=f"cannot open {run}: {err}", size=size)
    dataset, note = _load_cameras(cfg.data, cfg.downscale)
    renderer, gt_note = _renderer_for(model, dataset)
    fps = target_fps or default_target_fps(renderer.device)
    window = ViewerWindow(renderer, dataset, target_fps=fps, size=size)
    if note or gt_note:
        window.status.show_message(note or gt_note)
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
    lock = threading.Lock()
    renderer, note = _renderer_for(session.model, session.dataset, lock)
    fps = target_fps or default_target_fps(renderer.device)
    window = ViewerWindow(renderer, session.dataset, target_fps=fps, size=size, session=session, lock=lock)
    if note:
        window.status.show_message(note)
    return window
