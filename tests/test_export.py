from pathlib import Path

import numpy as np
import pytest
import torch

from nerf.export import chamfer_distance, extract_mesh, write_mesh

o3d = pytest.importorskip("open3d")

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RES = 48
CELL = 2.0 / (RES - 1)
CENTRE = torch.tensor([0.1, -0.05, 0.0])


def sphere_density(x: torch.Tensor) -> torch.Tensor:
    """100 inside radius 0.5 around CENTRE, 0 outside."""
    return torch.where((x - CENTRE).norm(dim=-1) < 0.5, 100.0, 0.0)


@pytest.fixture(scope="module")
def sphere_mesh() -> o3d.geometry.TriangleMesh:
    return extract_mesh(sphere_density, AABB, resolution=RES, threshold=10.0, chunk=10000)


def _reference(radius: float) -> o3d.geometry.TriangleMesh:
    return o3d.geometry.TriangleMesh.create_sphere(radius, resolution=60).translate(CENTRE.double().numpy())


def test_sphere_mesh_vertices_lie_on_the_sphere(sphere_mesh: o3d.geometry.TriangleMesh) -> None:
    v = np.asarray(sphere_mesh.vertices)
    assert len(v) > 1000 and len(sphere_mesh.triangles) > 1000
    r = np.linalg.norm(v - CENTRE.numpy(), axis=1)
    assert np.abs(r - 0.5).max() < CELL
    assert sphere_mesh.is_edge_manifold(allow_boundary_edges=False) and sphere_mesh.is_vertex_manifold()
    # Normals point outwards (away from the dense inside).
    n = np.asarray(sphere_mesh.vertex_normals)
    assert (np.sum(n * (v - CENTRE.numpy()), axis=1) > 0).mean() > 0.99


def test_chamfer_distance_to_analytic_spheres(sphere_mesh: o3d.geometry.TriangleMesh) -> None:
    assert chamfer_distance(sphere_mesh, _reference(0.5), n_points=5000) < CELL
    assert chamfer_distance(sphere_mesh, _reference(0.7), n_points=5000) == pytest.approx(0.2, abs=0.02)
    # Two samplings of one surface: only the sampling floor, about half the point spacing sqrt(area / n).
    assert chamfer_distance(_reference(0.5), _reference(0.5), n_points=5000) < 0.6 * np.sqrt(np.pi / 5000)
    a = chamfer_distance(sphere_mesh, _reference(0.7), n_points=2000, seed=3)
    assert a == chamfer_distance(sphere_mesh, _reference(0.7), n_points=2000, seed=3)  # seeded


def test_chamfer_distance_is_symmetric() -> None:
    # B is A plus a small far sphere: A -> B is only the sampling floor, B -> A is large; the mean of both is
    # the same either way round.
    a = _reference(0.5)
    b = _reference(0.5) + o3d.geometry.TriangleMesh.create_sphere(0.1).translate([2.0, 0.0, 0.0])
    ab, ba = chamfer_distance(a, b, n_points=5000), chamfer_distance(b, a, n_points=5000)
    assert ab == pytest.approx(ba, rel=0.2)
    # Area share of the far sphere (0.01 / 0.26) times its distance to A (about 1.5), halved: about 0.029.
    assert 0.02 < ab < 0.045


def test_no_surface_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"density in the box ranges over \[0, 5\], never crossing the threshold 10"
    ):
        extract_mesh(lambda x: torch.full(x.shape[:1], 5.0) * (x[:, 0] > 0), AABB, resolution=8)
    with pytest.raises(ValueError, match="no triangles"):
        chamfer_distance(o3d.geometry.TriangleMesh(), _reference(0.5))


def test_write_mesh_round_trip_and_atomic(tmp_path: Path, sphere_mesh: o3d.geometry.TriangleMesh) -> None:
    path = tmp_path / "mesh.ply"
    write_mesh(path, sphere_mesh)
    back = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_allclose(np.asarray(back.vertices), np.asarray(sphere_mesh.vertices), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.triangles), np.asarray(sphere_mesh.triangles))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.ply"]
    with pytest.raises(OSError):
        write_mesh(tmp_path / "mesh.unknown_format", sphere_mesh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.ply"]


def test_enclosed_cavities_are_filled() -> None:
    """A hollow shell (dense for 0.3 < r < 0.5): the cavity's inner wall is meshed only when asked to."""

    def shell(x: torch.Tensor) -> torch.Tensor:
        r = x.norm(dim=-1)
        return ((r > 0.3) & (r < 0.5)).float() * 100.0

    aabb = torch.tensor([[-0.8] * 3, [0.8] * 3])
    filled = extract_mesh(shell, aabb, resolution=48)
    hollow = extract_mesh(shell, aabb, resolution=48, fill_cavities=False)
    r_filled = np.linalg.norm(np.asarray(filled.vertices), axis=1)
    r_hollow = np.linalg.norm(np.asarray(hollow.vertices), axis=1)
    assert r_filled.min() > 0.45  # only the outer wall
    assert (r_hollow < 0.35).mean() > 0.2  # the inner wall is there too
