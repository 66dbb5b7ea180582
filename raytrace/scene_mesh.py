"""A scene's true surfaces as one triangle mesh (for comparing reconstructed geometry with the truth)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from raytrace.geometry import Box, Plane, Sphere
from raytrace.meshes import MeshData
from raytrace.scene import Scene

if TYPE_CHECKING:
    import open3d as o3d


def _o3d(vertices: np.ndarray, triangles: np.ndarray) -> o3d.geometry.TriangleMesh:
    import open3d as o3d

    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(triangles))


def _placed(mesh: o3d.geometry.TriangleMesh, matrix: np.ndarray) -> o3d.geometry.TriangleMesh:
    mesh.transform(matrix)
    return mesh


def _plane_in_bounds(plane: Plane, matrix: np.ndarray, bounds: np.ndarray) -> o3d.geometry.TriangleMesh:
    """The part of an infinite plane inside ``bounds``: a large square clipped to the box by open3d."""
    import open3d as o3d

    point = matrix[:3, :3] @ np.asarray(plane.point) + matrix[:3, 3]
    normal = np.linalg.inv(matrix[:3, :3]).T @ np.asarray(plane.normal)
    normal /= np.linalg.norm(normal)
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    size = float(np.linalg.norm(bounds[1] - bounds[0]))
    n = 64  # subdivisions, so that cropping to the box leaves a faithful piece
    a = np.linspace(-size, size, n + 1)
    grid = point + a[:, None, None] * u + a[None, :, None] * v
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    mesh = _o3d(grid.reshape(-1, 3), tris)
    return mesh.crop(o3d.geometry.AxisAlignedBoundingBox(bounds[0], bounds[1]))


def scene_mesh(scene: Scene, sphere_resolution: int = 48) -> o3d.geometry.TriangleMesh:
    """Every object's surface inside the scene bounds, in world space, as one mesh.

    Spheres and boxes are tessellated, meshes are taken as placed, infinite planes are cut to ``scene.bounds``.
    """
    import open3d as o3d

    out = o3d.geometry.TriangleMesh()
    for obj in scene.objects:
        shape = obj.shape
        if isinstance(shape, Sphere):
            mesh = o3d.geometry.TriangleMesh.create_sphere(shape.radius, sphere_resolution)
            mesh.translate(np.asarray(shape.center))
            mesh = _placed(mesh, obj.matrix)
        elif isinstance(shape, Box):
            lo, hi = (np.asarray(c, dtype=np.float64) for c in (shape.lo, shape.hi))
            mesh = o3d.geometry.TriangleMesh.create_box(*(hi - lo))
            mesh.translate(lo)
            mesh = _placed(mesh, obj.matrix)
        elif isinstance(shape, Plane):
            mesh = _plane_in_bounds(shape, obj.matrix, scene.bounds)
        elif isinstance(shape, MeshData):
            mesh = _o3d(shape.vertices, shape.triangles)
        else:
            raise TypeError(f"unknown shape {type(shape).__name__}")
        out += mesh
    return out
