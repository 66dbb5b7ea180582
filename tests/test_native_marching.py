"""Native occupancy-grid marching (nerf/csrc/marching_*) against nerf.marching.march_candidates: the same packed
samples, bit for bit. A fresh seed each run, printed; skipped only where the native library is not built."""

from __future__ import annotations

import pytest
import torch

from nerf import marching
from nerf.backends import native_march_candidates
from nerf.marching import StepRule, march_rays
from nerf.occupancy import OccupancyGrid

AABB = torch.tensor([[-1.5, -1.0, -0.5], [1.5, 1.0, 1.5]])


def random_rays(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 4 towards the box (some missing it), some starting inside, and rays lying
    in the box's faces (points exactly on the grid's boundary; the slab test counts the upper faces out)."""
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 4.0
    target = (torch.rand(n, 3, generator=gen) * 2 - 1) * 1.8
    o[: n // 8] = (torch.rand(n // 8, 3, generator=gen) * 2 - 1) * 0.9  # inside the box
    d = torch.nn.functional.normalize(target - o, dim=-1)
    face_o = torch.tensor([[1.5, -3.0, 0.5], [-1.5, 0.2, -3.0], [0.3, 1.0, -3.0], [1.5, 1.0, -3.0]])
    face_d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    return torch.cat([o, face_o]), torch.cat([d, face_d])


def random_grid(resolution: int, gen: torch.Generator, contracted: bool = False) -> OccupancyGrid:
    grid = OccupancyGrid(AABB, resolution, contracted=contracted)
    grid.mask.copy_(torch.rand(grid.mask.shape, generator=gen) < 0.3)
    return grid


@pytest.mark.parametrize("with_grid", [True, False])
@pytest.mark.parametrize("jitter", [True, False])
def test_march_matches_reference(
    native_device: torch.device, gen: torch.Generator, with_grid: bool, jitter: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(marching, "MARCH_CHUNK", 1000)  # many chunks: rows that start past ray 0
    o, d = (t.to(native_device) for t in random_rays(512, gen))
    grid = random_grid(int(torch.randint(4, 40, (1,), generator=gen)), gen).to(native_device) if with_grid else None
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    step = float(torch.rand(1, generator=gen)) * 0.05 + 0.005
    aabb = AABB.to(native_device)

    def run(candidates_fn: marching.CandidatesFn) -> marching.Samples:
        rng = torch.Generator(device=native_device).manual_seed(seed)
        return march_rays(o, d, aabb, grid, step, 400, jitter=jitter, generator=rng, candidates_fn=candidates_fn)

    expected, actual = run(marching.march_candidates), run(native_march_candidates)
    assert len(expected) > 1000  # more than one chunk of candidates, even after the grid
    for name in ("ray_indices", "t_starts", "t_ends"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name
    if with_grid:  # the grid rejected candidates, and kept some
        rng = torch.Generator(device=native_device).manual_seed(seed)
        everything = march_rays(o, d, aabb, None, step, 400, jitter=jitter, generator=rng,
                                candidates_fn=native_march_candidates)
        assert 0 < len(actual) < len(everything)


@pytest.mark.parametrize("with_grid", [True, False])
@pytest.mark.parametrize(("cone", "contracted"), [(0.02, False), (0.0, True), (1 / 256, True)])
def test_growing_steps_match_reference(
    native_device: torch.device, gen: torch.Generator, with_grid: bool, cone: float, contracted: bool
) -> None:
    """Cone-angle steps and contracted marching (out to infinity, a contracted grid): the same samples."""
    o, d = (t.to(native_device) for t in random_rays(512, gen))
    aabb = AABB.to(native_device)
    grid = random_grid(int(torch.randint(4, 40, (1,), generator=gen)), gen, contracted).to(native_device)
    step = float(torch.rand(1, generator=gen)) * 0.05 + 0.005
    rule = StepRule(step, cone, 4 * step, aabb if contracted else None)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))

    def run(candidates_fn: marching.CandidatesFn) -> marching.Samples:
        rng = torch.Generator(device=native_device).manual_seed(seed)
        return march_rays(o, d, aabb, grid if with_grid else None, rule, 600, jitter=True, generator=rng,
                          candidates_fn=candidates_fn)

    expected, actual = run(marching.march_candidates), run(native_march_candidates)
    assert len(expected) > 1000
    for name in ("ray_indices", "t_starts", "t_ends"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name
    if contracted:  # rays went far beyond the box
        assert float(expected.t_ends.max()) > 100.0


def test_march_rejects_bad_input(native_device: torch.device) -> None:
    o = torch.zeros(4, 3, device=native_device)
    t = torch.zeros(4, device=native_device)
    counts = torch.ones(4, dtype=torch.long, device=native_device)
    box = AABB.to(native_device)
    op = torch.ops.nerf_native.march_samples
    inf = float("inf")
    with pytest.raises(RuntimeError, match=r"\(R, R, R\)"):
        op(o, o, t, t, counts, torch.ones(2, 3, 4, dtype=torch.bool, device=native_device), box, False, 0.1, 0.0,
           inf, None, 0)
    with pytest.raises(RuntimeError, match="counts must be int64"):
        op(o, o, t, t, counts.int(), None, box, False, 0.1, 0.0, inf, None, 0)
    with pytest.raises(RuntimeError, match="step_size"):
        op(o, o, t, t, counts, None, box, False, 0.0, 0.0, inf, None, 0)
    with pytest.raises(RuntimeError, match="cone_angle"):
        op(o, o, t, t, counts, None, box, False, 0.1, -1.0, inf, None, 0)
    with pytest.raises(RuntimeError, match=r"contraction's aabb must be \(2, 3\)"):
        op(o, o, t, t, counts, None, box, False, 0.1, 0.0, inf, box[0], 0)
