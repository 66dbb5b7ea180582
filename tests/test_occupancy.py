"""Occupancy grid: EMA update on a known density, the threshold rule, lookups, reproducible resumes."""

from __future__ import annotations

import io

import pytest
import torch

from nerf.occupancy import OccupancyGrid, decays_since

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RADIUS = 0.5


def sphere_density(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.norm(dim=-1) < RADIUS, 100.0, 0.0)


def cell_centres(grid: OccupancyGrid) -> torch.Tensor:
    r = grid.resolution
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), dim=-1).float()
    return AABB[0] + (ijk + 0.5) / r * (AABB[1] - AABB[0])  # (R, R, R, 3)


def test_starts_all_occupied_and_outside_is_free(device: torch.device) -> None:
    grid = OccupancyGrid(AABB, resolution=8).to(device)
    assert grid.mask.all() and grid.mask.shape == (8, 8, 8) and (grid.density == 0).all()
    x = torch.tensor([[0.0, 0.0, 0.0], [0.99, -0.99, 0.5], [1.2, 0.0, 0.0], [0.0, 0.0, -1.01]], device=device)
    assert grid.occupied(x).tolist() == [True, True, False, False]


def test_sphere_marks_inside_occupied_and_far_cells_free(device: torch.device) -> None:
    grid = OccupancyGrid(AABB, resolution=16).to(device)
    for step in range(0, 20 * 16, 16):  # warmup (every cell) then random + occupied cells
        grid.update(sphere_density, step, warmup_steps=64)
    dist = cell_centres(grid).norm(dim=-1).to(device)
    half_diag = (3**0.5) * (2.0 / 16) / 2
    inside, far = dist < RADIUS - half_diag, dist > RADIUS + half_diag
    assert inside.sum() > 20 and far.sum() > 1000
    assert grid.mask[inside].all()
    assert not grid.mask[far].any()
    assert grid.density[inside].min().item() == 100.0
    # A world-space lookup agrees with the mask.
    assert grid.occupied(torch.tensor([[0.0, 0.05, -0.1], [0.9, 0.9, 0.9]], device=device)).tolist() == [
        True,
        False,
    ]


def test_ema_decay_and_threshold_rule() -> None:
    grid = OccupancyGrid(AABB, resolution=4, decay=0.5, threshold=0.01)
    grid.update(lambda x: torch.full((x.shape[0],), 8.0), step=0)
    assert (grid.density == 8.0).all() and grid.mask.all()
    grid.update(lambda x: torch.zeros(x.shape[0]), step=1)
    assert (grid.density == 4.0).all()  # max(8 * 0.5, 0)
    # One dense cell: the threshold is min(mean, 0.01) = 0.01, so only cells above 0.01 stay.
    grid.density.mul_(0.0)
    grid.update(lambda x: torch.where((x > 0.5).all(dim=-1), 1.0, 0.005), step=2)
    assert grid.mask.sum().item() == 1 and grid.mask[3, 3, 3]
    # A mean below the threshold becomes the threshold: 0.001 everywhere but one cell at 0.002.
    grid.density.mul_(0.0)
    grid.update(lambda x: torch.where((x > 0.5).all(dim=-1), 0.002, 0.001), step=3)
    assert grid.mask.sum().item() == 1 and grid.mask[3, 3, 3]


def test_decays_follow_instant_ngps_update_schedule() -> None:
    """instant-NGP updates every step up to step 31, every 2nd up to 47, ..., every 16th from 256 on: an update
    every 16 steps stands for 16 of its updates at step 16, 8 at step 32 (16 steps at 1/2), one from step 256."""
    assert decays_since(0, 16) == 1.0 and decays_since(16, 16) == 16.0
    assert decays_since(47, 16) == 8.0 and decays_since(272, 16) == 1.0
    assert decays_since(300, 1) == 1.0 / 16.0  # per step: the same forgetting whatever the update interval
    every_4th, every_16th = (sum(decays_since(s, n) for s in range(0, 513, n)) for n in (4, 16))
    assert every_4th == pytest.approx(every_16th)
    assert sum(decays_since(s, 16) for s in range(0, 256, 16)) == pytest.approx(68.1, abs=0.1)  # by step 255


def test_the_untrained_fog_is_forgotten_in_the_warmup() -> None:
    """A grid that starts full of the untrained field's fog (optical thickness 0.2 per step, twenty times the
    threshold) and then sees a field empty but for a sphere: with instant-NGP's decay schedule the fog is gone
    by step 256 (0.2 * 0.95**69 < 0.01); one decay per update every 16 steps keeps every cell (0.2 * 0.95**16)."""
    def run(decays) -> OccupancyGrid:
        grid = OccupancyGrid(AABB, resolution=8, decay=0.95, threshold=0.01)
        grid.update(lambda x: torch.full((x.shape[0],), 0.2), step=0)
        for step in range(16, 257, 16):
            grid.update(lambda x: torch.where(x.norm(dim=-1) < RADIUS, 1.0, 0.0), step, decays=decays(step))
        return grid

    carved = run(lambda step: decays_since(step, 16))
    inside = cell_centres(carved).norm(dim=-1) < RADIUS
    assert carved.mask[inside].all() and not carved.mask[cell_centres(carved).norm(dim=-1) > 0.9].any()
    assert run(lambda step: 1.0).mask.all()


def test_after_warmup_only_a_subset_plus_occupied_cells_are_visited() -> None:
    grid = OccupancyGrid(AABB, resolution=8)
    grid.mask.zero_()
    grid.mask[0, 0, 0] = True
    visited = []

    def record(x: torch.Tensor) -> torch.Tensor:
        visited.append(x)
        return torch.ones(x.shape[0])

    grid.update(record, step=1000, warmup_steps=10, n_samples=20)
    points = torch.cat(visited)
    assert 1 < points.shape[0] <= 21
    flat, inside = grid.cell_indices(points)
    assert inside.all() and (flat == 0).any()  # the occupied cell is always re-evaluated
    assert int(grid.mask.sum()) == points.shape[0]


def test_generator_state_is_saved_and_a_resume_is_reproducible() -> None:
    a = OccupancyGrid(AABB, resolution=8)
    a.update(sphere_density, step=300)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = OccupancyGrid(AABB, resolution=8, seed=123)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for grid in (a, b):
        grid.update(lambda x: x.norm(dim=-1), step=400, n_samples=50)
    torch.testing.assert_close(a.density, b.density)
    c = OccupancyGrid(AABB, resolution=8, seed=123)
    c.update(sphere_density, step=300)
    c.update(lambda x: x.norm(dim=-1), step=400, n_samples=50)
    assert not torch.equal(a.density, c.density)


def test_view_grid_refines_the_occupied_cells_of_a_sphere(monkeypatch) -> None:
    from nerf import render
    from nerf.render import view_grid

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])

    def density(x: torch.Tensor) -> torch.Tensor:  # a solid ball of radius 0.5
        return (x.norm(dim=-1) < 0.5).float() * 100.0

    coarse = OccupancyGrid(aabb, 8)
    coarse.update(density, step=0, warmup_steps=1)
    fine = view_grid(coarse, density, step_size=0.01, resolution=32)
    assert fine.resolution == 32 and view_grid(coarse, density, 0.01, resolution=8) is coarse
    full = OccupancyGrid(aabb, 8)  # every cell occupied: 512 * 4**3 queries would pass the limit of 512 * 27
    monkeypatch.setattr(render, "VIEW_GRID_MAX_QUERIES", 512 * 27)
    assert view_grid(full, density, 0.01, resolution=32).resolution == 24
    r = torch.arange(32) + 0.5
    centres = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1) / 32 * 2 - 1
    dist = centres.norm(dim=-1)
    up = coarse.mask.repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert fine.mask[(dist < 0.5) & up].all()  # every cell of an occupied coarse cell with matter at its centre,
    assert not fine.mask[dist > 0.5 + 2 * 3**0.5 * 2 / 32].any()  # nothing beyond a one-cell margin
