"""Scene files: TOML (stdlib ``tomllib``) parsed into a validated :class:`Scene`.

Layout (every table but ``[camera]`` optional; see ``datasets/scenes/*.toml`` for complete examples)::

    [render]     background = [r, g, b] | "transparent", ambient = [r, g, b], max_depth, spp, seed,
                 bounds = [[xmin, ymin, zmin], [xmax, ymax, zmax]], bounded = true | false
    [environment] type = "sky" | "image"; sky: zenith, horizon, ground (colours), exponent (0.5),
                 sun = {direction, color, size (angular radius, degrees)}; image: path (equirectangular,
                 relative to the scene file), strength (1.0)
    [camera]     layout = "sphere" | "hemisphere", radius (a number, or [near, far]: each view's distance
                 drawn uniformly between them), target, fov (degrees, horizontal), width, height, seed,
                 views = {train = n, val = n, test = n}
    [materials.NAME]  type = "diffuse" | "mirror" | "glass" | "emissive", color, checker = {color1,
                 color2, scale, space = "uv" | "object"}, texture = {path, scale = [su, sv]}, ks, shininess,
                 ior, strength
    [[objects]]  name, type = "sphere" | "plane" | "box" | "mesh", material, translate, rotate (degrees,
                 x then y then z), scale; sphere: center, radius; plane: point, normal; box: min, max;
                 mesh: file (.ply/.obj, relative to the scene file) or shape (open3d create_<shape>) + params,
                 smooth
    [[lights]]   name, type = "point" | "directional" | "area", color, intensity; point: position;
                 directional: direction; area: corner, edge1, edge2, samples, visible

Colours are linear RGB. Every problem raises :class:`InputError` naming the file, the object and the field.

Unbounded scenes: rays that hit nothing see the ``[environment]`` (see :mod:`raytrace.environment`; it lights
nothing, only ``ambient`` and the lights do), or else the ``background``. With an environment every pixel is
opaque (alpha 1): the sky is part of the image, as a photograph's is. ``bounded`` (written to the dataset's JSON)
says whether everything visible lies inside ``bounds``; it defaults to false when the scene has an environment or
an infinite plane, else true. ``bounds`` is then the inner box where the detail is (required with a plane).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrace.colour import srgb_to_linear
from raytrace.environment import Environment, EnvironmentImage, Sky
from raytrace.errors import InputError, is_finite_number
from raytrace.geometry import Box, Plane, Sphere, transform_matrix, transformed_aabb
from raytrace.lights import LIGHT_TYPES, AreaLight, DirectionalLight, Light, PointLight
from raytrace.materials import CHECKER_SPACES, MATERIAL_TYPES, Checker, ImageTexture, Material
from raytrace.meshes import (
    PROCEDURAL_SHAPES,
    SMOOTH_SHAPES,
    MeshData,
    place_mesh,
    procedural_mesh,
    procedural_parameters,
    read_mesh_file,
)
from raytrace.toml_table import TomlTable, Vec3, describe

OBJECT_TYPES = ("sphere", "plane", "box", "mesh")
LAYOUTS = ("sphere", "hemisphere")
SPLIT_DEFAULTS = {"train": 100, "val": 10, "test": 20}
BOUNDS_PADDING = 0.02  # computed bounds grow by this fraction of their largest side on every face



@dataclass(frozen=True)
class CameraRig:
    """How the dataset's views are placed (the ``[camera]`` table)."""

    layout: str  # "sphere" | "hemisphere" (z >= target z; world is Z-up)
    radius: float | tuple[float, float]  # fixed, or (near, far) drawn uniformly per view
    target: Vec3
    fov: float  # horizontal field of view in degrees; camera_angle_x = radians(fov)
    width: int
    height: int
    seed: int
    views: dict[str, int]  # {"train": n, "val": n, "test": n}


@dataclass(frozen=True)
class RenderSettings:
    """The ``[render]`` table."""

    background: Vec3 | None  # linear RGB; None = transparent
    ambient: Vec3
    max_depth: int  # reflection / refraction bounces after the camera ray
    spp: int  # supersamples per pixel
    seed: int  # seeds the sub-pixel jitter and the area-light samples
    environment: Environment | None = None  # what rays that leave the scene see (instead of background)


@dataclass(eq=False)
class SceneObject:
    """One object: its shape (local frame for analytic shapes; meshes are stored in world space), its
    material's name and its object-to-world transform ``matrix`` (4, 4)."""

    name: str
    shape: Sphere | Plane | Box | MeshData
    material: str
    matrix: np.ndarray


@dataclass(eq=False)
class Scene:
    """A loaded, validated scene."""

    path: Path
    rig: CameraRig
    bounds: np.ndarray  # (2, 3) float64 axis-aligned box of the scene content
    settings: RenderSettings
    materials: dict[str, Material]
    objects: list[SceneObject]
    lights: list[Light]
    bounded: bool = True  # everything visible lies inside ``bounds``


def load_scene(path: str | Path) -> Scene:
    """Read and validate a scene file; raises :class:`InputError` on any problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "scene file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, None, f"cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, None, f"invalid TOML: {e}") from None
    root = TomlTable(path, "", data)
    rig = _camera(root.table("camera"))
    render_table = root.table("render", {})
    environment = _environment(root.table("environment")) if root.has("environment") else None
    settings, bounds_table, bounded = _render(render_table, environment)
    materials_table = root.table("materials", {})
    materials = {name: _material(materials_table.table(name), name) for name in list(materials_table.data)}
    materials_table.finish()
    objects = [_object(TomlTable(path, f"objects[{i}]", o), i, materials)
               for i, o in enumerate(_array(root, "objects"))]
    lights = [_light(TomlTable(path, f"lights[{i}]", x), i) for i, x in enumerate(_array(root, "lights"))]
    root.finish()
    bounds = bounds_table if bounds_table is not None else _computed_bounds(path, objects, lights)
    if bounded is None:
        bounded = environment is None and not any(isinstance(o.shape, Plane) for o in objects)
    return Scene(path, rig, bounds, settings, materials, objects, lights, bounded)


def _array(root: TomlTable, key: str) -> list[Any]:
    v = root.raw(key, [])
    if not isinstance(v, list):
        raise root.error(key, f"expected an array of tables ([[{key}]]), got {describe(v)}")
    return v


def _camera(t: TomlTable) -> CameraRig:
    views_t = t.table("views", {})
    views = {s: views_t.integer(s, d, low=0) for s, d in SPLIT_DEFAULTS.items()}
    views_t.finish()
    radius: float | tuple[float, float]
    if isinstance(t.raw("radius"), list):
        near, far = t.vector("radius", size=2, low=0.0, strict=True)
        if near > far:
            raise t.error("radius", f"expected [near, far] with near <= far, got {[near, far]}")
        radius = (near, far)
    else:
        radius = t.number("radius", low=0.0, strict=True)
    rig = CameraRig(
        layout=t.string("layout", "hemisphere", LAYOUTS),
        radius=radius,
        target=t.vector("target", (0.0, 0.0, 0.0)),
        fov=t.number("fov", low=0.0, strict=True, high=180.0),
        width=t.integer("width", low=1),
        height=t.integer("height", low=1),
        seed=t.integer("seed", 0),
        views=views,
    )
    t.finish()
    return rig


def _render(t: TomlTable, environment: Environment | None) -> tuple[RenderSettings, np.ndarray | None, bool | None]:
    bg = t.raw("background", (0.0, 0.0, 0.0))
    if isinstance(bg, str) and bg != "transparent":
        raise t.error("background", f'expected a colour [r, g, b] or "transparent", got {bg!r}')
    background = None if bg == "transparent" else t.colour("background", (0.0, 0.0, 0.0))
    bounds = None
    if t.has("bounds"):
        b = t.raw("bounds")
        rows = b if isinstance(b, list) and len(b) == 2 else None
        if (
            rows is None
            or not all(isinstance(r, list) and len(r) == 3 for r in rows)
            or not all(is_finite_number(x) for r in rows for x in r)
        ):
            raise t.error("bounds", f"expected [[xmin, ymin, zmin], [xmax, ymax, zmax]], got {describe(b)}")
        bounds = np.asarray(rows, dtype=np.float64)
        if not np.all(bounds[0] < bounds[1]):
            raise t.error("bounds", f"every min must be < its max, got {b}")
    settings = RenderSettings(
        background=background,
        ambient=t.colour("ambient", (0.0, 0.0, 0.0)),
        max_depth=t.integer("max_depth", 5, low=0),
        spp=t.integer("spp", 4, low=1),
        seed=t.integer("seed", 0),
        environment=environment,
    )
    bounded = t.boolean("bounded") if t.has("bounded") else None
    t.finish()
    return settings, bounds, bounded


def _environment(t: TomlTable) -> Environment:
    kind = t.string("type", choices=("sky", "image"))
    env: Environment
    if kind == "sky":
        sun_direction, sun_color, sun_size = None, (0.0, 0.0, 0.0), 1.0
        if t.has("sun"):
            sun = t.table("sun")
            d = np.asarray(sun.vector("direction", nonzero=True))
            sun_direction = tuple(float(x) for x in d / np.linalg.norm(d))
            sun_color = sun.colour("color", (10.0, 9.0, 7.0))
            sun_size = sun.number("size", 1.0, low=0.0, strict=True, high=90.0)
            sun.finish()
        env = Sky(
            zenith=t.colour("zenith"),
            horizon=t.colour("horizon"),
            ground=t.colour("ground"),
            exponent=t.number("exponent", 0.5, low=0.0, strict=True),
            sun_direction=sun_direction,
            sun_color=sun_color,
            sun_size=sun_size,
        )
    else:
        env = EnvironmentImage(_linear_image(t, t.string("path")), t.number("strength", 1.0, low=0.0))
    t.finish()
    return env


def _material(t: TomlTable, name: str) -> Material:
    kind = t.string("type", choices=MATERIAL_TYPES)
    if kind == "diffuse":
        sources = [k for k in ("color", "checker", "texture") if t.has(k)]
        if len(sources) > 1:
            raise t.error(sources[1], f"give only one of color, checker, texture (also has {sources[0]})")
        m = Material(
            name,
            kind,
            color=t.colour("color", (0.8, 0.8, 0.8)),
            ks=t.number("ks", 0.0, low=0.0),
            shininess=t.number("shininess", 32.0, low=0.0, strict=True),
        )
        if t.has("checker"):
            c = t.table("checker")
            m.checker = Checker(
                c.colour("color1"),
                c.colour("color2"),
                c.number("scale", 1.0, low=0.0, strict=True),
                c.string("space", "uv", CHECKER_SPACES),
            )
            c.finish()
        if t.has("texture"):
            m.texture = _texture(t)
    elif kind == "mirror":
        m = Material(name, kind, color=t.colour("color", (1.0, 1.0, 1.0)))
    elif kind == "glass":
        m = Material(name, kind, color=t.colour("color", (1.0, 1.0, 1.0)), ior=t.number("ior", 1.5, low=1.0))
    else:
        m = Material(name, kind, color=t.colour("color", (1.0, 1.0, 1.0)), strength=t.number("strength", 1.0, low=0.0))
    t.finish()
    return m


def _texture(t: TomlTable) -> ImageTexture:
    raw = t.raw("texture")
    tex = TomlTable(t.file, t.field("texture"), {"path": raw} if isinstance(raw, str) else raw)
    rel = tex.string("path")
    scale = tex.vector("scale", (1.0, 1.0), size=2, low=0.0, strict=True)
    tex.finish()
    return ImageTexture(tex.file.parent / rel, _linear_image(tex, rel), scale)


def _linear_image(tex: TomlTable, rel: str) -> torch.Tensor:
    """The image at ``rel`` (relative to the scene file; field ``path`` of ``tex``) as ``(H, W, 3)`` float32
    linear RGB (8/16-bit images are taken as sRGB, float ones as linear)."""
    file = tex.file.parent / rel
    if not file.is_file():
        raise tex.error("path", f"image file not found: {file}")
    try:
        import imageio.v3 as iio

        img = iio.imread(file)
    except Exception as e:  # imageio raises many types for unreadable images
        raise tex.error("path", f"cannot read image {file}: {e}") from None
    img = np.atleast_3d(img)
    if img.shape[2] not in (1, 2, 3, 4) or img.ndim != 3:
        raise tex.error("path", f"expected a grey, RGB or RGBA image, got shape {img.shape}")
    rgb = np.repeat(img[..., :1], 3, axis=2) if img.shape[2] < 3 else img[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        linear = srgb_to_linear(torch.from_numpy(rgb.astype(np.float32) / np.iinfo(rgb.dtype).max))
    else:
        linear = torch.from_numpy(rgb.astype(np.float32))
    return linear.contiguous()


def _object(t: TomlTable, index: int, materials: dict[str, Material]) -> SceneObject:
    name = t.string("name", f"objects[{index}]")
    if t.has("name"):
        t.where = f'objects[{index}] "{name}"'
    kind = t.string("type", choices=OBJECT_TYPES)
    mat_name = t.string("material")
    if mat_name not in materials:
        known = ", ".join(sorted(materials)) or "none defined"
        raise t.error("material", f"unknown material {mat_name!r} (known: {known})")
    scale = t.raw("scale", 1.0)
    if isinstance(scale, int | float) and not isinstance(scale, bool):
        scale3 = (t.number("scale", 1.0, low=0.0, strict=True),) * 3
    else:
        scale3 = t.vector("scale", low=0.0, strict=True)
    matrix = transform_matrix(t.vector("translate", (0.0, 0.0, 0.0)), t.vector("rotate", (0.0, 0.0, 0.0)), scale3)
    shape: Sphere | Plane | Box | MeshData
    if kind == "sphere":
        shape = Sphere(t.vector("center", (0.0, 0.0, 0.0)), t.number("radius", low=0.0, strict=True))
    elif kind == "plane":
        n = np.asarray(t.vector("normal", (0.0, 0.0, 1.0), nonzero=True))
        shape = Plane(t.vector("point", (0.0, 0.0, 0.0)), tuple(n / np.linalg.norm(n)))
    elif kind == "box":
        lo, hi = t.vector("min"), t.vector("max")
        if not all(a < b for a, b in zip(lo, hi, strict=True)):
            raise t.error("max", f"every component must be > min {list(lo)}, got {list(hi)}")
        shape = Box(lo, hi)
    else:
        shape = _mesh(t, matrix)
        if shape.triangle_uvs is None and materials[mat_name].needs_uv:
            raise t.error(
                "material",
                f"material {mat_name!r} needs texture coordinates and this mesh has none "
                '(a checker with space = "object" needs none)',
            )
    t.finish()
    return SceneObject(name, shape, mat_name, matrix)


def _mesh(t: TomlTable, matrix: np.ndarray) -> MeshData:
    if t.has("file") == t.has("shape"):
        raise t.error("file", "a mesh needs exactly one of file (a mesh file) or shape (an open3d shape)")
    if t.has("file"):
        file = t.file.parent / t.string("file")
        if not file.is_file():
            raise t.error("file", f"mesh file not found: {file}")
        mesh = read_mesh_file(file)
        if len(mesh.triangles) == 0:
            raise t.error("file", f"no triangles read from {file}")
        smooth = t.boolean("smooth", mesh.has_vertex_normals())
    else:
        shape = t.string("shape", choices=PROCEDURAL_SHAPES)
        p = t.table("params", {})
        params: dict[str, float | int | bool] = {}
        for key, kind in procedural_parameters(shape).items():
            if not p.has(key):
                continue
            if kind is float:
                params[key] = p.number(key, low=0.0, strict=True)
            elif kind is int:
                params[key] = p.integer(key, low=0)
            else:
                params[key] = p.boolean(key)
        p.finish()
        mesh = procedural_mesh(shape, params)
        if len(mesh.triangles) == 0:
            raise t.error("params", f"these parameters make an empty {shape}")
        smooth = t.boolean("smooth", shape in SMOOTH_SHAPES)
    return place_mesh(mesh, matrix, smooth)


def _light(t: TomlTable, index: int) -> Light:
    name = t.string("name", f"lights[{index}]")
    if t.has("name"):
        t.where = f'lights[{index}] "{name}"'
    kind = t.string("type", choices=LIGHT_TYPES)
    color, intensity = t.colour("color", (1.0, 1.0, 1.0)), t.number("intensity", low=0.0)
    light: Light
    if kind == "point":
        light = PointLight(name, t.vector("position"), color, intensity)
    elif kind == "directional":
        d = np.asarray(t.vector("direction", nonzero=True))
        light = DirectionalLight(name, tuple(d / np.linalg.norm(d)), color, intensity)
    else:
        corner, e1, e2 = t.vector("corner"), t.vector("edge1", nonzero=True), t.vector("edge2", nonzero=True)
        if np.linalg.norm(np.cross(e1, e2)) < 1e-12:
            raise t.error("edge2", "must not be parallel to edge1")
        light = AreaLight(
            name,
            corner,
            e1,
            e2,
            color,
            intensity,
            t.integer("samples", 16, low=1),
            t.boolean("visible", True),
        )
    t.finish()
    return light


def _computed_bounds(path: Path, objects: list[SceneObject], lights: list[Light]) -> np.ndarray:
    boxes = []
    for i, obj in enumerate(objects):
        if isinstance(obj.shape, Plane):
            raise InputError(path, "render.bounds", f'required: objects[{i}] "{obj.name}" is an infinite plane')
        if isinstance(obj.shape, MeshData):
            boxes.append(obj.shape.aabb())
        else:
            boxes.append(transformed_aabb(*obj.shape.local_aabb(), obj.matrix))
    for light in lights:
        if isinstance(light, AreaLight) and light.visible:
            c, e1, e2 = (np.asarray(v) for v in (light.corner, light.edge1, light.edge2))
            corners = np.stack([c, c + e1, c + e2, c + e1 + e2])
            boxes.append(np.stack([corners.min(0), corners.max(0)]))
    if not boxes:
        raise InputError(path, "render.bounds", "required: the scene has no finite objects")
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    pad = BOUNDS_PADDING * float(np.max(hi - lo)) + 1e-6
    return np.stack([lo - pad, hi + pad])
