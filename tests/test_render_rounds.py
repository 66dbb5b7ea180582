"""The inference path :func:`nerf.render.render_rays_rounds` (one field evaluation per sample, in rounds) renders
what :func:`nerf.render.render_rays` (a density pass, then the survivors again) renders, on both backends."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.backends import _native_error
from nerf.model import load_run
from nerf.render import (
    FIRST_ROUND,
    RENDER_TERMINATION,
    SURFACE_ROUND,
    SURFACE_TRANSMITTANCE,
    MarchSettings,
    Radiance,
    RayBatch,
    render_rays,
    render_rays_rounds,
    scale_near_gradients,
)
from nerf.volume import render_weights
from raytrace.camera import image_rays
from tests.conftest import skip_without_native


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_rounds_render_what_render_rays_renders(tiny_run, backend: str) -> None:
    if backend == "native":
        skip_without_native(_native_error(torch.device("cpu")))
    _, result = tiny_run
    _, m, _ = load_run(result.run_dir, "cpu", backend)
    test = result.dataset.splits["test"]
    for pose in test.poses:
        o, d = image_rays(pose, test.intrinsics)
        rays = RayBatch(o, d, torch.ones(3))
        with torch.no_grad():
            reference = render_rays(m, rays)
        rounds = render_rays_rounds(m, rays, eps=1e-4, min_weight=0.0)
        opacity = reference["opacity"]
        assert (opacity > 0.999).any() and (opacity < 0.01).any()  # rays that terminate early, rays that miss
        for key in ("rgb", "depth", "opacity"):
            torch.testing.assert_close(rounds[key], reference[key], rtol=0, atol=1e-4, msg=lambda e, k=key: f"{k}: {e}")
        skipping = render_rays_rounds(m, rays, eps=1e-4)  # weight >= 1e-5
        torch.testing.assert_close(skipping["rgb"], reference["rgb"], rtol=0, atol=1e-3)
        torch.testing.assert_close(skipping["opacity"], rounds["opacity"], rtol=0, atol=0)
        marched = len(m.march.samples(o, d, m.grid))
        assert int(reference["samples"]) < int(rounds["samples"]) < marched  # each sample evaluated once at most
        # the default ends rays at transmittance RENDER_TERMINATION: off by at most that (plus the skipped
        # colours), with fewer samples
        early = render_rays_rounds(m, rays)
        torch.testing.assert_close(early["rgb"], reference["rgb"], rtol=0, atol=RENDER_TERMINATION + 1e-3)
        torch.testing.assert_close(early["opacity"], reference["opacity"], rtol=0, atol=RENDER_TERMINATION)
        assert int(early["samples"]) < int(skipping["samples"])


def test_rounds_stop_a_ray_behind_an_opaque_wall() -> None:
    """A wall of density 1e3 at x > 0: a ray along +x stops in the round after the wall, a ray along -x (no wall)
    takes every sample; the colour is the wall's and the depth the first sample's mid-point (steps of 0.02)."""

    class Wall(torch.nn.Module):
        def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.where(x[:, 0] > 0.0, 1e3, 0.0), x

        def view(self, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
            return d

        def colour(self, features: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.2, 0.4, 0.6]).expand(features.shape[0], 3)

    march = MarchSettings(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 100 * 3**0.5)
    o = torch.zeros(2, 3)
    d = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    out = render_rays_rounds(Radiance(Wall(), None, march), RayBatch(o, d, torch.ones(3)), eps=1e-4)
    torch.testing.assert_close(out["rgb"][0], torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(out["rgb"][1], torch.ones(3))
    assert out["depth"][0] == pytest.approx(0.01, abs=1e-6) and out["opacity"][1] == 0.0
    assert int(out["samples"]) == 50 + FIRST_ROUND  # the -x ray's 50 samples, one round of the +x ray's


def test_a_ray_in_a_surface_takes_short_rounds() -> None:
    """A medium of density 30 at x > 0 (0.6 optical depth per 0.02 step): after the first round (8 samples,
    transmittance exp(-4.8)) the ray is in a surface, so it goes on by SURFACE_ROUND samples (exp(-7.2), then
    exp(-9.6) < 1e-4: stop), not by a doubled round of 16; what it renders is unchanged (render_rays)."""

    class Medium(torch.nn.Module):
        def __init__(self, sigma: float = 30.0) -> None:
            super().__init__()
            self.sigma = sigma

        def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.where(x[:, 0] > 0.0, self.sigma, 0.0), x

        def view(self, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
            return d

        def colour(self, features: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.2, 0.4, 0.6]).expand(features.shape[0], 3)

    o, d = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    march = MarchSettings(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 100 * 3**0.5)
    assert SURFACE_ROUND == 4 and FIRST_ROUND == 8 and math.exp(-4.8) < SURFACE_TRANSMITTANCE
    rays = RayBatch(o, d, torch.ones(3))
    out = render_rays_rounds(Radiance(Medium(), None, march), rays, eps=1e-4)
    assert int(out["samples"]) == FIRST_ROUND + 2 * SURFACE_ROUND
    reference = render_rays(Radiance(Medium(), None, march), rays)
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(out[key], reference[key], rtol=0, atol=1e-4)

    # A thin fog (optical depth 1 over the ray's 5,000 samples) never ends the ray: its rounds grow, so it takes
    # every sample in a few dozen rounds and renders what render_rays renders.
    long = MarchSettings(march.aabb, 10_000 * 3**0.5)
    out = render_rays_rounds(Radiance(Medium(1.0), None, long), rays, eps=1e-4)
    assert int(out["samples"]) == 5_000
    reference = render_rays(Radiance(Medium(1.0), None, long), rays)
    torch.testing.assert_close(out["opacity"], reference["opacity"], rtol=0, atol=1e-4)


def test_scale_near_gradients_keeps_values_and_scales_gradients() -> None:
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    factor = torch.tensor([0.25, 1.0, 0.0])
    out = scale_near_gradients(values, factor)
    assert torch.equal(out, values)
    out.sum().backward()
    torch.testing.assert_close(values.grad, factor[:, None].expand(3, 2))


def test_render_rays_scales_the_gradients_of_near_samples() -> None:
    """A constant colour c seen through a slab of density 2 between x = 0.1 and 0.9: d rgb / d c is the sum of the
    weights, and with ``near_radius`` r the sum of the weights times min(1, (t / r)^2) at each sample's mid-point."""

    class Slab(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = torch.nn.Parameter(torch.tensor(0.5))

        def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.where((x[:, 0] > 0.1) & (x[:, 0] < 0.9), 2.0, 0.0), x

        def view(self, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
            return d

        def colour(self, features: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
            return self.c.expand(features.shape[0], 3)

    march = MarchSettings(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 100 * 3**0.5)
    o, d = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    grads = []
    for radius in (0.0, 0.5):
        field = Slab()
        out = render_rays(Radiance(field, None, march), RayBatch(o, d, torch.zeros(3)), near_radius=radius)
        out["rgb"][0, 0].backward()
        grads.append(field.c.grad.item())
    s = march.samples(o, d, None)
    sigmas = Slab().density(s.positions(o, d))[0]
    weights, _ = render_weights(sigmas, s.deltas, s.ray_indices, 1)
    assert grads[0] == pytest.approx(weights.sum().item(), rel=1e-5)
    factor = (s.t_mids / 0.5).square().clamp(max=1.0)
    assert grads[1] == pytest.approx((weights * factor).sum().item(), rel=1e-5)
    assert grads[1] < 0.9 * grads[0]
