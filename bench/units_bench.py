"""World units: a shipped scene trained with every pose, bound and depth in units 100 times larger and 100 times
smaller (``--scales``) reaches the same held-out PSNR at the same speed. Each scale trains the same number of steps
(``--steps``, same seed), so the PSNRs compare even on a loaded machine, and steps/s shows the speed. Prints a table
and appends it to ``bench/RESULTS.md``.

    python bench/units_bench.py                            # object, 64 px, 300 steps per scale
    python bench/units_bench.py --scene whitted --steps 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import append_results, dataset_copy  # noqa: E402
from bench.train_bench import dataset_for, train_curve  # noqa: E402
from nerf.config import TrainConfig  # noqa: E402

EXACT_DEPTH = ("distance_path", "normal_path", "depth_file_path")  # every scale reads the z-depth PNGs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scene", default="object", help="shipped scene")
    p.add_argument("--res", type=int, default=64, help="image width of the rendered dataset")
    p.add_argument("--scales", type=float, nargs="+", default=[0.01, 1.0, 100.0], help="world units per unit")
    p.add_argument("--steps", type=int, default=300, help="training steps per scale")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md alone")
    args = p.parse_args()

    plain = dataset_for(args.scene, args.res)
    rows = []
    for scale in args.scales:
        data = dataset_copy(plain, plain.with_name(f"{plain.name}_units{scale:g}"), scale, EXACT_DEPTH)
        cfg = TrainConfig(data=str(data), device=args.device, out=str(ROOT / "runs" / "bench"), steps=args.steps)
        print(f"== {args.scene} x {scale:g}: {args.steps} steps", flush=True)
        r = train_curve(cfg, float("inf"), float("inf"), 1)
        rows.append(f"| {args.scene} | {scale:g} | {r['seconds']:.0f} | {r['steps']} | {r['steps'] / r['seconds']:.2f} "
                    f"| {r['final']['psnr']:.2f} | {r['final']['ssim']:.4f} |")
        print(rows[-1], flush=True)
    table = ("| scene | units x | train s | steps | steps/s | test PSNR | SSIM |\n|---|---|---|---|---|---|---|\n"
             + "\n".join(rows))
    print(table)
    if not args.no_append:
        append_results("units_bench", table)


if __name__ == "__main__":
    main()
