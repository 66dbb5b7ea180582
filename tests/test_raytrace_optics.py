"""Reflection, Snell refraction, total internal reflection and Schlick's Fresnel limits; sRGB encoding."""

from __future__ import annotations

import math

import pytest
import torch

from raytrace.colour import linear_to_srgb, srgb_to_linear
from raytrace.optics import reflect, refract, schlick


def _dir(deg: float) -> torch.Tensor:
    """Unit direction travelling down onto the z = 0 plane at ``deg`` from the normal, in the xz-plane."""
    a = math.radians(deg)
    return torch.tensor([[math.sin(a), 0.0, -math.cos(a)]], dtype=torch.float64)


UP = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)


def test_reflect_mirrors_the_normal_component() -> None:
    r = reflect(_dir(30.0), UP)
    a = math.radians(30.0)
    torch.testing.assert_close(r, torch.tensor([[math.sin(a), 0.0, math.cos(a)]], dtype=torch.float64))


@pytest.mark.parametrize(("deg", "eta"), [(0.0, 1 / 1.5), (30.0, 1 / 1.5), (60.0, 1 / 1.33), (20.0, 1.5)])
def test_refract_obeys_snell(deg: float, eta: float) -> None:
    t, tir = refract(_dir(deg), UP, eta)
    assert not tir.any()
    assert t.norm().item() == pytest.approx(1.0)
    sin_t = math.hypot(t[0, 0].item(), t[0, 1].item())
    assert sin_t == pytest.approx(eta * math.sin(math.radians(deg)), abs=1e-12)
    assert t[0, 2].item() < 0  # keeps going through the surface
    assert t[0, 1].item() == 0.0 and t[0, 0].item() >= 0  # stays in the plane of incidence


def test_total_internal_reflection_beyond_the_critical_angle() -> None:
    critical = math.degrees(math.asin(1 / 1.5))
    t, tir = refract(_dir(critical + 1.0), UP, 1.5)
    assert tir.all()
    torch.testing.assert_close(t, reflect(_dir(critical + 1.0), UP))
    _, tir = refract(_dir(critical - 1.0), UP, 1.5)
    assert not tir.any()


def test_schlick_limits() -> None:
    one = torch.tensor([1.0], dtype=torch.float64)
    assert schlick(one, 1.0, 1.5).item() == pytest.approx(((1.0 - 1.5) / (1.0 + 1.5)) ** 2)
    assert schlick(one, 1.5, 1.0).item() == pytest.approx(0.04)
    assert schlick(torch.tensor([0.0], dtype=torch.float64), 1.0, 1.5).item() == pytest.approx(1.0)
    grazing = schlick(torch.tensor([1e-3], dtype=torch.float64), 1.0, 1.5).item()
    assert 0.99 < grazing < 1.0
    beyond_critical = torch.tensor([math.cos(math.radians(50.0))], dtype=torch.float64)
    assert schlick(beyond_critical, 1.5, 1.0).item() == 1.0
    # leaving the denser medium the reflectance equals that of the reverse path (Stokes / Helmholtz)
    cos_i = torch.tensor([math.cos(math.radians(30.0))], dtype=torch.float64)
    cos_t = torch.tensor([math.sqrt(1 - (1.5 * math.sin(math.radians(30.0))) ** 2)], dtype=torch.float64)
    torch.testing.assert_close(schlick(cos_i, 1.5, 1.0), schlick(cos_t, 1.0, 1.5))
    cos = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    assert (schlick(cos, 1.0, 1.5).diff() <= 0).all()  # reflectance falls towards normal incidence


def test_srgb_round_trip_and_fixed_points() -> None:
    x = torch.linspace(0.0, 1.0, 101)
    torch.testing.assert_close(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-5, rtol=0)
    assert linear_to_srgb(torch.tensor([0.0, 1.0, 0.18])).tolist() == pytest.approx([0.0, 1.0, 0.4614], abs=1e-4)
    assert linear_to_srgb(torch.tensor([2.0, -1.0])).tolist() == pytest.approx([1.0, 0.0])  # clamped
