"""Packed volume rendering: transmittance, weights, compositing, early termination."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.volume import accumulate, composite, distortion, early_terminated, render_weights


def test_three_sample_weights_by_hand(device: torch.device) -> None:
    sigmas = torch.tensor([1.0, 2.0, 3.0], device=device)
    deltas = torch.tensor([0.5, 0.25, 0.1], device=device)
    rays = torch.zeros(3, dtype=torch.long, device=device)
    w, t = render_weights(sigmas, deltas, rays, 1)
    e = math.exp
    expected_t = [1.0, e(-0.5), e(-1.0)]
    expected_w = [1 - e(-0.5), e(-0.5) * (1 - e(-0.5)), e(-1.0) * (1 - e(-0.3))]
    torch.testing.assert_close(t.cpu(), torch.tensor(expected_t))
    torch.testing.assert_close(w.cpu(), torch.tensor(expected_w))


@pytest.mark.parametrize("n_steps", [1, 7, 100])
def test_constant_density_slab(n_steps: int, device: torch.device) -> None:
    """A ray through a slab of density sigma and thickness d: opacity 1 - exp(-sigma d), and T after it
    is exp(-sigma d), however the slab is subdivided (empty space around it changes nothing)."""
    sigma, thickness = 3.0, 0.4
    edges = torch.cat([torch.tensor([0.0, 1.0]), torch.linspace(1.0, 1.0 + thickness, n_steps + 1)[1:]])
    edges = torch.cat([edges, torch.tensor([2.0])]).to(device)
    starts, ends = edges[:-1], edges[1:]
    sigmas = torch.full_like(starts, sigma)
    sigmas[0] = sigmas[-1] = 0.0
    rays = torch.zeros_like(starts, dtype=torch.long)
    out = composite(sigmas, torch.ones(len(starts), 3, device=device), starts, ends, rays, 1, None)
    opacity = 1 - math.exp(-sigma * thickness)
    assert out["opacity"].item() == pytest.approx(opacity, rel=1e-5)
    _, transmittance = render_weights(sigmas, ends - starts, rays, 1)
    assert transmittance[-1].item() == pytest.approx(math.exp(-sigma * thickness), rel=1e-5)
    torch.testing.assert_close(out["rgb"].cpu(), torch.full((1, 3), opacity))


def test_packed_rays_are_independent(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    counts = [5, 0, 3, 8, 1]
    rays = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    s = len(rays)
    sigmas, rgbs = torch.rand(s, generator=g) * 5, torch.rand(s, 3, generator=g)
    deltas = torch.rand(s, generator=g) * 0.3 + 0.01
    starts = torch.cat([torch.cumsum(deltas[rays == r], 0) - deltas[rays == r] for r in range(5)]) + 1.0
    ends = starts + deltas
    bg = torch.tensor([0.2, 0.4, 0.6])
    together = composite(*(v.to(device) for v in (sigmas, rgbs, starts, ends, rays)), 5, bg.to(device))
    for r in range(5):
        m = rays == r
        alone = composite(
            sigmas[m], rgbs[m], starts[m], ends[m], torch.zeros(int(m.sum()), dtype=torch.long), 1, bg
        )
        for key in ("rgb", "depth", "opacity"):
            torch.testing.assert_close(together[key][r].cpu(), alone[key][0])
    # The ray without samples shows the background, with zero opacity and depth.
    torch.testing.assert_close(together["rgb"][1].cpu(), bg)
    assert together["opacity"][1].item() == 0.0 and together["depth"][1].item() == 0.0


def test_depth_of_a_thin_opaque_layer(device: torch.device) -> None:
    starts = torch.tensor([0.5, 1.0, 2.0, 2.01, 3.0], device=device)
    ends = starts + torch.tensor([0.5, 1.0, 0.01, 0.99, 0.5], device=device)
    sigmas = torch.tensor([0.0, 0.0, 1e5, 0.0, 50.0], device=device)
    rays = torch.zeros(5, dtype=torch.long, device=device)
    out = composite(
        sigmas, torch.rand(5, 3, device=device), starts, ends, rays, 1, torch.ones(3, device=device)
    )
    assert out["opacity"].item() == pytest.approx(1.0, abs=1e-6)
    assert out["depth"].item() == pytest.approx(2.005, abs=1e-4)
    assert out["weights"].shape == (5,)


def test_background_per_ray_and_none() -> None:
    sigmas = torch.tensor([0.5, 0.5])
    starts, ends = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    rays = torch.tensor([0, 1])
    rgbs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    bg = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a = 1 - math.exp(-0.5)
    out = composite(sigmas, rgbs, starts, ends, rays, 2, bg)
    torch.testing.assert_close(out["rgb"], torch.tensor([[a, 1 - a, 0.0], [a, 0.0, 1 - a]]))
    black = composite(sigmas, rgbs, starts, ends, rays, 2, None)
    torch.testing.assert_close(black["rgb"], torch.tensor([[a, 0.0, 0.0], [a, 0.0, 0.0]]))


def test_transmittance_stays_accurate_in_long_batches() -> None:
    """Many rays packed together: the last ray's transmittance must not suffer from the global sum."""
    n_rays, per_ray = 20000, 50
    rays = torch.arange(n_rays).repeat_interleave(per_ray)
    sigmas = torch.full((n_rays * per_ray,), 10.0)
    deltas = torch.full_like(sigmas, 0.01)
    _, t = render_weights(sigmas, deltas, rays, n_rays)
    expected = torch.exp(-0.1 * torch.arange(per_ray, dtype=torch.float32))
    torch.testing.assert_close(t[-per_ray:], expected, rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(0)
    rays = torch.tensor([0, 0, 0, 1, 1])
    sigmas = (torch.rand(5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    rgbs = torch.rand(5, 3, generator=g, dtype=torch.float64).requires_grad_()
    starts = torch.tensor([0.0, 0.2, 0.5, 0.1, 0.4], dtype=torch.float64)
    ends = starts + 0.2

    def fn(s: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = composite(s, c, starts, ends, rays, 2, torch.ones(3, dtype=torch.float64))
        return out["rgb"], out["depth"], out["opacity"]

    assert torch.autograd.gradcheck(fn, (sigmas, rgbs))


def test_accumulate_and_early_termination() -> None:
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    rays = torch.tensor([0, 0, 2, 2])
    torch.testing.assert_close(accumulate(w, None, rays, 3), torch.tensor([0.3, 0.0, 0.7]))
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    torch.testing.assert_close(accumulate(w, values, rays, 3), torch.tensor([[0.5], [0.0], [2.5]]))
    t = torch.tensor([1.0, 0.5, 1e-4, 5e-5, 0.0])
    assert early_terminated(t).tolist() == [True, True, True, False, False]
    assert early_terminated(t, eps=0.6).tolist() == [True, False, False, False, False]


def test_distortion_of_one_interval_and_of_two_separated() -> None:
    """One interval of weight w and length l: w^2 l / 3. Two point-like weights a, b at distance D: 2 a b D."""
    one = distortion(torch.tensor([0.8]), torch.tensor([0.2]), torch.tensor([0.5]), torch.zeros(1, dtype=torch.long), 1)
    assert one.item() == pytest.approx(0.8**2 * 0.3 / 3)
    starts, ends = torch.tensor([0.1, 0.7]), torch.tensor([0.1, 0.7])
    two = distortion(torch.tensor([0.3, 0.6]), starts, ends, torch.zeros(2, dtype=torch.long), 1)
    assert two.item() == pytest.approx(2 * 0.3 * 0.6 * 0.6)


def test_distortion_matches_the_pair_sum() -> None:
    """The O(S) prefix-sum form equals mip-NeRF 360's double sum, ray by ray (packed rays of 0..6 samples)."""
    g = torch.Generator().manual_seed(3)
    counts = torch.tensor([3, 0, 1, 6, 2])
    rays = torch.repeat_interleave(torch.arange(5), counts)
    edges = [torch.rand(2 * int(c), generator=g, dtype=torch.float64).sort().values for c in counts]
    starts, ends = torch.cat([e[0::2] for e in edges]), torch.cat([e[1::2] for e in edges])
    w = torch.rand(len(rays), generator=g, dtype=torch.float64)
    got = distortion(w, starts, ends, rays, 5)
    mids = 0.5 * (starts + ends)
    for r in range(5):
        m = rays == r
        pair = (w[m][:, None] * w[m][None] * (mids[m][:, None] - mids[m][None]).abs()).sum()
        assert got[r].item() == pytest.approx((pair + (w[m] ** 2 * (ends[m] - starts[m])).sum() / 3).item())


def test_distortion_pushes_a_floater_away_more_than_the_surface() -> None:
    """A ray through a faint floater, then an opaque surface: the loss's gradient lowers the floater's density,
    and the surface's (whose colour the photometric loss holds) far less."""
    sigmas = torch.tensor([2.0, 40.0], requires_grad=True)
    starts, ends = torch.tensor([0.1, 0.6]), torch.tensor([0.15, 0.65])
    rays = torch.zeros(2, dtype=torch.long)
    weights, _ = render_weights(sigmas, ends - starts, rays, 1)
    distortion(weights, starts, ends, rays, 1).sum().backward()
    assert sigmas.grad[0] > 10 * sigmas.grad[1].abs()
