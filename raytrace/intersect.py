"""A scene's geometry on one torch device: closest hits and shadow (occlusion) queries over ray batches."""

from __future__ import annotations

import importlib.util
import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from raytrace import native
from raytrace.geometry import AnalyticPrimitive, Box, Plane, Quad, Sphere
from raytrace.lights import AreaLight, light_table
from raytrace.materials import Material
from raytrace.meshes import MeshData, MeshSet, box_mesh, quad_mesh
from raytrace.scene import Scene

PRIM_ROW = 29  # floats per primitive in primitive_table
OCCLUSION_CHUNK = 1 << 15
OFFSET_SCALE = 1e-4  # secondary rays start this fraction of the scene's bounds diagonal off the surface


@dataclass
class Hits:
    """Closest hits of ``N`` rays. On a miss ``t`` is inf, ``obj`` is -1 and the rest is 0."""

    t: torch.Tensor  # (N,) distance along the ray (metric for unit directions)
    obj: torch.Tensor  # (N,) long, index into SceneGeometry.materials / objects
    ng: torch.Tensor  # (N, 3) geometric normal: outward for closed shapes, front side for planes
    ns: torch.Tensor  # (N, 3) shading normal (interpolated on smooth meshes), on ng's side
    uv: torch.Tensor  # (N, 2) texture coordinates

    @classmethod
    def misses(cls, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Hits:
        """``n`` rays that hit nothing."""
        return cls(torch.full((n,), math.inf, device=device, dtype=dtype),
                   torch.full((n,), -1, dtype=torch.long, device=device),
                   torch.zeros(n, 3, device=device, dtype=dtype), torch.zeros(n, 3, device=device, dtype=dtype),
                   torch.zeros(n, 2, device=device, dtype=dtype))


def primitive_table(analytic: list[tuple[int, AnalyticPrimitive]]) -> torch.Tensor | None:
    """Spheres and planes as ``(P, PRIM_ROW)`` float32 rows for the native kernels (``None`` if another shape is
    among them): type (0 sphere, 1 plane), object index, whether it rotates, the inverse rotation (9, row-major)
    and shift (3), the centre or point (3), the radius, the normal (3), the plane's tangents (3 each), radius^2."""
    if not all(isinstance(prim.shape, Sphere | Plane) for _, prim in analytic):
        return None
    rows = torch.zeros(len(analytic), PRIM_ROW)
    for row, (i, prim) in zip(rows, analytic, strict=True):
        row[1], row[2], row[3:12], row[12:15] = i, prim.rotates, prim.inv_rot.flatten().cpu(), prim.inv_shift.cpu()
        if isinstance(prim.shape, Sphere):
            row[15:18], row[18], row[28] = prim.center.cpu(), prim.shape.radius, prim.shape.radius ** 2
        else:
            row[0], row[15:18], row[19:22] = 1, prim.point.cpu(), prim.normal.cpu()
            row[22:25], row[25:28] = prim.tangents[0].cpu(), prim.tangents[1].cpu()
    return rows


def embree_available() -> bool:
    """Whether open3d (and its Embree ray casting) can be imported (a finder that refuses it counts as absent)."""
    try:
        return importlib.util.find_spec("open3d") is not None
    except ImportError:
        return False


class SceneGeometry:
    """All the scene's surfaces (its objects, then one parallelogram per visible area light) on ``device``.

    Boxes and parallelograms are flat, so with ``embree`` (default: where open3d is installed) they join the
    triangle meshes in one Embree scene as exact triangles; spheres and infinite planes stay analytic."""

    def __init__(self, scene: Scene, device: torch.device, embree: bool | None = None) -> None:
        embree = embree_available() if embree is None else embree
        self.device = device
        self.materials: list[Material] = [scene.materials[o.material] for o in scene.objects]
        matrices = [o.matrix for o in scene.objects]
        self.analytic: list[tuple[int, AnalyticPrimitive]] = []
        meshes: list[tuple[int, MeshData]] = []
        for i, obj in enumerate(scene.objects):
            if isinstance(obj.shape, MeshData):
                meshes.append((i, obj.shape))
            elif embree and isinstance(obj.shape, Box):
                meshes.append((i, box_mesh(obj.shape, obj.matrix)))
            else:
                self.analytic.append((i, AnalyticPrimitive(obj.shape, obj.matrix, device)))
        for light in scene.lights:
            if isinstance(light, AreaLight) and light.visible:
                emitter = Material(f"light {light.name}", "emissive", color=light.radiance)
                quad = Quad(light.corner, light.edge1, light.edge2)
                if embree:
                    meshes.append((len(self.materials), quad_mesh(quad)))
                else:
                    self.analytic.append((len(self.materials), AnalyticPrimitive(quad, np.eye(4), device)))
                self.materials.append(emitter)
                matrices.append(np.eye(4))
        self.meshes = MeshSet(meshes) if meshes else None
        inv = np.linalg.inv(np.stack(matrices)) if matrices else np.zeros((0, 4, 4))
        self.inv_rot = torch.as_tensor(inv[:, :3, :3], dtype=torch.float32, device=device)
        self.inv_shift = torch.as_tensor(inv[:, :3, 3], dtype=torch.float32, device=device)
        self.prims = primitive_table(self.analytic) if self.analytic else None  # for the native kernels
        self.lights = light_table(scene.lights, device)  # (L, LIGHT_ROW) for the native shading kernel
        self.eps = max(OFFSET_SCALE * float(np.linalg.norm(scene.bounds[1] - scene.bounds[0])), 1e-6)

    def to_local(self, p: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """World points ``(N, 3)`` in the local frames of objects ``obj`` (N,)."""
        return (self.inv_rot[obj] @ p.unsqueeze(-1)).squeeze(-1) + self.inv_shift[obj]

    def intersect(self, o: torch.Tensor, d: torch.Tensor) -> Hits:
        """Closest hits of rays with origins ``o`` and directions ``d`` ``(N, 3)``."""
        if self.prims is not None and native.available(o.device):
            return self._intersect_native(o, d)
        miss = Hits.misses(o.shape[0], o.device)
        t, obj = miss.t, miss.obj
        for i, prim in self.analytic:
            ti = prim.hit(o, d)
            closer = ti < t
            t, obj = torch.where(closer, ti, t), torch.where(closer, i, obj)
        ng, ns, uv = miss.ng.to(o.dtype), miss.ns.to(o.dtype), miss.uv
        if self.meshes is not None and not self.analytic:
            m = self.meshes.cast(o, d)
            t, obj, ng, ns, uv = m["t"], m["obj"], m["ng"], m["ns"], m["uv"]
        elif self.meshes is not None:
            m = self.meshes.cast(o, d)
            closer = m["t"] < t
            t, obj = torch.where(closer, m["t"], t), torch.where(closer, m["obj"], obj)
            c = closer.unsqueeze(-1)
            ng, ns, uv = torch.where(c, m["ng"], ng), torch.where(c, m["ns"], ns), torch.where(c, m["uv"], uv)
        for i, prim in self.analytic:
            sel = (obj == i).nonzero().squeeze(-1)
            if sel.numel():
                normal, tex = prim.surface(o[sel] + t[sel].unsqueeze(-1) * d[sel])
                ng[sel], ns[sel], uv[sel] = normal, normal, tex
        return Hits(t, obj, ng, ns, uv)

    def _intersect_native(self, o: torch.Tensor, d: torch.Tensor) -> Hits:
        """``intersect`` with the analytic shapes in one native pass (``rt_analytic_hit``) over Embree's hits."""
        hits = Hits.misses(o.shape[0]) if self.meshes is None else Hits(**self.meshes.cast(o, d))
        torch.ops.raytrace_native.analytic_hit(o, d, self.prims, hits.t, hits.obj, hits.ng, hits.ns, hits.uv)
        return hits

    def occluded(self, o: torch.Tensor, d: torch.Tensor, t_max: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: whether any surface lies on the ray strictly before ``t_max`` (N,)."""
        if self.prims is not None and native.available(o.device):
            blocked = torch.ops.raytrace_native.analytic_occluded(o, d, t_max, self.prims)
        else:
            blocked = self._occluded_analytic(o, d, t_max)
        if self.meshes is not None:
            blocked |= self.meshes.occluded(o, d, t_max)
        return blocked

    def _occluded_analytic(self, o: torch.Tensor, d: torch.Tensor, t_max: torch.Tensor) -> torch.Tensor:
        blocked = torch.zeros(o.shape[0], dtype=torch.bool, device=o.device)
        for start in range(0, o.shape[0], OCCLUSION_CHUNK):  # chunks small enough to stay in cache
            sl = slice(start, start + OCCLUSION_CHUNK)
            for _, prim in self.analytic:
                blocked[sl] |= prim.hit(o[sl], d[sl]) < t_max[sl]
        return blocked


_CACHE: weakref.WeakKeyDictionary[Scene, dict[str, SceneGeometry]] = weakref.WeakKeyDictionary()


def scene_geometry(scene: Scene, device: torch.device) -> SceneGeometry:
    """The (cached) geometry of ``scene`` on ``device``."""
    per_device = _CACHE.setdefault(scene, {})
    key = str(device)
    if key not in per_device:
        per_device[key] = SceneGeometry(scene, device)
    return per_device[key]
