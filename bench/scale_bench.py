"""Scaling out and crash safety: the speed-up of 2 processes over 1, and the steps lost to SIGKILL.

- Rendering: ``write_dataset`` of a shipped scene with ``--workers 2`` against ``--workers 1`` (fresh folders).
- Training: steps per second of ``torchrun --nproc-per-node 2 -m nerf.cli`` against one ``python -m nerf.cli``
  at the same global batch (``--batch-rays``); the single process gets every core's threads, each rank its share.
  Seconds are the runs' own ``train_seconds`` (start-up and the final evaluation excluded).
- Kill and resume: ``python -m nerf.cli`` is SIGKILLed at a random moment after its first checkpoint, then resumed;
  steps lost = the last step reached (its progress bar, or its last checkpoint when the bar lags behind) minus the
  step the resumed run starts from.

Appends the figures to ``bench/RESULTS.md`` under ``scale_bench``.

    python bench/scale_bench.py                 # about 5 minutes on 2 cores
    python bench/scale_bench.py --trials 5 --train-steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import append_results  # noqa: E402
from nerf.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from nerf.config import TrainConfig  # noqa: E402
from nerf.train import open_session  # noqa: E402
from raytrace.dataset import settings_for, write_dataset  # noqa: E402
from raytrace.scene import load_scene  # noqa: E402

SMALL_MODEL = ["--device", "cpu", "--backend", "torch", "--levels", "8", "--log2-table-size", "15",
               "--max-resolution", "256", "--grid-resolution", "32", "--march-steps", "128", "--grid-warmup", "32",
               "--turntable-frames", "0"]


def render_seconds(scene_name: str, res: int, views: int, workers: int, out: Path) -> float:
    scene = load_scene(ROOT / "datasets" / "scenes" / f"{scene_name}.toml")
    settings = settings_for(scene, views=views, val=1, test=2, res=res)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    write_dataset(scene, out, settings, device="cpu", workers=workers, progress=False)
    return time.perf_counter() - t0


def train_run(data: Path, out: Path, nproc: int, threads: int, steps: int, batch: int) -> dict:
    """One training run in fresh processes (``threads`` torch threads each); its metrics.json."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    args = [str(data), *SMALL_MODEL, "--steps", str(steps), "--batch-rays", str(batch), "--out", str(out),
            "--quiet", "--checkpoint-every", str(steps)]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    subprocess.run([sys.executable, *launcher, "-m", "nerf.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (run,) = (out / data.name).iterdir()
    return json.loads((run / "metrics.json").read_text())


def kill_trial(data: Path, out: Path, every: int, max_delay: float, rng: random.Random) -> tuple[int, int]:
    """SIGKILL a training run at a random moment after its first checkpoint; (last step shown, resumed step)."""
    out.mkdir(parents=True)
    log = out / "stderr.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nerf.cli", str(data), *SMALL_MODEL, "--steps", "1000000",
                                 "--batch-rays", "512", "--checkpoint-every", str(every), "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
        while not list(out.glob("*/*/checkpoints/step_*.pt")):
            if proc.poll() is not None:
                raise RuntimeError(f"training ended early: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, max_delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    shown = max(int(m) for m in re.findall(r"(\d+)/1000000", log.read_text()))
    (run,) = (out / data.name).iterdir()
    for ckpt in (run / "checkpoints").glob("step_*.pt"):
        load_checkpoint(ckpt)  # raises on a truncated file
    resumed = open_session(TrainConfig(data=str(data), device="cpu"), resume=run).step
    assert resumed == int(latest_checkpoint(run).stem.split("_")[1])
    return shown, resumed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scene", default="cornell", help="shipped scene")
    p.add_argument("--res", type=int, default=160, help="image width of the rendered dataset")
    p.add_argument("--views", type=int, default=30, help="train views rendered (plus 1 val and 2 test)")
    p.add_argument("--train-steps", type=int, default=30, help="steps of each timed training run")
    p.add_argument("--batch-rays", type=int, default=1024, help="global batch of the timed training runs")
    p.add_argument("--trials", type=int, default=20, help="kill-and-resume trials")
    p.add_argument("--checkpoint-every", type=int, default=10, help="checkpoint interval of the killed runs")
    p.add_argument("--max-delay", type=float, default=4.0, help="kill up to this many seconds after the first "
                   "checkpoint")
    p.add_argument("--no-save", action="store_true", help="print only, do not append to bench/RESULTS.md")
    args = p.parse_args()
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="scale_bench_"))
    try:
        cores = os.cpu_count() or 1
        render = {w: render_seconds(args.scene, args.res, args.views, w, tmp / f"render{w}") for w in (1, 2)}
        torch.set_num_threads(1)
        render["1x1"] = render_seconds(args.scene, args.res, args.views, 1, tmp / "render1x1")
        torch.set_num_threads(cores)
        frames = args.views + 3
        print(f"render seconds for {frames} frames: {render}", flush=True)
        data = tmp / "render1"
        layouts = {"1x1": (1, 1), "1xall": (1, cores), "2": (2, max(1, cores // 2))}
        rate = {}
        for name, (nproc, threads) in layouts.items():
            m = train_run(data, tmp / f"train{name}", nproc, threads, args.train_steps, args.batch_rays)
            rate[name] = m["step"] / m["train_seconds"]
        print(f"train steps/s: {rate}", flush=True)
        rng = random.Random(0)
        trials = []
        for i in range(args.trials):
            shown, resumed = kill_trial(data, tmp / f"kill{i}", args.checkpoint_every, args.max_delay, rng)
            trials.append((shown, resumed))
            print(f"kill {i + 1}/{args.trials}: last step shown {shown}, resumed at {resumed}, "
                  f"lost {shown - resumed}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lost = [max(s, r) - r for s, r in trials]
    body = "\n".join([
        f"Scene `{args.scene}` at {args.res}px, {frames} frames; training: hash grid (torch backend, 8 levels, "
        f"T=2^15), {args.train_steps} steps at a global batch of {args.batch_rays} rays, gloo on the CPU.",
        "",
        "| work | 1 process | 2 processes | speed-up |",
        "|---|---|---|---|",
        f"| raytrace, 1 worker on {cores} threads vs `--workers 2` (1 thread each) | {render[1]:.1f} s "
        f"| {render[2]:.1f} s | {render[1] / render[2]:.2f}x |",
        f"| raytrace, 1 worker on 1 thread vs `--workers 2` | {render['1x1']:.1f} s | {render[2]:.1f} s "
        f"| {render['1x1'] / render[2]:.2f}x |",
        f"| nerf-train, 1 process on {cores} threads vs torchrun 2 x {max(1, cores // 2)} | {rate['1xall']:.2f} "
        f"steps/s | {rate['2']:.2f} steps/s | {rate['2'] / rate['1xall']:.2f}x |",
        f"| nerf-train, 1 process on 1 thread vs torchrun 2 x {max(1, cores // 2)} | {rate['1x1']:.2f} steps/s "
        f"| {rate['2']:.2f} steps/s | {rate['2'] / rate['1x1']:.2f}x |",
        "",
        f"Kill and resume: {len(trials)} runs SIGKILLed 0 to {args.max_delay:g} s after their first checkpoint "
        f"(checkpoint every {args.checkpoint_every} steps), then resumed. Steps lost = last step reached (the "
        f"progress bar's, which lags up to 0.1 s, or the last checkpoint's when later) - resumed step: mean "
        f"{statistics.mean(lost):.1f}, max {max(lost)}, min {min(lost)}; every resume started at its latest "
        f"checkpoint, none was truncated. Per trial: {', '.join(map(str, lost))}.",
        "",
        f"The whole bench took {time.perf_counter() - start:.0f} s wall.",
    ])
    print(body)
    if not args.no_save:
        append_results("scale_bench", body)


if __name__ == "__main__":
    main()
