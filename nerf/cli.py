"""Command lines: ``nerf-train``, ``nerf-eval`` and ``nerf-export``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nerf.checkpoint import run_folder
from nerf.config import PRESETS, SECTIONS, TrainConfig, config_flags, flag_name, preset_name
from raytrace.atomic import write_json
from raytrace.errors import InputError

_HELP = {
    "preset": "cpu or gpu sizes the batch, grid and step count; auto picks from the device",
    "device": "torch device: auto, cpu, cuda, cuda:1, mps",
    "backend": "hash-grid backend (with its marching and compositing): auto (fastest available), torch, native, tcnn",
    "model": "ngp (hash grid) or nerf (the 2020 positional-encoding MLP baseline)",
    "downscale": "divide the image resolution by this integer",
    "seed": "seed of the ray sampling, the per-step randomness and the occupancy grid's cell choice",
    "steps": "training steps",
    "time_budget": "stop after this many seconds of training",
    "batch_rays": "rays per step (the global batch: split over the processes of a data-parallel run)",
    "random_background": "composite the training images over a random colour (images with alpha only)",
    "checkpoint_every": "write a checkpoint every N steps",
    "eval_every": "evaluate the val split every N steps and log its PSNR to TensorBoard (0: only the test split "
    "at the end)",
    "log_every": "log the training loss to TensorBoard every N steps",
    "render_chunk": "rays rendered at once in evaluation",
    "turntable_frames": "frames of the turntable video written at the end (0: none)",
    "out": "folder that holds runs/<scene>/<time>/",
    "hash.levels": "hash-grid levels (L)",
    "hash.features": "features per level (F)",
    "hash.log2_table_size": "log2 of the hash table size per level (T)",
    "hash.base_resolution": "coarsest hash-grid resolution (N_min)",
    "hash.max_resolution": "finest hash-grid resolution (N_max)",
    "field.hidden": "width of the density MLP",
    "field.geo_features": "geometry features the density MLP hands to the colour MLP",
    "field.color_hidden": "width of the colour MLP",
    "field.color_layers": "hidden layers of the colour MLP",
    "field.sh_degree": "spherical-harmonics degree of the direction encoding (1..4)",
    "march.steps": "ray-marching samples along the scene box diagonal",
    "march.grid_resolution": "occupancy grid cells per axis",
    "march.grid_decay": "occupancy grid EMA decay per update",
    "march.grid_threshold": "occupancy threshold on the optical thickness of one marching step",
    "march.grid_update_every": "update the occupancy grid every N steps",
    "march.grid_warmup": "steps during which every occupancy cell is updated",
    "optim.lr": "Adam learning rate",
    "optim.lr_final_factor": "the learning rate decays exponentially to lr times this at the last step",
    "optim.betas": "Adam betas",
    "optim.eps": "Adam epsilon",
    "optim.loss": "huber or mse",
}


def _dest(section: str | None, name: str) -> str:
    return f"{section}.{name}" if section else name


def _default_text(section: str | None, f: dataclasses.Field) -> str:
    """The default of a config field as --help shows it (both presets' values where the preset decides)."""
    if section in ("hash", "march") or (section is None and f.name in PRESETS["cpu"]):
        cpu, gpu = PRESETS["cpu"], PRESETS["gpu"]
        values = [getattr(p[section], f.name) if section else p[f.name] for p in (cpu, gpu)]
        return f"default: {values[0]}" if values[0] == values[1] else f"default: cpu {values[0]}, gpu {values[1]}"
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    if default is None:
        return "default: none"
    return "default: " + (" ".join(map(str, default)) if isinstance(default, tuple) else str(default))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (sections included), its default shown."""
    defaults = {_dest(s, f.name): f.default for s, f in config_flags()}
    for section, f in config_flags():
        dest = _dest(section, f.name)
        help_text = f"{_HELP.get(dest, f.name.replace('_', ' '))} ({_default_text(section, f)})"
        kind: Any = {"int": int, "float": float, "str": str}.get(str(f.type).split(" | ")[0], str)
        flag = flag_name(section, f.name)
        common = dict(dest=dest, default=argparse.SUPPRESS, help=help_text)
        if isinstance(defaults[dest], bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif str(f.type).startswith("tuple"):
            parser.add_argument(flag, type=float, nargs=2, metavar=("B1", "B2"), **common)
        else:
            parser.add_argument(flag, type=kind, metavar=flag[2:].replace("-", "_").upper(), **common)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of the flags given (the rest at their defaults; a section of the preset's, such as ``hash``, is
    the preset's with the given flags replaced, or None when none of its flags is given)."""
    given = {k: v for k, v in vars(args).items() if k in {_dest(s, f.name) for s, f in config_flags()}}
    top = {k: v for k, v in given.items() if "." not in k}
    sections: dict[str, Any] = {}
    for section, kind in SECTIONS.items():
        values = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith(section + ".")}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if section in PRESETS["cpu"]:
            if not values:
                continue
            from nerf.model import resolve_device

            preset = preset_name(top.get("preset", "auto"), resolve_device(top.get("device", "auto")).type)
            base = PRESETS[preset][section]
        else:
            base = kind()
        try:
            sections[section] = dataclasses.replace(base, **values)
        except ValueError as e:
            raise InputError(None, f"--{section} flags", str(e)) from None
    return TrainConfig(data=str(args.data or ""), **top, **sections)


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def finish_run(result, quiet: bool = False) -> dict[str, Any]:
    """Evaluate the test split, write renders, metrics.json and the turntable video of a finished run."""
    from nerf.evaluate import evaluate, render_turntable

    run_dir = result.run_dir
    split = result.dataset.splits.get("test") or result.dataset.splits["train"]
    with announced(f"evaluating {split.poses.shape[0]} {split.name} views", quiet):
        metrics = evaluate(result.model, split, run_dir / "renders", result.config.render_chunk, quiet=quiet)
    summary = {
        "step": result.step,
        "train_seconds": round(result.seconds, 2),
        "split": split.name,
        "backend": result.model.backend,
        "device": str(result.model.march.aabb.device),
        **{k: round(v, 5) for k, v in metrics.items()},
    }
    write_json(run_dir / "metrics.json", summary)
    frames = result.config.turntable_frames
    if frames > 0:
        intr = split.intrinsics
        with announced(f"turntable: {frames} frames at {intr.width}x{intr.height}", quiet):
            render_turntable(result.model, split, run_dir / "turntable.mp4", frames, quiet=quiet)
    return summary


@contextlib.contextmanager
def announced(what: str, quiet: bool = False) -> Iterator[None]:
    """Print ``what...`` before the work and ``what: N s`` after it (on stderr; nothing when ``quiet``)."""
    if not quiet:
        print(f"{what}...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    if not quiet:
        print(f"{what}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


_LAUNCH_FLAGS = ("--gpus", "--nproc")


def _without_launch_flags(argv: list[str]) -> list[str]:
    """``argv`` less ``--gpus N`` / ``--nproc N`` (either spelling, with ``=`` or not)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _LAUNCH_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in _LAUNCH_FLAGS)):
            out.append(arg)
    return out


def launch_data_parallel(nproc: int, argv: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node N -m nerf.cli ARGV``; its exit status.

    CPU processes share the cores: each gets ``cores / N`` torch threads unless ``OMP_NUM_THREADS`` is set."""
    env = dict(os.environ)
    if not torch_has_cuda():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "nerf.cli", *_without_launch_flags(argv)]
    return subprocess.run(cmd, env=env, check=False).returncode


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_main(argv: list[str] | None = None) -> int:
    """``nerf-train``; under torchrun (``python -m nerf.cli`` per rank) one rank of a data-parallel run.

    Exit status 0, 2 for bad input, 1 when training diverged, 130 when stopped by SIGINT / SIGTERM (after a
    checkpoint that ``--resume`` continues from)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="nerf-train",
        description="Train an instant-NGP model on a dataset folder (ours or NeRF-synthetic). Data-parallel over "
        "N processes with --gpus N, or started by torchrun --nproc_per_node N -m nerf.cli DATA.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data", nargs="?", help="dataset folder with transforms_*.json (not needed with --resume)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--gpus", "--nproc", dest="nproc", type=int, default=1, metavar="N",
                        help="data-parallel processes launched through torchrun: one per GPU (nccl) where CUDA is "
                        "used, else N CPU processes (gloo); --batch-rays stays the global batch")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    if not args.data and not args.resume:
        parser.error("give a dataset folder or --resume RUN_DIR")
    if args.nproc < 1:
        parser.error("--gpus / --nproc must be >= 1")
    from nerf.distributed import env_world_size, init_world, shutdown

    device = getattr(args, "device", "auto")
    if args.nproc > 1 and env_world_size() <= 1:
        if device != "cpu" and torch_has_cuda():
            import torch

            if args.nproc > torch.cuda.device_count():
                parser.error(f"--gpus {args.nproc}: torch sees {torch.cuda.device_count()} CUDA devices")
        return launch_data_parallel(args.nproc, argv)
    from nerf.model import resolve_device
    from nerf.train import TrainingDiverged, train

    world = None
    try:
        world = init_world(resolve_device(device).type)
        result = train(config_from_args(args), resume=args.resume, quiet=args.quiet)
        if not world.is_main:
            return 130 if result.interrupted else 0
        if result.interrupted:
            print(f"interrupted at step {result.step}: checkpoint written; continue with "
                  f"nerf-train --resume {result.run_dir}", file=sys.stderr)
            return 130
        summary = finish_run(result, quiet=args.quiet)
    except InputError as e:
        return _fail(e)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if world is not None:
            shutdown(world)
    print(json.dumps(summary))
    video = "turntable.mp4, " if (result.run_dir / "turntable.mp4").exists() else ""
    print(f"run folder: {result.run_dir} (metrics.json, renders/, {video}checkpoints/, tb/ for TensorBoard)")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nerf-eval",
        description="Evaluate a run on the test split: PSNR, SSIM and depth error; writes metrics.json and renders/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", help="run folder (or a checkpoint file)")
    parser.add_argument("--split", default="test", help="split to evaluate")
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--backend", default="auto",
                        help="hash-grid backend: auto (fastest available), torch, native, tcnn; a checkpoint runs "
                        "on every backend")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from nerf.data import load_dataset
    from nerf.evaluate import evaluate
    from nerf.model import load_run

    try:
        cfg, model, ckpt = load_run(args.run, args.device, args.backend)
        dataset = load_dataset(cfg.data, splits=("train", args.split), downscale=cfg.downscale)
        if args.split not in dataset.splits:
            raise InputError(cfg.data, f"transforms_{args.split}.json", "split not found")
        run_dir = run_folder(args.run)
        metrics = evaluate(model, dataset.splits[args.split], run_dir / "renders", cfg.render_chunk, args.quiet)
    except InputError as e:
        return _fail(e)
    summary = {"step": int(ckpt["step"]), "split": args.split, **{k: round(v, 5) for k, v in metrics.items()}}
    write_json(run_dir / f"metrics_{args.split}.json", summary)
    print(json.dumps(summary))
    return 0


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nerf-export",
        description="Export a trained run: a mesh by marching cubes on the density grid (PLY).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", help="run folder (or a checkpoint file)")
    parser.add_argument("--mesh", action="store_true", help="extract a mesh (the only export for now)")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes grid cells per axis")
    parser.add_argument("--threshold", type=float, default=10.0, help="density iso-level")
    parser.add_argument("--output", default=None, help="PLY path (default: RUN_DIR/mesh.ply)")
    parser.add_argument("--device", default="auto", help="torch device")
    args = parser.parse_args(argv)
    if not args.mesh:
        parser.error("nothing to export: pass --mesh")
    from nerf.data import dataset_scene_file
    from nerf.export import chamfer_distance, extract_mesh, write_mesh
    from nerf.model import load_run

    try:
        cfg, model, _ = load_run(args.run, args.device)
        run_dir = run_folder(args.run)
        mesh = extract_mesh(lambda x: model.field.density(x)[0], model.march.aabb, args.resolution, args.threshold)
        out = Path(args.output) if args.output else run_dir / "mesh.ply"
        write_mesh(out, mesh)
        report: dict[str, Any] = {"mesh": str(out), "vertices": len(mesh.vertices), "triangles": len(mesh.triangles)}
        scene_file = dataset_scene_file(cfg.data)
        if scene_file is not None:
            from raytrace.scene import load_scene
            from raytrace.scene_mesh import scene_mesh

            truth = scene_mesh(load_scene(scene_file))
            report["chamfer"] = chamfer_distance(mesh, truth)
    except (InputError, ValueError) as e:
        return _fail(e)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":  # ``torchrun --nproc_per_node N -m nerf.cli DATA``: one rank of nerf-train
    sys.exit(train_main())
