"""Learned quality against wall time: PSNR / SSIM / depth error on held-out views for every shipped scene
(unbounded ones, whitted and garden, contracted: see ``nerf/contraction.py``).

For each scene, the hash-grid model (CPU or GPU preset, by the device) and, in the same run on the same data, sampler
and time budget, the 2020 positional-encoding NeRF as the baseline. Test PSNR is measured on a few views every
``--eval-every`` seconds of training (the clock stops while evaluating) and on all test views at the end. Prints a
table, writes the curves to ``bench/train_curves_<scenes>.png`` and appends the figures to ``bench/RESULTS.md``.

    python bench/train_bench.py                                   # 100x100, 10 minutes per model
    python bench/train_bench.py --scenes object --budget 300 --res 400
    python bench/train_bench.py --scenes fox object-stripped garden-stripped --models ngp --fox /work/data/fox

``fox`` is instant-ngp's capture (its own ``transforms.json``, ``--fox``), trained with ``--downscale 4`` and no
other flag; ``<scene>-stripped`` is a shipped scene with our own JSON keys and every depth map stripped, so that its
bounds are inferred from the cameras and images.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DEPTH_KEYS, OUR_KEYS, append_results, dataset_copy  # noqa: E402
from nerf.config import OptimConfig, TrainConfig  # noqa: E402
from nerf.data import Split  # noqa: E402
from nerf.evaluate import evaluate  # noqa: E402
from nerf.train import open_session  # noqa: E402
from raytrace.dataset import settings_for, write_dataset  # noqa: E402
from raytrace.scene import load_scene  # noqa: E402

SCENES = ("object", "whitted", "cornell", "garden")
STRIPPED = "-stripped"
FOX_DOWNSCALE = 4
MODELS = {"ngp": {}, "nerf": {"optim": OptimConfig(lr=5e-4, eps=1e-8), "batch_rays": 1024}}


def subset(split: Split, n: int) -> Split:
    return dataclasses.replace(
        split,
        images=split.images[:n],
        poses=split.poses[:n],
        depths=None if split.depths is None else split.depths[:n],
        file_paths=split.file_paths[:n],
    )


def dataset_for(scene: str, res: int) -> Path:
    """The shipped scene rendered at ``res`` (rendered once, reused afterwards); ``<scene>-stripped``: its JSON less
    our own keys and the depth maps."""
    if scene.endswith(STRIPPED):
        plain = dataset_for(scene.removesuffix(STRIPPED), res)
        return dataset_copy(plain, plain.with_name(plain.name + "_stripped"), drop=(*OUR_KEYS, *DEPTH_KEYS))
    out = ROOT / "datasets" / f"{scene}_{res}"
    scene_obj = load_scene(ROOT / "datasets" / "scenes" / f"{scene}.toml")
    write_dataset(scene_obj, out, settings_for(scene_obj, res=res))
    return out


def train_curve(cfg: TrainConfig, eval_every: float, eval_views: int) -> dict:
    """Train ``cfg`` for its time budget (or its steps, if fewer), as ``nerf-train`` would, with test PSNRs of
    ``eval_views`` views every ``eval_every`` training seconds."""
    budget = cfg.time_budget
    assert budget is not None
    session = open_session(cfg)
    test = session.dataset.splits["test"]
    quick = subset(test, eval_views)
    curve: list[tuple[float, int, float]] = []
    trained, next_eval = 0.0, eval_every
    while trained < budget and (session.cfg.steps is None or session.step < session.cfg.steps):
        t0 = time.perf_counter()
        session.advance(trained)
        trained += time.perf_counter() - t0
        if trained >= next_eval:
            curve.append((trained, session.step, evaluate(session.model, quick, quiet=True)["psnr"]))
            next_eval += eval_every
    final = evaluate(session.model, test, quiet=True)
    curve.append((trained, session.step, final["psnr"]))
    return {"curve": curve, "final": final, "steps": session.step, "seconds": trained, "run": session.run_dir,
            "width": test.intrinsics.width}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--scenes", nargs="+", default=list(SCENES),
                   help="shipped scenes to train on, <scene>-stripped (our keys and depth stripped) and fox")
    p.add_argument("--fox", type=Path, default=ROOT / "datasets" / "fox",
                   help="instant-ngp's fox: the folder of its transforms.json")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="ngp (hash grid) and/or nerf (2020 baseline)")
    p.add_argument("--res", type=int, default=100, help="image width of the rendered datasets")
    p.add_argument("--budget", type=float, default=600.0,
                   help="training seconds per model and scene: the run's time budget, as nerf-train's "
                   "--time-budget")
    p.add_argument("--steps", type=int, default=None,
                   help="stop at this many steps (default: none, the budget ends the run); with a large --budget, "
                   "every run trains the same steps, which compares on a loaded machine")
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between curve points")
    p.add_argument("--eval-views", type=int, default=5, help="test views per curve point")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--backend", default="auto", help="hash-grid backend")
    p.add_argument("--distortion", type=float, default=None,
                   help="weight of the distortion loss (nerf-train's; default: its default)")
    p.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md alone")
    args = p.parse_args()

    rows, curves = [], {}
    for scene in args.scenes:
        data = args.fox if scene == "fox" else dataset_for(scene, args.res)
        for model in args.models:
            cfg = TrainConfig(data=str(data), model=model, device=args.device, backend=args.backend,
                              out=str(ROOT / "runs" / "bench"), downscale=FOX_DOWNSCALE if scene == "fox" else 1,
                              steps=args.steps, time_budget=args.budget, **MODELS[model])
            if args.distortion is not None:
                cfg.optim = dataclasses.replace(cfg.optim, distortion=args.distortion)
            print(f"== {scene} / {model}: {args.budget:.0f} s", flush=True)
            r = train_curve(cfg, args.eval_every, args.eval_views)
            curves[(scene, model)] = r["curve"]
            f = r["final"]
            mae, rmse = f.get("depth_mae", float("nan")), f.get("depth_rmse", float("nan"))
            rows.append(
                f"| {scene} | {model} | {r['width']} | {r['seconds']:.0f} | {r['steps']} | {f['psnr']:.2f} "
                f"| {f['ssim']:.4f} | {mae:.4f} | {rmse:.4f} |"
            )
            print(rows[-1], flush=True)

    fig, axes = plt.subplots(1, len(args.scenes), figsize=(5 * len(args.scenes), 4), squeeze=False)
    for ax, scene in zip(axes[0], args.scenes, strict=True):
        for model in args.models:
            c = curves[(scene, model)]
            ax.plot([t for t, _, _ in c], [q for _, _, q in c], marker="o", label=model)
        ax.set(title=scene, xlabel="training seconds", ylabel="test PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    plot = ROOT / "bench" / f"train_curves_{'_'.join(args.scenes)}.png"
    fig.savefig(plot, dpi=100)

    head = ("| scene | model | width | train s | steps | test PSNR | SSIM | depth MAE | depth RMSE |\n"
            "|---|---|---|---|---|---|---|---|---|")
    table = head + "\n" + "\n".join(rows)
    print(table)
    print(f"curves: {plot}")
    if not args.no_append:
        append_results("train_bench", table + f"\n\nCurves (test PSNR against training seconds): `bench/{plot.name}`.")


if __name__ == "__main__":
    main()
