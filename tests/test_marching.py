"""Ray-aabb intersection, uniform marching with occupancy skipping, and occlusion pruning."""

from __future__ import annotations

import math

import pytest
import torch

import nerf.marching as marching
from nerf.contraction import box_norm
from nerf.marching import Samples, StepRule, march_rays, prune_occluded, ray_aabb, step_coordinates
from nerf.occupancy import OccupancyGrid
from nerf.volume import render_weights

UNIT = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def random_rays(
    n: int, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 2.0 + 0.5
    target = torch.rand(n, 3, generator=g) * 1.4 - 0.2
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return o.to(device), d.to(device)


def test_ray_aabb_analytic(device: torch.device) -> None:
    s = 1 / math.sqrt(3)
    o = torch.tensor(
        [[-1.0, 0.5, 0.5], [0.5, 0.5, 0.5], [-1.0, -1.0, -1.0], [-1.0, 2.0, 0.5], [0.5, 0.5, 3.0]]
    )
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [s, s, s], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t_near, t_far, hit = ray_aabb(o.to(device), d.to(device), UNIT.to(device))
    assert hit.tolist() == [True, True, True, False, False]
    torch.testing.assert_close(t_near[:3].cpu(), torch.tensor([1.0, 0.0, math.sqrt(3)]))
    torch.testing.assert_close(t_far[:3].cpu(), torch.tensor([2.0, 0.5, 2 * math.sqrt(3)]))
    assert (t_far[3:] == t_near[3:]).all()


def test_ray_aabb_entry_and_exit_points_lie_on_the_box() -> None:
    o, d = random_rays(500)
    t_near, t_far, hit = ray_aabb(o, d, UNIT)
    assert hit.float().mean() > 0.5 and (t_near >= 0).all()
    entering = hit & (t_near > 0)  # origins inside the box enter at t = 0
    assert entering.sum() > 100
    for t, rays in ((t_near, entering), (t_far, hit)):
        p = o[rays] + d[rays] * t[rays, None]
        assert (p > -1e-4).all() and (p < 1 + 1e-4).all()
        on_face = torch.minimum(p.abs(), (p - 1).abs()).amin(dim=-1)
        assert on_face.max() < 1e-4
    mid = o[~hit] + d[~hit] * ((t_near[~hit] + 1.0)[:, None])
    assert ((mid < 0) | (mid > 1)).any(dim=-1).all()


def full_grid(device: torch.device | str = "cpu") -> OccupancyGrid:
    return OccupancyGrid(UNIT, resolution=8).to(device)


def test_full_grid_samples_every_step(device: torch.device) -> None:
    o, d = random_rays(300, device=device)
    step, max_steps = 0.05, 20
    s = march_rays(o, d, UNIT.to(device), full_grid(device), step, max_steps)
    t_near, t_far, hit = ray_aabb(o, d, UNIT.to(device))
    expected = torch.where(hit, torch.ceil((t_far - t_near) / step).clamp(max=max_steps), 0).long()
    assert (expected == max_steps).any() and (expected > 0).any() and (expected == 0).any()
    counts = torch.bincount(s.ray_indices, minlength=300)
    assert torch.equal(counts, expected)
    assert len(march_rays(o, d, UNIT.to(device), None, step, max_steps)) == len(s)
    # Sorted by ray, then t; consecutive intervals one step apart, the first at t_near.
    assert (s.ray_indices[1:] >= s.ray_indices[:-1]).all()
    same = s.ray_indices[1:] == s.ray_indices[:-1]
    torch.testing.assert_close(
        s.t_starts[1:][same] - s.t_starts[:-1][same], torch.full_like(s.t_starts[1:][same], step)
    )
    first = torch.ones_like(s.ray_indices, dtype=torch.bool)
    first[1:] = ~same
    torch.testing.assert_close(s.t_starts[first], t_near[s.ray_indices[first]])
    assert (s.t_ends <= t_far[s.ray_indices] + 1e-6).all() and (s.t_ends > s.t_starts).all()
    torch.testing.assert_close(s.positions(o, d), o[s.ray_indices] + d[s.ray_indices] * s.t_mids[:, None])


def test_empty_grid_yields_no_samples(device: torch.device) -> None:
    grid = full_grid(device)
    grid.mask.zero_()
    o, d = random_rays(100, device=device)
    s = march_rays(o, d, UNIT.to(device), grid, 0.05, 100)
    assert len(s) == 0 and s.ray_indices.dtype == torch.long


def test_partial_grid_keeps_only_occupied_midpoints() -> None:
    grid = full_grid()
    grid.mask[4:] = False  # only x < 0.5 occupied
    o, d = random_rays(200, seed=3)
    full = march_rays(o, d, UNIT, None, 0.02, 200)
    s = march_rays(o, d, UNIT, grid, 0.02, 200)
    x = s.positions(o, d)[:, 0]
    assert len(s) > 0 and (x < 0.5).all()
    assert len(s) == int((full.positions(o, d)[:, 0] < 0.5).sum())


def test_jitter_within_one_step_and_reproducible() -> None:
    o, d = random_rays(200, seed=1)
    step = 0.1
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    s = march_rays(o, d, UNIT, None, step, 100, jitter=True, generator=g1)
    s2 = march_rays(o, d, UNIT, None, step, 100, jitter=True, generator=g2)
    assert torch.equal(s.t_starts, s2.t_starts)
    t_near, t_far, _ = ray_aabb(o, d, UNIT)
    first = torch.ones_like(s.ray_indices, dtype=torch.bool)
    first[1:] = s.ray_indices[1:] != s.ray_indices[:-1]
    offset = s.t_starts[first] - t_near[s.ray_indices[first]]
    assert (offset >= 0).all() and (offset < step).all() and offset.std() > 0.02
    assert (s.t_starts < t_far[s.ray_indices]).all()


def test_near_plane_and_max_steps() -> None:
    o = torch.tensor([[0.5, 0.5, 0.5]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    s = march_rays(o, d, UNIT, None, 0.1, 100, near=0.2)
    assert len(s) == 3 and s.t_starts[0].item() == pytest.approx(0.2)
    assert s.t_ends[-1].item() == pytest.approx(0.5)
    assert len(march_rays(o, d, UNIT, None, 0.01, 7)) == 7


def test_chunked_marching_matches_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    o, d = random_rays(100, seed=2)
    whole = march_rays(o, d, UNIT, full_grid(), 0.03, 60)
    monkeypatch.setattr(marching, "MARCH_CHUNK", 37)
    chunked = march_rays(o, d, UNIT, full_grid(), 0.03, 60)
    for name in ("ray_indices", "t_starts", "t_ends"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name))


def test_prune_occluded_drops_samples_behind_an_opaque_wall(device: torch.device) -> None:
    # Rays along +x through the unit box; an opaque wall at 0.5 <= x < 0.6 for the first ray only.
    o = torch.tensor([[-1.0, 0.5, 0.5], [-1.0, 0.2, 0.2]], device=device)
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], device=device)
    s = march_rays(o, d, UNIT.to(device), None, 0.01, 1000)

    def sigma_fn(x: torch.Tensor) -> torch.Tensor:
        wall = (x[:, 0] >= 0.5) & (x[:, 0] < 0.6) & (x[:, 1] > 0.4)
        return torch.where(wall, 1e4, 0.1)

    kept = prune_occluded(s, o, d, sigma_fn)
    x = kept.positions(o, d)[:, 0]
    ray0 = kept.ray_indices == 0
    assert x[ray0].max().item() < 0.52  # the wall's first sample (and maybe one more) survive
    assert torch.isclose(x[ray0], torch.tensor(0.505, device=device)).any()
    assert int(ray0.sum()) >= 50  # everything in front of the wall
    assert int((~ray0).sum()) == int((s.ray_indices == 1).sum())  # the other ray is untouched
    before = list(zip(s.ray_indices.tolist(), s.t_starts.tolist(), s.t_ends.tolist(), strict=True))
    after = list(zip(kept.ray_indices.tolist(), kept.t_starts.tolist(), kept.t_ends.tolist(), strict=True))
    assert after == [sample for sample in before if sample in set(after)]  # a subset of the samples, order kept


def test_prune_occluded_in_rounds_keeps_what_one_pass_keeps_and_evaluates_no_ray_past_its_round(
    device: torch.device,
) -> None:
    """Rays of 0 to 300 samples through a fog with an opaque slab each: the rounds keep exactly the samples the
    one-pass rule keeps (transmittance before them >= eps over all of the ray's densities), and each ray's points
    are evaluated only up to the end of the round (16, 32, 64, ... samples a ray) in which its transmittance fell below
    eps (that of the sample before the first one dropped)."""
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 300, (64,), generator=g)
    counts[:4] = torch.tensor([0, 1, 16, 17])
    rays = torch.repeat_interleave(torch.arange(64), counts)
    local = torch.arange(len(rays)) - (torch.cumsum(counts, 0) - counts)[rays]
    starts = local * 0.01 + torch.rand(len(rays), generator=g) * 0.004
    s = Samples(rays.to(device), starts.to(device), (starts + 0.005).to(device))
    o = torch.zeros(64, 3, device=device)
    o[:, 1] = torch.arange(64, device=device, dtype=torch.float32)  # a ray's points name it: y = its index
    d = torch.tensor([1.0, 0.0, 0.0], device=device).expand(64, 3)
    wall = (0.02 + torch.rand(64, generator=g) * 2.0).to(device)  # where its slab starts (past some rays' ends)
    evaluated = torch.zeros(64, dtype=torch.long)

    def sigma_fn(x: torch.Tensor) -> torch.Tensor:
        ray, t = x[:, 1].round().long(), x[:, 0]
        evaluated.add_(torch.bincount(ray.cpu(), minlength=64))
        slab = (t >= wall[ray]) & (t < wall[ray] + 0.04)
        return torch.where(slab, 5000.0, 1.0 + torch.sin(37.0 * t + ray))

    kept = prune_occluded(s, o, d, sigma_fn)
    rounds = evaluated.clone()
    _, transmittance = render_weights(sigma_fn(s.positions(o, d)), s.deltas, s.ray_indices, 64)
    one_pass = (transmittance >= 1e-4).cpu()
    assert torch.equal(kept.ray_indices.cpu(), rays[one_pass])
    assert torch.equal(kept.t_starts.cpu(), starts[one_pass])
    size, ends = marching.PRUNE_FIRST_ROUND, [0]  # where each round ends along a ray
    while ends[-1] < 300:
        ends.append(ends[-1] + size)
        size = int(size * marching.ROUND_GROWTH)
    ends = torch.tensor(ends)
    for ray in range(64):
        dropped = (~one_pass[rays == ray]).nonzero()
        last = int(counts[ray]) if len(dropped) == 0 else int(ends[ends >= int(dropped[0])][0])
        assert int(rounds[ray]) == min(last, int(counts[ray])), ray
    assert int(rounds.sum()) < len(rays)


def test_step_coordinates_count_steps_and_skipped_gaps() -> None:
    """Uniform steps of 0.1: intervals [0, 0.1], [0.1, 0.2], [0.5, 0.6] of one ray and [0.3, 0.4] of another are
    steps 0-1, 1-2, 5-6 and 0-1. With a contraction and a cone angle, every marched sample is one step long, and
    the samples a grid keeps keep their distances from their ray's first one (the gaps count the skipped steps)."""
    s = Samples(torch.tensor([0, 0, 0, 1]), torch.tensor([0.0, 0.1, 0.5, 0.3]), torch.tensor([0.1, 0.2, 0.6, 0.4]))
    o, d = torch.zeros(2, 3), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    starts, ends = step_coordinates(s, o, d, StepRule(0.1))
    torch.testing.assert_close(starts, torch.tensor([0.0, 1.0, 5.0, 0.0]))
    torch.testing.assert_close(ends, torch.tensor([1.0, 2.0, 6.0, 1.0]))

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    rule = StepRule(0.02, 1 / 64, 0.5, aabb)
    gen = torch.Generator().manual_seed(0)
    o = torch.rand(64, 3, generator=gen) - 0.5
    d = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1)
    every = march_rays(o, d, aabb, None, rule, 4096)
    starts, ends = step_coordinates(every, o, d, rule)
    clipped = every.t_ends < every.t_starts + rule.lengths(o[every.ray_indices], d[every.ray_indices], every.t_starts)
    whole = ~clipped  # all but the last sample of each ray
    torch.testing.assert_close((ends - starts)[whole], torch.ones(int(whole.sum())), atol=0.05, rtol=0)
    grid = OccupancyGrid(aabb, 16, contracted=True)
    grid.mask[:, :, :8] = False
    kept = march_rays(o, d, aabb, grid, rule, 4096)
    assert 0 < len(kept) < len(every) * 0.8
    kept_starts, _ = step_coordinates(kept, o, d, rule)
    index = {(int(r), float(t)): float(v) for r, t, v in zip(every.ray_indices, every.t_starts, starts, strict=True)}
    expected = torch.tensor([index[(int(r), float(t))] for r, t in zip(kept.ray_indices, kept.t_starts, strict=True)])
    ray_first = torch.searchsorted(kept.ray_indices, kept.ray_indices)  # coordinates count from a ray's first
    expected = expected - expected[ray_first]
    near = box_norm(kept.positions(o, d), aabb) < 4.0  # steps grow 16-fold out to there
    assert near.float().mean() > 0.5
    torch.testing.assert_close(kept_starts[near], expected[near], rtol=0.05, atol=0.5)
