"""Triangle meshes: loading (files and open3d's procedural shapes) and ray casting with open3d's Embree
``RaycastingScene`` (CPU; results are moved to the caller's torch device). open3d is imported where it is used,
so that scenes without meshes (and the trainer) load without it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from raytrace.geometry import Box, Quad
from raytrace.optics import dot

if TYPE_CHECKING:
    import open3d as o3d

# open3d's procedural meshes: TriangleMesh.create_<name>; parameters are validated against its signature.
PROCEDURAL_SHAPES = (
    "arrow",
    "box",
    "cone",
    "cylinder",
    "ellipsoid",
    "icosahedron",
    "mobius",
    "octahedron",
    "sphere",
    "tetrahedron",
    "torus",
)
# Shapes shaded smoothly (interpolated vertex normals) unless the object says `smooth = false`.
SMOOTH_SHAPES = ("ellipsoid", "mobius", "sphere", "torus")


@dataclass(eq=False)
class MeshData:
    """A triangle mesh already placed in the world."""

    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (T, 3) int64
    vertex_normals: np.ndarray | None  # (V, 3) unit normals for smooth shading, or None for flat shading
    triangle_uvs: np.ndarray | None  # (T, 3, 2) texture coordinates of each triangle's corners, or None

    def aabb(self) -> np.ndarray:
        """World bounding box ``(2, 3)``."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])


_UNIT_SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def _quads_mesh(corners: np.ndarray, uvs: np.ndarray) -> MeshData:
    """Flat mesh of quads ``corners`` ``(Q, 4, 3)`` (counter-clockwise seen from their front) with corner
    texture coordinates ``uvs`` ``(Q, 4, 2)``: two triangles each, normals facing the front."""
    q = len(corners)
    idx = np.arange(4 * q).reshape(q, 4)
    tris = np.concatenate([idx[:, [0, 1, 2]], idx[:, [0, 2, 3]]], axis=1).reshape(-1, 3)
    tri_uvs = np.concatenate([uvs[:, [0, 1, 2]], uvs[:, [0, 2, 3]]], axis=1).reshape(-1, 3, 2)
    return MeshData(corners.reshape(-1, 3), tris.astype(np.int64), None, tri_uvs)


def box_mesh(box: Box, matrix: np.ndarray) -> MeshData:
    """The box's six faces as 12 world-space triangles with outward normals and the analytic box's texture
    coordinates (face of axis ``a``: ``u``, ``v`` the relative positions along axes ``a + 1``, ``a + 2``), which
    are linear on each face, so that barycentric interpolation reproduces them exactly."""
    lo, hi = np.asarray(box.lo, dtype=np.float64), np.asarray(box.hi, dtype=np.float64)
    corners, uvs = [], []
    for a in range(3):
        i, j = (a + 1) % 3, (a + 2) % 3
        for side, uv in ((hi, _UNIT_SQUARE), (lo, _UNIT_SQUARE[::-1])):  # e_i x e_j = +e_a: reversed on lo
            p = np.empty((4, 3))
            p[:, a] = side[a]
            p[:, i] = lo[i] + uv[:, 0] * (hi[i] - lo[i])
            p[:, j] = lo[j] + uv[:, 1] * (hi[j] - lo[j])
            corners.append(p)
            uvs.append(uv)
    local = np.stack(corners)  # scene transforms have positive scales: they keep the winding
    return _quads_mesh(local @ matrix[:3, :3].T + matrix[:3, 3], np.stack(uvs))


def quad_mesh(quad: Quad) -> MeshData:
    """The parallelogram as two triangles, normal ``edge1 x edge2``, texture coordinates ``(a, b)``."""
    c, e1, e2 = (np.asarray(v, dtype=np.float64) for v in (quad.corner, quad.edge1, quad.edge2))
    return _quads_mesh(np.stack([c, c + e1, c + e1 + e2, c + e2])[None], _UNIT_SQUARE[None])


def procedural_parameters(shape: str) -> dict[str, type]:
    """Parameter names of ``TriangleMesh.create_<shape>`` and their types (float, int or bool)."""
    import open3d as o3d

    doc = getattr(o3d.geometry.TriangleMesh, f"create_{shape}").__doc__.split("\n")[0]
    params = doc[doc.index("(") + 1 : doc.index(") ->")]
    out: dict[str, type] = {}
    for part in params.split(", "):
        name, _, annotation = part.partition(": ")
        annotation = annotation.lower()  # "typing.SupportsFloat" (newer pybind11) or "float"
        kind = next((k for k in (bool, float, int) if k.__name__ in annotation), None)
        if kind is not None and name != "create_uv_map":
            out[name] = kind
    return out


def procedural_mesh(shape: str, params: dict[str, float | int | bool]) -> o3d.geometry.TriangleMesh:
    """``TriangleMesh.create_<shape>(**params)``, with a UV map where open3d can make one."""
    import open3d as o3d

    create = getattr(o3d.geometry.TriangleMesh, f"create_{shape}")
    if "create_uv_map" in (create.__doc__ or "").split("\n")[0]:
        params = {**params, "create_uv_map": True}
    return create(**params)


def read_mesh_file(path: Path) -> o3d.geometry.TriangleMesh:
    """A ``.ply`` / ``.obj`` (or any format open3d reads) triangle mesh."""
    import open3d as o3d

    return o3d.io.read_triangle_mesh(str(path))


def place_mesh(mesh: o3d.geometry.TriangleMesh, matrix: np.ndarray, smooth: bool) -> MeshData:
    """``mesh`` moved into world space by ``matrix`` (4, 4); vertex normals kept (or made) if ``smooth``."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    tri = np.asarray(mesh.triangles, dtype=np.int64)
    normals = None
    if smooth:
        if not mesh.has_vertex_normals():
            mesh.compute_vertex_normals()
        n = np.asarray(mesh.vertex_normals, dtype=np.float64) @ np.linalg.inv(matrix[:3, :3])
        normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    uvs = np.asarray(mesh.triangle_uvs, dtype=np.float64)
    uvs = uvs.reshape(-1, 3, 2) if len(uvs) == 3 * len(tri) and len(tri) else None
    return MeshData(v @ matrix[:3, :3].T + matrix[:3, 3], tri, normals, uvs)


class MeshSet:
    """All mesh objects of a scene in one Embree scene; hits map back to object indices."""

    def __init__(self, meshes: list[tuple[int, MeshData]]) -> None:
        """``meshes``: at least one ``(object index, mesh)``."""
        import open3d as o3d

        self.scene = o3d.t.geometry.RaycastingScene()
        objects, counts, corner_normals, corner_uvs, face_normals = [], [], [], [], []
        for obj, mesh in meshes:
            gid = self.scene.add_triangles(
                o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                o3d.core.Tensor(mesh.triangles.astype(np.uint32)),
            )
            assert gid == len(objects), "open3d numbers geometries consecutively"
            objects.append(obj)
            corners = mesh.vertices[mesh.triangles]  # (T, 3, 3)
            fn = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
            fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-30)
            face_normals.append(fn)
            if mesh.vertex_normals is not None:
                corner_normals.append(mesh.vertex_normals[mesh.triangles])
            else:
                corner_normals.append(np.repeat(fn[:, None], 3, axis=1))
            uv = mesh.triangle_uvs
            corner_uvs.append(uv if uv is not None else np.zeros((len(mesh.triangles), 3, 2)))
            counts.append(len(mesh.triangles))
        self.objects = torch.tensor(objects, dtype=torch.long)
        self.tri_offset = torch.tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=torch.long)
        self.face_normals, self.corner_normals, self.corner_uvs = (
            torch.from_numpy(np.concatenate(parts)).float() for parts in (face_normals, corner_normals, corner_uvs)
        )

    @staticmethod
    def _rays(o: torch.Tensor, d: torch.Tensor) -> o3d.core.Tensor:
        import open3d as o3d

        rays = torch.cat([o, d], -1).detach().to("cpu", torch.float32).contiguous().numpy()
        return o3d.core.Tensor(rays)

    def cast(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        """Closest hits of rays ``(N, 3)``: ``t`` (N,) (inf on a miss), ``obj`` (N,) long (-1 on a miss),
        ``ng`` face normals, ``ns`` interpolated shading normals on ``ng``'s side (N, 3), ``uv`` (N, 2) (0 on a
        miss), on ``o``'s device."""
        r = self.scene.cast_rays(self._rays(o, d), nthreads=torch.get_num_threads())
        t = torch.from_numpy(r["t_hit"].numpy())
        idx = torch.isfinite(t).nonzero().squeeze(-1)
        gid = torch.from_numpy(r["geometry_ids"].numpy())[idx].long()
        tri = self.tri_offset.index_select(0, gid) + torch.from_numpy(r["primitive_ids"].numpy())[idx].long()
        bary = torch.from_numpy(r["primitive_uvs"].numpy()).index_select(0, idx)
        w1, w2 = bary[:, :1], bary[:, 1:]
        w0 = 1.0 - (w1 + w2)

        def interpolate(corners: torch.Tensor) -> torch.Tensor:
            c = corners.index_select(0, tri)
            return c[:, 0] * w0 + c[:, 1] * w1 + c[:, 2] * w2

        ng = self.face_normals.index_select(0, tri)
        ns = interpolate(self.corner_normals)
        ns = ns / dot(ns, ns).sqrt().clamp_min(1e-12).unsqueeze(-1)
        ns = torch.where((dot(ns, ng) < 0).unsqueeze(-1), -ns, ns)
        n = t.shape[0]
        out = {
            "t": t,
            "obj": torch.full((n,), -1, dtype=torch.long).index_copy_(0, idx, self.objects.index_select(0, gid)),
            "ng": torch.zeros(n, 3).index_copy_(0, idx, ng),
            "ns": torch.zeros(n, 3).index_copy_(0, idx, ns),
            "uv": torch.zeros(n, 2).index_copy_(0, idx, interpolate(self.corner_uvs)),
        }
        return {k: v.to(o.device) for k, v in out.items()}

    def occluded(self, o: torch.Tensor, d: torch.Tensor, t_max: torch.Tensor) -> torch.Tensor:
        """Whether anything lies on each ray between ``T_MIN`` and ``t_max`` (N,): bool on ``o``'s device."""
        scaled = d * t_max.clamp_max(1e6).unsqueeze(-1)  # test_occlusions takes one tfar: measure in t_max
        rays = self._rays(o, scaled)
        hit = self.scene.test_occlusions(rays, tnear=0.0, tfar=1.0, nthreads=torch.get_num_threads())
        return torch.from_numpy(hit.numpy()).to(o.device)
