"""``raytrace SCENE.toml -o datasets/NAME/``: render a scene's multi-view dataset (NeRF-synthetic layout)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raytrace.cliutil import ArgumentParser, check_memory, device_name, int_range, positive_int, run_command
from raytrace.errors import InputError

if TYPE_CHECKING:
    from raytrace.dataset import DatasetSummary
    from raytrace.frames import DatasetSettings

# Idle OpenMP threads sleep instead of spinning (set before torch loads; spawned workers inherit it), so that
# renders share a busy machine gracefully.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MAX_VIEWS = 100_000
"""Most views of one split (a flag past it is a typo, and its cameras alone would fill the memory)."""
MAX_RES = 32768
"""Widest image, in pixels."""
BYTES_PER_SAMPLE = 512
"""Memory one camera sample holds while a frame renders (rays, hits, shading; an upper estimate)."""


def _shard(text: str) -> tuple[int, int]:
    from raytrace.dataset import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="raytrace",
        description="Raytrace a scene file into a multi-view dataset: transforms_{train,val,test}.json, "
        "RGBA PNGs, per-frame depth (16-bit z-depth PNGs that instant-ngp and nerfstudio read, exact ray distance "
        "as .npz), optional normals and a copy of the scene. Reruns into the same folder keep frames already "
        "rendered with the same scene and settings.",
    )
    p.add_argument("scene", type=Path, help="scene file (.toml)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="output folder (default: datasets/<scene name>/)")
    p.add_argument("--views", type=int_range(1, MAX_VIEWS), default=None,
                   help="train views (default: the scene rig's); val and test scale by the same factor "
                   "unless --val / --test are given")
    p.add_argument("--val", type=int_range(0, MAX_VIEWS), default=None, help="val views (default: the rig's, scaled)")
    p.add_argument("--test", type=int_range(0, MAX_VIEWS), default=None, help="test views (default: the rig's, scaled)")
    p.add_argument("--res", type=int_range(1, MAX_RES), default=None,
                   help="image width in pixels; the height keeps the rig's aspect (default: the rig's)")
    p.add_argument("--spp", type=positive_int, default=None, help="samples per pixel (default: the scene's)")
    p.add_argument("--normals", action="store_true",
                   help="also write world-space normals per frame (<split>/r_<i>_normal.npz, float16)")
    p.add_argument("--device", type=device_name, default="auto",
                   help="torch device to render on: auto (cuda where torch has it), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="frames rendered in parallel processes (default: one per available CPU core, at most one "
                   "per 8 frames to render; 1 renders in this process)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch / Embree threads per worker")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                       help="render only frames I, I+N, I+2N, ... (0 <= I < N) of the dataset, and no JSON, so that "
                       "N machines or a job array share one output folder; then run --merge once")
    group.add_argument("--merge", action="store_true",
                       help="after every shard is done: check that every frame exists, then write the JSON files "
                       "(give the same scene, folder and settings flags as the shards)")
    p.add_argument("--colmap", action="store_true",
                   help="also write the dataset as a COLMAP text model in OUT/sparse/0/ (points3D from the depth "
                   "maps; not with --shard: give it to --merge)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_resources(settings: DatasetSettings) -> None:
    """Refuse, before anything is allocated, a dataset without frames or one frame larger than this machine's
    memory (:data:`BYTES_PER_SAMPLE` per sample in flight)."""
    if sum(settings.counts.values()) == 0:
        raise InputError(None, "views", "the rig has zero views in every split: nothing to render")
    check_memory(settings.width * settings.height * settings.spp * BYTES_PER_SAMPLE, "--res/--spp",
                 f"one {settings.width}x{settings.height} frame at {settings.spp} spp")


def run(argv: Sequence[str] | None = None) -> DatasetSummary:
    """Parse ``argv``, render, print where the dataset is; raises :class:`InputError` on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.colmap and args.shard is not None:
        parser.error("--colmap needs the whole dataset: give it to --merge")
    from raytrace.cliutil import check_device
    from raytrace.dataset import default_device, merge_dataset, settings_for, write_dataset
    from raytrace.scene import load_scene

    if args.device != "auto":
        check_device(args.device)
    scene = load_scene(args.scene)  # validates before anything is written
    out = args.out if args.out is not None else Path("datasets") / args.scene.stem
    settings = settings_for(scene, views=args.views, val=args.val, test=args.test, res=args.res, spp=args.spp,
                            normals=args.normals)
    check_resources(settings)
    if args.merge:
        summary = merge_dataset(scene, out, settings, colmap=args.colmap)
        print(f"dataset merged in {summary.out_dir}/ ({settings.width}x{settings.height}): every frame present "
              "and readable")
        return summary
    device = default_device() if args.device == "auto" else args.device
    summary = write_dataset(scene, out, settings, device=device, workers=args.workers, threads=args.threads,
                            progress=not args.quiet, shard=args.shard, colmap=args.colmap)
    if args.shard is not None:
        i, n = args.shard
        print(f"shard {i}/{n} written to {summary.out_dir}/ ({settings.width}x{settings.height}); once every "
              f"shard is done: raytrace {args.scene} -o {out} --merge (with the same settings flags)")
    else:
        print(f"dataset written to {summary.out_dir}/ ({settings.width}x{settings.height})")
    print(summary.line())
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: exit status 0; 2 on bad input, 1 on a failure (unwritable output, full disk, no
    memory), 130 on Ctrl-C, each with one line on stderr."""

    def body() -> int:
        run(argv)
        return 0

    return run_command("raytrace", body)


if __name__ == "__main__":
    sys.exit(main())
