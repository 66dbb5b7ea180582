"""Rendering rays and images through a radiance field: march, evaluate, composite."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nerf.marching import CandidatesFn, march_candidates, march_rays, prune_occluded
from nerf.occupancy import OccupancyGrid
from nerf.volume import CompositeFn, composite
from raytrace.camera import Intrinsics, image_rays

OUT_OF_MEMORY: tuple[type[BaseException], ...] = (
    torch.cuda.OutOfMemoryError,
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
)
"""The exceptions torch raises when a device runs out of memory."""

VIEW_GRID_RESOLUTION = 256
"""Cells per side of the occupancy grid derived for viewing (:func:`view_grid`)."""

VIEW_GRID_MAX_QUERIES = 1 << 22
"""At most this many density queries derive a view grid (a coarser one where the training grid is mostly full)."""

VIEW_GRID_CHUNK = 1 << 18
"""Points per density query while deriving a view grid."""


@dataclass(frozen=True)
class MarchSettings:
    """How rays are sampled inside the scene's bounding box, and how their samples are composited.

    ``candidates_fn`` and ``composite_fn`` are chosen once, with the hash-grid backend
    (:func:`nerf.model.build_model`): the native kernels with the ``native`` backend, else the references
    :func:`nerf.marching.march_candidates` and :func:`nerf.volume.composite`.
    """

    aabb: torch.Tensor  # (2, 3)
    steps: int  # samples along the box diagonal
    composite_fn: CompositeFn = composite
    candidates_fn: CandidatesFn = march_candidates

    @property
    def step_size(self) -> float:
        return float((self.aabb[1] - self.aabb[0]).norm()) / self.steps


def render_rays(
    field: nn.Module,
    grid: OccupancyGrid | None,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    march: MarchSettings,
    background: torch.Tensor | None,
    jitter: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Render rays ``(N, 3)``: ``rgb (N, 3)``, ``depth (N,)``, ``opacity (N,)`` and the sample count.

    Samples behind an opaque surface are dropped before the field is evaluated with gradients (early ray
    termination), so their cost is one density query without autograd. ``march`` picks the marching and
    compositing kernels.
    """
    samples = march_rays(
        origins,
        dirs,
        march.aabb,
        grid,
        march.step_size,
        march.steps,
        jitter=jitter,
        generator=generator,
        candidates_fn=march.candidates_fn,
    )

    def sigma_fn(x: torch.Tensor) -> torch.Tensor:
        return field.density(x)[0]

    samples = prune_occluded(samples, origins, dirs, sigma_fn)
    sigmas, rgbs = field(samples.positions(origins, dirs), samples.dirs(dirs))
    out = march.composite_fn(
        sigmas, rgbs, samples.t_starts, samples.t_ends, samples.ray_indices, origins.shape[0], background
    )
    out["samples"] = torch.tensor(samples.ray_indices.numel())
    return out


@torch.no_grad()
def render_image(
    field: nn.Module,
    grid: OccupancyGrid | None,
    c2w: torch.Tensor,
    intr: Intrinsics,
    march: MarchSettings,
    background: torch.Tensor | None = None,
    chunk: int = 8192,
) -> dict[str, torch.Tensor]:
    """Render one camera: ``rgb (H, W, 3)``, ``depth (H, W)``, ``opacity (H, W)``.

    ``background`` ``(3,)`` is composited behind the field; ``None`` leaves it black (premultiplied). ``chunk``
    rays are rendered at a time; when the device runs out of memory the chunk is halved (with a warning) and the
    render goes on, down to one ray.
    """
    device = march.aabb.device
    origins, dirs = image_rays(c2w.to(device), intr)
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    start = 0
    while start < origins.shape[0]:
        try:
            out = render_rays(field, grid, origins[start : start + chunk], dirs[start : start + chunk], march,
                              background)
        except OUT_OF_MEMORY:
            if chunk == 1:
                raise
            chunk //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            warnings.warn(f"out of memory while rendering: retrying with chunks of {chunk} rays", RuntimeWarning,
                          stacklevel=3)
            continue
        for key, values in parts.items():
            values.append(out[key])
        start += chunk
    h, w = intr.height, intr.width
    return {
        "rgb": torch.cat(parts["rgb"]).reshape(h, w, 3),
        "depth": torch.cat(parts["depth"]).reshape(h, w),
        "opacity": torch.cat(parts["opacity"]).reshape(h, w),
    }


@torch.no_grad()
def view_grid(
    grid: OccupancyGrid, density_fn: Callable[[torch.Tensor], torch.Tensor], step_size: float,
    resolution: int = VIEW_GRID_RESOLUTION,
) -> OccupancyGrid:
    """A finer occupancy grid for rendering a trained field: each occupied cell of ``grid`` split into
    ``f**3`` cells (``f = resolution // grid.resolution``, lowered until at most :data:`VIEW_GRID_MAX_QUERIES`
    cells are probed; at least 1), each probed at its centre with
    ``density_fn`` (world points ``(N, 3)`` -> ``(N,)``); a cell whose optical thickness over one ``step_size``
    passes ``grid``'s rule (``> min(mean, threshold)``) is occupied, and so are its 26 neighbours (a margin for
    matter between the probes). Only the cells occupied in ``grid`` are queried, so it costs a fraction of
    ``resolution**3`` queries. With ``f == 1`` it is ``grid`` itself."""
    occupied = int(grid.mask.sum())
    factor = max(1, resolution // grid.resolution)
    while factor > 1 and occupied * factor**3 > VIEW_GRID_MAX_QUERIES:
        factor -= 1
    if factor == 1:
        return grid
    r = grid.resolution * factor
    device = grid.mask.device
    fine = OccupancyGrid(grid.aabb, r, grid.decay, grid.threshold).to(device)
    sub = torch.stack(torch.meshgrid(*[torch.arange(factor, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ijk = (grid.mask.nonzero()[:, None] * factor + sub).reshape(-1, 3)
    points = grid.aabb[0] + (ijk + 0.5) / r * (grid.aabb[1] - grid.aabb[0])
    thickness = torch.cat([density_fn(points[i : i + VIEW_GRID_CHUNK]).float().reshape(-1) * step_size
                           for i in range(0, points.shape[0], VIEW_GRID_CHUNK)]) if len(points) else points[:, 0]
    fine.density[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = thickness
    hit = fine.density > torch.clamp(fine.density.mean(), max=grid.threshold)
    fine.mask.copy_(F.max_pool3d(hit[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0)
    return fine
