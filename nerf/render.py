"""Rendering rays and images through a radiance field: march, evaluate, composite."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from nerf.marching import (
    CandidatesFn,
    SampleBuffer,
    StepRule,
    march_candidates,
    march_rays,
    march_rays_static,
    prune_occluded,
)
from nerf.occupancy import OccupancyGrid
from nerf.volume import CompositeFn, composite
from raytrace.camera import Intrinsics, image_rays

OUT_OF_MEMORY: tuple[type[BaseException], ...] = (
    torch.cuda.OutOfMemoryError,
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
)
"""The exceptions torch raises when a device runs out of memory."""


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
        march.rule,
        march.max_samples,
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


def render_rays_static(
    field: nn.Module,
    grid: OccupancyGrid | None,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    march: MarchSettings,
    background: torch.Tensor,
    active: torch.Tensor,
    capacity: int,
    candidate_capacity: int,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], SampleBuffer]:
    """:func:`render_rays` (jittered) with static shapes and no host synchronisation, for training: the first
    ``active`` (0-d long tensor) rays ``(N, 3)`` through ``capacity`` sample slots (see
    :func:`nerf.marching.march_rays_static`; no early ray termination: the slots are there anyway). Returns
    ``rgb (N, 3)``, ``depth``, ``opacity`` ``(N,)`` (rays that did not fit get ``background``) and the buffer."""
    if not march.rule.uniform:
        raise ValueError("the static step marches uniform steps only (no cone angle, no contraction)")
    n = origins.shape[0]
    buf = march_rays_static(origins, dirs, march.aabb, grid, march.step_size, march.steps, active, capacity,
                            candidate_capacity, jitter=True, generator=generator)
    s = buf.samples
    index = s.ray_indices.clamp(max=n - 1)
    sigmas, rgbs = field(origins[index] + dirs[index] * s.t_mids[:, None], dirs[index])
    back = torch.cat([background, background[:1]]) if background.dim() == 2 else background
    out = march.composite_fn(sigmas, rgbs, s.t_starts, s.t_ends, s.ray_indices, n + 1, back)
    return {k: v[:n] for k, v in out.items() if k != "weights"}, buf


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
