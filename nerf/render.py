"""Rendering rays and images through a radiance field: march, evaluate, composite."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nerf.config import TrainConfig
from nerf.marching import (
    ROUND_GROWTH,
    CandidatesFn,
    SampleBuffer,
    Samples,
    SlotBudget,
    StepRule,
    in_chunks,
    march_candidates,
    march_rays,
    march_rays_static,
    prune_occluded,
    ray_spans,
    round_samples,
    step_coordinates,
)
from nerf.occupancy import OccupancyGrid
from nerf.volume import CompositeFn, accumulate, composite, distortion, early_terminated, finish_composite
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

FIRST_ROUND = 8
"""Samples per live ray in the first round of :func:`render_rays_rounds`."""

FIELD_CHUNK = 1 << 14
"""Samples per field call in :func:`render_rays_rounds` (smaller calls keep the activations in cache; measured in
bench/RESULTS.md)."""

SURFACE_TRANSMITTANCE = 0.99
"""A ray of :func:`render_rays_rounds` whose transmittance fell below this is in a surface: it ends within a few
samples, so its next round takes :data:`SURFACE_ROUND` samples, not the doubled round."""

SURFACE_ROUND = 4
"""Samples per round of a ray in a surface (:data:`SURFACE_TRANSMITTANCE`), at least; 1/16 of the round's size
once that is larger (so that rays in a thick fog do not take hundreds of rounds)."""

RENDER_TERMINATION = 1e-2
""":func:`render_rays_rounds` ends a ray once its transmittance falls below this: what lies behind adds at most
this much to its colour and opacity, and a ray in the thin haze of a young model stops much sooner than at the
training step's 1e-4 (bench/RESULTS.md)."""

MIN_COLOUR_WEIGHT = 1e-5
""":func:`render_rays_rounds` evaluates the colour of samples whose weight is at least this (the others add black)."""


@dataclass(frozen=True)
class MarchSettings:
    """How rays are sampled inside the scene's bounding box, and how their samples are composited.

    ``candidates_fn`` and ``composite_fn`` are chosen once, with the hash-grid backend
    (:func:`nerf.model.build_model`): the native kernels with the ``native`` backend, else the references
    :func:`nerf.marching.march_candidates` and :func:`nerf.volume.composite`. ``contracted``: space outside the
    box is contracted (:mod:`nerf.contraction`) and rays are marched to "infinity"; ``cone_angle`` and
    ``max_step``: the step's growth with distance (:class:`nerf.marching.StepRule`).
    """

    aabb: torch.Tensor  # (2, 3)
    steps: int  # samples along the box diagonal
    composite_fn: CompositeFn = composite
    candidates_fn: CandidatesFn = march_candidates
    contracted: bool = False
    cone_angle: float = 0.0
    max_step: float = math.inf

    step_size: float = dataclasses.field(init=False)  # the aabb diagonal / steps, read from the device once

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", float((self.aabb[1] - self.aabb[0]).norm()) / self.steps)

    @property
    def rule(self) -> StepRule:
        return StepRule(self.step_size, self.cone_angle, self.max_step, self.aabb if self.contracted else None)

    @property
    def max_samples(self) -> int:
        """Candidates per ray at most: ``steps``, twice that when contracted (the box, then out to infinity)."""
        return 2 * self.steps if self.contracted else self.steps

    def samples(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        grid: OccupancyGrid | None,
        *,
        jitter: bool = False,
        generator: torch.Generator | None = None,
    ) -> Samples:
        """The samples :func:`nerf.marching.march_rays` takes on rays ``(N, 3)`` with these settings."""
        return march_rays(origins, dirs, self.aabb, grid, self.rule, self.max_samples, jitter=jitter,
                          generator=generator, candidates_fn=self.candidates_fn)


@dataclass
class Radiance:
    """What renders rays: the ``field`` (points and directions ``(S, 3)`` -> densities ``(S,)`` and colours
    ``(S, 3)``; the renderers call ``field.density`` (points ``(S, 3)`` -> densities ``(S,)``, features), then
    ``field.view`` once a ray (directions and training images -> the colour's inputs of each ray) and
    ``field.colour`` (features, each sample's ray's inputs -> colours ``(S, 3)``), see
    :class:`nerf.field.NGPField`), its occupancy ``grid`` (``None``: every step is marched) and the ``march``
    settings. :class:`nerf.model.Model` is one."""

    field: nn.Module
    grid: OccupancyGrid | None
    march: MarchSettings


@dataclass(frozen=True)
class RayBatch:
    """Rays to render: ``origins``, ``dirs`` ``(N, 3)``; the ``background`` composited behind the field, ``(3,)``
    or ``(N, 3)`` (``None``: black, premultiplied); each ray's training ``image`` ``(N,)`` long, for the field's
    appearance codes (``None``: the field's default)."""

    origins: torch.Tensor
    dirs: torch.Tensor
    background: torch.Tensor | None = None
    image: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.origins.shape[0]

    def rows(self, start: int, end: int) -> RayBatch:
        """Rays ``start .. end - 1`` (a ``(3,)`` background is shared)."""
        background, image = self.background, self.image
        if background is not None and background.dim() == 2:
            background = background[start:end]
        return RayBatch(self.origins[start:end], self.dirs[start:end], background,
                        None if image is None else image[start:end])


def render_rays(
    radiance: Radiance,
    rays: RayBatch,
    *,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    with_distortion: bool = False,
    near_radius: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Render ``rays`` (``N`` of them): ``rgb (N, 3)``, ``depth (N,)``, ``opacity (N,)`` and the sample count; with
    ``with_distortion`` also each ray's ``distortion`` ``(N,)`` (:func:`ray_distortion`). With ``near_radius``
    > 0 the gradients of the samples nearer than it are scaled down (:func:`scale_near_gradients`).

    Samples behind an opaque surface are dropped before the field is evaluated with gradients (early ray
    termination, :func:`nerf.marching.prune_occluded`), so their cost is at most one density query without autograd,
    and none past the round in which their ray turned opaque. ``radiance.march`` picks the marching and compositing
    kernels.
    """
    field, march = radiance.field, radiance.march
    origins, dirs, image = rays.origins, rays.dirs, rays.image
    # where the samples lie is not differentiated (rays may carry gradients: pose refinement)
    samples = march.samples(origins.detach(), dirs.detach(), radiance.grid, jitter=jitter, generator=generator)

    def sigma_fn(x: torch.Tensor) -> torch.Tensor:
        return field.density(x)[0]

    samples = prune_occluded(samples, origins.detach(), dirs.detach(), sigma_fn)
    sigmas, geo = field.density(samples.positions(origins, dirs))
    rgbs = field.colour(geo, field.view(dirs, image)[samples.ray_indices])
    if near_radius > 0:
        factor = (samples.t_mids / near_radius).square().clamp(max=1.0)
        sigmas, rgbs = scale_near_gradients(sigmas, factor), scale_near_gradients(rgbs, factor)
    out = march.composite_fn(
        sigmas, rgbs, samples.t_starts, samples.t_ends, samples.ray_indices, origins.shape[0], rays.background
    )
    out["samples"] = torch.tensor(samples.ray_indices.numel())
    if with_distortion:
        out["distortion"] = ray_distortion(out["weights"], samples, origins, dirs, march)
    return out


class _ScaleGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        return values.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (factor,) = ctx.saved_tensors
        return grad * factor.reshape(-1, *([1] * (grad.dim() - 1))), None


def scale_near_gradients(values: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``values`` ``(S, ...)`` unchanged, their gradients times ``factor`` ``(S,)``: with ``factor = min(1, (t /
    r)^2)`` at each sample's distance ``t``, the gradient scaling of "Floaters No More" (Philip and Deschaintre,
    2023). The space just in front of a camera is seen by that camera alone, more densely than anything else, so
    its gradients are the strongest and a screen that fits that one view forms there first; scaled by the squared
    distance, every region gets about the gradient its footprint in the views deserves."""
    return _ScaleGradients.apply(values, factor)


def ray_distortion(
    weights: torch.Tensor, samples: Samples, origins: torch.Tensor, dirs: torch.Tensor, march: MarchSettings
) -> torch.Tensor:
    """:func:`nerf.volume.distortion` ``(N,)`` of the samples' ``weights`` ``(S,)`` on rays ``(N, 3)``, distances
    in marching steps (:func:`nerf.marching.step_coordinates`) over ``march.max_samples``."""
    starts, ends = step_coordinates(samples, origins.detach(), dirs.detach(), march.rule)
    scale = 1.0 / march.max_samples
    return distortion(weights, starts * scale, ends * scale, samples.ray_indices, origins.shape[0])


@torch.no_grad()
def render_rays_rounds(
    radiance: Radiance,
    rays: RayBatch,
    *,
    eps: float = RENDER_TERMINATION,
    min_weight: float = MIN_COLOUR_WEIGHT,
) -> dict[str, torch.Tensor]:
    """:func:`render_rays` for inference (no grad, no jitter, no appearance code: the field's default) with one
    field evaluation per sample: ``rgb (N, 3)``, ``depth (N,)``, ``opacity (N,)`` of ``rays`` and the evaluated
    sample count.

    The marched samples are taken in rounds (:data:`FIRST_ROUND` per live ray, doubling each round, but only
    :data:`SURFACE_ROUND` for a ray whose transmittance fell below :data:`SURFACE_TRANSMITTANCE`; no round is
    longer than ``march.max_samples``): the density
    is evaluated at the round's samples, which ``march.composite_fn`` composites, and the colour (``field.colour``) only
    where a sample's weight is at least ``min_weight`` (the others render black: the colour of a ray is off by
    at most the sum of their weights; 0 evaluates every colour); each ray's colour, depth and
    opacity accumulate behind its transmittance so far, and a ray whose transmittance fell below ``eps`` stops
    (:func:`nerf.marching.prune_occluded`'s early termination, applied between rounds: the samples a round takes
    past that point add less than ``eps`` to the opacity)."""
    field, march = radiance.field, radiance.march
    origins, dirs = rays.origins, rays.dirs
    n, device = origins.shape[0], origins.device
    s = march.samples(origins, dirs, radiance.grid)
    view = field.view(dirs)  # the mean appearance code
    counts = torch.bincount(s.ray_indices, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rgb = origins.new_zeros(n, 3)
    depth_sum, opacity, trans = origins.new_zeros(n), origins.new_zeros(n), origins.new_ones(n)
    done = torch.zeros(n, dtype=torch.long, device=device)  # samples of each ray taken so far
    live = counts.nonzero().squeeze(-1)
    size, evaluated = FIRST_ROUND, 0
    while live.numel():
        start = done[live]
        surface = min(max(SURFACE_ROUND, size // 16), size)
        take = torch.full_like(start, size).masked_fill_(trans[live] < SURFACE_TRANSMITTANCE, surface)
        take = torch.minimum(take, counts[live] - start)  # (m,): the round's samples of each live ray
        index, local = round_samples(first[live] + start, take)  # packed by live ray
        round_rays = live[local]
        t_starts, t_ends = s.t_starts[index], s.t_ends[index]
        points = origins[round_rays] + dirs[round_rays] * (0.5 * (t_starts + t_ends))[:, None]
        sigmas, features = in_chunks(field.density, points, chunk=FIELD_CHUNK)
        out = march.composite_fn(sigmas, sigmas.new_zeros(len(sigmas), 3), t_starts, t_ends, local, live.numel(), None)
        before = trans[live]
        seen = (out["weights"] * before[local] >= min_weight).nonzero().squeeze(-1)
        colours = in_chunks(field.colour, features[seen], view[round_rays[seen]], chunk=FIELD_CHUNK)
        rgb[live] += before[:, None] * accumulate(out["weights"][seen], colours, local[seen], live.numel())
        opacity[live] += before * out["opacity"]
        depth_sum[live] += before * out["opacity"] * out["depth"]
        trans[live] = before * (1.0 - out["opacity"])
        done[live] += take
        evaluated += index.numel()
        live = live[(done[live] < counts[live]) & early_terminated(trans[live], eps)]
        size = min(int(size * ROUND_GROWTH), march.max_samples)
    rgb, depth = finish_composite(rgb, depth_sum, opacity, rays.background)
    return {"rgb": rgb, "depth": depth, "opacity": opacity, "samples": torch.tensor(evaluated)}


RaysFn = Callable[[Radiance, RayBatch], dict[str, torch.Tensor]]
"""The signature of :func:`render_rays` and :func:`render_rays_rounds`: what renders a chunk of rays."""


def render_rays_static(
    radiance: Radiance,
    rays: RayBatch,
    slots: SlotBudget,
    *,
    generator: torch.Generator | None = None,
    with_distortion: bool = False,
) -> tuple[dict[str, torch.Tensor], SampleBuffer]:
    """:func:`render_rays` (jittered) with static shapes and no host synchronisation, for training: the first
    ``slots.active`` of ``rays`` (``N`` of them) through ``slots.samples`` sample slots (see
    :func:`nerf.marching.march_rays_static`; no early ray termination: the slots are there anyway). Returns
    ``rgb (N, 3)``, ``depth``, ``opacity`` ``(N,)`` (rays that did not fit get the background), with
    ``with_distortion`` ``distortion`` ``(N,)`` (:func:`ray_distortion`), and the buffer."""
    field, march = radiance.field, radiance.march
    origins, dirs, background, image = rays.origins, rays.dirs, rays.background, rays.image
    n = origins.shape[0]
    spans = ray_spans(origins.detach(), dirs.detach(), march.aabb, march.rule, march.steps, jitter=True,
                      generator=generator)
    buf = march_rays_static(spans, march.rule, radiance.grid, slots)
    s = buf.samples
    index = s.ray_indices.clamp(max=n - 1)
    sigmas, geo = field.density(origins[index] + dirs[index] * s.t_mids[:, None])
    rgbs = field.colour(geo, field.view(dirs, image)[index])
    if background is not None and background.dim() == 2:
        background = torch.cat([background, background[:1]])  # the dump ray N's
    out = march.composite_fn(sigmas, rgbs, s.t_starts, s.t_ends, s.ray_indices, n + 1, background)
    if with_distortion:
        pad = torch.cat([origins, origins[:1]]), torch.cat([dirs, dirs[:1]])  # the dump ray N
        out["distortion"] = ray_distortion(out["weights"], s, *pad, march)
    return {k: v[:n] for k, v in out.items() if k != "weights"}, buf


@torch.no_grad()
def render_image(
    radiance: Radiance,
    c2w: torch.Tensor,
    intr: Intrinsics,
    *,
    background: torch.Tensor | None = None,
    chunk: int = TrainConfig.render_chunk,
    rays_fn: RaysFn | None = None,
) -> dict[str, torch.Tensor]:
    """Render one camera: ``rgb (H, W, 3)``, ``depth (H, W)``, ``opacity (H, W)``, each chunk of rays through
    ``rays_fn`` (default :func:`render_rays_rounds`; :func:`render_rays` renders the same to
    :data:`RENDER_TERMINATION`).

    ``background`` ``(3,)`` is composited behind the field; ``None`` leaves it black (premultiplied). ``chunk``
    rays are rendered at a time; when the device runs out of memory the chunk is halved (with a warning) and the
    render goes on, down to one ray.
    """
    device = radiance.march.aabb.device
    rays = RayBatch(*image_rays(c2w.to(device), intr), background)
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    start = 0
    while start < len(rays):
        try:
            out = (rays_fn or render_rays_rounds)(radiance, rays.rows(start, start + chunk))
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
    thickness = points[:, 0]
    if len(points):
        thickness = in_chunks(density_fn, points, chunk=FIELD_CHUNK).float().reshape(-1) * step_size
    fine.density[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = thickness
    hit = fine.density > torch.clamp(fine.density.mean(), max=grid.threshold)
    fine.mask.copy_(F.max_pool3d(hit[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0)
    return fine
