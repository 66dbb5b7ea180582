"""Spherical-harmonics direction encoding: closed forms, orthonormality, tiny-cuda-nn's order."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.sh import sh_encode


def unit_dirs(n: int, seed: int = 0) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def fibonacci_sphere(n: int) -> torch.Tensor:
    """``n`` nearly uniform points on the unit sphere (equal-area quadrature nodes)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (1.0 + 5.0**0.5) * i
    r = (1.0 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)


def test_band_0_and_1_closed_form() -> None:
    d = unit_dirs(100)
    x, y, z = d.unbind(-1)
    torch.testing.assert_close(sh_encode(d, 1), torch.full((100, 1), 0.5 / math.sqrt(math.pi), dtype=d.dtype))
    c1 = math.sqrt(3.0 / (4.0 * math.pi))
    expected = torch.stack([torch.full_like(x, 0.5 / math.sqrt(math.pi)), -c1 * y, c1 * z, -c1 * x], dim=-1)
    torch.testing.assert_close(sh_encode(d, 2), expected)


def test_band_2_closed_form() -> None:
    d = unit_dirs(100, seed=1)
    x, y, z = d.unbind(-1)
    c = 0.5 * math.sqrt(15.0 / math.pi)
    band2 = torch.stack(
        [
            c * x * y,
            -c * y * z,
            0.25 * math.sqrt(5.0 / math.pi) * (3.0 * z * z - 1.0),
            -c * x * z,
            0.5 * c * (x * x - y * y),
        ],
        dim=-1,
    )
    out = sh_encode(d, 3)
    assert out.shape == (100, 9)
    torch.testing.assert_close(out[:, 4:], band2)
    torch.testing.assert_close(out[:, :4], sh_encode(d, 2))


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_orthonormal_on_the_sphere(degree: int) -> None:
    d = fibonacci_sphere(20000)
    basis = sh_encode(d, degree)
    assert basis.shape == (20000, degree**2)
    gram = basis.T @ basis * (4.0 * math.pi / d.shape[0])
    torch.testing.assert_close(gram, torch.eye(degree**2, dtype=torch.float64), atol=2e-3, rtol=0)


def test_band_3_is_harmonic_and_tcnn_order() -> None:
    """Band 3 spot values against tiny-cuda-nn's formulas at a known direction."""
    d = torch.tensor([[2.0, 3.0, 6.0]], dtype=torch.float64) / 7.0
    x, y, z = d[0].tolist()
    out = sh_encode(d, 4)[0, 9:]
    expected = [
        0.59004358992664352 * y * (-3 * x * x + y * y),
        2.8906114426405538 * x * y * z,
        0.45704579946446572 * y * (1 - 5 * z * z),
        0.3731763325901154 * z * (5 * z * z - 3),
        0.45704579946446572 * x * (1 - 5 * z * z),
        1.4453057213202769 * z * (x * x - y * y),
        0.59004358992664352 * x * (-x * x + 3 * y * y),
    ]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))
    # Band 3 = sqrt(7 / 4pi) * P3(z) on the axis (Legendre): z = 1 gives sqrt(7 / 4pi), others vanish.
    axis = sh_encode(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), 4)[0, 9:]
    assert axis[3].item() == pytest.approx(math.sqrt(7.0 / (4.0 * math.pi)))
    assert axis[[0, 1, 2, 4, 5, 6]].abs().max().item() == 0.0


def test_dtype_device_and_bad_degree(device: torch.device) -> None:
    d = unit_dirs(8).float().to(device)
    out = sh_encode(d)
    assert out.shape == (8, 16) and out.dtype == torch.float32 and out.device.type == device.type
    with pytest.raises(ValueError):
        sh_encode(d, 5)
    with pytest.raises(ValueError):
        sh_encode(d, 0)
