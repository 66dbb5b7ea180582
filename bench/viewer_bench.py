"""Viewer render throughput: frames per second of the render worker's full-resolution frame at 256^2, 512^2 and
800^2, for the reference ``torch`` backend and the fastest available one, on the CPU (and the GPU when present).

Uses ``--run`` or, without it, trains the shipped object scene (rendered at 100 px) for ``--train-seconds``.
Each frame is :meth:`viewer.worker.ViewRenderer.render` at scale 1, exactly what the worker thread runs when the
camera stops, from the first test camera of the run's dataset. Prints a table and appends it to
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
from nerf.metrics import psnr
from nerf.model import load_run
from nerf.train import train
from raytrace.dataset import settings_for, write_dataset
from raytrace.scene import load_scene
from viewer.worker import RenderRequest, ResolutionController, ViewRenderer, default_target_fps

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


def first_image(renderer: ViewRenderer, req: RenderRequest) -> float:
    """Seconds to the first pass a window shows for ``req`` (at the controller's starting scale)."""
    start = time.perf_counter()
    renderer.render(req, ResolutionController(1.0).scale_for(req.width * req.height))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", type=Path, default=None, help="trained run folder or checkpoint (default: train one)")
    p.add_argument("--train-seconds", type=float, default=60.0, help="training budget when no --run is given")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 800], help="square view sizes")
    p.add_argument("--min-seconds", type=float, default=2.0, help="time spent per measurement (at least 1 frame)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="hash-grid backends to time (default: torch and the fastest available)")
    p.add_argument("--no-write", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    run = args.run or trained_run(devices[-1], args.train_seconds)
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        backends = args.backends or list(dict.fromkeys(["torch", available_backends(device)[0]]))
        for backend in backends:
            cfg, model, ckpt = load_run(run, dev_name, backend)
            test = load_dataset(cfg.data, splits=("train", "test"), downscale=cfg.downscale).splits["test"]
            fov = test.intrinsics.camera_angle_x
            for fine in (False, True):
                renderer = ViewRenderer(model, fine_grid=fine)
                req0 = RenderRequest(test.poses[0].double().numpy(), fov, args.sizes[0], args.sizes[0])
                first = first_image(renderer, req0)
                t0 = time.perf_counter()
                grid = renderer.grid()
                build = time.perf_counter() - t0
                grid_text = f"{grid.resolution}^3 ({100 * grid.mask.float().mean():.1f}% occupied, {build:.1f} s)"
                quality = test_psnr(renderer, test)
                for size in tqdm(args.sizes, desc=f"{dev_name} {model.backend} {grid.resolution}^3"):
                    req = RenderRequest(test.poses[0].double().numpy(), fov, size, size)
                    seconds, frames = measure(renderer, req, args.min_seconds, device)
                    ctl = ResolutionController(default_target_fps(device))
                    ctl.record(size * size, seconds)
                    rows.append((dev_name, model.backend, grid_text, size, frames, seconds, default_target_fps(device),
                                 ctl.scale_for(size * size), quality, first))
    ref: dict[tuple[str, str, int], float] = {}
    for r in rows:  # the training grid's row comes first for each device, backend and size
        ref.setdefault((r[0], r[1], r[3]), r[5])
    lines = [
        "| device | backend | grid (built in) | view | frames timed | ms/frame | fps | vs training grid | "
        "preview scale at target fps | test PSNR | first image s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dev, backend, grid, size, frames, seconds, target, scale, quality, first in rows:
        base = ref.get((dev, backend, size), seconds)
        lines.append(f"| {dev} | {backend} | {grid} | {size}x{size} | {frames} | {1000 * seconds:.0f} | "
                     f"{1 / seconds:.2f} | {base / seconds:.2f}x | {scale:.2f} ({target:g} fps: "
                     f"{round(size * scale)}x{round(size * scale)}) | {quality:.3f} | {first:.2f} |")
    table = "\n".join(lines)
    load = os.getloadavg()[0]
    body = (f"Run: `{run}` (step {ckpt['step']}, {cfg.model} model, {cfg.hash.levels} levels, "
            f"2^{cfg.hash.log2_table_size} table, {cfg.march.steps} march steps); camera: first test view of its "
            f"dataset, white background, "
            f"RGB mode. A frame = `ViewRenderer.render` at full resolution (the worker's last pass), with the "
            f"training grid and with the finer view grid (`nerf.render.view_grid`, as `nerf-view RUN` uses). "
            f"Test PSNR: full-resolution frames of every test view. First image: the first (coarsest) pass. "
            f"Preview scale: what the dynamic-resolution controller picks from that timing to hold the target "
            f"frame rate while the camera moves. Load average {load:.1f} at the end; total "
            f"{time.perf_counter() - t_start:.0f} s.\n\n{table}")
    print(table)
    if not args.no_write:
        append_results(SECTION, body)


if __name__ == "__main__":
    main()
