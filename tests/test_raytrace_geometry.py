"""Ray hits of every primitive: distances and normals against analytic values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrace.geometry import box_normal, ray_box, ray_plane, ray_quad, ray_sphere, transform_matrix
from raytrace.intersect import SceneGeometry, scene_geometry
from tests.raytrace_scenes import make_scene


def _rays(o: list[list[float]], d: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    d_t = torch.tensor(d, dtype=torch.float32)
    return torch.tensor(o, dtype=torch.float32), d_t / d_t.norm(dim=-1, keepdim=True)


def test_ray_sphere_outside_inside_miss() -> None:
    o, d = _rays([[0, 0, 5], [0, 0, 0.5], [3, 0, 5], [0, 0, 5]], [[0, 0, -1], [0, 0, 1], [0, 0, -1], [0, 0, 1]])
    t = ray_sphere(o, d, torch.tensor([0.0, 0.0, 0.0]), 1.0)
    assert t[0].item() == pytest.approx(4.0) and t[1].item() == pytest.approx(0.5)
    assert math.isinf(t[2].item()) and math.isinf(t[3].item())  # misses; sphere behind the ray


def test_ray_sphere_oblique_matches_closed_form() -> None:
    o, d = _rays([[0.3, -4.0, 0.2]], [[0.0, 1.0, 0.0]])
    t = ray_sphere(o, d, torch.tensor([0.0, 0.0, 0.0]), 1.0).item()
    assert t == pytest.approx(4.0 - math.sqrt(1 - 0.3**2 - 0.2**2), abs=1e-5)


def test_ray_plane() -> None:
    o, d = _rays([[1, 2, 3], [1, 2, 3], [0, 0, 1]], [[0, 0, -1], [1, 0, -1], [1, 0, 0]])
    t = ray_plane(o, d, torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    assert t[0].item() == pytest.approx(3.0) and t[1].item() == pytest.approx(3 * math.sqrt(2))
    assert math.isinf(t[2].item())  # parallel


def test_ray_box_and_face_normals() -> None:
    lo, hi = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1.0, 2.0, 3.0])
    o, d = _rays(
        [[5, 0, 0], [0, -7, 0], [0, 0, 0], [5, 5, 0], [0.5, 1.0, 9.0]],
        [[-1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, 0, -1]],
    )
    t = ray_box(o, d, lo, hi)
    assert t[:3].tolist() == pytest.approx([4.0, 5.0, 3.0])  # the third starts inside: exit distance
    assert math.isinf(t[3].item())
    assert t[4].item() == pytest.approx(6.0)
    p = o + t.unsqueeze(-1).nan_to_num(posinf=0) * d
    n = box_normal(p[[0, 1, 2, 4]], lo, hi)
    assert n.tolist() == [[1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, 1]]


def test_ray_quad_inside_and_outside() -> None:
    corner, e1, e2 = (
        torch.tensor([0.0, 0.0, 2.0]),
        torch.tensor([2.0, 0.0, 0.0]),
        torch.tensor([0.0, 1.0, 0.0]),
    )
    o, d = _rays([[0.5, 0.25, 0.0], [2.5, 0.5, 0.0]], [[0, 0, 1], [0, 0, 1]])
    t, ab = ray_quad(o, d, corner, e1, e2)
    assert t[0].item() == pytest.approx(2.0) and ab[0].tolist() == pytest.approx([0.25, 0.25])
    assert math.isinf(t[1].item())


def test_transform_matrix_order() -> None:
    m = transform_matrix((1.0, 2.0, 3.0), (0.0, 0.0, 90.0), (2.0, 1.0, 1.0))
    # scale x by 2, then rotate +90 degrees about z (x -> y), then translate
    np.testing.assert_allclose(m @ [1, 0, 0, 1], [1, 4, 3, 1], atol=1e-12)
    m = transform_matrix(rotate=(90.0, 90.0, 0.0))  # x first: y -> z; then y: z -> x
    np.testing.assert_allclose(m @ [0, 1, 0, 1], [1, 0, 0, 1], atol=1e-12)


SCENE_OBJECTS = """
[render]
bounds = [[-3, -3, -3], [3, 3, 3]]
[materials.m]
type = "diffuse"
"""


def test_scene_sphere_and_plane_hits_with_normals(tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path,
        SCENE_OBJECTS
        + """
[[objects]]
type = "sphere"
center = [0.0, 0.0, 0.0]
radius = 0.5
scale = 2.0
translate = [0.0, 0.0, 1.0]
material = "m"
[[objects]]
type = "plane"
normal = [0.0, 0.0, 2.0]
material = "m"
""",
    )
    geo = scene_geometry(scene, torch.device("cpu"))
    o, d = _rays([[0, 0, 5], [5, 0, 1], [3, 0, 5]], [[0, 0, -1], [-1, 0, 0], [0, 0, -1]])
    hits = geo.intersect(o, d)
    assert hits.t.tolist() == pytest.approx([3.0, 4.0, 5.0], abs=1e-5)
    assert hits.obj.tolist() == [0, 0, 1]
    torch.testing.assert_close(hits.ng, torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 0, 1]]), atol=1e-5, rtol=0)


def test_transformed_box_hits(tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path,
        SCENE_OBJECTS
        + """
[[objects]]
name = "diamond"
type = "box"
min = [-1.0, -1.0, -1.0]
max = [1.0, 1.0, 1.0]
rotate = [0.0, 0.0, 45.0]
material = "m"
[[objects]]
name = "slab"
type = "box"
min = [-1.0, -1.0, 0.0]
max = [1.0, 1.0, 2.0]
scale = [2.0, 1.0, 1.0]
rotate = [0.0, 0.0, 90.0]
translate = [0.0, 0.0, 3.0]
material = "m"
""",
    )
    geo = scene_geometry(scene, torch.device("cpu"))
    o, d = _rays([[5, 0.5, 0], [0, 5, 4.5], [1.5, 0, 4.5]], [[-1, 0, 0], [0, -1, 0], [0, 0, 1]])
    hits = geo.intersect(o, d)
    # the rotated cube's face x + y = sqrt(2); the slab spans world |x| <= 1, |y| <= 2, 3 <= z <= 5
    assert hits.t.tolist() == pytest.approx([5.0 - (math.sqrt(2) - 0.5), 3.0, math.inf], abs=1e-5)
    assert hits.obj.tolist() == [0, 1, -1]
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(hits.ng[:2], torch.tensor([[s, s, 0.0], [0.0, 1.0, 0.0]]), atol=1e-5, rtol=0)


def test_open3d_box_mesh_hits_match_the_analytic_box(tmp_path: Path) -> None:
    pytest.importorskip("open3d")
    scene = make_scene(
        tmp_path,
        SCENE_OBJECTS
        + """
[[objects]]
type = "mesh"
shape = "box"
params = { width = 2.0, height = 1.0, depth = 0.5 }
translate = [-1.0, -0.5, -0.25]
material = "m"
""",
    )
    geo = scene_geometry(scene, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    o = torch.randn(256, 3, generator=g) * 3
    d = torch.nn.functional.normalize(torch.randn(256, 3, generator=g) * 0.3 - o, dim=-1)
    hits = geo.intersect(o, d)
    lo, hi = torch.tensor([-1.0, -0.5, -0.25]), torch.tensor([1.0, 0.5, 0.25])
    t_ref = ray_box(o, d, lo, hi)
    hit = torch.isfinite(t_ref)
    assert hit.sum() > 50 and torch.equal(hit, hits.obj == 0)
    torch.testing.assert_close(hits.t[hit], t_ref[hit], atol=1e-4, rtol=0)
    p = o + t_ref.nan_to_num(posinf=0).unsqueeze(-1) * d
    torch.testing.assert_close(hits.ng[hit], box_normal(p[hit], lo, hi), atol=1e-5, rtol=0)


def test_mesh_file_interpolates_vertex_normals(tmp_path: Path) -> None:
    o3d = pytest.importorskip("open3d")
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector([[0, 0, 0], [1, 0, 0], [0, 1, 0]]), o3d.utility.Vector3iVector([[0, 1, 2]])
    )
    normals = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1]], dtype=np.float64)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    mesh.vertex_normals = o3d.utility.Vector3dVector(normals)
    o3d.io.write_triangle_mesh(str(tmp_path / "tri.ply"), mesh)
    scene = make_scene(
        tmp_path,
        SCENE_OBJECTS
        + """
[[objects]]
type = "mesh"
file = "tri.ply"
material = "m"
""",
    )
    hits = scene_geometry(scene, torch.device("cpu")).intersect(*_rays([[0.2, 0.3, 1.0]], [[0, 0, -1]]))
    assert hits.t.item() == pytest.approx(1.0)
    expected = 0.5 * normals[0] + 0.2 * normals[1] + 0.3 * normals[2]  # barycentric weights at (0.2, 0.3)
    np.testing.assert_allclose(hits.ns[0].numpy(), expected / np.linalg.norm(expected), atol=1e-5)
    np.testing.assert_allclose(hits.ng[0].numpy(), [0, 0, 1], atol=1e-6)


def test_boxes_and_area_lights_in_embree_match_the_analytic_shapes(tmp_path: Path) -> None:
    """Boxes (rotated, non-uniformly scaled) and visible area-light parallelograms go to Embree as
    triangles: same distances, objects, outward normals and texture coordinates as the analytic shapes."""
    scene = make_scene(
        tmp_path,
        SCENE_OBJECTS
        + """
[[objects]]
type = "box"
min = [-1.0, -0.5, -0.2]
max = [0.5, 1.0, 0.7]
rotate = [20.0, -35.0, 50.0]
scale = [1.3, 0.7, 1.0]
material = "m"
[[objects]]
type = "box"
min = [0.0, 0.0, 0.0]
max = [0.6, 0.4, 0.5]
scale = [2.0, 1.0, 1.5]
translate = [1.5, -1.2, 0.3]
material = "m"
[[lights]]
type = "area"
corner = [-1.0, -1.0, 2.0]
edge1 = [1.5, 0.3, 0.0]
edge2 = [0.2, 1.2, 0.4]
intensity = 1.0
""",
    )
    g = torch.Generator().manual_seed(1)
    o = torch.randn(4096, 3, generator=g) * 3
    d = torch.nn.functional.normalize(torch.randn(4096, 3, generator=g) * 0.5 - o, dim=-1)
    ref = SceneGeometry(scene, torch.device("cpu"), embree=False).intersect(o, d)
    emb = SceneGeometry(scene, torch.device("cpu"), embree=True)
    assert emb.meshes is not None and not emb.analytic
    hits = emb.intersect(o, d)
    # Rays grazing an edge may hit one and miss the other in float32: leave out those within 1e-4 of an edge.
    safe = (ref.obj == hits.obj) | (torch.isfinite(ref.t) & torch.isfinite(hits.t) & ((ref.t - hits.t).abs() < 1e-3))
    assert safe.float().mean() > 0.995
    both = (ref.obj >= 0) & (ref.obj == hits.obj)
    assert both.sum() > 1000 and set(ref.obj[both].tolist()) == {0, 1, 2}
    torch.testing.assert_close(hits.t[both], ref.t[both], atol=1e-4, rtol=0)
    torch.testing.assert_close(hits.ng[both], ref.ng[both], atol=1e-4, rtol=0)
    torch.testing.assert_close(hits.uv[both], ref.uv[both], atol=1e-4, rtol=0)
    assert emb.occluded(o, d, torch.full((4096,), 100.0)).tolist() == (ref.obj >= 0).tolist()
