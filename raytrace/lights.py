"""Lights and their samples seen from surface points.

Radiometric convention: a light sample gives, at a surface point ``p``, the unit direction towards the
light, the distance to it and ``E``, the irradiance the light would give a surface facing it (colour x
intensity, RGB). Shading multiplies ``E`` by ``cos(theta)`` and the BRDF (albedo / pi for Lambert).

- point: ``E = color * intensity / r^2``;
- directional (``direction`` is where the light travels): ``E = color * intensity``;
- area (parallelogram ``corner + a edge1 + b edge2``, emitting radiance ``color * intensity`` from both
  sides): ``samples`` stratified points, each with ``E = L * |cos theta_light| * area / (samples * r^2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from raytrace.optics import dot

Vec3 = tuple[float, float, float]
LIGHT_TYPES = ("point", "directional", "area")
DIRECTIONAL_DISTANCE = 1e6  # shadow rays towards a directional light test this far


@dataclass(frozen=True)
class PointLight:
    name: str
    position: Vec3
    color: Vec3
    intensity: float

    samples = 1


@dataclass(frozen=True)
class DirectionalLight:
    name: str
    direction: Vec3  # unit vector, the direction the light travels
    color: Vec3
    intensity: float

    samples = 1


@dataclass(frozen=True)
class AreaLight:
    name: str
    corner: Vec3
    edge1: Vec3
    edge2: Vec3
    color: Vec3
    intensity: float  # emitted radiance scale
    samples: int = 16
    visible: bool = True  # camera and reflected rays see the emitting parallelogram

    @property
    def radiance(self) -> Vec3:
        return tuple(c * self.intensity for c in self.color)


Light = PointLight | DirectionalLight | AreaLight


def stratified(rand: torch.Tensor) -> torch.Tensor:
    """Map uniform ``(M, S, 2)`` numbers to jittered strata of an s x s grid when ``S = s^2`` (else as is)."""
    s = math.isqrt(rand.shape[1])
    if s * s != rand.shape[1]:
        return rand
    j = torch.arange(rand.shape[1], device=rand.device, dtype=rand.dtype)
    cell = torch.stack([torch.remainder(j, s), torch.div(j, s, rounding_mode="floor")], -1)
    return (cell + rand) / s


def light_samples(
    light: Light, p: torch.Tensor, rand: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples of ``light`` seen from points ``p`` (M, 3): unit directions to the light ``(M, S, 3)``,
    distances ``(M, S)`` and irradiance ``E`` ``(M, S, 3)``. ``rand`` (M, S, 2) uniform, for area lights."""

    def vec(v: Vec3) -> torch.Tensor:
        return torch.tensor(v, dtype=p.dtype, device=p.device)

    colour = vec(light.color) * light.intensity
    if isinstance(light, DirectionalLight):
        to_light = -vec(light.direction).expand(p.shape[0], 1, 3)
        dist = torch.full((p.shape[0], 1), DIRECTIONAL_DISTANCE, dtype=p.dtype, device=p.device)
        return to_light, dist, colour.expand(p.shape[0], 1, 3)
    if isinstance(light, PointLight):
        offset = (vec(light.position) - p).unsqueeze(1)
        dist = dot(offset, offset).sqrt()
        return offset / dist.unsqueeze(-1), dist, colour / (dist**2).unsqueeze(-1)
    assert rand is not None, "area lights need random numbers"
    e1, e2 = vec(light.edge1), vec(light.edge2)
    n_raw = torch.linalg.cross(e1, e2)
    area = n_raw.norm()
    ab = stratified(rand)
    q = vec(light.corner) + ab[..., :1] * e1 + ab[..., 1:] * e2  # (M, S, 3)
    offset = q - p.unsqueeze(1)
    dist = dot(offset, offset).sqrt()
    to_light = offset / dist.unsqueeze(-1)
    cos_l = dot(to_light, n_raw / area).abs()
    e = colour * (cos_l * area / (light.samples * dist**2)).unsqueeze(-1)
    return to_light, dist, e


LIGHT_ROW = 19  # floats per light in light_table


def light_table(lights: list[Light], device: torch.device | str = "cpu") -> torch.Tensor:
    """The lights as ``(L, LIGHT_ROW)`` float32 rows for the native shading kernel, each holding the values
    ``light_samples`` computes from it: type (index into LIGHT_TYPES), samples, colour x intensity (3), then the
    position (point), the direction to the light (directional) or the corner (area) (3), and for area lights
    edge1, edge2, the unit normal (3 each), the area and the stratification grid's side (0: not a square)."""
    def vec(v: Vec3) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float32)

    rows = torch.zeros(len(lights), LIGHT_ROW)
    for row, light in zip(rows, lights, strict=True):
        row[1], row[2:5] = light.samples, vec(light.color) * light.intensity
        if isinstance(light, PointLight):
            row[0], row[5:8] = LIGHT_TYPES.index("point"), vec(light.position)
        elif isinstance(light, DirectionalLight):
            row[0], row[5:8] = LIGHT_TYPES.index("directional"), -vec(light.direction)
        else:
            e1, e2 = vec(light.edge1), vec(light.edge2)
            n_raw = torch.linalg.cross(e1, e2)
            area = n_raw.norm()
            side = math.isqrt(light.samples)
            row[0], row[5:8], row[8:11], row[11:14], row[14:17] = LIGHT_TYPES.index("area"), vec(light.corner), e1, \
                e2, n_raw / area
            row[17], row[18] = area, side if side * side == light.samples else 0
    return rows.to(device)
