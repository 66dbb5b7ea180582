"""Native front-to-back compositing (nerf/csrc/volume_*) against nerf.volume.composite, values and gradients.

A fresh seed each run, printed (pytest shows it on failure). Skipped only where the native library is not
built.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nerf.backends import _native_error, native_composite
from nerf.volume import composite
from tests.conftest import skip_without_native


def packed_samples(n_rays: int, gen: torch.Generator) -> dict[str, torch.Tensor | int]:
    """Rays of 0..96 samples (some empty), sorted by ray then t; densities from empty to opaque."""
    counts = torch.randint(0, 97, (n_rays,), generator=gen)
    counts[:: max(1, n_rays // 5)] = 0
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    s = int(counts.sum())
    deltas = torch.rand(s, generator=gen) * 0.05 + 1e-3
    ends = torch.cumsum(deltas, 0)
    first = torch.cumsum(counts, 0) - counts  # each ray's first sample
    ends = ends - (ends - deltas)[first[ray_indices]] + 2.0  # every ray starts at t = 2
    starts = ends - deltas
    sigmas = torch.rand(s, generator=gen) ** 3 * torch.rand(n_rays, generator=gen)[ray_indices] * 200.0
    rgbs = torch.rand(s, 3, generator=gen)
    return {
        "sigmas": sigmas,
        "rgbs": rgbs,
        "t_starts": starts,
        "t_ends": ends,
        "ray_indices": ray_indices,
        "n_rays": n_rays,
    }


def run(
    fn: Callable[..., dict[str, torch.Tensor]],
    samples: dict[str, torch.Tensor | int],
    device: torch.device,
    background: torch.Tensor | None,
    gen_out: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Outputs and d(loss)/d(sigmas, rgbs) for a loss touching rgb, depth, opacity and the weights."""
    sigmas = samples["sigmas"].to(device).clone().requires_grad_()
    rgbs = samples["rgbs"].to(device).clone().requires_grad_()
    out = fn(
        sigmas,
        rgbs,
        samples["t_starts"].to(device),
        samples["t_ends"].to(device),
        samples["ray_indices"].to(device),
        samples["n_rays"],
        background=None if background is None else background.to(device),
    )
    g = gen_out.to(device)
    loss = (
        (out["rgb"] * g[:, :3]).sum()
        + (out["depth"] * g[:, 3]).sum()
        + (out["opacity"] * g[:, 4]).sum()
        + out["weights"].square().sum()
    )
    loss.backward()
    return {k: v.detach().cpu() for k, v in out.items()}, sigmas.grad.cpu(), rgbs.grad.cpu()


@pytest.mark.parametrize("with_background", [False, True])
def test_composite_matches_reference(native_device: torch.device, gen: torch.Generator, with_background: bool) -> None:
    samples = packed_samples(300, gen)
    background = torch.rand(3, generator=gen) if with_background else None
    g = torch.randn(300, 5, generator=gen)
    ref_out, _, _ = run(composite, samples, torch.device("cpu"), background, g)
    # d depth / d w_i = (t_i - depth) / opacity: ill-conditioned in float32 for nearly transparent rays, whose
    # depth gradient is left out of the comparison.
    g[ref_out["opacity"] < 1e-2, 3] = 0.0
    ref_out, ref_sig, ref_rgb = run(composite, samples, torch.device("cpu"), background, g)
    nat_out, nat_sig, nat_rgb = run(native_composite, samples, native_device, background, g)
    for key in ("rgb", "depth", "opacity", "weights"):
        torch.testing.assert_close(nat_out[key], ref_out[key], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    assert (nat_out["opacity"][samples["ray_indices"].bincount(minlength=300) == 0] == 0).all()
    # Gradients: float32 rounding of g T_(i+1) - sum_(k>i) g_k w_k is of the order of its terms, in both; so
    # the native one must be as close to a float64 evaluation as the float32 reference is (2x, 1e-6 |g| floor).
    as64 = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in samples.items()}
    _, exact_sig, exact_rgb = run(composite, as64, torch.device("cpu"), bg64(background), g.double())
    floor = 1e-6 * float(g.abs().max())
    cases = (("dL/dsigma", nat_sig, ref_sig, exact_sig), ("dL/drgb", nat_rgb, ref_rgb, exact_rgb))
    for name, nat, ref, exact in cases:
        ref_err = float((ref.double() - exact).abs().max())
        nat_err = float((nat.double() - exact).abs().max())
        assert nat_err <= 2 * ref_err + floor, f"{name}: native error {nat_err:.3g}, reference {ref_err:.3g}"


def bg64(background: torch.Tensor | None) -> torch.Tensor | None:
    return None if background is None else background.double()


def test_unsorted_rays_are_rejected() -> None:
    skip_without_native(_native_error(torch.device("cpu")))
    s = torch.ones(3)
    with pytest.raises(RuntimeError, match="not sorted"):
        native_composite(s, torch.ones(3, 3), s * 0, s, torch.tensor([1, 0, 1]), 2)
    with pytest.raises(RuntimeError, match="outside"):
        native_composite(s, torch.ones(3, 3), s * 0, s, torch.tensor([0, 1, 2]), 2)
