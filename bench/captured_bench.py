"""Captured scenes at the speed of bounded ones, on the CPU: the cost of a training step of instant-ngp's fox (a
contracted capture) against one of the shipped object scene (bounded), and the time to render a fox view, before
and after, in one run (the variants interleaved, so that the machine's load hits them alike).

    python bench/captured_bench.py [--fox /work/data/fox] [--downscale 4] [--warmup 150] [--steps 30]

Both scenes train ``--warmup`` steps with the defaults (the occupancy grid carves the empty space); the fox's
step variants then run on copies of its model, one step of each in turn: ``fixed batch`` (2048 rays a step, the
CPU preset before), the sample budgets, and the default without pose refinement. The render variants render the
first test view through :func:`nerf.render.render_image` (as ``nerf-eval`` and the viewer do) and give its PSNR.
Prints the tables and appends them to ``bench/RESULTS.md`` under ``## captured_bench``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import append_results  # noqa: E402
from bench.train_bench import dataset_for  # noqa: E402
from nerf.config import TrainConfig  # noqa: E402
from nerf.metrics import psnr  # noqa: E402
from nerf.render import render_image, render_rays_rounds  # noqa: E402
from nerf.resolve import UNBOUNDED_CPU_SAMPLES  # noqa: E402
from nerf.step import RayBudget, make_optimizer, train_step  # noqa: E402
from nerf.train import Session, open_session  # noqa: E402

SECTION = "captured_bench"

SETTLE_STEPS = 30
"""Untimed steps of each step variant first: the budget's ray count is a moving average (decay 0.9) that starts at
``batch_rays``."""


def warmed(data: Path, out: str, downscale: int, warmup: int) -> Session:
    cfg = TrainConfig(data=str(data), device="cpu", downscale=downscale, out=out, turntable_frames=0,
                      checkpoint_every=10**9)
    session = open_session(cfg)
    for _ in range(warmup):
        session.advance()
    return session


def step_variant(session: Session, samples: int, poses: bool):
    """A step function on a copy of ``session``'s model: ``samples`` per step (0: the fixed batch)."""
    model = copy.deepcopy(session.model)
    if not poses:
        model.cameras = None
    cfg = dataclasses.replace(session.cfg, samples_per_step=samples)
    opt, _ = make_optimizer(cfg, model.field, model.cameras)
    budget = RayBudget(cfg.batch_rays, samples, None, torch.device("cpu")) if samples else None
    gen = torch.Generator().manual_seed(0)

    def step() -> dict:
        return train_step(model, opt, session.sampler, cfg, gen, budget=budget)

    for _ in range(SETTLE_STEPS):
        step()
    return step


def timed(fn) -> tuple[float, dict]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fox", default="/work/data/fox", help="instant-ngp's fox (transforms.json)")
    p.add_argument("--downscale", type=int, default=4, help="the fox's image downscale")
    p.add_argument("--object-res", type=int, default=100, help="width of the rendered object scene")
    p.add_argument("--warmup", type=int, default=150, help="training steps before timing")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="captured_bench_") as tmp:
        obj = warmed(dataset_for("object", args.object_res), tmp, 1, args.warmup)
        fox = warmed(Path(args.fox), tmp, args.downscale, args.warmup)
        variants = {
            "object, fixed batch 2048 (default)": lambda: train_step(obj.model, obj.opt, obj.sampler, obj.cfg,
                                                                      obj.generators[1]),
            "fox, fixed batch 2048 (before)": step_variant(fox, 0, True),
            **{f"fox, budget 2^{n}{' (default)' if 1 << n == UNBOUNDED_CPU_SAMPLES else ''}":
               step_variant(fox, 1 << n, True) for n in (13, 14, 15, 16)},
            "fox, default budget, no pose refinement": step_variant(fox, UNBOUNDED_CPU_SAMPLES, False),
        }
        stats = {k: {"s": 0.0, "samples": 0, "rays": 0} for k in variants}
        for _ in range(args.steps):
            for name, fn in variants.items():
                seconds, out = timed(fn)
                stats[name]["s"] += seconds
                stats[name]["samples"] += out["samples"]
                stats[name]["rays"] += out["rays"]
        base = stats["object, fixed batch 2048 (default)"]["s"]
        rows = ["| step | s/step | x object step | samples/step | rays/step | samples/ray |",
                "|---|---|---|---|---|---|"]
        for name, s in stats.items():
            rows.append(f"| {name} | {s['s'] / args.steps:.3f} | {s['s'] / base:.2f} | {s['samples'] / args.steps:.0f} "
                        f"| {s['rays'] / args.steps:.0f} | {s['samples'] / max(1, s['rays']):.1f} |")
        split = fox.dataset.splits["test"]
        m = fox.model
        bg = (split.background if split.background is not None else torch.ones(3))
        gt = split.images[0][..., :3] * split.images[0][..., 3:] + bg * (1.0 - split.images[0][..., 3:])
        renders = {
            "chunk 8192, eps 1e-4 (before)": (8192, None),
            "chunk 65536, eps 1e-4": (1 << 16, None),
            "chunk 8192, eps 1e-3": (8192, 1e-3),
            "chunk 65536, eps 1e-2": (1 << 16, 1e-2),
        }
        times = {k: 0.0 for k in renders}
        quality = {}
        for _ in range(2):
            for name, (chunk, eps) in renders.items():
                fn = None if eps is None else functools.partial(render_rays_rounds, eps=eps)
                seconds, out = timed(lambda chunk=chunk, fn=fn: render_image(
                    m, split.poses[0], split.intrinsics, background=bg, chunk=chunk, rays_fn=fn))
                times[name] += seconds / 2
                quality[name] = psnr(out["rgb"], gt)
        first = times["chunk 8192, eps 1e-4 (before)"]
        rows += ["", f"| render {split.intrinsics.width}x{split.intrinsics.height} (fox test view 0) | s | x before "
                 "| PSNR |", "|---|---|---|---|"]
        rows += [f"| {k} | {t:.2f} | {t / first:.2f} | {quality[k]:.2f} |" for k, t in times.items()]
    table = "\n".join(rows)
    print(table)
    append_results(SECTION, f"After {args.warmup} training steps of each scene (defaults; the fox at downscale "
                   f"{args.downscale}), {args.steps} timed steps per variant, interleaved.\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
