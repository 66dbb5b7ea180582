"""Materials and their textures; ``albedo`` evaluates a material's colour at a batch of surface points."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

MATERIAL_TYPES = ("diffuse", "mirror", "glass", "emissive")
CHECKER_SPACES = ("uv", "object")

Colour = tuple[float, float, float]


@dataclass(frozen=True)
class Checker:
    """Two-colour checkerboard, ``scale`` squares per unit, on the surface UVs or in object space (3-D)."""

    color1: Colour
    color2: Colour
    scale: float
    space: str = "uv"


@dataclass(eq=False)
class ImageTexture:
    """An image looked up bilinearly at ``uv * scale`` (repeating; v points up the image)."""

    path: Path
    image: torch.Tensor  # (H, W, 3) float32 linear RGB
    scale: tuple[float, float] = (1.0, 1.0)


@dataclass(eq=False)
class Material:
    """One named material. ``kind`` is one of ``MATERIAL_TYPES``.

    - diffuse: Lambertian albedo (``color``, ``checker`` or ``texture``) plus an optional Blinn-Phong lobe
      (``ks``, ``shininess``);
    - mirror: perfect reflection tinted by ``color``;
    - glass: Fresnel-weighted (Schlick) reflection and Snell refraction with index ``ior``; the transmitted
      part is tinted by ``color``;
    - emissive: constant radiance ``color * strength``, unlit.
    """

    name: str
    kind: str
    color: Colour = (0.8, 0.8, 0.8)
    checker: Checker | None = None
    texture: ImageTexture | None = None
    ks: float = 0.0
    shininess: float = 32.0
    ior: float = 1.5
    strength: float = 1.0

    @property
    def needs_uv(self) -> bool:
        """Whether shading this material reads surface texture coordinates."""
        return self.texture is not None or (self.checker is not None and self.checker.space == "uv")


def _colour(c: Colour, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(c, dtype=like.dtype, device=like.device)


def bilinear_wrap(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Repeating bilinear lookup of ``image`` (H, W, C) at ``uv`` (N, 2) (v = 0 at the bottom): ``(N, C)``."""
    h, w = image.shape[:2]
    x = torch.remainder(uv[:, 0], 1.0) * w - 0.5
    y = (1.0 - torch.remainder(uv[:, 1], 1.0)) * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0, y0 = x0.long(), y0.long()
    xs, ys = (
        (torch.remainder(x0, w), torch.remainder(x0 + 1, w)),
        (torch.remainder(y0, h), torch.remainder(y0 + 1, h)),
    )
    top = image[ys[0], xs[0]] * (1 - fx) + image[ys[0], xs[1]] * fx
    bottom = image[ys[1], xs[0]] * (1 - fx) + image[ys[1], xs[1]] * fx
    return top * (1 - fy) + bottom * fy


def albedo(material: Material, uv: torch.Tensor, p_local: torch.Tensor | None) -> torch.Tensor:
    """Linear RGB ``(N, 3)`` of ``material`` at surface points with texture coordinates ``uv`` (N, 2)
    and object-space positions ``p_local`` (N, 3) (read by object-space checkers only: ``None`` for others)."""
    if material.texture is not None:
        tex = material.texture
        scaled = uv * torch.tensor(tex.scale, dtype=uv.dtype, device=uv.device)
        return bilinear_wrap(tex.image.to(uv.device), scaled)
    if material.checker is not None:
        ch = material.checker
        coords = uv if ch.space == "uv" else p_local
        parity = torch.remainder(torch.floor(coords * ch.scale).sum(-1), 2.0).unsqueeze(-1)
        return torch.where(parity < 0.5, _colour(ch.color1, uv), _colour(ch.color2, uv))
    return _colour(material.color, uv).expand(uv.shape[0], 3)
