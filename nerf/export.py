"""Mesh export: marching cubes on a density field, atomic mesh files, the Chamfer distance between meshes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes
from skimage.measure import marching_cubes
from tqdm import tqdm

from raytrace.atomic import atomic_path

if TYPE_CHECKING:  # open3d is imported where meshes are made, written or measured, so nerf runs without it
    import open3d as o3d


@torch.no_grad()
def sample_density_grid(
    density_fn: Callable[[torch.Tensor], torch.Tensor],
    aabb: torch.Tensor,
    resolution: int,
    chunk: int = 65536,
) -> np.ndarray:
    """Density at the ``resolution``^3 vertices of a regular grid spanning ``aabb`` ``(2, 3)`` (corners
    included): ``(R, R, R)`` float32 indexed [x, y, z]. ``density_fn`` gets ``(n, 3)`` float32 points on
    ``aabb``'s device, at most ``chunk`` at a time, and returns ``(n,)``; NaN counts as 0."""
    lo, hi = aabb[0].float(), aabb[1].float()
    axis = torch.linspace(0.0, 1.0, resolution, device=aabb.device)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    out = torch.empty(grid.shape[0], dtype=torch.float32)
    starts = range(0, grid.shape[0], chunk)
    for s in tqdm(starts, desc="density grid", unit="chunk", leave=False, disable=len(starts) < 16):
        pts = lo + grid[s : s + chunk] * (hi - lo)
        out[s : s + chunk] = torch.nan_to_num(density_fn(pts).reshape(-1).float(), nan=0.0).cpu()
    return out.reshape(resolution, resolution, resolution).numpy()


def extract_mesh(
    density_fn: Callable[[torch.Tensor], torch.Tensor],
    aabb: torch.Tensor,
    resolution: int = 128,
    threshold: float = 10.0,
    chunk: int = 65536,
    fill_cavities: bool = True,
) -> o3d.geometry.TriangleMesh:
    """The ``threshold`` iso-surface of the density inside ``aabb`` ``(2, 3)`` in world coordinates.

    Density is sampled at the vertices of a ``resolution``^3 grid (see :func:`sample_density_grid`; cell size
    ``(max - min) / (resolution - 1)``) and meshed with ``skimage.measure.marching_cubes``; normals point
    towards lower density. Surfaces cut by the box are left open. Where the density never crosses
    ``threshold`` (no surface), raises ``ValueError`` stating the density range found.
    With ``fill_cavities``, empty regions enclosed by the surface count as solid: a NeRF's density inside an
    opaque object is unconstrained (never seen), and meshing it would add interior surfaces.
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    volume = sample_density_grid(density_fn, aabb, resolution, chunk)
    low, high = float(volume.min()), float(volume.max())
    if not low < threshold < high:
        raise ValueError(
            f"no surface: the density in the box ranges over [{low:.4g}, {high:.4g}], "
            f"never crossing the threshold {threshold:g}"
        )
    if fill_cavities:
        solid = volume > threshold
        volume[binary_fill_holes(solid) & ~solid] = high
    lo, hi = (aabb.detach().cpu().double().numpy()[i] for i in (0, 1))
    spacing = tuple((hi - lo) / (resolution - 1))
    verts, faces, _, _ = marching_cubes(
        volume, level=threshold, spacing=spacing, gradient_direction="descent"
    )
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh()
    mesh.vertices = o3d.utility.Vector3dVector(verts.astype(np.float64) + lo)
    # skimage winds faces clockwise seen from the low side; open3d wants counter-clockwise: reverse them.
    mesh.triangles = o3d.utility.Vector3iVector(np.ascontiguousarray(faces[:, ::-1], dtype=np.int32))
    mesh.compute_vertex_normals()
    return mesh


def write_mesh(path: str | Path, mesh: o3d.geometry.TriangleMesh) -> None:
    """Write ``mesh`` atomically; the format follows the suffix (``.ply`` for PLY). Raises ``OSError`` when
    open3d cannot write it (unknown suffix, empty mesh), leaving any existing file as it was."""
    import open3d as o3d

    with atomic_path(path) as tmp:
        if not o3d.io.write_triangle_mesh(str(tmp), mesh):
            raise OSError(f"{path}: open3d could not write the mesh")


def chamfer_distance(
    a: o3d.geometry.TriangleMesh, b: o3d.geometry.TriangleMesh, n_points: int = 20000, seed: int = 0
) -> float:
    """Symmetric Chamfer distance (same units as the meshes, not squared).

    ``n_points`` points are sampled uniformly by area on each surface; the result is
    ``0.5 * (mean_p∈A min_q∈B |p - q| + mean_q∈B min_p∈A |q - p|)``, the mean of the two directed mean
    nearest-neighbour distances. Deterministic for a given ``seed``.
    """
    for name, mesh in (("a", a), ("b", b)):
        if not mesh.has_triangles():
            raise ValueError(f"chamfer_distance: mesh {name} has no triangles")
    import open3d as o3d

    o3d.utility.random.seed(seed)
    pa = a.sample_points_uniformly(number_of_points=n_points)
    pb = b.sample_points_uniformly(number_of_points=n_points)
    d_ab = np.asarray(pa.compute_point_cloud_distance(pb))
    d_ba = np.asarray(pb.compute_point_cloud_distance(pa))
    return float(0.5 * (d_ab.mean() + d_ba.mean()))
