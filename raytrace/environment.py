"""What rays that leave the scene see: a sky gradient (with an optional sun disc) or an equirectangular image.

Pure functions over unit directions ``(N, 3)`` in world space (Z-up). The environment lights nothing: it is
only seen (by camera rays and by reflected and refracted rays); diffuse surfaces are lit by the scene's lights
and ``ambient`` alone.

- Sky: above the horizon ``mix(horizon, zenith, d.z ** exponent)``, below it
  ``mix(horizon, ground, (-d.z) ** exponent)``. A sun adds ``sun_color`` within ``sun_size`` degrees (angular
  radius) of ``sun_direction``.
- Image: equirectangular (longitude along the width, latitude along the height), linear RGB, times
  ``strength``. Column ``u = 0.5 + atan2(d.y, d.x) / (2 pi)`` (the image centre looks down +X, longitude grows
  towards +Y), row ``v = 0.5 - asin(d.z) / pi`` (the top row is the zenith); bilinear, wrapping in longitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sky:
    """A sky gradient; colours are linear RGB ``(3,)``."""

    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    ground: tuple[float, float, float]
    exponent: float = 0.5  # < 1 keeps the horizon colour narrow
    sun_direction: tuple[float, float, float] | None = None  # unit, towards the sun
    sun_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sun_size: float = 1.0  # angular radius in degrees


@dataclass(frozen=True, eq=False)
class EnvironmentImage:
    """An equirectangular image: ``texels`` ``(H, W, 3)`` float32 linear RGB, times ``strength``."""

    texels: torch.Tensor
    strength: float = 1.0


Environment = Sky | EnvironmentImage


def radiance(env: Environment, d: torch.Tensor) -> torch.Tensor:
    """Linear radiance ``(N, 3)`` seen along unit directions ``d`` ``(N, 3)``."""
    return sky_radiance(env, d) if isinstance(env, Sky) else image_radiance(env, d)


def sky_radiance(sky: Sky, d: torch.Tensor) -> torch.Tensor:
    """The sky gradient (and sun) along unit directions ``d`` ``(N, 3)``: ``(N, 3)``."""
    z = d[:, 2:3].clamp(-1.0, 1.0)
    horizon, zenith, ground = (torch.tensor(c, device=d.device, dtype=d.dtype) for c in
                               (sky.horizon, sky.zenith, sky.ground))
    w = z.abs() ** sky.exponent
    out = torch.where(z >= 0, horizon + w * (zenith - horizon), horizon + w * (ground - horizon))
    if sky.sun_direction is not None:
        sun = torch.tensor(sky.sun_direction, device=d.device, dtype=d.dtype)
        inside = (d @ sun) >= math.cos(math.radians(sky.sun_size))
        out = out + inside.unsqueeze(-1) * torch.tensor(sky.sun_color, device=d.device, dtype=d.dtype)
    return out


def equirect_uv(d: torch.Tensor) -> torch.Tensor:
    """Equirectangular coordinates ``(N, 2)`` in [0, 1] (u along the width, v down the height) of unit
    directions ``d`` ``(N, 3)``."""
    u = 0.5 + torch.atan2(d[:, 1], d[:, 0]) / (2.0 * math.pi)
    v = 0.5 - torch.asin(d[:, 2].clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u, v], dim=-1)


def image_radiance(env: EnvironmentImage, d: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of the equirectangular image along unit directions ``d`` ``(N, 3)``: ``(N, 3)``."""
    tex = env.texels.to(d.device)
    h, w = tex.shape[0], tex.shape[1]
    uv = equirect_uv(d)
    x = uv[:, 0] * w - 0.5
    y = (uv[:, 1] * h - 0.5).clamp(0.0, h - 1.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0i, y0i = x0.long() % w, y0.long()
    x1i, y1i = (x0i + 1) % w, (y0i + 1).clamp(max=h - 1)
    top = tex[y0i, x0i] * (1 - fx) + tex[y0i, x1i] * fx
    bottom = tex[y1i, x0i] * (1 - fx) + tex[y1i, x1i] * fx
    return (top * (1 - fy) + bottom * fy) * env.strength
