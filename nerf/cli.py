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
from nerf.config import (
    CHOICES,
    PRESETS,
    RANGES,
    SECTIONS,
    TrainConfig,
    check_config,
    config_flags,
    field_docs,
    flag_name,
    preset_name,
)
from nerf.distributed import env_world
from raytrace.atomic import write_json
from raytrace.cliutil import (
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    ArgumentParser,
    add_hidden_alias,
    check_device,
    check_memory,
    device_name,
    float_range,
    int_range,
    positive_int,
    run_command,
)
from raytrace.errors import InputError


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
        help_text = f"{field_docs(SECTIONS[section] if section else TrainConfig)[f.name]} ({_default_text(section, f)})"
        kind: Any = {"int": int, "float": float_range(), "str": str}.get(str(f.type).split(" | ")[0], str)
        kind = RANGES.get(dest, kind)
        flag = flag_name(section, f.name)
        common = dict(dest=dest, default=argparse.SUPPRESS, help=help_text)
        names = ("-o", flag) if dest == "out" else (flag,)
        if isinstance(defaults[dest], bool) or str(f.type).startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif str(f.type).startswith("tuple"):
            n = str(f.type).split(" | ")[0].count(",") + 1
            metavar = ("B1", "B2") if n == 2 else ("X0", "Y0", "Z0", "X1", "Y1", "Z1")
            parser.add_argument(flag, type=kind, nargs=n, metavar=metavar, **common)
        elif dest in CHOICES:
            parser.add_argument(flag, choices=CHOICES[dest], **common)
        else:
            parser.add_argument(*names, type=kind, metavar=flag[2:].replace("-", "_").upper(), **common)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of the flags given (the rest at their defaults; a section of the preset's, such as ``hash``, is
    the preset's with the given flags replaced, or None when none of its flags is given)."""
    given = {k: v for k, v in vars(args).items() if k in {_dest(s, f.name) for s, f in config_flags()}}
    top = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if "." not in k}
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
    cfg = TrainConfig(data=str(args.data or ""), **top, **sections)
    check_config(cfg)
    return cfg


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
        **capture_summary(result.model, quiet),
    }
    write_json(run_dir / "metrics.json", summary)
    frames = result.config.turntable_frames
    if frames > 0:
        intr = split.intrinsics
        with announced(f"turntable: {frames} frames at {intr.width}x{intr.height}", quiet):
            render_turntable(result.model, split, run_dir / "turntable.mp4", frames, quiet=quiet)
    return summary


def capture_summary(model, quiet: bool = False) -> dict[str, Any]:
    """The appearance code an evaluation used and the pose refinement's corrections, for metrics.json; the code is
    also printed (on stderr; nothing when ``quiet``)."""
    from nerf.per_image import appearance_description

    appearance = appearance_description(model.field)
    if not quiet:
        print(f"appearance code of the evaluated views: {appearance}", file=sys.stderr, flush=True)
    poses = {k: round(v, 6) for k, v in model.cameras.summary().items()} if model.cameras is not None else {}
    return {"appearance": appearance, **poses}


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


STATUS_ENV = "NERFKIT_STATUS_FILE"
"""Set by ``nerf-train --gpus N`` for its ranks: rank 0 writes its exit status there, and the ranks end an
expected outcome (bad input, interrupted) with status 0 so that torchrun adds no report of its own."""


def launch_data_parallel(nproc: int, argv: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node N -m nerf.cli ARGV``; rank 0's exit
    status (torchrun's where rank 0 wrote none).

    CPU processes share the cores: each gets ``cores / N`` torch threads unless ``OMP_NUM_THREADS`` is set."""
    import tempfile

    env = dict(os.environ)
    if not torch_has_cuda():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "nerf.cli", *_without_launch_flags(argv)]
    with tempfile.TemporaryDirectory(prefix="nerf-train-") as tmp:
        status = Path(tmp) / "status"
        env[STATUS_ENV] = str(status)
        try:
            code = subprocess.run(cmd, env=env, check=False).returncode
        except KeyboardInterrupt:  # the ranks got the Ctrl-C too, and checkpoint
            return EXIT_INTERRUPTED
        written = status.read_text().strip() if status.is_file() else ""
    return int(written) if written.isdigit() else code


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="nerf-train",
        description="Train an instant-NGP model on a dataset folder (ours or NeRF-synthetic). Data-parallel over "
        "N processes with --gpus N, or started by torchrun --nproc_per_node N -m nerf.cli DATA.",
        quiet=not env_world().is_main,  # rank 0 reports
    )
    parser.add_argument("data", nargs="?", help="dataset folder with transforms_*.json (not needed with --resume)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="show no progress bars")
    parser.add_argument("--gpus", "--nproc", dest="nproc", type=positive_int, default=1, metavar="N",
                        help="data-parallel processes launched through torchrun: one per GPU (nccl) where CUDA is "
                        "used, else N CPU processes (gloo); --batch-rays stays the global batch")
    add_config_flags(parser)
    return parser


def check_train_memory(cfg: TrainConfig) -> None:
    """Refuse hash-grid flags whose tables (with gradients and Adam's moments) exceed this machine's memory."""
    if cfg.hash is not None:
        h = cfg.hash
        check_memory(h.levels * 2**h.log2_table_size * h.features * TRAIN_BYTES_PER_PARAMETER,
                     "--levels/--features/--log2-table-size", f"{h.levels} levels of 2^{h.log2_table_size} x "
                     f"{h.features} features")


def train_main(argv: list[str] | None = None) -> int:
    """``nerf-train``; under torchrun (``python -m nerf.cli`` per rank) one rank of a data-parallel run.

    Exit status 0, 2 for bad input, 1 when training diverged or the environment failed (unwritable output, full
    disk), 130 when stopped by SIGINT / SIGTERM (after a checkpoint that ``--resume`` continues from)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = train_parser()
    args = parser.parse_args(argv)
    if not args.data and not args.resume:
        parser.error("give a dataset folder or --resume RUN_DIR")
    code = run_command("nerf-train", lambda: _train(parser, args, argv), quiet=not env_world().is_main)
    status = os.environ.get(STATUS_ENV)
    if status:
        if env_world().is_main:
            Path(status).write_text(str(code))
        if code in (EXIT_INPUT, EXIT_INTERRUPTED):
            return 0
    return code


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    from nerf.distributed import init_world, shutdown

    device = getattr(args, "device", "auto")
    if device != "auto":
        check_device(device)
    if args.nproc > 1 and not env_world().distributed:
        if device != "cpu" and torch_has_cuda():
            import torch

            if args.nproc > torch.cuda.device_count():
                parser.error(f"--gpus {args.nproc}: torch sees {torch.cuda.device_count()} CUDA devices")
        check_train_memory(config_from_args(args))  # bad flags are reported here once, not by every rank
        return launch_data_parallel(args.nproc, argv)
    from nerf.loop import train
    from nerf.model import resolve_device
    from nerf.train import TrainingDiverged

    world = None
    try:
        world = init_world(resolve_device(device).type)
        cfg = config_from_args(args)
        check_train_memory(cfg)
        result = train(cfg, resume=args.resume, quiet=args.quiet)
        shutdown(world, together=True)  # what follows is rank 0's alone
        if not world.is_main:
            return EXIT_INTERRUPTED if result.interrupted else 0
        if result.interrupted:
            print(f"interrupted at step {result.step}: checkpoint written; continue with "
                  f"nerf-train --resume {result.run_dir}", file=sys.stderr)
            return EXIT_INTERRUPTED
        summary = finish_run(result, quiet=args.quiet)
    except TrainingDiverged as e:
        if env_world().is_main:
            print(f"nerf-train: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if world is not None:
            shutdown(world)
    print(json.dumps(summary))
    video = "turntable.mp4, " if (result.run_dir / "turntable.mp4").exists() else ""
    print(f"run folder: {result.run_dir} (metrics.json, renders/, {video}checkpoints/, tb/ for TensorBoard)")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """``nerf-eval``: exit status 0, 2 for bad input, 1 for a failure, 130 when interrupted."""
    parser = ArgumentParser(
        prog="nerf-eval",
        description="Evaluate a run on the test split: PSNR, SSIM and depth error; writes metrics.json and renders/.",
    )
    parser.add_argument("run", help="run folder (or a checkpoint file)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split to evaluate")
    parser.add_argument("--device", type=device_name, default="auto", help="torch device to render on")
    parser.add_argument("--backend", default="auto", choices=CHOICES["backend"],
                        help="hash-grid backend; a checkpoint runs on every backend")
    parser.add_argument("--quiet", action="store_true", help="show no progress bars")
    args = parser.parse_args(argv)
    return run_command("nerf-eval", lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> int:
    from nerf.data import load_dataset
    from nerf.evaluate import evaluate
    from nerf.model import load_run

    if args.device != "auto":
        check_device(args.device)
    cfg, model, ckpt = load_run(args.run, args.device, args.backend)
    dataset = load_dataset(cfg.data, splits=("train", args.split), downscale=cfg.downscale, triangulate=False)
    if args.split not in dataset.splits:
        raise InputError(cfg.data, f"transforms_{args.split}.json", "split not found")
    run_dir = run_folder(args.run)
    metrics = evaluate(model, dataset.splits[args.split], run_dir / "renders", cfg.render_chunk, args.quiet)
    summary = {"step": int(ckpt["step"]), "split": args.split, **{k: round(v, 5) for k, v in metrics.items()},
               **capture_summary(model, args.quiet)}
    write_json(run_dir / f"metrics_{args.split}.json", summary)
    print(json.dumps(summary))
    return 0


EXPORT_BYTES_PER_CELL = 16
"""Memory per grid cell of the mesh extraction (density, marching cubes' and hole filling's arrays)."""
TRAIN_BYTES_PER_PARAMETER = 16
"""Memory per hash-table parameter in training (value, gradient, Adam's two moments)."""

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".gltf", ".glb")
"""Mesh formats open3d writes, by suffix."""


def _mesh_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: the suffix picks the format; one of {', '.join(MESH_SUFFIXES)}")
    return path


def export_main(argv: list[str] | None = None) -> int:
    """``nerf-export``: exit status 0, 2 for bad input, 1 for a failure, 130 when interrupted."""
    parser = ArgumentParser(
        prog="nerf-export",
        description="Export a trained run: a mesh by marching cubes on the density grid (PLY).",
    )
    parser.add_argument("run", help="run folder (or a checkpoint file)")
    parser.add_argument("--mesh", action="store_true", help="extract a mesh (the only export for now)")
    parser.add_argument("--resolution", type=int_range(2, 2048), default=256,
                        help="marching-cubes grid cells per axis")
    parser.add_argument("--threshold", type=float_range(), default=10.0, help="density iso-level of the surface")
    parser.add_argument("-o", "--out", type=_mesh_path, default=None,
                        help="mesh file, its format by suffix (default: RUN_DIR/mesh.ply)")
    add_hidden_alias(parser, "--output", "out", type=_mesh_path)
    parser.add_argument("--device", type=device_name, default="auto", help="torch device to evaluate the field on")
    args = parser.parse_args(argv)
    if not args.mesh:
        parser.error("nothing to export: pass --mesh")
    return run_command("nerf-export", lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    from nerf.export import chamfer_distance, extract_mesh, write_mesh
    from nerf.model import load_run
    from raytrace.reader import dataset_scene_file

    if args.device != "auto":
        check_device(args.device)
    cfg, model, _ = load_run(args.run, args.device)
    run_dir = run_folder(args.run)
    out = args.out if args.out else run_dir / "mesh.ply"
    if out.is_dir():
        raise InputError(out, None, "is a folder; give a mesh file path")
    check_memory(args.resolution**3 * EXPORT_BYTES_PER_CELL, "--resolution", f"a {args.resolution}^3 density grid")
    out.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails before the extraction
    try:
        mesh = extract_mesh(lambda x: model.field.density(x)[0], model.march.aabb, args.resolution, args.threshold)
    except ValueError as e:  # no surface at this threshold
        raise InputError(args.run, "--threshold", str(e)) from None
    write_mesh(out, mesh)
    report: dict[str, Any] = {"mesh": str(out), "vertices": len(mesh.vertices), "triangles": len(mesh.triangles)}
    scene_file = dataset_scene_file(cfg.data)
    if scene_file is not None:
        from raytrace.scene import load_scene
        from raytrace.scene_mesh import scene_mesh

        truth = scene_mesh(load_scene(scene_file))
        report["chamfer"] = chamfer_distance(mesh, truth)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":  # ``torchrun --nproc_per_node N -m nerf.cli DATA``: one rank of nerf-train
    sys.exit(train_main())
