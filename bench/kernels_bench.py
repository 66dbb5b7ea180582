"""Throughput per hash-grid backend: encode forward, forward+backward and an encode+MLP+Adam step on random points,
then the full NeRF training step (``nerf.step.train_step``: marching, field, compositing, Adam) on the shipped
object scene.

Backends: every one available on the device (``nerf.backends.available_backends``) plus the reference under
``torch.compile``. Prints the tables and appends them, with machine info and ratios to the reference, to
``bench/RESULTS.md`` under ``## kernels_bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, append_results
from nerf.backends import available_backends, resolve_backend
from nerf.config import TrainConfig
from nerf.data import RaySampler
from nerf.hashgrid import EncodeFn, HashGridConfig, hash_encode, table_rows
from nerf.model import load_run
from nerf.step import make_optimizer, train_step
from nerf.train import open_session
from raytrace.dataset import settings_for, write_dataset
from raytrace.scene import load_scene

MODES = ("forward", "fwd+bwd", "train step")
SCENE = Path(__file__).resolve().parents[1] / "datasets" / "scenes" / "object.toml"
SECTION = "kernels_bench"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def make_step(encode: EncodeFn, table: torch.Tensor, cfg: HashGridConfig, x: torch.Tensor) -> Callable[[], None]:
    """Encode + 2-layer MLP (64 wide) + MSE + backward + Adam over the table and the MLP."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(cfg.output_dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).to(x.device)
    target = torch.rand(x.shape[0], 4, generator=gen, device=x.device)
    opt = torch.optim.Adam([table, *mlp.parameters()], lr=1e-2, eps=1e-15)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(mlp(encode(x, table, cfg)), target)
        loss.backward()
        opt.step()

    return step


def mode_fns(
    name: str, encode: EncodeFn, cfg: HashGridConfig, n: int, device: torch.device
) -> dict[str, Callable[[], None]]:
    """The call to time for each mode, on fresh state."""
    gen = torch.Generator(device=device).manual_seed(n)
    table = torch.empty(table_rows(cfg), cfg.features, device=device).uniform_(-1e-4, 1e-4, generator=gen)
    table.requires_grad_()
    x = torch.rand(n, 3, generator=gen, device=device)
    grad_out = torch.randn(n, cfg.output_dim, generator=gen, device=device)

    def forward() -> None:
        with torch.no_grad():
            encode(x, table, cfg)

    def fwd_bwd() -> None:
        table.grad = None
        encode(x, table, cfg).backward(grad_out)

    return {"forward": forward, "fwd+bwd": fwd_bwd, "train step": make_step(encode, table, cfg, x)}


def bench_size(
    runs: list[tuple[str, EncodeFn]], cfg: HashGridConfig, n: int, device: torch.device, rounds: int, bar: tqdm
) -> dict[str, dict[str, float] | str]:
    """Points per second of every backend and mode at ``n`` points, or why a backend failed.

    Backends take turns (one warm-up call each, then ``rounds`` rounds of one call each) and each keeps its
    best time: on a shared machine other jobs only ever add time, and turns expose all backends to the same.
    """
    fns: dict[str, dict[str, Callable[[], None]]] = {}
    out: dict[str, dict[str, float] | str] = {}
    for label, encode in runs:
        fns[label] = mode_fns(label, encode, cfg, n, device)
        out[label] = {}
    for mode in MODES:
        best: dict[str, float] = {}
        for label in fns:
            bar.set_postfix_str(f"2^{n.bit_length() - 1} {mode} {label} warm-up")
            try:
                timed(fns[label][mode], device)
                best[label] = float("inf")
            except Exception as err:  # a failing backend (e.g. torch.compile) is a row, not a crash
                why = str(err).strip().splitlines()[0][:80] if str(err).strip() else ""
                out[label] = f"failed ({mode}): {type(err).__name__}: {why}"
        for r in range(rounds):
            for label in best:
                bar.set_postfix_str(f"2^{n.bit_length() - 1} {mode} round {r + 1}")
                best[label] = min(best[label], timed(fns[label][mode], device))
        for label, seconds in best.items():
            if isinstance(out[label], dict):
                out[label][mode] = n / seconds
        fns = {label: f for label, f in fns.items() if label in best}
        bar.update()
    return out


def backends_to_run(device: torch.device, compile_ref: bool) -> list[tuple[str, EncodeFn]]:
    """``(label, encode_fn)`` of every backend available on ``device``, the compiled reference after torch."""
    runs: list[tuple[str, EncodeFn]] = []
    for name in available_backends(device):
        runs.append((name, resolve_backend(name, device).encode))
        if name == "torch" and compile_ref:
            runs.append(("torch.compile", torch.compile(hash_encode, dynamic=False)))
    return runs


def format_table(results: dict[str, dict[int, dict[str, float] | str]], sizes: list[int]) -> str:
    """Markdown table of Mpoints/s, and the ratio to the eager reference."""
    lines = [
        "| backend | points | "
        + " | ".join(f"{m} (Mpt/s)" for m in MODES)
        + " | "
        + " | ".join(f"{m} vs torch" for m in MODES)
        + " |",
        "|---|---|" + "---|" * (2 * len(MODES)),
    ]
    for label, per_size in results.items():
        for n in sizes:
            res = per_size[n]
            if isinstance(res, str):
                lines.append(f"| {label} | 2^{n.bit_length() - 1} | {res} |" + " |" * (2 * len(MODES) - 1))
                continue
            ref = results["torch"][n]
            rates = " | ".join(f"{res[m] / 1e6:.3f}" for m in MODES)
            ratios = " | ".join(f"{res[m] / ref[m]:.1f}x" if isinstance(ref, dict) else "-" for m in MODES)
            lines.append(f"| {label} | 2^{n.bit_length() - 1} | {rates} | {ratios} |")
    return "\n".join(lines)


def bar_lines(results: dict[str, dict[int, dict[str, float] | str]], sizes: list[int]) -> str:
    """The bar: native's training step against the eager and the compiled reference (where both ran)."""
    lines = []
    for n in sizes:
        native, parts = results.get("native", {}).get(n), []
        for ref in ("torch", "torch.compile"):
            other = results.get(ref, {}).get(n)
            if isinstance(native, dict) and isinstance(other, dict):
                parts.append(f"{native['train step'] / other['train step']:.1f}x {ref}")
        if parts:
            lines.append(f"- native train step at 2^{n.bit_length() - 1} points: " + ", ".join(parts))
    return "\n".join(lines)


def nerf_step_rates(
    labels: list[str], device: torch.device, res: int, warm_steps: int, rounds: int, bar: tqdm,
    data: Path | None = None,
) -> dict[str, float | str]:
    """Rays per second of ``train_step`` per backend label (median of ``rounds``, backends taking turns).

    The object scene is raytraced at ``res`` pixels into a temporary folder and trained ``warm_steps`` steps with
    the default backend (so the occupancy grid has carved the empty space, as in a real run); every backend then
    resumes that checkpoint with its own optimiser and takes the same sequence of batches. With ``data``, that
    dataset is trained on instead (no raytracing, so no open3d needed).
    """
    with tempfile.TemporaryDirectory(prefix="kernels_bench_") as tmp:
        if data is None:
            scene = load_scene(SCENE)
            bar.set_postfix_str(f"raytracing the object scene at {res} px")
            data = Path(tmp) / "object"
            write_dataset(scene, data, settings_for(scene, views=40, res=res), progress=False)
        cfg = TrainConfig(data=str(data), device=str(device), out=str(Path(tmp) / "runs"))
        session = open_session(cfg)
        for step in range(warm_steps):
            bar.set_postfix_str(f"warm-up training {step + 1}/{warm_steps}")
            session.advance()
        session.save(0.0)
        variants, out = {}, {}
        for label in labels:
            try:
                run_cfg, model, _ = load_run(session.run_dir, str(device), "torch" if "torch" in label else label)
                if label == "torch.compile":
                    model.field.encoding.encode_fn = torch.compile(hash_encode, dynamic=True)
                opt, _ = make_optimizer(run_cfg, model.field)
                sampler = RaySampler(session.dataset.splits["train"], torch.Generator().manual_seed(0), device)
                gen = torch.Generator(device=device).manual_seed(1)
                variant = (model, opt, sampler, run_cfg, gen)
                timed(lambda v=variant: train_step(*v), device)  # warm-up (and compilation)
                variants[label], out[label] = variant, []
            except Exception as err:  # a failing backend is a row, not a crash
                out[label] = f"failed: {type(err).__name__}: {str(err).strip()[:80]}"
        for r in range(rounds):
            bar.set_postfix_str(f"NeRF train step, round {r + 1}/{rounds}")
            for label, variant in variants.items():
                out[label].append(timed(lambda v=variant: train_step(*v), device))
        return {
            label: v if isinstance(v, str) else variants[label][3].batch_rays / statistics.median(v)
            for label, v in out.items()
        }


def format_nerf_table(rates: dict[str, float | str]) -> str:
    """Markdown table of the full training step: rays/s and the ratio to each reference."""
    lines = ["| backend | train_step (rays/s) | vs torch | vs torch.compile |", "|---|---|---|---|"]
    for label, rate in rates.items():
        if isinstance(rate, str):
            lines.append(f"| {label} | {rate} | | |")
            continue
        ratios = [f"{rate / rates[ref]:.2f}x" if isinstance(rates.get(ref), float) else "-"
                  for ref in ("torch", "torch.compile")]
        lines.append(f"| {label} | {rate:,.0f} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--log2-points", type=int, nargs="+", default=[16, 18], help="batch sizes, as log2")
    parser.add_argument("--rounds", type=int, default=4, help="timed calls per backend and mode (best kept)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference")
    parser.add_argument("--nerf-res", type=int, default=64, help="width of the object scene for the NeRF step")
    parser.add_argument("--nerf-data", type=Path, default=None,
                        help="dataset for the NeRF step instead of raytracing the object scene (default: raytrace)")
    parser.add_argument("--nerf-warmup", type=int, default=100, help="training steps before the NeRF step is timed")
    parser.add_argument("--nerf-rounds", type=int, default=15, help="timed NeRF steps per backend (median kept)")
    parser.add_argument("--no-nerf", action="store_true", help="skip the full NeRF training step")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cfg = HashGridConfig()
    sizes = [1 << k for k in args.log2_points]
    runs = backends_to_run(device, not args.no_compile)
    results: dict[str, dict[int, dict[str, float] | str]] = {label: {} for label, _ in runs}
    started = time.perf_counter()
    with tqdm(total=len(sizes) * len(MODES) + (not args.no_nerf), desc="kernels_bench", unit="part") as bar:
        for n in sizes:
            for label, res in bench_size(runs, cfg, n, device, args.rounds, bar).items():
                results[label][n] = res
        nerf_text = ""
        if not args.no_nerf:
            labels = [label for label, _ in runs]
            rates = nerf_step_rates(labels, device, args.nerf_res, args.nerf_warmup, args.nerf_rounds, bar,
                                    args.nerf_data)
            bar.update()
            nerf_text = (
                f"\n\nFull NeRF training step (`nerf.step.train_step`, "
                f"{args.nerf_data or f'{args.nerf_res}px object scene'} after "
                f"{args.nerf_warmup} warm-up steps, the preset's batch, median of {args.nerf_rounds}):\n\n"
                + format_nerf_table(rates)
            )
    table = format_table(results, sizes)
    bar_text = bar_lines(results, sizes)
    print(table + "\n" + bar_text + nerf_text)

    body = (
        f"- device: {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f"; load average {os.getloadavg()[0]:.1f} at the end (other jobs on the machine slow every figure)\n"
        f"- config: {cfg}; best of {args.rounds} calls per figure, backends taking turns; "
        f"total {time.perf_counter() - started:.0f} s\n\nEncode, and an encode+MLP+Adam step (\"train step\"), on "
        f"random points:\n\n{table}\n\n{bar_text}{nerf_text}\n"
    )
    if not args.no_append:
        append_results(SECTION, body, args.results)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
