"""Checkpoint files: one ``torch.save``'d dict with a format version, written atomically.

Layout (``FORMAT_VERSION`` 4): ``format_version``, ``nerfkit_version``, ``torch_version``, ``step``, ``model``
(state dict), ``optimizer``, ``grid`` and ``cameras`` (state dicts or None; ``cameras``: the pose refinement's),
``config`` (dict), ``extra`` (dict or None; ``extra.train_images``: the count the appearance embedding and the pose
refinement are sized by). Formats 2 and 3 still load (no pose refinement, no appearance embedding).
Checkpoints of a run live in ``<run_dir>/checkpoints/step_XXXXXXX.pt``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from raytrace.atomic import atomic_path
from raytrace.errors import InputError

FORMAT_VERSION = 4  # 2: the hash grid follows tiny-cuda-nn's function and layout; 3: the field's density_scale;
# 4: pose refinement (cameras) and appearance embedding
_OLD_FORMATS = {1: " (a hash grid of another layout; train it again)"}
_REQUIRED = ("config", "model", "step")
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def nerfkit_version() -> str:
    """The installed package version, or "unknown" when it is not installed."""
    try:
        return metadata.version("nerfkit")
    except metadata.PackageNotFoundError:
        return "unknown"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where a run keeps the checkpoint of ``step``: ``run_dir/checkpoints/step_XXXXXXX.pt``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}.pt"


def run_folder(path: str | Path) -> Path:
    """The run folder of ``path``: ``path`` itself when it is a folder, else the one that holds the checkpoint
    file's ``checkpoints/``."""
    path = Path(path)
    return path if path.is_dir() else path.parent.parent


def save_checkpoint(
    path: str | Path,
    *,
    step: int,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
    grid_state: dict[str, Any] | None,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    cameras_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint to ``path`` atomically (a temporary file renamed over it: a failed save leaves the
    previous file intact). Values must be tensors, numbers, strings, lists, tuples and dicts of them."""
    payload = {
        "format_version": FORMAT_VERSION,
        "nerfkit_version": nerfkit_version(),
        "torch_version": str(torch.__version__),
        "step": int(step),
        "model": model_state,
        "optimizer": optimizer_state,
        "grid": grid_state,
        "cameras": cameras_state,
        "config": config,
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors onto ``map_location``).

    Raises :class:`InputError` naming the file for a missing, truncated or corrupt file, another format
    version or a file that is not a nerfkit checkpoint. Never runs code from the file (``weights_only``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "checkpoint file not found")
    _check_crcs(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        text = str(e).strip()
        foreign = _UNSAFE_GLOBAL.search(text)
        if foreign:
            raise InputError(
                path,
                None,
                f"holds a {foreign.group(1)} object; a checkpoint may hold only tensors, numbers, strings, "
                "lists, tuples and dicts",
            ) from None
        detail = text.splitlines()[0] if text else type(e).__name__
        raise InputError(path, None, f"not a readable checkpoint (truncated or corrupt?): {detail}") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise InputError(path, "format_version", "missing: not a nerfkit checkpoint")
    version = ckpt["format_version"]
    if version == 2:
        _upgrade_from_2(ckpt)
    elif version not in (3, FORMAT_VERSION):
        why = _OLD_FORMATS.get(version, "")
        raise InputError(
            path, "format_version", f"checkpoint format version {version}, this nerfkit reads {FORMAT_VERSION}{why}"
        )
    for key in _REQUIRED:
        if key not in ckpt:
            raise InputError(path, key, "missing from the checkpoint")
    return ckpt


def _upgrade_from_2(ckpt: dict[str, Any]) -> None:
    """Format 2 predates :data:`nerf.field.UNTRAINED_DIAGONAL_DEPTH`: its hash-grid fields were trained with a
    ``density_scale`` of 1, which the loaded state then carries."""
    config, state = ckpt.get("config"), ckpt.get("model")
    if isinstance(config, dict) and config.get("model", "ngp") == "ngp" and isinstance(state, dict):
        state.setdefault("density_scale", torch.tensor(1.0))


def _check_crcs(path: Path) -> None:
    """Every record of the checkpoint's zip archive has its CRC-32 (``torch.load`` does not check them, and would
    read a damaged tensor silently)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # zipfile raises BadZipFile, EOFError, ValueError, zlib.error... for damaged headers
        text = str(e).strip()
        detail = text.splitlines()[0] if text else type(e).__name__
        raise InputError(path, None, f"not a readable checkpoint (truncated or corrupt?): {detail}") from None
    if bad is not None:
        raise InputError(path, None, f"not a readable checkpoint (truncated or corrupt?): {bad} fails its CRC check")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir/checkpoints``, or None when there is none."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    steps = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)) and p.is_file()
    ]
    return max(steps)[1] if steps else None


LOCK_FILE = ".lock"
_HELD: dict[Path, Any] = {}  # run folders this process holds the lock of (a second session here shares it)


def lock_run(run_dir: str | Path) -> Any:
    """Take the run folder's writer lock (``fcntl.flock`` on ``run_dir/.lock``, held until the returned file is
    closed or the process ends; a process that holds it already gets its handle again). Raises
    :class:`InputError` naming the other writer's PID when another process holds it."""
    path = (Path(run_dir) / LOCK_FILE).resolve()
    held = _HELD.get(path)
    if held is not None and not held.closed:
        return held
    handle = open(path, "a+")  # noqa: SIM115 - held open for the run's lifetime: the lock lives as long as it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise InputError(run_dir, None, f"another nerf-train (pid {pid}) is writing this run; wait for it or stop "
                         "it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[path] = handle
    return handle


def locate_dataset(data: str, run_dir: Path, from_run: str | None) -> str:
    """The dataset of a run: ``data`` (absolute since runs record it so) where it exists, else ``from_run`` (its
    path relative to the run folder, for a dataset moved together with its runs), else ``data`` as it was (the
    loader then names it in its error)."""
    if Path(data).is_dir() or not from_run:
        return data
    moved = run_dir / from_run
    with contextlib.suppress(OSError):
        if moved.is_dir():
            return str(moved.resolve())
    return data
