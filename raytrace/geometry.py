"""Analytic shapes: ray intersection maths in batched torch, object transforms and bounding boxes.

Every intersection function takes ray origins ``o`` and directions ``d`` ``(N, 3)`` (``d`` need not be
unit length: ``t`` is in units of ``|d|``, so rays mapped into an object's local frame keep their world
``t``) and returns ``(N,)`` distances, ``inf`` where the ray misses or the hit is behind ``T_MIN``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from raytrace.optics import dot

T_MIN = 1e-5  # hits closer than this along the ray are ignored (rays leave surfaces from offset origins)
_TINY = 1e-30  # stands in for exactly zero direction components (finite reciprocal)


def ray_sphere(o: torch.Tensor, d: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor:
    """Nearest ``t > T_MIN`` where ``|o + t d - center| = radius``: ``(N,)``."""
    oc = o - center
    a = dot(d, d)
    b = dot(oc, d)
    c = dot(oc, oc) - radius * radius
    disc = b * b - a * c
    sq = disc.clamp_min(0.0).sqrt()
    t0, t1 = (-b - sq) / a, (-b + sq) / a
    t = torch.where(t0 > T_MIN, t0, t1)
    return torch.where((disc >= 0) & (t > T_MIN), t, math.inf)


def ray_plane(o: torch.Tensor, d: torch.Tensor, point: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """``t > T_MIN`` where the ray meets the plane through ``point`` with ``normal`` (3,): ``(N,)``."""
    denom = dot(d, normal)
    t = dot(point - o, normal) / torch.where(denom == 0, _TINY, denom)
    return torch.where((denom != 0) & (t > T_MIN), t, math.inf)


def ray_box(o: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Slab test against the axis-aligned box ``[lo, hi]``: entry distance, or exit distance from inside."""
    inv = torch.where(d == 0, _TINY, d).reciprocal()
    ta, tb = (lo - o) * inv, (hi - o) * inv
    t_near = torch.minimum(ta, tb).amax(-1)
    t_far = torch.maximum(ta, tb).amin(-1)
    t = torch.where(t_near > T_MIN, t_near, t_far)
    return torch.where((t_far >= t_near) & (t > T_MIN), t, math.inf)


def box_normal(p: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Outward normal ``(N, 3)`` of the face of box ``[lo, hi]`` nearest to each surface point ``p``."""
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    q = (p - centre) / half
    axis = q.abs().argmax(-1, keepdim=True)
    n = torch.zeros_like(p)
    return n.scatter_(-1, axis, torch.sign(q.gather(-1, axis)))


def quad_coordinates(q: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """``(a, b)`` ``(N, 2)`` with ``q = a e1 + b e2`` for points ``q`` (N, 3) in the plane of the edges."""
    n = torch.linalg.cross(e1, e2)
    n2 = (n * n).sum()
    a = dot(torch.linalg.cross(q, e2.expand_as(q)), n) / n2
    b = dot(torch.linalg.cross(e1.expand_as(q), q), n) / n2
    return torch.stack([a, b], -1)


def ray_quad(
    o: torch.Tensor, d: torch.Tensor, corner: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parallelogram ``corner + a e1 + b e2`` (a, b in [0, 1]): distances ``(N,)``, ``(a, b)`` ``(N, 2)``."""
    n = torch.linalg.cross(e1, e2)
    t = ray_plane(o, d, corner, n / n.norm())
    ab = quad_coordinates(o + torch.nan_to_num(t, posinf=0.0).unsqueeze(-1) * d - corner, e1, e2)
    inside = ((ab >= 0) & (ab <= 1)).all(-1)
    return torch.where(inside, t, math.inf), ab


def transform_matrix(
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotate: tuple[float, float, float] = (0.0, 0.0, 0.0),
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Object-to-world ``(4, 4)`` float64: scale, then rotate about x, y, z (degrees), then translate."""
    rx, ry, rz = (math.radians(a) for a in rotate)
    cx, sx, cy, sy, cz, sz = (
        math.cos(rx),
        math.sin(rx),
        math.cos(ry),
        math.sin(ry),
        math.cos(rz),
        math.sin(rz),
    )
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = r_z @ r_y @ r_x @ np.diag(scale)
    m[:3, 3] = translate
    return m


def transformed_aabb(lo: np.ndarray, hi: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """World axis-aligned box ``(2, 3)`` around the local box ``[lo, hi]`` mapped by ``matrix`` (4, 4)."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    world = corners @ matrix[:3, :3].T + matrix[:3, 3]
    return np.stack([world.min(0), world.max(0)])


@dataclass(frozen=True)
class Sphere:
    """A sphere in the object's local frame."""

    center: tuple[float, float, float]
    radius: float

    def local_aabb(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center, dtype=np.float64)
        return c - self.radius, c + self.radius


@dataclass(frozen=True)
class Plane:
    """An infinite plane through ``point`` with unit ``normal`` (its front side), in the local frame."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    """The box ``[lo, hi]`` in the local frame (axis-aligned in the world without a rotation)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def local_aabb(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)


@dataclass(frozen=True)
class Quad:
    """The parallelogram ``corner + a edge1 + b edge2`` in world space (area lights)."""

    corner: tuple[float, float, float]
    edge1: tuple[float, float, float]
    edge2: tuple[float, float, float]


def plane_tangents(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit tangents ``(3,)`` completing ``normal`` to a right-handed frame (x, y for normal +z)."""
    helper = torch.tensor([0.0, 1.0, 0.0] if abs(float(normal[1])) < 0.9 else [1.0, 0.0, 0.0]).to(normal)
    t1 = torch.linalg.cross(helper, normal)
    t1 = t1 / t1.norm()
    return t1, torch.linalg.cross(normal, t1)


class AnalyticPrimitive:
    """One analytic shape with its transform, as tensors on a device, for batched ray casting."""

    def __init__(self, shape: Sphere | Plane | Box | Quad, matrix: np.ndarray, device: torch.device) -> None:
        def f32(x: object) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32, device=device)

        inv = np.linalg.inv(matrix)
        self.shape = shape
        self.inv_rot, self.inv_shift = f32(inv[:3, :3]), f32(inv[:3, 3])
        self.rotates = not np.array_equal(inv[:3, :3], np.eye(3))
        if isinstance(shape, Sphere):
            self.center = f32(shape.center)
        elif isinstance(shape, Plane):
            self.point, self.normal = f32(shape.point), f32(shape.normal)
            self.tangents = plane_tangents(self.normal)
        elif isinstance(shape, Box):
            self.lo, self.hi = f32(shape.lo), f32(shape.hi)
        else:
            self.corner, self.e1, self.e2 = f32(shape.corner), f32(shape.edge1), f32(shape.edge2)
            n = torch.linalg.cross(self.e1, self.e2)
            self.normal = n / n.norm()

    def to_local(self, p: torch.Tensor) -> torch.Tensor:
        """World points ``(N, 3)`` to the local frame."""
        return (p @ self.inv_rot.T if self.rotates else p) + self.inv_shift

    def hit(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Distances ``(N,)`` along world rays (``inf`` on a miss)."""
        s = self.shape
        if isinstance(s, Quad):
            return ray_quad(o, d, self.corner, self.e1, self.e2)[0]
        ol, dl = self.to_local(o), (d @ self.inv_rot.T if self.rotates else d)
        if isinstance(s, Sphere):
            return ray_sphere(ol, dl, self.center, s.radius)
        if isinstance(s, Plane):
            return ray_plane(ol, dl, self.point, self.normal)
        return ray_box(ol, dl, self.lo, self.hi)

    def surface(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World unit outward normals ``(N, 3)`` and texture coordinates ``(N, 2)`` at world points ``p``."""
        s = self.shape
        if isinstance(s, Quad):
            return self.normal.expand_as(p), quad_coordinates(p - self.corner, self.e1, self.e2)
        pl = self.to_local(p)
        if isinstance(s, Sphere):
            nl = (pl - self.center) / s.radius
            u = 0.5 + torch.atan2(nl[:, 1], nl[:, 0]) / (2 * math.pi)
            v = 1.0 - torch.acos(nl[:, 2].clamp(-1, 1)) / math.pi
            uv = torch.stack([u, v], -1)
        elif isinstance(s, Plane):
            nl = self.normal.expand_as(pl)
            q = pl - self.point
            uv = torch.stack([dot(q, self.tangents[0]), dot(q, self.tangents[1])], -1)
        else:
            nl = box_normal(pl, self.lo, self.hi)
            rel = (pl - self.lo) / (self.hi - self.lo)
            axis = nl.abs().argmax(-1, keepdim=True)
            i = torch.remainder(axis + 1, 3)
            j = torch.remainder(axis + 2, 3)
            uv = torch.cat([rel.gather(-1, i), rel.gather(-1, j)], -1)
        n = nl @ self.inv_rot if self.rotates else nl
        return n / n.norm(dim=-1, keepdim=True), uv
