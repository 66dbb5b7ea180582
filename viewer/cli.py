"""``nerf-view``: open a trained run (or train one live) in the interactive viewer."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from nerf.backends import BACKENDS
from raytrace.cliutil import ArgumentParser, check_device, device_name, float_range, run_command
from raytrace.errors import InputError

DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")  # any one set: Qt has somewhere to draw


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="nerf-view",
        description="Interactive viewer: left-drag orbits, right/middle-drag pans, the wheel zooms, "
        "W/A/S/D/Q/E fly, R resets.",
    )
    parser.add_argument("run", nargs="?", help="run folder runs/<scene>/<time>/ or a checkpoint file")
    parser.add_argument("--train", metavar="DATASET", help="train a new run on this dataset and watch it learn")
    parser.add_argument("--device", type=device_name, default="auto",
                        help="torch device to render on: auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="hash-grid backend; auto takes the fastest available")
    parser.add_argument("--target-fps", type=float_range(0.1, 1000.0), default=None,
                        help="frame rate held while the camera moves (default: 20 on a GPU, 4 on the CPU)")
    parser.add_argument("--size", type=_size, default=(640, 480), help="initial size of the rendered view, WxH")
    parser.add_argument("-o", "--out", default="runs",
                        help="with --train: the folder that holds the new run, as runs/<scene>/<time>/")
    return parser


def no_display_message(argv: Sequence[str], environ: dict[str, str] | None = None) -> str | None:
    """On Linux without a display (no DISPLAY, WAYLAND_DISPLAY or QT_QPA_PLATFORM), the one line that says how to
    run ``nerf-view argv`` under a virtual one; ``None`` where Qt can open a window. Checked before Qt starts, which
    would abort the process."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or any(env.get(k) for k in DISPLAY_VARIABLES):
        return None
    command = shlex.join(["xvfb-run", "-a", "nerf-view", *argv])
    return f"nerf-view: no display (DISPLAY and WAYLAND_DISPLAY are unset); run it on a virtual one: {command}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: the window's, or 2 (bad input: a missing run, a dataset given as a run, a damaged checkpoint)
    and 1 (no display) with one line on stderr before any window opens."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if (args.run is None) == (args.train is None):
        build_parser().error("give either a run folder / checkpoint or --train DATASET")
    message = no_display_message(argv)
    if message is not None:
        print(message, file=sys.stderr)
        return 1
    return run_command("nerf-view", lambda: _view(args))


def _view(args: argparse.Namespace) -> int:
    """Check the run (or dataset) loads, then open the window on it."""
    if args.device != "auto":
        check_device(args.device)
    if args.run is not None:
        from nerf.model import load_run

        load_run(args.run, args.device, args.backend)  # a load error is one line here, not only in the window
    elif not os.path.isdir(args.train):
        raise InputError(args.train, None, "dataset folder not found")
    from PyQt5.QtWidgets import QApplication

    from viewer.launch import open_run, open_training

    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.train is not None:
        window = open_training(args.train, args.device, args.backend, args.target_fps, args.size, args.out)
    else:
        window = open_run(args.run, args.device, args.backend, args.target_fps, args.size)
    window.show()
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
