"""``nerf-process`` on instant-ngp's fox photos (50 phone photos, 1080x1920) against instant-ngp's own poses.

Runs the whole command (``--force``: every stage) into a temporary folder and reports: images registered, the
camera centres' distance to instant-ngp's after a similarity alignment (median and max, as % of the camera
radius: the mean distance of instant-ngp's centres from the point closest to their optical axes), the mean
reprojection error, the points, ``aabb_scale`` (ours / instant-ngp's) and the seconds, with the machine's load
average before and after. Appends the table to bench/RESULTS.md.

    python bench/process_bench.py [--photos /work/data/fox_photos] [--poses /work/data/fox/transforms.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, append_results
from raytrace.capture.align import centre_errors
from raytrace.capture.cli import run
from raytrace.capture.ngp import closest_point_to_axes
from raytrace.dataset_format import read_transforms

SECTION = "process_bench"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("/work/data/fox_photos"))
    parser.add_argument("--poses", type=Path, default=Path("/work/data/fox/transforms.json"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-append", action="store_true", help="print the table only")
    parser.add_argument("extra", nargs="*", help="flags passed to nerf-process (after --)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fox"
        start = time.perf_counter()
        summary = run([str(args.photos), "-o", str(out), "--force", *args.extra])
        seconds = time.perf_counter() - start
        ours = read_transforms(out / "transforms.json")
    load_after = os.getloadavg()
    theirs = read_transforms(args.poses)
    truth = {Path(f.file_path).name: f.transform_matrix for f in theirs.frames}
    pairs = [(f.transform_matrix, truth[Path(f.file_path).name]) for f in ours.frames
             if Path(f.file_path).name in truth]
    est = np.stack([p[0][:3, 3] for p in pairs])
    true = np.stack([p[1] for p in pairs])
    radius = float(np.linalg.norm(true[:, :3, 3] - closest_point_to_axes(true), axis=1).mean())
    err = centre_errors(est, true[:, :3, 3]) / radius * 100.0
    flags = " ".join(args.extra) or "defaults"
    table = "\n".join([
        "| photos | flags | registered | compared | centre error median | max | reprojection error | points | "
        "aabb_scale ours / ngp | seconds | load avg before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.photos.name} | {flags} | {summary.registered}/{summary.total} | {len(pairs)} | "
        f"{np.median(err):.3f}% | {err.max():.3f}% | {summary.reprojection_error:.2f} px | {summary.points} | "
        f"{ours.aabb_scale:g} / {theirs.aabb_scale:g} | {seconds:.0f} | "
        f"{load_before[0]:.1f} / {load_after[0]:.1f} |",
    ])
    print(table)
    if not args.no_append:
        append_results(SECTION, f"Camera radius {radius:.3f} (instant-ngp's units).\n\n{table}", args.results)


if __name__ == "__main__":
    main()
