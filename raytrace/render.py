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

from raytrace.camera import Intrinsics, camera_rays, image_rays, pixel_grid
from raytrace.colour import linear_to_srgb
from raytrace.environment import radiance as environment_radiance
from raytrace.intersect import Hits, SceneGeometry, scene_geometry
from raytrace.lights import AreaLight, light_samples
from raytrace.materials import Material, albedo
from raytrace.optics import reflect, refract, schlick
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
    colour = colour.clamp(0.0, 1.0).view(n_pix, spp, 3)
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
    return torch.where((n * d).sum(-1, keepdim=True) > 0, -n, n)


def trace(
    scene: Scene, geo: SceneGeometry, o: torch.Tensor, d: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear radiance ``(N, 3)`` along camera rays ``o``, ``d`` (N, 3) and whether each hit a surface (N,).

    ``gen`` (a CPU generator) draws the area-light samples."""
    settings = scene.settings
    n = o.shape[0]
    out = torch.zeros(n, 3, device=o.device)
    background = None if settings.background is None else torch.tensor(settings.background, device=o.device)
    ambient = torch.tensor(settings.ambient, device=o.device)
    sid = torch.arange(n, device=o.device)  # which camera ray each path belongs to
    w = torch.ones(n, 3, device=o.device)
    covered = torch.zeros(n, dtype=torch.bool, device=o.device)
    for bounce in range(settings.max_depth + 1):
        hits = geo.intersect(o, d)
        hit = hits.obj >= 0
        if bounce == 0:
            covered = hit
        if settings.environment is not None:
            out.index_add_(0, sid[~hit], w[~hit] * environment_radiance(settings.environment, d[~hit]))
        elif background is not None:
            out.index_add_(0, sid[~hit], w[~hit] * background)
        idx = hit.nonzero().squeeze(-1)
        o, d, w, sid = o[idx], d[idx], w[idx], sid[idx]
        hits = Hits(*(getattr(hits, f)[idx] for f in ("t", "obj", "ng", "ns", "uv")))
        p = o + hits.t.unsqueeze(-1) * d
        spawned: list[tuple[torch.Tensor, ...]] = []
        for k in hits.obj.unique().tolist():
            sel = (hits.obj == k).nonzero().squeeze(-1)
            mat = geo.materials[k]
            args = (p[sel], d[sel], hits.ng[sel], hits.ns[sel])
            if mat.kind == "emissive":
                out.index_add_(0, sid[sel], w[sel] * torch.tensor(mat.color, device=o.device) * mat.strength)
            elif mat.kind == "diffuse":
                local = geo.to_local(p[sel], hits.obj[sel])
                a = albedo(mat, hits.uv[sel], local)
                radiance = a * ambient + _direct(scene, geo, mat, a, *args, gen)
                out.index_add_(0, sid[sel], w[sel] * radiance)
            elif bounce < settings.max_depth:
                spawned += _secondary(geo, mat, *args, w[sel], sid[sel])
        if not spawned:
            break
        o, d, w, sid = (torch.cat(parts) for parts in zip(*spawned, strict=True))
        keep = (w.amax(-1) > MIN_THROUGHPUT).nonzero().squeeze(-1)
        o, d, w, sid = o[keep], d[keep], w[keep], sid[keep]
    return out, covered


def _secondary(
    geo: SceneGeometry,
    mat: Material,
    p: torch.Tensor,
    d: torch.Tensor,
    ng: torch.Tensor,
    ns: torch.Tensor,
    w: torch.Tensor,
    sid: torch.Tensor,
) -> list[tuple[torch.Tensor, ...]]:
    """Reflected (and refracted) rays ``(origin, direction, weight, camera ray)`` from mirror / glass hits."""
    tint = torch.tensor(mat.color, device=p.device)
    if mat.kind == "mirror":
        ng_f, ns_f = _facing(ng, d), _facing(ns, d)
        ns_f = torch.where((ns_f * ng_f).sum(-1, keepdim=True) < 0, ng_f, ns_f)
        return [(p + geo.eps * ng_f, reflect(d, ns_f), w * tint, sid)]
    entering = (d * ng).sum(-1) < 0
    sign = torch.where(entering, 1.0, -1.0).unsqueeze(-1)
    ng_f, ns_f = ng * sign, ns * sign
    n1 = torch.where(entering, 1.0, mat.ior)
    n2 = torch.where(entering, mat.ior, 1.0)
    cos_i = (-(d * ns_f).sum(-1)).clamp(0.0, 1.0)
    fresnel = schlick(cos_i, n1, n2).unsqueeze(-1)
    t_dir, tir = refract(d, ns_f, n1 / n2)
    rays = [(p + geo.eps * ng_f, reflect(d, ns_f), w * fresnel, sid)]
    through = (~tir).nonzero().squeeze(-1)
    if through.numel():
        rays.append(
            (
                p[through] - geo.eps * ng_f[through],
                t_dir[through],
                (w * (1 - fresnel) * tint)[through],
                sid[through],
            )
        )
    return rays


def _direct(
    scene: Scene,
    geo: SceneGeometry,
    mat: Material,
    a: torch.Tensor,
    p: torch.Tensor,
    d: torch.Tensor,
    ng: torch.Tensor,
    ns: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """Radiance ``(M, 3)`` reflected towards ``-d`` by lights at diffuse points ``p`` with albedo ``a``."""
    ng_f = _facing(ng, d)
    n = _facing(ns, d)
    n = torch.where((n * ng_f).sum(-1, keepdim=True) < 0, ng_f, n)
    origin = p + geo.eps * ng_f
    spec = mat.ks * (mat.shininess + 8.0) / (8.0 * math.pi)
    total = torch.zeros_like(p)
    for light in scene.lights:
        rand = None
        if isinstance(light, AreaLight):
            rand = torch.rand(p.shape[0], light.samples, 2, generator=gen).to(p.device)
        to_light, dist, e = light_samples(light, p, rand)  # (M, S, 3), (M, S), (M, S, 3)
        cos = (to_light * n.unsqueeze(1)).sum(-1)
        lit = (cos > 0) & ((to_light * ng_f.unsqueeze(1)).sum(-1) > 0)
        m_idx, s_idx = lit.nonzero(as_tuple=True)
        if m_idx.numel() == 0:
            continue
        ray_d = to_light[m_idx, s_idx]
        blocked = geo.occluded(origin[m_idx], ray_d, dist[m_idx, s_idx] - 2 * geo.eps)
        brdf = a[m_idx] / math.pi
        if spec > 0:
            h = ray_d - d[m_idx]
            h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            brdf = brdf + spec * (h * n[m_idx]).sum(-1, keepdim=True).clamp_min(0.0) ** mat.shininess
        contrib = brdf * e[m_idx, s_idx] * (cos[m_idx, s_idx] * ~blocked).unsqueeze(-1)
        total.index_add_(0, m_idx, contrib)
    return total
