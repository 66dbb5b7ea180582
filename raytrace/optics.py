"""Pure optics on batches of unit vectors: mirror reflection, Snell refraction, Schlick's Fresnel term.

Conventions: ``d`` is the incident direction (travelling towards the surface), ``n`` the unit normal on the
side the ray comes from (``dot(d, n) <= 0``). All functions broadcast over leading dimensions ``(..., 3)``.
"""

from __future__ import annotations

import torch


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products over the last axis (size 3, broadcasting): ``(...)``. Written out, as torch reduces a size-3
    last axis several times slower than it multiplies and adds."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def reflect(d: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mirror direction ``d - 2 (d.n) n``: ``(..., 3)``."""
    return d - 2.0 * dot(d, n).unsqueeze(-1) * n


def refract(d: torch.Tensor, n: torch.Tensor, eta: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Snell refraction with ``eta = n1 / n2`` (from the incident medium into the other).

    Returns the unit transmitted directions ``(..., 3)`` and a ``(...)`` bool mask of total internal
    reflection; where it is set the direction is the mirror direction instead.
    """
    eta = torch.as_tensor(eta, dtype=d.dtype, device=d.device)
    if eta.dim() > 0:
        eta = eta.unsqueeze(-1)
    cos_i = -dot(d, n).unsqueeze(-1)
    sin2_t = eta**2 * (1.0 - cos_i**2)
    tir = (sin2_t > 1.0).squeeze(-1)
    cos_t = (1.0 - sin2_t).clamp_min(0.0).sqrt()
    t = eta * d + (eta * cos_i - cos_t) * n
    t = torch.where(tir.unsqueeze(-1), reflect(d, n), t)
    return t / dot(t, t).sqrt().unsqueeze(-1), tir


def schlick(cos_i: torch.Tensor, n1: torch.Tensor | float, n2: torch.Tensor | float) -> torch.Tensor:
    """Schlick's approximation of the Fresnel reflectance for a ray going from index ``n1`` into ``n2``.

    ``cos_i`` is the cosine of the incident angle ``(...)``. When ``n1 > n2`` the transmitted angle's
    cosine is used (the symmetric form), and beyond the critical angle the reflectance is 1.
    """
    n1 = torch.as_tensor(n1, dtype=cos_i.dtype, device=cos_i.device)
    n2 = torch.as_tensor(n2, dtype=cos_i.dtype, device=cos_i.device)
    r0 = ((n1 - n2) / (n1 + n2)) ** 2
    sin2_t = (n1 / n2) ** 2 * (1.0 - cos_i**2)
    cos = torch.where(n1 > n2, (1.0 - sin2_t).clamp_min(0.0).sqrt(), cos_i)
    f = r0 + (1.0 - r0) * (1.0 - cos.clamp(0.0, 1.0)) ** 5
    return torch.where(sin2_t > 1.0, torch.ones_like(f), f)
