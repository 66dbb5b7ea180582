"""Whitted-style rendering of one camera view: supersampled colour with coverage alpha, depth and normals.

Shading of a hit (``colour`` of the material at the point is its albedo ``a``):

- diffuse: ``a * ambient + sum over light samples of (a / pi + ks (s + 8) / (8 pi) (n.h)^s) * E * cos``
  with ``E`` the light's irradiance (see ``raytrace.lights``) and hard / sampled shadows;
- mirror: the reflected ray's radiance times ``color``;
- glass: Schlick-weighted reflection plus (1 - F) times the refracted ray's radiance times ``color``;
- emissive: ``color * strength``.

Paths are traced iteratively over a batch of rays with throughput weights, up to ``max_depth`` bounces;
rays that leave the scene bring the environment's radiance (:mod:`raytrace.environment`) when the scene has one,
else the background colour (nothing when the background is transparent).
Each supersample's linear colour is clamped to [0, 1] before the samples are averaged (anti-aliased
edges of over-bright emitters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from raytrace import native
from raytrace.camera import Intrinsics, camera_rays, image_rays, pixel_grid
from raytrace.colour import linear_to_srgb
from raytrace.environment import radiance as environment_radiance
from raytrace.intersect import Hits, SceneGeometry, scene_geometry
from raytrace.lights import AreaLight, light_samples
from raytrace.materials import MATERIAL_TYPES, Material, albedo
from raytrace.optics import dot, reflect, refract, schlick
from raytrace.scene import Scene

CHUNK = 1 << 16  # camera rays traced together
MIN_THROUGHPUT = 1e-4  # paths whose weight falls below this are dropped


@dataclass
class RenderResult:
    """One rendered view. Normals are world-space unit vectors turned to face the camera."""

    rgba: torch.Tensor  # (H, W, 4) float32 in [0, 1]; sRGB-encoded colour, alpha = coverage over supersamples
    depth: torch.Tensor  # (H, W) float32 metric distance along the unit pixel-centre ray; 0 = no hit
    normal: torch.Tensor  # (H, W, 3) float32 world unit normal at the pixel-centre hit; 0 = no hit


def render_image(
    scene: Scene,
    c2w: torch.Tensor,
    intr: Intrinsics,
    device: torch.device | str = "cpu",
    spp: int | None = None,
    srgb: bool = True,
) -> RenderResult:
    """Render one view. ``c2w`` (4, 4) camera-to-world (OpenGL axes). ``spp`` supersamples per pixel
    (default: the scene's; 1 = pixel centres, more = jittered with the scene's seed). ``srgb=False`` keeps
    the colour linear. The same inputs give the same bits."""
    device = torch.device(device)
    geo = scene_geometry(scene, device)
    spp = scene.settings.spp if spp is None else spp
    if spp < 1:
        raise ValueError(f"spp must be >= 1, got {spp}")
    c2w = torch.as_tensor(c2w).to(device=device, dtype=torch.float32)
    gen = torch.Generator().manual_seed(scene.settings.seed)
    n_pix = intr.width * intr.height
    centres = pixel_grid(intr, device)
    if spp == 1:
        pixels = centres
    else:
        jitter = torch.rand(n_pix, spp, 2, generator=gen).to(device) - 0.5
        pixels = (centres.unsqueeze(1) + jitter).reshape(-1, 2)
    colour = torch.zeros(n_pix * spp, 3, device=device)
    covered = torch.zeros(n_pix * spp, dtype=torch.bool, device=device)
    for start in range(0, n_pix * spp, CHUNK):
        o, d = camera_rays(c2w, intr, pixels[start : start + CHUNK])
        colour[start : start + CHUNK], covered[start : start + CHUNK] = trace(scene, geo, o, d, gen)
    colour = colour.clamp_(0.0, 1.0).view(n_pix, spp, 3)
    covered = covered.view(n_pix, spp)
    if scene.settings.background is None and scene.settings.environment is None:
        hits = covered.sum(1, keepdim=True)
        rgb = colour.sum(1) / hits.clamp_min(1)
        alpha = hits.float() / spp
    else:
        rgb = colour.mean(1)
        alpha = torch.ones(n_pix, 1, device=device)
    if srgb:
        rgb = linear_to_srgb(rgb)
    rgba = torch.cat([rgb, alpha], -1).view(intr.height, intr.width, 4)
    depth, normal = _depth_normal(geo, c2w, intr)
    return RenderResult(rgba.float(), depth, normal)


def _depth_normal(geo: SceneGeometry, c2w: torch.Tensor, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    o, d = image_rays(c2w, intr)
    depth, normal = torch.zeros(o.shape[0], device=o.device), torch.zeros_like(o)
    for start in range(0, o.shape[0], CHUNK):
        sl = slice(start, start + CHUNK)
        hits = geo.intersect(o[sl], d[sl])
        hit = hits.obj >= 0
        depth[sl] = torch.where(hit, hits.t, torch.zeros_like(hits.t))
        normal[sl] = torch.where(hit.unsqueeze(-1), _facing(hits.ns, d[sl]), torch.zeros_like(hits.ns))
    return depth.view(intr.height, intr.width), normal.view(intr.height, intr.width, 3)


def _facing(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``n`` (N, 3) flipped where needed to face against the ray directions ``d``."""
    return n * (1.0 - 2.0 * (dot(n, d) > 0).unsqueeze(-1).to(n.dtype))


@dataclass
class MaterialTable:
    """Every object's material as per-object tensors, so that all hits of one kind shade in one batch."""

    kind: torch.Tensor  # (O,) long, index into MATERIAL_TYPES
    color: torch.Tensor  # (O, 3) albedo / tint
    emission: torch.Tensor  # (O, 3) emitted radiance (0 unless emissive)
    ks: torch.Tensor  # (O,)
    shininess: torch.Tensor  # (O,)
    ior: torch.Tensor  # (O,)
    patterned: list[int]  # objects whose albedo varies over the surface (texture or checker)

    @classmethod
    def of(cls, materials: list[Material], device: torch.device) -> MaterialTable:
        def tensor(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).reshape(len(materials), -1)

        emission = [[c * m.strength for c in m.color] if m.kind == "emissive" else [0.0] * 3 for m in materials]
        return cls(
            kind=torch.tensor([MATERIAL_TYPES.index(m.kind) for m in materials], device=device),
            color=tensor([list(m.color) for m in materials]),
            emission=tensor(emission),
            ks=tensor([m.ks for m in materials]).squeeze(-1),
            shininess=tensor([m.shininess for m in materials]).squeeze(-1),
            ior=tensor([m.ior for m in materials]).squeeze(-1),
            patterned=[i for i, m in enumerate(materials) if m.texture is not None or m.checker is not None],
        )


_DIFFUSE, _MIRROR, _GLASS, _EMISSIVE = (MATERIAL_TYPES.index(k) for k in ("diffuse", "mirror", "glass", "emissive"))


def trace(
    scene: Scene, geo: SceneGeometry, o: torch.Tensor, d: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear radiance ``(N, 3)`` along camera rays ``o``, ``d`` (N, 3) and whether each hit a surface (N,).

    ``gen`` (a CPU generator) draws the area-light samples. Each bounce shades all hits of one material kind
    together (diffuse, emissive; mirror and glass spawn the next bounce's rays)."""
    settings = scene.settings
    n = o.shape[0]
    out = torch.zeros(n, 3, device=o.device)
    background = None if settings.background is None else torch.tensor(settings.background, device=o.device)
    ambient = torch.tensor(settings.ambient, device=o.device)
    table = MaterialTable.of(geo.materials, o.device)
    sid = torch.arange(n, device=o.device)  # which camera ray each path belongs to
    w = torch.ones(n, 3, device=o.device)
    covered = torch.zeros(n, dtype=torch.bool, device=o.device)
    for bounce in range(settings.max_depth + 1):
        hits = geo.intersect(o, d)
        hit = hits.obj >= 0
        if bounce == 0:
            covered = hit
        if settings.environment is not None or background is not None:
            sid_m, w_m, d_m = _rows((~hit).nonzero().squeeze(-1), sid, w, d)
            seen = background if settings.environment is None else environment_radiance(settings.environment, d_m)
            out.index_add_(0, sid_m, w_m * seen)
        kind = torch.where(hit, table.kind.index_select(0, hits.obj.clamp_min(0)), -1)  # -1: missed
        sel = (kind == _EMISSIVE).nonzero().squeeze(-1)
        if sel.numel():
            sid_s, w_s, obj = _rows(sel, sid, w, hits.obj)
            out.index_add_(0, sid_s, w_s * table.emission.index_select(0, obj))
        sel = (kind == _DIFFUSE).nonzero().squeeze(-1)
        if sel.numel():
            shaded = ShadingPoints.of(sel, hits, o, d)
            uv_s, w_s, sid_s = _rows(sel, hits.uv, w, sid)
            colour = _albedo(geo, table, shaded.obj, uv_s, shaded.point)
            radiance = colour * ambient + _direct(scene, geo, table, shaded, colour, gen)
            out.index_add_(0, sid_s, w_s * radiance)
        sel = ((kind == _MIRROR) | (kind == _GLASS)).nonzero().squeeze(-1)
        if bounce == settings.max_depth or sel.numel() == 0:
            break
        w_s, sid_s = _rows(sel, w, sid)
        o, d, w, sid = _secondary(geo, table, ShadingPoints.of(sel, hits, o, d), w_s, sid_s)
        o, d, w, sid = _rows((w.amax(-1) > MIN_THROUGHPUT).nonzero().squeeze(-1), o, d, w, sid)
    return out, covered


def _rows(i: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows ``i`` (K,) of each of ``xs``: ``index_select``, several times faster on the CPU than ``x[i]``."""
    return tuple(x.index_select(0, i) for x in xs)


@dataclass(frozen=True)
class ShadingPoints:
    """The hits being shaded, a row each: the object hit ``obj`` (M,), the ``point`` and the incoming ray's
    ``direction`` (M, 3), the geometric and shading normals ``ng``, ``ns`` (M, 3)."""

    obj: torch.Tensor
    point: torch.Tensor
    direction: torch.Tensor
    ng: torch.Tensor
    ns: torch.Tensor

    @classmethod
    def of(cls, rays: torch.Tensor, hits: Hits, o: torch.Tensor, d: torch.Tensor) -> ShadingPoints:
        """The hits ``hits`` of the rays ``rays`` (M,) among the rays ``o``, ``d`` (N, 3)."""
        obj, t, ng, ns, o_r, d_r = _rows(rays, hits.obj, hits.t, hits.ng, hits.ns, o, d)
        return cls(obj, o_r + t.unsqueeze(-1) * d_r, d_r, ng, ns)


def _albedo(
    geo: SceneGeometry, table: MaterialTable, obj: torch.Tensor, uv: torch.Tensor, p: torch.Tensor
) -> torch.Tensor:
    """Linear albedo ``(M, 3)`` at diffuse hits on objects ``obj`` (M,) with texture coordinates ``uv`` and world
    points ``p``: the colour, or each patterned material's texture / checker."""
    a = table.color.index_select(0, obj)
    for k in table.patterned:
        sel = (obj == k).nonzero().squeeze(-1)
        if sel.numel():
            m = geo.materials[k]
            local = geo.to_local(*_rows(sel, p, obj)) if m.checker is not None and m.checker.space == "object" else None
            a.index_copy_(0, sel, albedo(m, uv.index_select(0, sel), local))
    return a


def _secondary(
    geo: SceneGeometry, table: MaterialTable, hits: ShadingPoints, w: torch.Tensor, sid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reflected (and refracted) rays ``(origin, direction, weight, camera ray)`` from mirror / glass ``hits``
    reached with throughput ``w`` (M, 3) by the paths of camera rays ``sid`` (M,)."""
    p, d, ng, ns = hits.point, hits.direction, hits.ng, hits.ns
    tint, kind, ior = _rows(hits.obj, table.color, table.kind, table.ior)
    glass = kind == _GLASS
    entering = dot(d, ng) < 0
    sign = torch.where(entering, 1.0, -1.0).unsqueeze(-1)
    ng_f, ns_f = ng * sign, ns * sign
    # Mirrors: the geometric normal where the shading normal turns away from the ray.
    ns_f = torch.where(~glass.unsqueeze(-1) & (dot(d, ns_f) > 0).unsqueeze(-1), ng_f, ns_f)
    n1 = torch.where(entering, 1.0, ior)
    n2 = torch.where(entering, ior, 1.0)
    cos_i = (-dot(d, ns_f)).clamp(0.0, 1.0)
    fresnel = torch.where(glass, schlick(cos_i, n1, n2), 1.0).unsqueeze(-1)
    reflected = w * torch.where(glass.unsqueeze(-1), fresnel, tint)
    parts = [(p + geo.eps * ng_f, reflect(d, ns_f), reflected, sid)]
    g = glass.nonzero().squeeze(-1)
    if g.numel():
        d_g, ns_g, n1_g, n2_g = _rows(g, d, ns_f, n1, n2)
        t_dir, tir = refract(d_g, ns_g, n1_g / n2_g)
        passes = (~tir).nonzero().squeeze(-1)
        p_t, ng_t, w_t, sid_t = _rows(g.index_select(0, passes), p, ng_f, w * (1 - fresnel) * tint, sid)
        parts.append((p_t - geo.eps * ng_t, t_dir.index_select(0, passes), w_t, sid_t))
    o2, d2, w2, sid2 = (torch.cat(x) for x in zip(*parts, strict=True))
    return o2, d2, w2, sid2


def _direct(
    scene: Scene, geo: SceneGeometry, table: MaterialTable, hits: ShadingPoints, colour: torch.Tensor,
    gen: torch.Generator
) -> torch.Tensor:
    """Radiance ``(M, 3)`` reflected back along the incoming rays by the lights at diffuse ``hits`` of albedo
    ``colour`` (M, 3), area lights sampled from ``gen``: the native kernel where it runs (:mod:`raytrace.native`),
    else its PyTorch twin."""
    p, d, ng, ns = hits.point, hits.direction, hits.ng, hits.ns
    ks, shininess = _rows(hits.obj, table.ks, table.shininess)
    spec = ks * (shininess + 8.0) / (8.0 * math.pi)
    glossy = bool((ks > 0).any())
    rands = [torch.rand(p.shape[0], light.samples, 2, generator=gen).to(p.device)
             for light in scene.lights if isinstance(light, AreaLight)]
    if native.available(p.device):
        rand = rands[0] if len(rands) == 1 else torch.cat(rands, 1) if rands else p.new_zeros(p.shape[0], 0, 2)
        index, origin, ray_d, t_max, contrib = torch.ops.raytrace_native.direct_samples(
            p, d, ng, ns, colour, spec, shininess, geo.lights, rand, geo.eps, glossy)
        blocked = geo.occluded(origin, ray_d, t_max)
        return torch.ops.raytrace_native.sum_unblocked(index, contrib, blocked, p.shape[0])
    ng_f = _facing(ng, d)
    n = _facing(ns, d)
    n = torch.where((dot(n, ng_f) < 0).unsqueeze(-1), ng_f, n)
    origin = p + geo.eps * ng_f
    area_rands = iter(rands)
    total = torch.zeros_like(p)
    for light in scene.lights:
        rand = next(area_rands) if isinstance(light, AreaLight) else None
        to_light, dist, e = light_samples(light, p, rand)  # (M, S, 3), (M, S), (M, S, 3)
        cos = dot(to_light, n.unsqueeze(1))
        lit = (cos > 0) & (dot(to_light, ng_f.unsqueeze(1)) > 0)
        m_idx, s_idx = lit.nonzero(as_tuple=True)
        if m_idx.numel() == 0:
            continue
        ray_d = to_light[m_idx, s_idx]
        blocked = geo.occluded(origin[m_idx], ray_d, dist[m_idx, s_idx] - 2 * geo.eps)
        brdf = colour[m_idx] / math.pi
        if glossy:
            h = ray_d - d[m_idx]
            h = h / dot(h, h).sqrt().clamp_min(1e-12).unsqueeze(-1)
            lobe = dot(h, n[m_idx]).clamp_min(0.0) ** shininess[m_idx]
            brdf = brdf + (spec[m_idx] * lobe).unsqueeze(-1)
        contrib = brdf * e[m_idx, s_idx] * (cos[m_idx, s_idx] * ~blocked).unsqueeze(-1)
        total.index_add_(0, m_idx, contrib)
    return total
