"""Scene contraction for unbounded scenes: mip-NeRF 360's, with the L-infinity norm (as nerfacto uses it).

Why this and not instant-ngp's cascades: one contraction maps all of space, out to infinity, into one cube, so the
one hash grid and the one occupancy grid we already have (one table layout shared by every backend, one mask the
native marcher reads) cover the far world unchanged; cascades would need a table and a mask per cascade and every
backend to know them. The L-infinity norm keeps the inner box a box (its cells stay axis-aligned, as the scene's
box is) and maps it to the middle half of the unit cube with no distortion; outside, resolution falls off with the
distance (disparity), as the views see it. The price, that detail near a camera far outside the box is coarse, is
mip-NeRF 360's own.

With ``u = 2 (x - lo) / (hi - lo) - 1`` (the box is ``[-1, 1]^3``) and ``n = max |u_i|``:
``contract(u) = u`` for ``n <= 1``, else ``(2 - 1 / n) u / n``, in ``[-2, 2]^3``; the unit coordinate the hash
grid and the occupancy grid read is ``contract(u) / 4 + 1 / 2``. Marching outside the box steps ``n**2`` times
the inner step, so the samples are spaced evenly in disparity (``1 / n``). The native kernels
(``nerf/csrc/marching_math.h``) compute the same functions, operation for operation.
"""

from __future__ import annotations

import torch

FAR_NORM = 1024.0
"""Rays of a contracted scene are marched until ``n`` reaches this (the unit coordinate is then within 1/4096 of
the cube's face): "infinity", where the sky is learned as far density."""

MAX_UNIT = 1.0 - 1.0 / (4.0 * FAR_NORM)
"""Unit coordinates are clamped below this before :func:`uncontract` (the cube's face is infinitely far)."""


def box_coords(x: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """World points ``(N, 3)`` -> ``u`` ``(N, 3)``: ``[-1, 1]`` inside ``aabb`` ``(2, 3)``."""
    return (x - aabb[0]) / (aabb[1] - aabb[0]) * 2.0 - 1.0


def box_norm(x: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """``n = max |u_i|`` ``(N,)`` of world points ``(N, 3)``: 1 on the box's faces."""
    return box_coords(x, aabb).abs().amax(dim=-1)


def contract(u: torch.Tensor) -> torch.Tensor:
    """``u`` ``(N, 3)`` (box coordinates) -> ``[-2, 2]^3`` ``(N, 3)``; the identity inside the box."""
    n = u.abs().amax(dim=-1, keepdim=True)
    return torch.where(n <= 1.0, u, (2.0 - 1.0 / n) * (u / n))


def unit_coords(x: torch.Tensor, aabb: torch.Tensor, contracted: bool) -> torch.Tensor:
    """World points ``(N, 3)`` -> the grids' coordinates ``(N, 3)``, ``[0, 1]`` where the grids are: the box
    itself when not ``contracted``, else all of space (the box is ``[1/4, 3/4]^3``)."""
    if not contracted:
        return (x - aabb[0]) / (aabb[1] - aabb[0])
    return contract(box_coords(x, aabb)) * 0.25 + 0.5


def uncontract(unit: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`unit_coords` (contracted): unit coordinates ``(N, 3)`` -> world points ``(N, 3)``
    (coordinates are clamped to :data:`MAX_UNIT` from the centre, the rest of the cube is at infinity)."""
    c = ((unit.clamp(1.0 - MAX_UNIT, MAX_UNIT) - 0.5) * 4.0)
    m = c.abs().amax(dim=-1, keepdim=True)
    u = torch.where(m <= 1.0, c, c / m / (2.0 - m))
    return aabb[0] + (u + 1.0) * 0.5 * (aabb[1] - aabb[0])


def far_box(aabb: torch.Tensor) -> torch.Tensor:
    """``aabb`` ``(2, 3)`` scaled by :data:`FAR_NORM` about its centre: where contracted rays end."""
    centre = 0.5 * (aabb[0] + aabb[1])
    return centre + (aabb - centre) * FAR_NORM
