"""Data-parallel training with torch.distributed (gloo on the CPU): 2 ranks vs 1 process at the same global batch."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from nerf.data import RaySampler, load_dataset
from nerf.distributed import SINGLE, World, all_reduce_gradients, current_world
from nerf.evaluate import evaluate
from nerf.loop import train
from nerf.model import build_model, load_run
from nerf.render import RayBatch, render_rays
from nerf.resolve import resolve

from .conftest import tiny_config

STEPS = 24
BATCH = 1024


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread, as each rank runs (2 threads on a shared 2-core machine can be many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gradient_check(data: Path) -> float:
    """Largest difference between this rank's all-reduced half-batch gradients and the full batch's."""
    world = current_world()
    dataset = load_dataset(data, splits=("train",))
    cfg = resolve(tiny_config(data, data), None, "cpu")
    torch.manual_seed(0)
    model = build_model(cfg, dataset.aabb, torch.device("cpu"))
    batch = RaySampler(dataset.splits["train"], torch.Generator().manual_seed(5)).sample(256)
    target = batch.rgba[:, :3]

    def grads(rows: slice, weight: float, w: World) -> list[torch.Tensor]:
        model.field.zero_grad(set_to_none=True)
        out = render_rays(model, RayBatch(batch.origins[rows], batch.dirs[rows]))
        F.mse_loss(out["rgb"], target[rows]).backward()
        params = list(model.field.parameters())
        all_reduce_gradients(params, weight, torch.zeros(1), w)
        return [p.grad.clone() for p in params]

    full = grads(slice(None), 1.0, SINGLE)
    half = grads(slice(128 * world.rank, 128 * (world.rank + 1)), 0.5, world)
    return max(float((a - b).abs().max() / (a.abs().max() + 1e-12)) for a, b in zip(full, half, strict=True))


def _rank(rank: int, port: int, data: Path, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        grad_error = _gradient_check(data)
        result = train(tiny_config(data, out / "runs", steps=STEPS, batch_rays=BATCH, checkpoint_every=12), quiet=True)
        torch.save({"field": result.model.field.state_dict(), "grid": result.model.grid.state_dict(),
                    "run_dir": str(result.run_dir), "grad_error": grad_error}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_and_match_one_process_of_the_same_global_batch(ball: Path, tmp_path: Path) -> None:
    mp.spawn(_rank, args=(free_port(), ball, tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    # The averaged half-batch gradients are the full batch's.
    assert r0["grad_error"] < 1e-4 and r1["grad_error"] < 1e-4, (r0["grad_error"], r1["grad_error"])
    # Different rays on each rank, yet the same parameters and occupancy grid: gradients were all-reduced.
    for name, value in r0["field"].items():
        assert torch.equal(value, r1["field"][name]), name
    assert torch.equal(r0["grid"]["density"], r1["grid"]["density"])
    assert torch.equal(r0["grid"]["mask"], r1["grid"]["mask"])
    # Only rank 0 wrote a run folder and its checkpoints, at the steps of a single-process run.
    assert r0["run_dir"] == r1["run_dir"]
    assert [p.name for p in (tmp_path / "runs" / ball.name).iterdir()] == [Path(r0["run_dir"]).name]
    names = sorted(p.name for p in (Path(r0["run_dir"]) / "checkpoints").iterdir())
    assert names == ["step_0000012.pt", "step_0000024.pt"]
    _, dp_model, ckpt = load_run(r0["run_dir"], "cpu")
    assert ckpt["step"] == STEPS and len(ckpt["extra"]["rng_ranks"]) == 2
    # Quality equals a single process with the same global batch, within a tolerance.
    with one_thread():
        single = train(tiny_config(ball, tmp_path / "single", steps=STEPS, batch_rays=BATCH), quiet=True)
        test = load_dataset(ball, splits=("train", "test")).splits["test"]
        psnr_dp = evaluate(dp_model, test, quiet=True)["psnr"]
        psnr_single = evaluate(single.model, test, quiet=True)["psnr"]
    assert abs(psnr_dp - psnr_single) < 1.0, (psnr_dp, psnr_single)


def test_nerf_train_nproc_launches_torchrun(ball: Path, tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--device", "cpu", "--backend", "torch", "--steps", "4", "--batch-rays", "256", "--levels", "4",
            "--log2-table-size", "12", "--max-resolution", "64", "--grid-resolution", "16", "--march-steps", "48",
            "--turntable-frames", "0", "--quiet", "--out", str(tmp_path / "runs")]
    code = "import sys; from nerf.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, str(ball), "--nproc", "2", *args],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["step"] == 4  # rank 0 alone reports
    (run,) = (tmp_path / "runs" / ball.name).iterdir()
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "step_0000004.pt").is_file()
