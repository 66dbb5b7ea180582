"""The viewer's core, with no Qt: what to render (:class:`RenderRequest`), the rendered :class:`Frame`, the
dynamic resolution that holds a frame rate (:class:`ResolutionController`, :func:`refine_scales`) and the
:class:`ViewRenderer` that renders one view of a model in strips (and its raytraced ground truth). The Qt threads
that drive them are in :mod:`viewer.worker`; the camera is :mod:`viewer.camera`."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps

from nerf.evaluate import colorize_depth, depth_colours, to_uint8
from nerf.metrics import psnr
from nerf.model import Model
from nerf.occupancy import OccupancyGrid
from nerf.panels import with_colour_bar
from nerf.render import Radiance, RaysFn, render_image, view_grid
from nerf.volume import over
from raytrace.camera import Intrinsics
from raytrace.render import render_image as raytrace_image
from raytrace.scene import Scene

MODES = ("rgb", "depth", "opacity", "gt")
MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "opacity": "Opacity", "gt": "Ground truth"}
GPU_TARGET_FPS = 20.0
CPU_TARGET_FPS = 4.0  # the CPU cannot hold 20 fps at any useful size; a stated lower target
ERROR_VMAX = 0.25  # mean absolute colour error drawn at the top of the heat map
STRIP_PIXELS = 1 << 16
"""Pixels rendered per call of the renderer; the worker gives way to a newer request between two strips. Each call
pays a fixed cost per round of :func:`nerf.render.render_rays_rounds`, so larger strips render faster but give way
later (measured in bench/RESULTS.md)."""


def default_target_fps(device: torch.device) -> float:
    return GPU_TARGET_FPS if device.type != "cpu" else CPU_TARGET_FPS


class ResolutionController:
    """The render scale (fraction of each side) that holds ``target_fps`` while the camera moves.

    It keeps a running estimate of the seconds per rendered pixel (exponential moving average over the
    frames reported to :meth:`record`) and picks the scale whose pixel count fits one frame period.
    """

    def __init__(self, target_fps: float, min_scale: float = 1.0 / 16.0, smoothing: float = 0.5) -> None:
        if target_fps <= 0:
            raise ValueError(f"target fps must be positive, got {target_fps}")
        self.target_fps = float(target_fps)
        self.min_scale = float(min_scale)
        self.smoothing = float(smoothing)
        self.seconds_per_pixel: float | None = None

    def record(self, pixels: int, seconds: float) -> None:
        """A frame of ``pixels`` pixels took ``seconds``."""
        sample = seconds / max(pixels, 1)
        if self.seconds_per_pixel is None:
            self.seconds_per_pixel = sample
        else:
            self.seconds_per_pixel += self.smoothing * (sample - self.seconds_per_pixel)

    def scale_for(self, full_pixels: int) -> float:
        """Scale in [min_scale, 1] for a view of ``full_pixels`` pixels at full resolution (``min_scale`` until a
        frame has been recorded, so that the first image comes quickly on any machine)."""
        if self.seconds_per_pixel is None:
            return self.min_scale
        pixels = (1.0 / self.target_fps) / max(self.seconds_per_pixel, 1e-12)
        return float(np.clip(math.sqrt(pixels / max(full_pixels, 1)), self.min_scale, 1.0))


def refine_scales(first: float) -> list[float]:
    """The scales of the progressive passes of a still view: ``first``, then doubled until full resolution
    (e.g. ``1/16 -> [1/16, 1/8, 1/4, 1/2, 1]``); a pass closer than a factor 1.5 to full resolution is skipped."""
    scales = []
    scale = float(first)
    while scale * 1.5 < 1.0:
        scales.append(scale)
        scale *= 2.0
    return [*scales, 1.0]


@dataclass(frozen=True)
class RenderRequest:
    """What to render: camera ``c2w`` ``(4, 4)``, horizontal fov (radians), the full-resolution size, the
    display mode, the background colour (RGB in [0, 1]); ``moving`` asks for the dynamic-resolution preview."""

    c2w: np.ndarray
    fov_x: float
    width: int
    height: int
    mode: str = "rgb"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    moving: bool = False
    serial: int = 0

    def same_view(self, other: RenderRequest) -> bool:
        """The same image is asked for (camera, size, mode, background), whether moving or not."""
        return (np.array_equal(self.c2w, other.c2w) and self.fov_x == other.fov_x and self.mode == other.mode
                and (self.width, self.height, self.background) == (other.width, other.height, other.background))

    def intrinsics(self, scale: float = 1.0) -> Intrinsics:
        full = Intrinsics.from_fov(self.width, self.height, self.fov_x)
        return full if scale == 1.0 else full.scaled(scale)


@dataclass
class Frame:
    """A rendered view at ``intr``'s size: NeRF colour ``rgb`` ``(h, w, 3)`` float32, ``depth`` and
    ``opacity`` ``(h, w)``; ``display`` ``(h, w, 3)`` uint8 in the request's mode; in ground-truth mode ``gt``
    ``(h, w, 3)`` float32 (composited over the background), the ``error`` heat map (uint8) and ``psnr``;
    ``pass_index`` of ``passes``: which progressive pass of its request it is (1-based)."""

    request: RenderRequest
    scale: float
    intr: Intrinsics
    rgb: np.ndarray
    depth: np.ndarray
    opacity: np.ndarray
    display: np.ndarray
    seconds: float
    gt: np.ndarray | None = None
    error: np.ndarray | None = None
    psnr: float | None = None
    pass_index: int = 1
    passes: int = 1

    @property
    def complete(self) -> bool:
        """Rendered at full resolution."""
        return self.scale == 1.0


def error_heatmap(pred: np.ndarray, target: np.ndarray, vmax: float = ERROR_VMAX) -> np.ndarray:
    """Per-pixel mean absolute error of ``(H, W, 3)`` images as an ``(H, W, 3)`` uint8 inferno heat map."""
    err = np.abs(pred.astype(np.float64) - target.astype(np.float64)).mean(axis=-1)
    return to_uint8(colormaps["inferno"](np.clip(err / vmax, 0.0, 1.0))[..., :3])


def error_colours(n: int) -> np.ndarray:
    """``(n, 3)`` uint8: :func:`error_heatmap`'s colours from no error to ``ERROR_VMAX``."""
    return to_uint8(colormaps["inferno"](np.linspace(0.0, 1.0, n))[..., :3])


def composite_over(rgba: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    """Straight-alpha ``(H, W, 4)`` over a constant colour -> ``(H, W, 3)``."""
    return over(rgba, torch.tensor(background, dtype=rgba.dtype, device=rgba.device))


class ViewRenderer:
    """Renders views of ``model`` (and, with a ``scene``, its raytraced ground truth). ``lock`` serialises
    access to the model with a trainer running on another thread; ``rays_fn`` renders each chunk of rays
    (default :func:`nerf.render.render_rays_rounds`)."""

    def __init__(
        self,
        model: Model,
        scene: Scene | None = None,
        lock: threading.Lock | None = None,
        strip_pixels: int = STRIP_PIXELS,
        gt_device: str = "cpu",
        fine_grid: bool = False,
        rays_fn: RaysFn | None = None,
    ) -> None:
        self.model = model
        self.scene = scene
        self.lock = lock or threading.Lock()
        self.strip_pixels = strip_pixels
        self.gt_device = gt_device
        self.fine_grid = fine_grid
        self.rays_fn = rays_fn
        self._grid: OccupancyGrid | None = None

    def grid(self, scale: float = 1.0) -> OccupancyGrid | None:
        """The occupancy grid to march at ``scale``: the model's own, or with ``fine_grid`` (a model that no longer
        trains) a finer one derived from it once (:func:`nerf.render.view_grid`), on the first full-resolution
        pass, so that the first previews come at once. Call under :attr:`lock`."""
        m = self.model
        if not self.fine_grid or m.grid is None or (self._grid is None and scale < 1.0):
            return m.grid
        if self._grid is None:
            self._grid = view_grid(m.grid, lambda x: m.field.density(x)[0], m.march.step_size)
        return self._grid

    @property
    def device(self) -> torch.device:
        return self.model.march.aabb.device

    def depth_range(self, eye: np.ndarray) -> tuple[float, float]:
        """Near and far for colouring depth: the distances from ``eye`` to the scene box's corners."""
        aabb = self.model.march.aabb.detach().cpu().double().numpy()
        corners = np.stack(np.meshgrid(*aabb.T, indexing="ij"), axis=-1).reshape(-1, 3)
        dist = np.linalg.norm(corners - eye, axis=1)
        return max(float(dist.min()) * 0.5, 0.0), float(dist.max())

    def render(
        self,
        req: RenderRequest,
        scale: float = 1.0,
        cancelled: Callable[[], bool] = lambda: False,
        progress: Callable[[float], None] | None = None,
    ) -> Frame | None:
        """Render ``req`` at ``scale``; ``None`` when ``cancelled()`` became true between two strips."""
        start = time.perf_counter()
        intr = req.intrinsics(scale)
        device = self.device
        c2w = torch.as_tensor(req.c2w, dtype=torch.float32)
        background = torch.tensor(req.background, dtype=torch.float32, device=device)
        rows = max(1, self.strip_pixels // intr.width)
        parts: list[dict[str, torch.Tensor]] = []
        for row in range(0, intr.height, rows):
            if cancelled():
                return None
            strip = dataclasses.replace(intr, height=min(rows, intr.height - row), cy=intr.cy - row)
            m = self.model
            with self.lock:
                grid = self.grid(scale)
                parts.append(render_image(Radiance(m.field, grid, m.march), c2w, strip, background=background,
                                          chunk=self.strip_pixels, rays_fn=self.rays_fn))
            if progress is not None:
                progress(min(1.0, (row + rows) / intr.height))
        out = {k: torch.cat([p[k] for p in parts]).float().cpu().numpy() for k in ("rgb", "depth", "opacity")}
        frame = Frame(req, scale, intr, out["rgb"], out["depth"], out["opacity"], self._display(req, out),
                      time.perf_counter() - start)
        if req.mode == "gt" and self.scene is not None:
            if cancelled():
                return None
            self._ground_truth(frame, spp=None if scale == 1.0 else 1)
        frame.seconds = time.perf_counter() - start
        return frame

    def ground_truth(self, req: RenderRequest, scale: float = 1.0, spp: int | None = None) -> np.ndarray:
        """The raytraced view ``(h, w, 3)`` float32, composited over the request's background."""
        if self.scene is None:
            raise RuntimeError("no scene file: this run's dataset was not made by our raytracer")
        c2w = torch.as_tensor(req.c2w, dtype=torch.float32)
        result = raytrace_image(self.scene, c2w, req.intrinsics(scale), device=self.gt_device, spp=spp)
        return composite_over(result.rgba, req.background).cpu().numpy()

    def _ground_truth(self, frame: Frame, spp: int | None) -> None:
        frame.gt = self.ground_truth(frame.request, frame.scale, spp)
        frame.error = with_colour_bar(error_heatmap(frame.rgb, frame.gt), error_colours, "0", f"{ERROR_VMAX:g}")
        frame.psnr = psnr(torch.from_numpy(frame.rgb), torch.from_numpy(frame.gt))

    def _display(self, req: RenderRequest, out: dict[str, np.ndarray]) -> np.ndarray:
        if req.mode == "depth":
            near, far = self.depth_range(req.c2w[:3, 3])
            image = colorize_depth(torch.from_numpy(out["depth"] * (out["opacity"] > 0.5)), near, far)
            return with_colour_bar(image, lambda n: depth_colours(near, far, n), f"{near:.2f}", f"{far:.2f}")
        if req.mode == "opacity":
            return np.repeat(to_uint8(out["opacity"])[..., None], 3, axis=2)
        return to_uint8(out["rgb"])
