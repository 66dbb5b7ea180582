"""``nerf-process SRC -o datasets/NAME/``: a folder of photos or a video into a dataset that ``nerf-train``,
instant-ngp and nerfstudio read: ``images/`` (photos under their own names, video frames under their frame
numbers), ``images_2/``, ``images_4/``, ``images_8/``, a COLMAP model ``sparse/0/`` (binary) and instant-ngp's
``transforms.json``.

Stages (each with a progress bar and its time): images, downscaled copies, SfM (pycolmap), transforms. A rerun
skips the stages whose outputs are complete for the same inputs and settings (recorded in ``process.json``);
``--force`` redoes them. Every file is written atomically and the model replaces ``sparse/0/`` only once it
is complete, so an interrupted or failed run leaves the previous dataset as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytrace.atomic import write_json
from raytrace.cliutil import ArgumentParser, int_range, run_command
from raytrace.colmap import PARAM_COUNTS, read_model
from raytrace.errors import InputError

MIN_REGISTERED = 0.4  # a model with fewer of the images registered is a failure
DEFAULT_FRAMES = 150
MAX_FRAMES = 10_000
DEFAULT_IMAGE_SIZE = 1024
MAX_IMAGE_SIZE = 16384
MANIFEST = "process.json"
WORK = ".sfm"  # pycolmap's database and models while SfM runs; removed once the model is in sparse/0
MODEL_FILES = ("cameras.bin", "images.bin", "points3D.bin")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="nerf-process",
        description="Turn a folder of photos or a video into a dataset: images/ (+ images_2/4/8/), a COLMAP model "
        "in sparse/0/ (pycolmap: SIFT, matching, mapping; one shared camera) and instant-ngp's transforms.json "
        "(poses normalised as instant-ngp's colmap2nerf.py does), which nerf-train, instant-ngp and nerfstudio "
        "read. A rerun skips the stages already complete.",
    )
    p.add_argument("src", type=Path, help="a folder of photos (.jpg, .png, ...) or a video file")
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: datasets/<SRC name>/)")
    p.add_argument("--frames", type=int_range(2, MAX_FRAMES), default=DEFAULT_FRAMES,
                   help="video only: about this many frames, the sharpest of each window of the video")
    p.add_argument("--matcher", choices=("auto", "exhaustive", "sequential"), default="auto",
                   help="feature matching: every pair, or each image with its neighbours in capture order plus "
                   "loop closure among keyframes; auto: exhaustive up to 100 photos, else sequential (always for "
                   "video)")
    p.add_argument("--mapper", choices=("incremental", "global"), default="incremental",
                   help="pycolmap's incremental mapper, or its global one (GLOMAP)")
    p.add_argument("--camera-model", choices=tuple(PARAM_COUNTS), default="OPENCV",
                   help="the lens model shared by every image")
    p.add_argument("--max-image-size", type=int_range(64, MAX_IMAGE_SIZE), default=DEFAULT_IMAGE_SIZE,
                   help="SIFT runs on the images shrunk to this many pixels on their long side (the model and the "
                   "dataset keep the full size): larger finds more features, slower")
    p.add_argument("--force", action="store_true", help="redo every stage, even those already complete")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    return p


@dataclass
class Summary:
    """What a run made: registered and total images, mean reprojection error (pixels), points, seconds."""

    out: Path
    registered: int
    total: int
    reprojection_error: float
    points: int
    seconds: float

    def line(self) -> str:
        return (f"{self.registered}/{self.total} images registered, mean reprojection error "
                f"{self.reprojection_error:.2f} px, {self.points} points, {self.seconds:.0f} s: "
                f"{self.out / 'transforms.json'}")


class Stages:
    """The record of the stages done in ``out`` (``process.json``): a stage is skipped when its inputs and
    settings (``key``) match the record and its outputs exist, unless ``force``."""

    def __init__(self, out: Path, force: bool) -> None:
        self.path, self.force = out / MANIFEST, force
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    def key(self, name: str) -> Any:
        """The inputs and settings recorded for stage ``name`` (None: never done)."""
        return self.data.get(name, {}).get("key")

    def done(self, name: str, key: Any, outputs: list[Path]) -> bool:
        return not self.force and self.key(name) == key and all(p.is_file() for p in outputs)

    def record(self, name: str, key: Any, **results: Any) -> None:
        self.data[name] = {"key": key, **results}
        write_json(self.path, self.data)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Prints the stage's time once it is done."""
    start = time.perf_counter()
    yield
    print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)


def _signature(path: Path) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def images_stage(src: Path, out: Path, frames: int, stages: Stages) -> tuple[list[str], bool]:
    """The images of ``src`` in ``out/images/``: returns their names and whether they came from a video."""
    from raytrace.capture.frames import PHOTO_SUFFIXES, copy_photos, extract_frames, list_photos

    video = src.is_file()
    if not video and not src.is_dir():
        raise InputError(src, None, "not found (expected a folder of photos or a video file)")
    if video and src.suffix.lower() in PHOTO_SUFFIXES:
        raise InputError(src, None, "one photo: give the folder that holds the photos")
    photos = [] if video else list_photos(src)
    key = {"source": str(src.resolve()),
           **({"video": _signature(src), "frames": frames} if video
              else {"photos": [[n, *_signature(src / n)] for n in photos]})}
    previous = stages.key("images") or {}
    images = out / "images"
    in_place = not video and src.resolve() == images.resolve()
    if not stages.force and not in_place and images.is_dir() and any(images.iterdir()):
        if not previous:
            raise InputError(images, None, "already holds images that nerf-process did not write: choose another "
                             "-o, or give --force to write over them")
        if previous.get("source") != key["source"]:
            raise InputError(images, None, f"holds the images of {previous.get('source')}: choose another -o, or "
                             "give --force to replace them")
    done = stages.data.get("images", {}).get("names", [])
    if stages.done("images", key, [images / n for n in done]):
        print(f"images: complete ({len(done)} in {images}/)")
        return done, video
    stages.record("images", {"source": key["source"]})  # claims the folder before writing into it
    with stage("images"):
        names = extract_frames(src, images, frames) if video else photos
        if not video:
            copy_photos(src, names, images)
    stages.record("images", key, names=names)
    return names, video


def downscale_stage(out: Path, names: list[str], stages: Stages) -> None:
    from raytrace.capture.frames import DOWNSCALES, write_downscaled

    key = {"images": stages.key("images"), "names": names, "factors": list(DOWNSCALES)}
    if stages.done("downscale", key, [out / f"images_{f}" / n for f in DOWNSCALES for n in names]):
        print("downscaled copies: complete")
        return
    with stage("downscaled copies"):
        write_downscaled(out, names)
    stages.record("downscale", key)


def _replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` in place of ``target`` (any previous one is removed once the new one is there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def sfm_stage(out: Path, names: list[str], video: bool, args: argparse.Namespace, stages: Stages) -> None:
    model = out / "sparse" / "0"
    key = {"images": stages.key("images"), "names": names, "matcher": args.matcher, "mapper": args.mapper,
           "camera_model": args.camera_model, "max_image_size": args.max_image_size}
    if stages.done("sfm", key, [model / f for f in MODEL_FILES]):
        print(f"SfM: complete ({model}/)")
        return
    from raytrace.capture.sfm import run_sfm

    work = out / WORK
    try:
        with stage("SfM"):
            best = run_sfm(out / "images", names, work, matcher=args.matcher, mapper=args.mapper,
                           camera_model=args.camera_model, max_image_size=args.max_image_size, video=video,
                           verbose=args.verbose)
            registered = 0 if best is None else best.num_reg_images()
            if best is None or registered < MIN_REGISTERED * len(names):
                raise InputError(args.src, None, f"only {registered} of {len(names)} images registered (under "
                                 f"{MIN_REGISTERED:.0%}): try photos with more overlap between neighbours, --matcher "
                                 "exhaustive, or a sharper video (move the camera slowly, more --frames)")
            written = work / "sparse0"
            written.mkdir()
            best.write(written)
            _replace_folder(written, model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stages.record("sfm", key)


def mean_reprojection_error(errors: np.ndarray, tracks: list[np.ndarray]) -> float:
    """COLMAP's mean reprojection error: per-point ``errors`` ``(P,)`` weighted by their track lengths."""
    lengths = np.array([len(t) for t in tracks], dtype=np.float64)
    return float((errors * lengths).sum() / lengths.sum()) if lengths.sum() > 0 else 0.0


def transforms_stage(out: Path, total: int, start: float) -> Summary:
    from raytrace.capture.ngp import ngp_transforms
    from raytrace.dataset_format import write_transforms

    with stage("transforms.json"):
        model = read_model(out / "sparse" / "0")
        transforms, _ = ngp_transforms(model)
        write_transforms(out / "transforms.json", transforms)
    return Summary(out, len(model.images), total, mean_reprojection_error(model.errors, model.tracks),
                   len(model.xyz), time.perf_counter() - start)


def run(argv: Sequence[str] | None = None) -> Summary:
    """Parse ``argv`` and make the dataset; raises :class:`InputError` on bad input or a failed reconstruction."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    out = args.out if args.out is not None else Path("datasets") / args.src.stem
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, args.force)
    names, video = images_stage(args.src, out, args.frames, stages)
    downscale_stage(out, names, stages)
    sfm_stage(out, names, video, args, stages)
    summary = transforms_stage(out, len(names), start)
    print(summary.line())
    print(f"next: nerf-train {out}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: exit status 0; 2 on bad input (no usable image, too few images registered), 1 on a
    failure (unwritable output, full disk), 130 on Ctrl-C, each with one line on stderr."""

    def body() -> int:
        run(argv)
        return 0

    return run_command("nerf-process", body)


if __name__ == "__main__":
    sys.exit(main())
