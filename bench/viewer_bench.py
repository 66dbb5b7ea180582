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
from nerf.data import load_dataset
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", type=Path, default=None, help="trained run folder or checkpoint (default: train one)")
    p.add_argument("--train-seconds", type=float, default=60.0, help="training budget when no --run is given")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 800], help="square view sizes")
    p.add_argument("--min-seconds", type=float, default=2.0, help="time spent per measurement (at least 1 frame)")
    p.add_argument("--no-write", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    run = args.run or trained_run(devices[-1], args.train_seconds)
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        backends = list(dict.fromkeys(["torch", available_backends(device)[0]]))
        for backend in backends:
            cfg, model, ckpt = load_run(run, dev_name, backend)
            test = load_dataset(cfg.data, splits=("train", "test"), downscale=cfg.downscale).splits["test"]
            renderer = ViewRenderer(model)
            fov = test.intrinsics.camera_angle_x
            for size in tqdm(args.sizes, desc=f"{dev_name} {model.backend}"):
                req = RenderRequest(test.poses[0].double().numpy(), fov, size, size)
                seconds, frames = measure(renderer, req, args.min_seconds, device)
                ctl = ResolutionController(default_target_fps(device))
                ctl.record(size * size, seconds)
                rows.append((dev_name, model.backend, size, frames, seconds, default_target_fps(device),
                             ctl.scale_for(size * size)))
    ref = {(r[0], r[2]): r[4] for r in rows if r[1] == "torch"}
    lines = [
        "| device | backend | view | frames timed | ms/frame | fps | vs torch | preview scale at target fps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dev, backend, size, frames, seconds, target, scale in rows:
        lines.append(f"| {dev} | {backend} | {size}x{size} | {frames} | {1000 * seconds:.0f} | {1 / seconds:.2f} | "
                     f"{ref[(dev, size)] / seconds:.2f}x | {scale:.2f} ({target:g} fps: "
                     f"{round(size * scale)}x{round(size * scale)}) |")
    table = "\n".join(lines)
    load = os.getloadavg()[0]
    body = (f"Run: `{run}` (step {ckpt['step']}, {cfg.model} model, {cfg.hash.levels} levels, "
            f"2^{cfg.hash.log2_table_size} table, {cfg.march.steps} march steps); camera: first test view of its "
            f"dataset, white background, "
            f"RGB mode. A frame = `ViewRenderer.render` at full resolution (the worker's refine pass). "
            f"Preview scale: what the dynamic-resolution controller picks from that timing to hold the target "
            f"frame rate while the camera moves. Load average {load:.1f} at the end; total "
            f"{time.perf_counter() - t_start:.0f} s.\n\n{table}")
    print(table)
    if not args.no_write:
        append_results(SECTION, body)


if __name__ == "__main__":
    main()
