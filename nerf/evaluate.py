"""Held-out evaluation (PSNR, SSIM, depth error), side-by-side renders and a turntable video."""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from matplotlib import colormaps
from tqdm import tqdm

from nerf.config import TrainConfig
from nerf.data import Split
from nerf.metrics import depth_errors, psnr, ssim
from nerf.model import Model
from nerf.panels import colour_bar, labelled_panels
from nerf.render import render_image
from nerf.volume import over
from raytrace.atomic import atomic_path
from raytrace.camera import Intrinsics, look_at

PANEL_LABELS = ["ground truth", "NeRF", "NeRF depth", "true depth"]


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8."""
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(depth: torch.Tensor, near: float, far: float) -> np.ndarray:
    """``(H, W)`` depth -> ``(H, W, 3)`` uint8 with the turbo colour map (0 = no hit, drawn black)."""
    d = depth.detach().cpu().numpy()
    norm = np.clip((d - near) / max(far - near, 1e-6), 0.0, 1.0)
    rgb = colormaps["turbo"](1.0 - norm)[..., :3]
    rgb[d <= 0] = 0.0
    return to_uint8(rgb)


def depth_colours(near: float, far: float, n: int) -> np.ndarray:
    """``(n, 3)`` uint8: :func:`colorize_depth`'s colours from ``near`` to ``far``."""
    return colorize_depth(torch.linspace(max(near, 1e-6), far, n)[None], near, far)[0]


def depth_bar(near: float, far: float, width: int) -> np.ndarray:
    """uint8 ``(BAR_HEIGHT, width, 3)``: the depth colour bar from ``near`` to ``far`` (scene units)."""
    return colour_bar(depth_colours(near, far, width), f"{near:.2f}", f"{far:.2f}")


def write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


@torch.no_grad()
def evaluate(
    model: Model, split: Split, out_dir: Path | None = None, chunk: int = TrainConfig.render_chunk, quiet: bool = False
) -> dict[str, float]:
    """Render every view of ``split`` over white (over the split's own background when its images are opaque);
    mean PSNR / SSIM and, where the dataset
    carries ground-truth depth, depth MAE / RMSE over covered pixels (scene units).

    With ``out_dir``, writes ``<split>_<i>.png`` = ground truth | prediction | predicted depth | true depth, each
    panel under its label (:data:`PANEL_LABELS`), the depth panels over their colour bar (near and far).
    """
    device = model.march.aabb.device
    background = (split.background if split.background is not None else torch.ones(3)).to(device)
    rows: list[dict[str, float]] = []
    aabb = model.march.aabb
    for i in tqdm(range(split.poses.shape[0]), desc=f"eval {split.name}", disable=quiet, leave=False):
        out = render_image(model, split.poses[i], split.intrinsics, background=background, chunk=chunk)
        gt = split.images[i].to(device)
        gt_rgb = over(gt, background)
        row = {"psnr": psnr(out["rgb"], gt_rgb), "ssim": ssim(out["rgb"], gt_rgb)}
        if split.depths is not None:
            gt_depth = split.depths[i].to(device)
            row.update({f"depth_{k}": v for k, v in depth_errors(out["depth"], gt_depth, gt_depth > 0).items()})
        rows.append(row)
        if out_dir is not None:
            cam = split.poses[i][:3, 3].to(device)
            corners = torch.stack(torch.meshgrid(*[aabb[:, k] for k in range(3)], indexing="ij"), -1).reshape(-1, 3)
            dist = (corners - cam).norm(dim=-1)
            near, far = max(float(dist.min()) * 0.5, 0.0), float(dist.max())
            pred_depth = out["depth"] * (out["opacity"] > 0.5)
            panels = [to_uint8(gt_rgb), to_uint8(out["rgb"]), colorize_depth(pred_depth, near, far)]
            if split.depths is not None:
                panels.append(colorize_depth(split.depths[i], near, far))
            bar = depth_bar(near, far, split.intrinsics.width)
            image = labelled_panels(panels, PANEL_LABELS[: len(panels)], [None, None, bar, bar][: len(panels)])
            write_png(out_dir / f"{split.name}_{i:03d}.png", image)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def turntable_poses(split: Split, center: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``(n_frames, 4, 4)`` cameras circling ``center`` at the split's mean distance and elevation."""
    positions = split.poses[:, :3, 3].cpu().double().numpy()
    c = center.cpu().double().numpy()
    offsets = positions - c
    radius = float(np.linalg.norm(offsets, axis=1).mean())
    elevation = float(np.mean(np.arcsin(np.clip(offsets[:, 2] / np.linalg.norm(offsets, axis=1), -1, 1))))
    poses = []
    for k in range(n_frames):
        a = 2.0 * math.pi * k / n_frames
        eye = c + radius * np.array(
            [math.cos(a) * math.cos(elevation), math.sin(a) * math.cos(elevation), math.sin(elevation)]
        )
        poses.append(look_at(eye, c))
    return torch.tensor(np.stack(poses), dtype=torch.float32)


MP4_OPTIONS = {"plugin": "FFMPEG", "extension": ".mp4", "fps": 24, "codec": "libx264", "macro_block_size": 1}


def mp4_writer_error() -> str | None:
    """Why imageio cannot write MP4 here (no imageio-ffmpeg, no ffmpeg binary), or None when it can."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            iio.imwrite(Path(tmp) / "probe.mp4", np.zeros((2, 16, 16, 3), np.uint8), **MP4_OPTIONS)
        except (ImportError, OSError, RuntimeError) as err:
            return f"{type(err).__name__}: {' '.join(str(err).split())}"
    return None


@torch.no_grad()
def render_turntable(
    model: Model, split: Split, path: Path, n_frames: int = 48, intr: Intrinsics | None = None, quiet: bool = False
) -> bool:
    """Write an MP4 turntable of the model around the scene centre (background as in :func:`evaluate`).

    Where no MP4 encoder exists, prints one warning line instead and returns False."""
    why = mp4_writer_error()
    if why is not None:
        print(f"warning: no {path.name} written: imageio cannot write MP4 here ({why})", file=sys.stderr)
        return False
    device = model.march.aabb.device
    intr = intr or split.intrinsics
    center = model.march.aabb.mean(dim=0)
    background = (split.background if split.background is not None else torch.ones(3)).to(device)
    frames = []
    for pose in tqdm(turntable_poses(split, center, n_frames), desc="turntable", disable=quiet, leave=False):
        frames.append(to_uint8(render_image(model, pose, intr, background=background)["rgb"]))
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), **MP4_OPTIONS)
    return True
