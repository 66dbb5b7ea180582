"""Viewer render speed: ms per 512x512 frame, frames per second at 128x128 (the size a
moving camera is previewed at), seconds to the first image, and the test PSNR against the renderer before the
inference path (the density pass, then the survivors again: :func:`nerf.render.render_rays`).

Uses ``--run`` or, without it, trains the shipped object scene (rendered at 100 px) for ``--train-seconds``.
Each frame is :meth:`viewer.core.ViewRenderer.render` at scale 1, exactly what the worker thread runs when the
camera stops, from the first test camera of the run's dataset; three renderers: ``before`` (``render_rays``, view
grid: what ``nerf-view`` ran before), ``rounds`` (:func:`nerf.render.render_rays_rounds`, the training grid:
what ``nerf-view`` runs now) and ``rounds+view`` (the same, view grid). Prints a table and appends it to
``bench/RESULTS.md`` under ``## viewer_bench``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import append_results
from nerf.backends import available_backends
from nerf.config import TrainConfig
from nerf.data import Split, load_dataset
from nerf.loop import train
from nerf.metrics import psnr
from nerf.model import load_run
from nerf.render import RaysFn, render_rays, render_rays_rounds
from raytrace.dataset import settings_for, write_dataset
from raytrace.scene import load_scene
from viewer.core import RenderRequest, ResolutionController, ViewRenderer, default_target_fps

SECTION = "viewer_bench"
ROOT = Path(__file__).resolve().parents[1]


def trained_run(device: str, seconds: float) -> Path:
    """A run of the object scene at 100 px trained for ``seconds`` (the dataset is rendered once, reused)."""
    data = ROOT / "datasets" / "object_100"
    scene = load_scene(ROOT / "datasets" / "scenes" / "object.toml")
    write_dataset(scene, data, settings_for(scene, res=100))
    cfg = TrainConfig(data=str(data), device=device, time_budget=seconds, out=str(ROOT / "runs" / "viewer_bench"),
                      turntable_frames=0)
    return train(cfg).run_dir


def measure(renderer: ViewRenderer, req: RenderRequest, min_seconds: float, device: torch.device) -> tuple[float, int]:
    """Mean seconds per full-resolution frame over at least ``min_seconds`` (one warm-up frame first)."""
    renderer.render(RenderRequest(req.c2w, req.fov_x, 64, 64))
    frames, start = 0, time.perf_counter()
    while frames == 0 or time.perf_counter() - start < min_seconds:
        renderer.render(req)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        frames += 1
    return (time.perf_counter() - start) / frames, frames


def test_psnr(renderer: ViewRenderer, test: Split) -> float:
    """Mean PSNR of the renderer's full-resolution frames of the test views against their images over white."""
    values = []
    for pose, image in zip(test.poses, test.images, strict=True):
        req = RenderRequest(pose.double().numpy(), test.intrinsics.camera_angle_x, image.shape[1], image.shape[0])
        frame = renderer.render(req)
        truth = image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])
        values.append(psnr(torch.from_numpy(frame.rgb), truth))
    return sum(values) / len(values)


FIRST_SIZE = (640, 480)
"""The window size ``nerf-view`` opens with: the first image is measured at it."""

RENDERERS: dict[str, tuple[RaysFn, bool]] = {
    "before": (render_rays, True),
    "rounds": (render_rays_rounds, False),
    "rounds+view": (render_rays_rounds, True),
}
"""The renderers timed: how each chunk of rays is rendered, and whether the finer view grid is marched."""


def first_image(run: Path, device: str, backend: str, c2w, fov: float, renderer: tuple[RaysFn, bool]) -> float:
    """Seconds from loading the run to the first pass a ``nerf-view`` window shows (at the controller's starting
    scale, :data:`FIRST_SIZE`)."""
    start = time.perf_counter()
    _, model, _ = load_run(run, device, backend)
    view = ViewRenderer(model, fine_grid=renderer[1], rays_fn=renderer[0])
    req = RenderRequest(c2w, fov, *FIRST_SIZE)
    view.render(req, ResolutionController(default_target_fps(view.device)).scale_for(req.width * req.height))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", type=Path, default=None, help="trained run folder or checkpoint (default: train one)")
    p.add_argument("--train-seconds", type=float, default=60.0, help="training budget when no --run is given")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="square view sizes")
    p.add_argument("--min-seconds", type=float, default=2.0, help="time spent per measurement (at least 1 frame)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="hash-grid backends to time (default: the fastest available)")
    p.add_argument("--renderers", nargs="+", default=list(RENDERERS), choices=list(RENDERERS),
                   help="renderers to time (the first is the baseline of the ratios and PSNR differences)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--no-write", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    run = args.run or trained_run(devices[-1], args.train_seconds)
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        for backend in args.backends or [available_backends(device)[0]]:
            cfg, model, ckpt = load_run(run, dev_name, backend)
            test = load_dataset(cfg.data, splits=("train", "test"), downscale=cfg.downscale,
                                triangulate=False).splits["test"]
            fov, c2w = test.intrinsics.camera_angle_x, test.poses[0].double().numpy()
            for name in args.renderers:
                rays_fn, fine = RENDERERS[name]
                first = first_image(run, dev_name, backend, c2w, fov, RENDERERS[name])
                renderer = ViewRenderer(model, fine_grid=fine, rays_fn=rays_fn)
                t0 = time.perf_counter()
                grid = renderer.grid()
                build = time.perf_counter() - t0
                grid_text = f"{grid.resolution}^3 ({100 * grid.mask.float().mean():.1f}% occupied, {build:.1f} s)"
                quality = test_psnr(renderer, test)
                for size in tqdm(args.sizes, desc=f"{dev_name} {model.backend} {name}"):
                    seconds, frames = measure(renderer, RenderRequest(c2w, fov, size, size), args.min_seconds, device)
                    rows.append((dev_name, model.backend, name, grid_text, size, frames, seconds, quality, first))
    base: dict[tuple[str, str, int], tuple[float, float]] = {}
    for r in rows:  # the first renderer's row comes first for each device, backend and size
        base.setdefault((r[0], r[1], r[4]), (r[6], r[7]))
    lines = [
        "| device | backend | renderer | grid (built in) | view | frames timed | ms/frame | fps | speed-up | "
        "test PSNR | PSNR change | first image s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dev, backend, name, grid, size, frames, seconds, quality, first in rows:
        base_s, base_q = base[(dev, backend, size)]
        lines.append(f"| {dev} | {backend} | {name} | {grid} | {size}x{size} | {frames} | {1000 * seconds:.0f} | "
                     f"{1 / seconds:.2f} | {base_s / seconds:.2f}x | {quality:.3f} | {quality - base_q:+.3f} | "
                     f"{first:.2f} |")
    table = "\n".join(lines)
    load = os.getloadavg()[0]
    body = (f"Run: `{run}` (step {ckpt['step']}, {cfg.model} model, {cfg.hash.levels} levels, "
            f"2^{cfg.hash.log2_table_size} table, {cfg.march.steps} march steps); camera: first test view of its "
            f"dataset, white background, RGB mode. A frame = `ViewRenderer.render` at full resolution (the worker's "
            f"last pass; a moving camera's preview is one such frame at a smaller size). Renderers: `before` = "
            f"`render_rays` (density pass, then the survivors again) on the view grid, as `nerf-view` rendered "
            f"before; `rounds` = `render_rays_rounds` on the training grid (what `nerf-view RUN` renders now); "
            f"`rounds+view` = `render_rays_rounds` on "
            f"the view grid (`nerf.render.view_grid`). Goals (quiet 2-core "
            f"machine): 512x512 <= 1000 ms, 128x128 >= 8 fps, first image <= 1 s, PSNR change >= -0.1 dB. Test "
            f"PSNR: full-resolution frames of every test view. First image: loading the run, then the first "
            f"(coarsest) pass of a {FIRST_SIZE[0]}x{FIRST_SIZE[1]} window. Load average {load:.1f} at the end; "
            f"total {time.perf_counter() - t_start:.0f} s.\n\n{table}")
    print(table)
    if not args.no_write:
        append_results(SECTION, body)


if __name__ == "__main__":
    main()
