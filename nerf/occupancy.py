"""Occupancy grid over the scene's aabb: an EMA of the field's density per cell, thresholded into a mask that
lets the ray marcher skip empty space (instant-NGP's density grid, one cascade). In a contracted scene its cells
tile the contracted cube, so it covers all of space (:mod:`nerf.contraction`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nerf.contraction import box_norm, uncontract, unit_coords
from nerf.field import check_aabb

EVAL_CHUNK = 1 << 18
"""Points per call of the density function during an update."""

NGP_MAX_INTERVAL = 16
"""instant-NGP updates its grid every ``clamp(step // 16, 1, 16)`` steps: every step at first, every 16th from step
256 on (:func:`decays_since`)."""


def decays_since(step: int, every: int) -> float:
    """How many of instant-NGP's grid updates (one decay each) fall in the ``every`` steps ``step - every + 1 ..
    step``: an update every ``every`` steps that decays by ``decay ** decays_since(step, every)`` forgets as fast
    per step as instant-NGP's grid, whose updates are dense early on (about 69 in its first 256 steps, against 16
    updates every 16 steps). So the density of the untrained field fades within the first few hundred steps, as
    it does in instant-NGP, and not over thousands of steps. 1 for ``every = 16`` from step 256 on."""
    return sum(1.0 / min(max(j // NGP_MAX_INTERVAL, 1), NGP_MAX_INTERVAL)
               for j in range(max(0, step - every + 1), step + 1))


class OccupancyGrid(nn.Module):
    """``R**3`` cells over ``aabb`` ``(2, 3)``; buffers ``density`` (R, R, R) float, ``mask`` (R, R, R) bool.

    Cell ``(i, j, k)`` covers the unit coordinates ``([i, j, k] + [0, 1]) / R`` of
    :func:`nerf.contraction.unit_coords`: ``aabb[0] + ([i, j, k] + [0, 1]) / R * (aabb[1] - aabb[0])`` unless
    ``contracted``.
    """

    def __init__(
        self,
        aabb: torch.Tensor,
        resolution: int = 128,
        decay: float = 0.95,
        threshold: float = 0.01,
        seed: int = 0,
        contracted: bool = False,
    ) -> None:
        super().__init__()
        self.contracted = contracted
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.resolution, self.decay, self.threshold = resolution, decay, threshold
        r = resolution
        self.register_buffer("aabb", check_aabb(aabb))
        self.register_buffer("density", torch.zeros(r, r, r))
        self.register_buffer("mask", torch.ones(r, r, r, dtype=torch.bool))
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def get_extra_state(self) -> dict[str, Any]:
        """The random generator's state travels with ``state_dict`` so that a resumed run is reproducible."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        generator = state.get("generator") if isinstance(state, dict) else None
        if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
            raise ValueError("the occupancy grid's generator state is not a byte tensor")
        self.generator.set_state(generator)

    def cell_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index ``(N,)`` long of world points ``x`` ``(N, 3)`` (clamped into the grid) and whether
        each point is inside the grid ``(N,)`` bool."""
        unit = unit_coords(x, self.aabb, self.contracted)
        inside = ((unit >= 0.0) & (unit <= 1.0)).all(dim=-1)
        r = self.resolution
        ijk = (unit * r).floor().long().clamp_(0, r - 1)
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2], inside

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: the cell of each world point ``(N, 3)`` is occupied (False outside the grid)."""
        flat, inside = self.cell_indices(x)
        return self.mask.reshape(-1)[flat] & inside

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        step: int,
        warmup_steps: int = 256,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        decays: float = 1.0,
    ) -> None:
        """Re-estimate the grid from ``density_fn`` (world points ``(N, 3)`` -> density ``(N,)``).

        During warmup (``step < warmup_steps``) every cell is evaluated; afterwards ``n_samples`` random cells
        (default a quarter of the grid) plus every occupied one. Each evaluated cell is probed at one jittered
        point; then ``density = max(density * decay ** decays, new)`` (unvisited cells count ``new = 0``, so every cell
        decays) and ``mask = density > min(density.mean(), threshold)``. instant-NGP thresholds the optical
        thickness of one marching step, so pass ``sigma * step_size`` to reproduce its rule exactly; a contracted
        grid multiplies it by ``n**2`` (:func:`nerf.contraction.box_norm`, at least 1), the growth of the step
        there (as instant-NGP scales its threshold per cascade).

        With ``generator`` (on the grid's device) the update has static shapes and no host synchronisation: after
        warmup it probes ``n_samples`` random cells and as many drawn among the occupied ones (instant-NGP's rule).
        Only for uncontracted grids (the static training step marches uniform steps only).
        """
        if generator is not None:
            if self.contracted:
                raise ValueError("the static occupancy update takes uncontracted grids only")
            self._update_static(density_fn, step < warmup_steps, n_samples, generator, decays)
            return
        r = self.resolution
        cells = r**3
        device = self.density.device
        if step < warmup_steps:
            chosen = torch.arange(cells)
        else:
            count = cells // 4 if n_samples is None else min(n_samples, cells)
            random_cells = torch.randint(0, cells, (count,), generator=self.generator)
            occupied_cells = self.mask.reshape(-1).nonzero().squeeze(-1).cpu()
            chosen = torch.unique(torch.cat([random_cells, occupied_cells]))
        jitter = torch.rand(chosen.numel(), 3, generator=self.generator)
        chosen, jitter = chosen.to(device), jitter.to(device)
        ijk = torch.stack([chosen // (r * r), (chosen // r) % r, chosen % r], dim=-1)
        unit = (ijk + jitter) / r
        points = uncontract(unit, self.aabb) if self.contracted else self.aabb[0] + unit * (self.aabb[1] - self.aabb[0])
        new = torch.zeros(cells, device=device)
        for start in range(0, points.shape[0], EVAL_CHUNK):
            part = chosen[start : start + EVAL_CHUNK]
            new[part] = density_fn(points[start : start + EVAL_CHUNK]).float().reshape(-1)
        if self.contracted:
            new[chosen] *= box_norm(points, self.aabb).clamp(min=1.0).square()
        self._blend(new.reshape(r, r, r), decays)

    def _blend(self, new: torch.Tensor, decays: float) -> None:
        """``density = max(density * decay ** decays, new)`` and the mask from it (``new`` ``(R, R, R)``)."""
        density = torch.maximum(self.density * self.decay**decays, new)
        self.density.copy_(density)
        self.mask.copy_(density > torch.clamp(density.mean(), max=self.threshold))

    def _update_static(
        self,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        warmup: bool,
        n_samples: int | None,
        generator: torch.Generator,
        decays: float,
    ) -> None:
        r = self.resolution
        cells = r**3
        device = self.density.device
        if warmup:
            chosen = torch.arange(cells, device=device)
        else:
            count = cells // 4 if n_samples is None else min(n_samples, cells)
            random_cells = torch.randint(0, cells, (count,), generator=generator, device=device)
            ends = torch.cumsum(self.mask.reshape(-1).long(), 0)  # occupied cells: inverse-CDF draws
            u = torch.rand(count, generator=generator, device=device) * ends[-1]
            occupied = torch.searchsorted(ends, u.long(), right=True).clamp_(max=cells - 1)
            chosen = torch.cat([random_cells, occupied])
        jitter = torch.rand(chosen.numel(), 3, generator=generator, device=device)
        ijk = torch.stack([chosen // (r * r), (chosen // r) % r, chosen % r], dim=-1)
        points = self.aabb[0] + (ijk + jitter) / r * (self.aabb[1] - self.aabb[0])
        values = torch.cat([
            density_fn(points[start : start + EVAL_CHUNK]).float().reshape(-1)
            for start in range(0, points.shape[0], EVAL_CHUNK)
        ])
        new = torch.zeros(cells, device=device).scatter_reduce_(0, chosen, values, "amax")
        self._blend(new.reshape(r, r, r), decays)
