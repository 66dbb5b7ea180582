"""Raytracer throughput on the shipped scenes, beside open3d's raw Embree ray casting and Mitsuba 3.

For each scene at ``--res`` x ``--res`` (default 200) and the scene's samples per pixel, renders ``--views``
rig views with ``raytrace.render.render_image`` and reports camera samples per second and the seconds one
view and 100 views take (100 views extrapolated from the views measured). Beside it:

- Embree raw: ``open3d.t.geometry.RaycastingScene.cast_rays`` over the scene's surfaces as triangles
  (analytic spheres tessellated, planes as large quads), with as many camera rays as our render traces
  camera samples: the cost of primary visibility alone on this machine, a lower bound for any renderer
  built on it (ours also traces shadow, reflection and refraction rays and shades in torch);
- Mitsuba 3 (optional, ``pip install mitsuba``): the same scene translated (see ``mitsuba_scene`` for what
  is approximated or dropped), the same cameras, resolution and samples per pixel, with the ``direct``
  integrator (direct light only: mirror and glass reflect nothing) and with ``path`` at our bounce depth.

Ratios are time ratios, ours / theirs for the same views: above 1 means ours is slower. The figures are
appended to ``bench/RESULTS.md`` under ``## raytrace_bench`` with the machine and the command.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d
import torch

from raytrace.camera import Intrinsics, image_rays
from raytrace.dataset import rig_poses
from raytrace.geometry import Box, Plane, Sphere
from raytrace.lights import AreaLight, DirectionalLight, PointLight
from raytrace.meshes import MeshData
from raytrace.render import render_image
from raytrace.scene import Scene, load_scene

ROOT = Path(__file__).resolve().parents[1]
SCENES = ("whitted", "cornell", "object", "garden")
PLANE_HALF_SIZE = 100.0  # infinite planes become squares this far out from their point


@dataclass
class Row:
    scene: str
    rays: int  # camera samples per view
    ours_s: float  # seconds per view
    ours_mean: float  # mean linear RGB of our views (a check that both renderers see the same scene)
    embree_s: float | None = None
    mi_direct_s: float | None = None
    mi_path_s: float | None = None
    mi_mean: float | None = None
    note: str = ""


def _sphere_mesh(s: Sphere, matrix: np.ndarray) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_sphere(radius=s.radius, resolution=48).translate(s.center)
    return m.transform(matrix)


def _box_mesh(b: Box, matrix: np.ndarray) -> o3d.geometry.TriangleMesh:
    lo, hi = np.asarray(b.lo), np.asarray(b.hi)
    m = o3d.geometry.TriangleMesh.create_box(*(hi - lo)).translate(lo)
    return m.transform(matrix)


def _plane_frame(p: Plane, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World centre, unit tangents u, v and the unit normal of a (transformed) plane."""
    centre = matrix[:3, :3] @ np.asarray(p.point) + matrix[:3, 3]
    n = np.linalg.inv(matrix[:3, :3]).T @ np.asarray(p.normal)
    n /= np.linalg.norm(n)
    u = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    return centre, u, np.cross(n, u), n


def _quad_mesh(corner: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> o3d.geometry.TriangleMesh:
    v = np.stack([corner, corner + e1, corner + e1 + e2, corner + e2])
    faces = o3d.utility.Vector3iVector([[0, 1, 2], [0, 2, 3]])
    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), faces)


def triangle_meshes(scene: Scene) -> list[o3d.geometry.TriangleMesh]:
    """Every surface of ``scene`` (objects and visible area lights) as a world-space triangle mesh."""
    out = []
    for obj in scene.objects:
        shape = obj.shape
        if isinstance(shape, Sphere):
            out.append(_sphere_mesh(shape, obj.matrix))
        elif isinstance(shape, Box):
            out.append(_box_mesh(shape, obj.matrix))
        elif isinstance(shape, Plane):
            c, u, v, _ = _plane_frame(shape, obj.matrix)
            h = PLANE_HALF_SIZE
            out.append(_quad_mesh(c - h * u - h * v, 2 * h * u, 2 * h * v))
        elif isinstance(shape, MeshData):
            out.append(o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(shape.vertices),
                                                 o3d.utility.Vector3iVector(shape.triangles)))
    for light in scene.lights:
        if isinstance(light, AreaLight) and light.visible:
            out.append(_quad_mesh(*_quad(light)))
    return out


def _quad(light: AreaLight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(x, dtype=np.float64) for x in (light.corner, light.edge1, light.edge2))


def _frame(x: np.ndarray, y: np.ndarray, z: np.ndarray, origin: np.ndarray) -> list[list[float]]:
    """A 4x4 affine matrix with these columns."""
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, origin
    return m.tolist()


def best_of(repeats: int, fn: Any) -> tuple[float, Any]:
    """The shortest of ``repeats`` timed calls of ``fn()`` (other jobs on the machine only ever add time) and the
    last call's result."""
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def time_ours(scene: Scene, poses: np.ndarray, intr: Intrinsics, spp: int, repeats: int) -> tuple[float, float]:
    """Seconds per view (best of ``repeats`` per view) and the mean linear colour over the views."""
    render_image(scene, torch.as_tensor(poses[0], dtype=torch.float32), intr.scaled(0.05), spp=1)  # warm-up
    seconds, means = [], []
    for c2w in poses:
        pose = torch.as_tensor(c2w, dtype=torch.float32)
        s, res = best_of(repeats, lambda pose=pose: render_image(scene, pose, intr, spp=spp, srgb=False))
        seconds.append(s)
        means.append(float(res.rgba[..., :3].mean()))
    return float(np.mean(seconds)), float(np.mean(means))


def time_embree(scene: Scene, poses: np.ndarray, intr: Intrinsics, spp: int, repeats: int) -> float:
    """Seconds per view to cast ``W*H*spp`` camera rays (each pixel-centre ray repeated ``spp`` times)."""
    rc = o3d.t.geometry.RaycastingScene()
    for m in triangle_meshes(scene):
        rc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
    batches = []
    for c2w in poses:
        o, d = image_rays(torch.as_tensor(c2w, dtype=torch.float32), intr)
        rays = torch.cat([o, d], -1).repeat(spp, 1).numpy()
        batches.append(o3d.core.Tensor(rays))
    rc.cast_rays(batches[0])  # builds the BVH
    threads = torch.get_num_threads()
    return sum(best_of(repeats, lambda r=r: rc.cast_rays(r, nthreads=threads)["t_hit"].numpy())[0]
               for r in batches) / len(batches)


def mitsuba_scene(
    mi: Any, scene: Scene, poses: np.ndarray, intr: Intrinsics, spp: int, tmp: Path
) -> tuple[dict, str]:
    """The Mitsuba scene dict (one sensor per pose) and a note of what the translation drops."""
    dropped: set[str] = set()
    T = mi.ScalarTransform4f
    d: dict[str, Any] = {"type": "scene"}
    rig = scene.rig
    for k, c2w in enumerate(poses):
        d[f"sensor{k}"] = {
            "type": "perspective", "fov": rig.fov, "fov_axis": "x",
            "to_world": T().look_at(origin=c2w[:3, 3].tolist(), target=list(rig.target), up=[0, 0, 1]),
            "film": {"type": "hdrfilm", "width": intr.width, "height": intr.height,
                     "rfilter": {"type": "box"}},
            "sampler": {"type": "independent", "sample_count": spp},
        }

    def rgb(c: Any, scale: float = 1.0) -> dict:
        return {"type": "rgb", "value": [float(x) * scale for x in c]}

    def bsdf(name: str) -> dict:
        m = scene.materials[name]
        if m.kind == "mirror":
            return {"type": "conductor", "material": "none", "specular_reflectance": rgb(m.color)}
        if m.kind == "glass":
            return {"type": "dielectric", "int_ior": m.ior, "specular_transmittance": rgb(m.color)}
        if m.kind == "emissive":
            return {"type": "diffuse", "reflectance": rgb((0, 0, 0))}
        if m.ks > 0:
            dropped.add("Blinn-Phong highlights")
        if m.checker is not None:
            dropped.add("checker scale/mapping approximate")
            tex = {"type": "checkerboard", "color0": rgb(m.checker.color1), "color1": rgb(m.checker.color2),
                   "to_uv": mi.ScalarTransform4f().scale([m.checker.scale * 4, m.checker.scale * 4, 1])}
            return {"type": "diffuse", "reflectance": tex}
        if m.texture is not None:
            return {"type": "diffuse", "reflectance": {"type": "bitmap", "filename": str(m.texture.path)}}
        return {"type": "diffuse", "reflectance": rgb(m.color)}

    for i, obj in enumerate(scene.objects):
        shape, mat = obj.shape, scene.materials[obj.material]
        M = T(obj.matrix.tolist())
        if isinstance(shape, Sphere):
            s = {"type": "sphere", "to_world": M @ T().translate(list(shape.center)).scale(shape.radius)}
        elif isinstance(shape, Box):
            lo, hi = np.asarray(shape.lo), np.asarray(shape.hi)
            local = T().translate(((lo + hi) / 2).tolist()).scale(((hi - lo) / 2).tolist())
            s = {"type": "cube", "to_world": M @ local}
        elif isinstance(shape, Plane):
            c, u, v, n = _plane_frame(shape, obj.matrix)
            s = {"type": "rectangle", "to_world": T(_frame(u * PLANE_HALF_SIZE, v * PLANE_HALF_SIZE, n, c))}
        else:
            mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(shape.vertices),
                                             o3d.utility.Vector3iVector(shape.triangles))
            if shape.vertex_normals is not None:
                mesh.vertex_normals = o3d.utility.Vector3dVector(shape.vertex_normals)
            path = tmp / f"mesh{i}.ply"
            o3d.io.write_triangle_mesh(str(path), mesh)
            s = {"type": "ply", "filename": str(path), "face_normals": shape.vertex_normals is None}
        s["bsdf"] = bsdf(obj.material)
        if mat.kind == "emissive":
            s["emitter"] = {"type": "area", "radiance": rgb(mat.color, mat.strength)}
        d[f"shape{i}"] = s
    target = np.asarray(rig.target)
    for j, light in enumerate(scene.lights):
        if isinstance(light, PointLight):
            d[f"light{j}"] = {"type": "point", "position": list(light.position),
                              "intensity": rgb(light.color, light.intensity)}
        elif isinstance(light, DirectionalLight):
            d[f"light{j}"] = {"type": "directional", "direction": list(light.direction),
                              "irradiance": rgb(light.color, light.intensity)}
        else:
            corner, e1, e2 = _quad(light)
            centre = corner + 0.5 * (e1 + e2)
            n = np.cross(e1, e2)
            if np.dot(n, target - centre) < 0:  # Mitsuba's area lights emit on one side: face the scene
                e1, e2, n = e2, e1, -n
            frame = _frame(e1 / 2, e2 / 2, n / np.linalg.norm(n), centre)
            d[f"light{j}"] = {"type": "rectangle", "to_world": T(frame),
                              "emitter": {"type": "area", "radiance": rgb(light.color, light.intensity)},
                              "bsdf": {"type": "diffuse", "reflectance": rgb((0, 0, 0))}}
            dropped.add("area lights one-sided")
            if not light.visible:
                dropped.add("area light visible=false")
    if scene.settings.background is not None and any(scene.settings.background):
        dropped.add("background colour")
    if scene.settings.environment is not None:
        dropped.add("environment (seen by missed rays in ours)")
    if any(scene.settings.ambient):
        dropped.add("ambient term")
    return d, ", ".join(sorted(dropped))


def time_mitsuba(
    scene: Scene, poses: np.ndarray, intr: Intrinsics, spp: int, variant: str, repeats: int
) -> tuple[float, float, float, str]:
    """Seconds per view (best of ``repeats`` per view) with ``direct`` and with ``path``, the mean colour (path) and
    a note."""
    import drjit as dr
    import mitsuba as mi

    mi.set_variant(variant)
    dr.set_thread_count(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        d, note = mitsuba_scene(mi, scene, poses, intr, spp, Path(tmp))
        mi_scene = mi.load_dict(d)
    integrators = {
        "direct": mi.load_dict({"type": "direct"}),
        # Mitsuba's max_depth counts the camera segment and the light segment: ours + 2.
        "path": mi.load_dict({"type": "path", "max_depth": scene.settings.max_depth + 2}),
    }
    out, mean = {}, 0.0
    for name, integ in integrators.items():
        np.asarray(mi.render(mi_scene, integrator=integ, sensor=0, spp=spp))  # warm-up (JIT compile)
        timed = [best_of(repeats, lambda k=k, integ=integ: np.asarray(
            mi.render(mi_scene, integrator=integ, sensor=k, spp=spp, seed=k))) for k in range(len(poses))]
        out[name] = sum(t for t, _ in timed) / len(poses)
        mean = float(np.mean([im[..., :3].mean() for _, im in timed]))
    return out["direct"], out["path"], mean, f"{variant}; {note}" if note else variant


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"open3d {o3d.__version__}, Python {platform.python_version()}")


def fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(a: float, b: float | None) -> str:
    return "n/a" if b is None or b <= 0 else f"{a / b:.0f}x" if a / b >= 10 else f"{a / b:.2f}x"


def table(rows: list[Row]) -> str:
    head = ("| scene | camera samples/view | ours Msamples/s | ours s/view | ours s/100 views (extrap.) "
            "| Embree raw s/view | ours/Embree | Mitsuba direct s/view | ours/Mi direct "
            "| Mitsuba path s/view | ours/Mi path | mean ours / Mitsuba | Mitsuba notes |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.scene} | {r.rays} | {r.rays / r.ours_s / 1e6:.3f} | {r.ours_s:.2f} | {100 * r.ours_s:.0f} "
            f"| {fmt(r.embree_s, '.4f')} | {ratio(r.ours_s, r.embree_s)} | {fmt(r.mi_direct_s, '.4f')} "
            f"| {ratio(r.ours_s, r.mi_direct_s)} | {fmt(r.mi_path_s, '.4f')} "
            f"| {ratio(r.ours_s, r.mi_path_s)} "
            f"| {fmt(r.ours_mean, '.3f')} / {fmt(r.mi_mean, '.3f')} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenes", nargs="+", default=list(SCENES), help="scene names under datasets/scenes/")
    p.add_argument("--res", type=int, default=200, help="image width and height")
    p.add_argument("--views", type=int, default=3, help="views measured per scene (100 views extrapolated)")
    p.add_argument("--repeats", type=int, default=3,
                   help="each view is timed this many times and the shortest kept (robust to other jobs' load)")
    p.add_argument("--spp", type=int, default=None, help="samples per pixel (default: each scene's)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for ours (torch) and for Mitsuba alike (a like-for-like comparison)")
    p.add_argument("--no-mitsuba", action="store_true", help="skip Mitsuba")
    # llvm_ad_rgb is faster where drjit finds a recent libLLVM; with LLVM 14/15 it aborts the process.
    p.add_argument("--mitsuba-variant", default="scalar_rgb", help="scalar_rgb or llvm_ad_rgb")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md",
                   help="file the figures are appended to")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.scenes:
        path = ROOT / "datasets" / "scenes" / f"{name}.toml"
        if not path.is_file():
            print(f"{name}: {path} not found, skipped", file=sys.stderr)
            continue
        scene = load_scene(path)
        spp = args.spp or scene.settings.spp
        height = max(1, round(args.res * scene.rig.height / scene.rig.width))
        intr = Intrinsics.from_fov(args.res, height, math.radians(scene.rig.fov))
        poses = rig_poses(scene.rig, {"train": args.views})["train"]
        ours_s, ours_mean = time_ours(scene, poses, intr, spp, args.repeats)
        embree_s = time_embree(scene, poses, intr, spp, args.repeats)
        row = Row(name, args.res * height * spp, ours_s, ours_mean, embree_s=embree_s)
        if args.no_mitsuba:
            row.note = "Mitsuba skipped (--no-mitsuba)"
        else:
            try:
                timed = time_mitsuba(scene, poses, intr, spp, args.mitsuba_variant, args.repeats)
                row.mi_direct_s, row.mi_path_s, row.mi_mean, row.note = timed
            except ImportError as e:
                row.note = f"Mitsuba not importable ({e}); pip install mitsuba"
        rows.append(row)
        print(f"{name}: ours {ours_s:.2f} s/view, Embree {embree_s:.4f} s/view, Mitsuba direct "
              f"{fmt(row.mi_direct_s, '.4f')} / path {fmt(row.mi_path_s, '.4f')} s/view", flush=True)

    text = table(rows)
    print(text)
    command = "python bench/raytrace_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = (
        f"\n## raytrace_bench\n\n{datetime.date.today().isoformat()}; {machine()}.\n"
        f"Command: `{command.strip()}`. {args.res}px wide images, each scene's samples per pixel, "
        f"{args.views} rig views measured per scene, best of {args.repeats} per view; "
        "100 views extrapolated from them (x100 the mean). "
        "Samples = camera samples (pixels x spp); ours also traces shadow and secondary rays. Ratios: time "
        "ours / theirs (above 1 = ours slower). Embree raw: open3d `cast_rays` of the same number of camera "
        "rays over the scene as triangles (primary visibility only). Mitsuba "
        f"({args.mitsuba_variant}): same cameras, resolution and spp; `direct` integrator and `path` at our "
        f"bounce depth; {args.threads} CPU thread(s) for each renderer. Means: linear RGB, a check that both "
        "saw the same scene (Mitsuba's from `path`; dropped features in the notes).\n\n" + text + "\n"
    )
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(section)
    print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
