"""Writing a raytraced multi-view dataset in the NeRF-synthetic layout (see :mod:`raytrace.dataset_format`).

Layout under ``out_dir``: ``transforms_{train,val,test}.json``, per frame ``<split>/r_<i>.png`` (8-bit RGBA),
``<split>/r_<i>_depth.png`` (16-bit z-depth, for instant-ngp and nerfstudio), ``<split>/r_<i>_distance.npz``
(float32 ray distance) and, with ``normals``, ``<split>/r_<i>_normal.npz`` (float16 ``(H, W, 3)``),
``scene.toml`` (a copy of the scene, with the files it references copied beside it) and
``.raytrace_manifest.json`` (a hash of the scene and the render settings).

Every file is written atomically. The JSON files are written last, after every frame of every split exists,
and removed at the start of a run, so an interrupted run never leaves a dataset that looks complete. A rerun
with the same manifest skips frames whose files all exist; a different manifest re-renders everything.

Several machines (or a job array) can render one dataset into a shared folder: shard ``i`` of ``n`` renders
frames ``i, i + n, i + 2n, ...`` of the global order (train, val, test; by index) and writes no JSON;
:func:`merge_dataset` then checks that every frame exists and writes the JSON files. Frames are deterministic, so
the result is byte for byte a single machine's.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from raytrace.atomic import write_bytes, write_json
from raytrace.camera import look_at, rig_positions
from raytrace.colmap_export import write_dataset_model
from raytrace.dataset_format import SPLITS, Frame, Transforms, transforms_path, write_transforms
from raytrace.errors import InputError
from raytrace.frames import DatasetSettings, FrameJob, default_workers, depth_unit, frame_ok, run_jobs
from raytrace.scene import CameraRig, Scene

MANIFEST = ".raytrace_manifest.json"
SCENE_COPY = "scene.toml"
FORMAT_VERSION = 2  # 1: float32 .npy depth (ray distance) and normals


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`write_dataset` did."""

    out_dir: Path
    counts: dict[str, int]
    rendered: int  # frames rendered by this run
    skipped: int  # frames kept from an earlier run with the same manifest
    seconds: float

    def line(self) -> str:
        views = " / ".join(f"{self.counts[s]} {s}" for s in SPLITS)
        per = self.seconds / self.rendered if self.rendered else 0.0
        return (f"{views} views; rendered {self.rendered}, kept {self.skipped} in {self.seconds:.1f} s "
                f"({per:.2f} s per rendered view)")


def rig_poses(rig: CameraRig, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """Camera-to-world poses ``(n, 4, 4)`` float64 per split, placed by the rig.

    One generator seeded with ``rig.seed`` draws the splits in the fixed order train, val, test; every
    camera looks at ``rig.target`` (OpenGL axes, world +Z up).
    """
    rng = np.random.default_rng(rig.seed)
    target = np.asarray(rig.target, dtype=np.float64)
    poses = {}
    for split in SPLITS:
        n = counts.get(split, 0)
        pos = rig_positions(n, rig.radius, target, rig.layout == "hemisphere", rng)
        poses[split] = np.stack([look_at(p, target) for p in pos]) if n else np.zeros((0, 4, 4))
    return poses


def settings_for(
    scene: Scene,
    views: int | None = None,
    val: int | None = None,
    test: int | None = None,
    res: int | None = None,
    spp: int | None = None,
    normals: bool = False,
) -> DatasetSettings:
    """The scene rig's settings with command-line overrides.

    ``views`` sets the train count; val and test counts not given scale by the same factor as train
    (rounded, at least 1 where the rig has any). ``res`` sets the width; the height keeps the rig's aspect.
    ``spp`` defaults to the scene's ``[render] spp``.
    """
    rig = scene.rig
    counts = {s: int(rig.views.get(s, 0)) for s in SPLITS}
    if views is not None:
        factor = views / counts["train"] if counts["train"] else 1.0
        for split in ("val", "test"):
            if counts[split]:
                counts[split] = max(1, round(counts[split] * factor))
        counts["train"] = views
    if val is not None:
        counts["val"] = val
    if test is not None:
        counts["test"] = test
    width, height = rig.width, rig.height
    if res is not None:
        width, height = res, max(1, round(res * rig.height / rig.width))
    spp = spp if spp is not None else scene.settings.spp
    return DatasetSettings(width, height, float(rig.fov), spp, counts, normals)


def scene_files(scene_path: Path) -> list[str]:
    """Paths, relative to the scene's folder, of the files the scene's TOML names (any string value naming an
    existing file beside it: meshes, textures). Raises :class:`InputError` for one outside that folder."""
    data = tomllib.loads(scene_path.read_text(encoding="utf-8"))
    folder = scene_path.parent.resolve()
    found: set[str] = set()

    def walk(v: Any, where: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}" if where else k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, str) and v and (scene_path.parent / v).is_file():
            if not (scene_path.parent / v).resolve().is_relative_to(folder):
                raise InputError(scene_path, where, f"{v!r} lies outside the scene's folder, so a dataset's "
                                 "copy of the scene could not find it; move it beside the scene")
            found.add(v)

    walk(data, "")
    return sorted(found)


def _manifest(scene_path: Path, settings: DatasetSettings) -> dict[str, Any]:
    h = hashlib.sha256(scene_path.read_bytes())
    for rel in scene_files(scene_path):
        h.update(rel.encode())
        h.update((scene_path.parent / rel).read_bytes())
    return {"version": FORMAT_VERSION, "scene_sha256": h.hexdigest(), "settings": asdict(settings)}


def copy_scene(scene_path: Path, out_dir: Path) -> None:
    """Copy the scene file to ``out_dir/scene.toml`` and the files it references to the same relative
    paths under ``out_dir``, so that the copy loads on its own."""
    for rel in scene_files(scene_path):
        write_bytes(out_dir / rel, (scene_path.parent / rel).read_bytes())
    write_bytes(out_dir / SCENE_COPY, scene_path.read_bytes())


def _frame_jobs(scene: Scene, settings: DatasetSettings) -> list[FrameJob]:
    poses = rig_poses(scene.rig, settings.counts)
    jobs = []
    for split in SPLITS:
        for i, c2w in enumerate(poses[split]):
            jobs.append(FrameJob(split, i, c2w))
    return jobs


def _clear_stale(out_dir: Path, temporaries: bool = True) -> None:
    """Remove the split JSONs (rewritten at the end) and, with ``temporaries``, the temporary files a killed run
    left behind (not while other shards may be writing theirs)."""
    for split in SPLITS:
        transforms_path(out_dir, split).unlink(missing_ok=True)
        if temporaries and (out_dir / split).is_dir():
            for tmp in (out_dir / split).glob(".*.tmp*"):
                tmp.unlink(missing_ok=True)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; raises ValueError otherwise."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected I/N (shard I of N, 0 <= I < N), got {text!r}")
    index, count = int(parts[0]), int(parts[1])
    if not 0 <= index < count:
        raise ValueError(f"expected I/N with 0 <= I < N, got {text!r}")
    return index, count


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    if not (out_dir / MANIFEST).is_file():
        return None
    try:
        return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_transforms_files(scene: Scene, settings: DatasetSettings, jobs: list[FrameJob], out_dir: Path) -> None:
    intr = settings.intrinsics
    by_split: dict[str, list[Frame]] = {s: [] for s in SPLITS}

    def rel(p: Path | None) -> str | None:
        return None if p is None else "./" + p.relative_to(out_dir).as_posix()

    for job in jobs:
        paths = job.paths(out_dir, settings.normals)
        depth = rel(paths.depth)
        frame = Frame(rel(paths.image).removesuffix(".png"), job.c2w, depth_path=depth, depth_file_path=depth,
                      distance_path=rel(paths.distance), normal_path=rel(paths.normal))
        by_split[job.split].append(frame)
    unit = depth_unit(scene)
    for split in SPLITS:
        t = Transforms(camera_angle_x=intr.camera_angle_x, frames=by_split[split], fl_x=intr.fx, fl_y=intr.fy,
                       cx=intr.cx, cy=intr.cy, w=intr.width, h=intr.height,
                       aabb=np.asarray(scene.bounds, dtype=np.float64), scene=SCENE_COPY, bounded=scene.bounded,
                       integer_depth_scale=unit, depth_unit_scale_factor=unit)
        write_transforms(transforms_path(out_dir, split), t)


def _bad_frames(jobs: list[FrameJob], out_dir: Path, settings: DatasetSettings) -> list[FrameJob]:
    """The jobs whose frame is missing, incomplete or unreadable (see :func:`frame_ok`)."""
    return [j for j in jobs
            if not frame_ok(j.paths(out_dir, settings.normals), settings.width, settings.height)]


def write_dataset(
    scene: Scene,
    out_dir: str | Path,
    settings: DatasetSettings,
    *,
    device: str = "cpu",
    workers: int | None = 1,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    threads: int = 1,
    colmap: bool = False,
) -> DatasetSummary:
    """Render ``scene`` into ``out_dir`` as described in the module docstring; restartable. ``workers`` > 1
    renders frames in that many spawned processes (``None``: :func:`default_workers`), each with ``threads``
    torch threads. ``colmap`` also writes the dataset as a COLMAP text model in ``out_dir/sparse/0/``
    (:func:`raytrace.colmap_export.write_dataset_model`).

    ``shard`` ``(i, n)`` renders only frames ``i::n`` of the global frame order and writes no JSON (see
    :func:`merge_dataset`); it never deletes another shard's files, so a folder holding a render with another
    scene or settings is refused (:class:`InputError`). The summary then counts this shard's frames.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, None, "output path exists and is not a folder")
    manifest = _manifest(scene.path, settings)
    old = _read_manifest(out_dir)
    jobs = _frame_jobs(scene, settings)
    mine = jobs if shard is None else jobs[shard[0] :: shard[1]]
    if shard is not None and old is not None and old != manifest:
        raise InputError(out_dir / MANIFEST, None, "this folder holds a render of another scene or other settings, "
                         "and shards never delete other shards' frames: empty it, or render without --shard")
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(out_dir, temporaries=shard is None)
    if old == manifest:
        todo = _bad_frames(mine, out_dir, settings)
    else:
        if shard is None:
            (out_dir / MANIFEST).unlink(missing_ok=True)
            for split in SPLITS:  # frames of other settings must not survive into this dataset
                if (out_dir / split).is_dir():
                    for f in (out_dir / split).glob("r_*"):
                        f.unlink()
        copy_scene(scene.path, out_dir)
        write_json(out_dir / MANIFEST, manifest)
        todo = mine
    if not (out_dir / SCENE_COPY).is_file():
        copy_scene(scene.path, out_dir)
    for split in SPLITS:
        (out_dir / split).mkdir(exist_ok=True)

    if workers is None:
        workers = default_workers(len(todo), threads)
    desc = f"raytrace {out_dir.name}" + (f" shard {shard[0]}/{shard[1]}" if shard is not None else "")
    with tqdm(total=len(todo), desc=desc, unit="view", disable=not progress) as bar:
        for _ in run_jobs(scene, todo, settings, out_dir, device, workers, threads):
            bar.update(1)

    if shard is None:
        _write_transforms_files(scene, settings, jobs, out_dir)
        if colmap:
            write_dataset_model(out_dir)
    counts = dict(settings.counts) if shard is None else {s: sum(j.split == s for j in mine) for s in SPLITS}
    return DatasetSummary(out_dir, counts, len(todo), len(mine) - len(todo), time.perf_counter() - start)


def merge_dataset(
    scene: Scene, out_dir: str | Path, settings: DatasetSettings, colmap: bool = False
) -> DatasetSummary:
    """Finish a dataset rendered in shards: check that every frame of ``scene`` with ``settings`` exists and reads
    back whole (:func:`frame_ok`) in ``out_dir`` (rendered with this scene and these settings), then write the JSON
    files (and, with ``colmap``, the COLMAP model). Raises :class:`InputError` listing the missing or damaged
    frames."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    old = _read_manifest(out_dir)
    if old is None:
        raise InputError(out_dir, MANIFEST, "missing: no shard has rendered into this folder")
    if old != _manifest(scene.path, settings):
        raise InputError(out_dir / MANIFEST, None, "the shards rendered another scene or other settings than "
                         "these (give merge the same scene and flags as the shards)")
    jobs = _frame_jobs(scene, settings)
    missing = _bad_frames(jobs, out_dir, settings)
    if missing:
        names = [f"{j.split}/r_{j.index}" for j in missing]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise InputError(out_dir, None, f"{len(missing)} of {len(jobs)} frames missing or unreadable ({shown}): "
                         "render their shards again (or rerun without --shard, which re-renders only those)")
    _clear_stale(out_dir)
    _write_transforms_files(scene, settings, jobs, out_dir)
    if colmap:
        write_dataset_model(out_dir)
    return DatasetSummary(out_dir, dict(settings.counts), 0, len(jobs), time.perf_counter() - start)


def default_device() -> str:
    """``cuda`` where torch has it, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"

