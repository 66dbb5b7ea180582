"""Regenerate the small assets that ``object.toml`` uses: ``meshes/blob.ply`` and ``textures/tiles.png``.

Run from anywhere: ``python datasets/scenes/make_assets.py``. The outputs are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import open3d as o3d

HERE = Path(__file__).resolve().parent


def blob() -> o3d.geometry.TriangleMesh:
    """A unit-ish sphere with smooth low-frequency bumps, with vertex normals."""
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=28)
    v = np.asarray(mesh.vertices)
    x, y, z = v.T
    bump = 1.0 + 0.12 * np.sin(3.0 * x + 1.0) * np.cos(2.0 * y) + 0.08 * np.sin(4.0 * z + 0.5 * x)
    mesh.vertices = o3d.utility.Vector3dVector(v * bump[:, None])
    mesh.compute_vertex_normals()
    return mesh


def tiles(size: int = 64) -> np.ndarray:
    """An 8-bit RGB image of soft 4 x 4 two-tone tiles with a darker grout line."""
    u = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(u, u)
    cell = (np.floor(uu * 4) + np.floor(vv * 4)) % 2
    fu, fv = (uu * 4) % 1.0, (vv * 4) % 1.0
    grout = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) < 0.06
    teal, cream, dark = np.array([40, 130, 140]), np.array([235, 215, 170]), np.array([60, 50, 45])
    img = np.where(cell[..., None] > 0.5, teal, cream)
    img = np.where(grout[..., None], dark, img)
    return img.astype(np.uint8)


def main() -> None:
    (HERE / "meshes").mkdir(exist_ok=True)
    (HERE / "textures").mkdir(exist_ok=True)
    o3d.io.write_triangle_mesh(str(HERE / "meshes" / "blob.ply"), blob(), write_ascii=False)
    iio.imwrite(HERE / "textures" / "tiles.png", tiles())


if __name__ == "__main__":
    main()
