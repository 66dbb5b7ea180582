"""The training step before and after the sample budget, in the same run: the dynamic step on a fixed batch of rays
(before), the dynamic step with the adaptive ray count, the static sync-free step, and (CUDA) the static step
replayed as a CUDA graph. Steps/s and samples/s per variant, and on CUDA the GPU-busy share of each (profiler device
time / wall time). Prints the table and appends it, with the machine, to ``bench/RESULTS.md`` under
``## step_bench``.

    python bench/step_bench.py DATA [--device cuda] [--steps 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, append_results
from nerf.config import TrainConfig
from nerf.data import RaySampler
from nerf.model import load_run
from nerf.step import RayBudget, StaticStep, make_optimizer, train_step
from nerf.train import open_session

SECTION = "step_bench"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def variants(run_dir: Path, data_split, device: torch.device) -> dict[str, Callable[[], torch.Tensor | float]]:
    """One step function per variant, each on its own copy of the warmed-up model; each returns its samples."""
    out: dict[str, Callable[[], torch.Tensor | float]] = {}
    kinds = ["fixed batch (before)", "budget, dynamic", "budget, static"]
    if device.type == "cuda":
        kinds.append("budget, static + CUDA graph")
    for kind in kinds:
        cfg, model, _ = load_run(run_dir, str(device))
        opt, _ = make_optimizer(cfg, model.field)
        if kind.startswith("budget, static") and device.type != "cuda":  # the static step needs fused Adam
            opt = torch.optim.Adam(model.field.parameters(), lr=torch.tensor(cfg.optim.lr), betas=cfg.optim.betas,
                                   eps=cfg.optim.eps, fused=True)
        sampler = RaySampler(data_split, torch.Generator().manual_seed(0), device)
        gen = torch.Generator(device=device).manual_seed(1)
        if kind.startswith("budget, static"):
            step = StaticStep(model, opt, sampler, cfg, gen, graph=kind.endswith("graph"))
            out[kind] = lambda s=step: s()[2]
        else:
            budget = None if kind.startswith("fixed") else RayBudget(cfg.batch_rays, cfg.samples_per_step, None, device)
            out[kind] = lambda a=(model, opt, sampler, cfg, gen), b=budget: float(train_step(*a, budget=b)["samples"])
    return out


def measure(fn: Callable[[], torch.Tensor | float], device: torch.device, warmup: int, steps: int,
            profile: bool) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    samples = [fn() for _ in range(steps)]
    sync(device)
    wall = time.perf_counter() - t0
    total = float(sum(float(s) for s in samples))
    row = {"steps/s": steps / wall, "samples/s": total / wall, "busy": float("nan")}
    if profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            sync(device)
            wall = time.perf_counter() - t0
        device_us = sum(e.self_device_time_total for e in prof.key_averages())
        row["busy"] = device_us / 1e6 / wall
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a dataset folder (transforms_train.json)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="(default: %(default)s)")
    parser.add_argument("--preset", default="auto", help="training preset (default: %(default)s)")
    parser.add_argument("--warmup-train", type=int, default=300, help="training steps before timing (default: 300)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant (default: 5)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant (default: 50)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="(default: bench/RESULTS.md)")
    parser.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="step_bench_") as tmp:
        session = open_session(TrainConfig(data=str(args.data), device=str(device), preset=args.preset,
                                           out=str(Path(tmp) / "runs")))
        for _ in tqdm(range(args.warmup_train), desc="warm-up training", unit="step"):
            session.advance()
        session.save(0.0)
        rows = {}
        for kind, fn in tqdm(variants(session.run_dir, session.dataset.splits["train"], device).items(),
                             desc="variants", unit="variant"):
            rows[kind] = measure(fn, device, args.warmup, args.steps, device.type == "cuda")
        cfg = session.cfg
    base = rows["fixed batch (before)"]
    lines = [f"Dataset {args.data.name}, preset {cfg.preset}: {cfg.batch_rays} rays fixed vs "
             f"{cfg.samples_per_step} samples/step; {args.steps} timed steps after {args.warmup_train} of training.",
             "", "| step | steps/s | samples/s | samples/s vs before | GPU busy |", "|---|---|---|---|---|"]
    for kind, row in rows.items():
        busy = "-" if row["busy"] != row["busy"] else f"{100 * row['busy']:.0f}%"
        lines.append(f"| {kind} | {row['steps/s']:.2f} | {row['samples/s']:,.0f} | "
                     f"{row['samples/s'] / base['samples/s']:.2f}x | {busy} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_append:
        append_results(SECTION, table, args.results)


if __name__ == "__main__":
    main()
