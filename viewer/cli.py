"""``nerf-view``: open a trained run (or train one live) in the interactive viewer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nerf.backends import BACKENDS


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nerf-view",
        description="Interactive viewer: left-drag orbits, right/middle-drag pans, the wheel zooms, "
        "W/A/S/D/Q/E fly, R resets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", nargs="?", help="run folder runs/<scene>/<time>/ or a checkpoint file")
    parser.add_argument("--train", metavar="DATASET", help="train a new run on this dataset and watch it learn")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, mps")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="hash-grid backend")
    parser.add_argument("--target-fps", type=float, default=None,
                        help="frame rate held while the camera moves (default: 20 on a GPU, 4 on the CPU)")
    parser.add_argument("--size", type=_size, default=(640, 480), help="initial size of the rendered view, WxH")
    parser.add_argument("--out", default="runs", help="with --train: folder that holds runs/<scene>/<time>/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.run is None) == (args.train is None):
        build_parser().error("give either a run folder / checkpoint or --train DATASET")
    from PyQt5.QtWidgets import QApplication

    from viewer.window import open_run, open_training

    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.train is not None:
        window = open_training(args.train, args.device, args.backend, args.target_fps, args.size, args.out)
    else:
        window = open_run(args.run, args.device, args.backend, args.target_fps, args.size)
    window.show()
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
