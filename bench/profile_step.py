"""How busy the GPU is during steady-state training steps: the kernels' summed device time over the wall time, the
kernel launches and the host synchronisations per step (torch.profiler), then the top kernels.

    python bench/profile_step.py DATASET [--backend native] [--warmup 300] [--steps 50]

Trains ``--warmup`` steps with the GPU preset (so the occupancy grid has carved the empty space), then profiles
``--steps`` steps of ``nerf.train.Session.advance``. CUDA only. Prints; appends nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerf.config import TrainConfig
from nerf.train import open_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", help="dataset folder (transforms_*.json)")
    parser.add_argument("--backend", default="native", help="hash-grid backend")
    parser.add_argument("--warmup", type=int, default=300, help="training steps before profiling")
    parser.add_argument("--steps", type=int, default=50, help="profiled steps")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_step: no CUDA device (it profiles CUDA kernels)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="profile_step_") as tmp:
        cfg = TrainConfig(data=args.data, preset="gpu", device="cuda", backend=args.backend, out=tmp,
                          turntable_frames=0, checkpoint_every=10**9)
        session = open_session(cfg)
        for _ in range(args.warmup):
            session.advance()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(args.steps):
                session.advance()
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
    events = prof.key_averages()
    # kernels only: operator rows repeat the device time of the kernels they launch
    device_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC"))
    graphs = sum(e.count for e in events if e.key == "cudaGraphLaunch")
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    print(f"{args.backend}: {args.steps / wall:.1f} steps/s (profiled), GPU busy {device_us / 1e6 / wall:.0%} of wall "
          f"time, {launches / args.steps:.0f} kernel launches, {graphs / args.steps:.1f} CUDA graph launches and "
          f"{syncs / args.steps:.1f} host syncs per step")
    print(events.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
