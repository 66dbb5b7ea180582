"""Scene bounds: the box where a dataset's detail is, whether anything visible lies outside it, and how that was
decided (stated by the dataset, or inferred from its cameras, images or points).

- instant-ngp's keys (:func:`ngp_box`): its unit cube, ``world * scale + offset`` in [0, 1]^3 (before its axis
  cycle, which maps the cube onto itself), is the inner box; ``aabb_scale`` > 1 grows its render box about the
  cube's centre and makes the scene unbounded.
- Inferred (:func:`infer_bounds`): images with transparent backgrounds, or opaque ones over one solid backdrop
  colour, show a bounded object: its box is the bounding box of the visual hull of the foreground masks. Other
  opaque images may show the world beyond the cameras: unbounded, contracted around instant-ngp's unit cube as it
  lies in a capture that colmap2nerf prepared (:func:`framing_box`: centred on the point closest to all optical
  axes, its side in proportion to the cameras' distance to it). So are photographs (COLMAP models, nerfstudio's
  ``transforms.json`` with sparse points): their points do not give the box, as they reach into the far world.
- That cube of an unbounded scene is then shrunk to the sparse points inside it (:func:`points_box`): the
  dataset's own (COLMAP's, nerfstudio's ``ply_file_path``), or SIFT features of the images triangulated with the
  known poses (:func:`raytrace.capture.sfm.triangulate`, where pycolmap is installed). Where the points are,
  the detail is: a ground below the objects, the empty sky above them are left to the contraction.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from raytrace.camera import Intrinsics, distort
from raytrace.images import read_rgba

NGP_SCALE = 0.33
NGP_OFFSET = 0.5
"""instant-ngp's defaults for ``scale`` and ``offset`` (``NERF_SCALE``)."""
NGP_MAX_AABB_SCALE = 128
"""instant-ngp's largest render box, in unit cubes (``1 << (NERF_CASCADES() - 1)``)."""

NGP_CAMERA_DISTANCE = 4.0
"""colmap2nerf scales a capture so that its cameras' mean distance to the point their optical axes meet is this."""
FRAMING = 0.5 / NGP_SCALE / NGP_CAMERA_DISTANCE
"""instant-ngp's unit cube in such a capture: its half side over the cameras' mean distance (0.38)."""
CONTRACTED_CUBES = 2.0
"""A dataset whose instant-ngp keys make it unbounded (``aabb_scale`` > 1) is contracted around its unit cube grown
this many times about its centre (at most to its ``aabb_scale`` box): the keys say that the scene reaches past
the cube, and the contraction's resolution falls as ``1 / n^2`` outside its box, instant-ngp's (a grid over the
whole ``aabb_scale`` box) does not fall. A cube framed from the cameras is not grown: nothing says the scene
reaches past it, and on our stripped renders the grown cube learned less (bench/RESULTS.md)."""
SAMPLED_IMAGES = 64  # images read (evenly spaced) to tell the kind of scene and carve its visual hull
MASK_SIZE = 96  # masks are max-pooled to at most this many pixels on their longer side
BACKDROP_TOLERANCE = 4.0 / 255.0  # a pixel within this of the backdrop colour (each channel) is background
BACKDROP_SHARE = 0.9  # a solid backdrop covers at least this share of the images' border pixels
HULL_CELLS = 48  # visual-hull grid cells per axis, in each of its two passes
HULL_IN_VIEW = 0.8  # a hull point lies inside the frames of at least this share of the views (an object in view)
BOX_PADDING = 0.02  # added to every side of an inferred box, as a share of its largest side
POINTS_MIN = 20  # :func:`points_box` needs at least this many sparse points inside the framed cube
POINTS_PERCENTILE = 2.0  # it spans the points inside the cube from this percentile to 100 minus it, each axis
POINTS_PADDING = 0.25  # grown by this share of the cube's side on every side (and kept inside the cube)


@dataclass
class Inferred:
    """One choice the data did not state: what was chosen, from what, and the flag that overrides it."""

    choice: str
    value: str
    flag: str

    def __str__(self) -> str:
        """``scene: unbounded (opaque images; --scene-contraction none to override)``."""
        override = f"{self.flag} to override"
        if self.value.endswith(")"):
            return f"{self.choice}: {self.value[:-1]}; {override})"
        return f"{self.choice}: {self.value} ({override})"


FRAMED = Inferred("box", "instant-ngp's unit cube as colmap2nerf frames a capture: about the point closest to the "
                  f"optical axes, {FRAMING:.2f} times the cameras' mean distance to it", "--aabb")


@dataclass
class Bounds:
    """``aabb`` ``(2, 3)`` (min, max corner) holds the scene's detail; ``bounded``: nothing visible lies outside
    it; ``outer`` ``(2, 3)``: the box the dataset renders at most (instant-ngp's ``aabb_scale``), or None."""

    aabb: np.ndarray
    bounded: bool
    outer: np.ndarray | None = None
    inferred: list[Inferred] = field(default_factory=list)


def box_text(box: np.ndarray) -> str:
    """``[x0, y0, z0]..[x1, y1, z1]`` with 3 significant digits."""
    return "..".join("[" + ", ".join(f"{v:.3g}" for v in corner) + "]" for corner in np.asarray(box))


def ngp_box(scale: float | None, offset: np.ndarray | None, aabb: np.ndarray | None) -> np.ndarray:
    """The box ``(2, 3)`` of the JSON's world that instant-ngp's unit cube covers: ``(0 - offset) / scale`` to
    ``(1 - offset) / scale``, defaults :data:`NGP_SCALE` and :data:`NGP_OFFSET`; an ``aabb`` key ``(2, 3)``
    overrides both (the cube of its longest side about its centre)."""
    if aabb is not None:
        length = max(float(np.max(np.abs(aabb[1] - aabb[0]))), 1e-6)
        scale, offset = 1.0 / length, 0.5 - 0.5 * (aabb[0] + aabb[1]) / length
    scale = NGP_SCALE if scale is None else scale
    offset = np.full(3, NGP_OFFSET) if offset is None else np.asarray(offset, dtype=np.float64)
    return np.stack([-offset / scale, (1.0 - offset) / scale])


def scaled_box(box: np.ndarray, factor: float) -> np.ndarray:
    """``box`` ``(2, 3)`` scaled by ``factor`` about its centre."""
    centre = 0.5 * (box[0] + box[1])
    return centre + (box - centre) * factor


def focus_point(c2ws: np.ndarray) -> np.ndarray:
    """The point ``(3,)`` closest (least squares) to the optical axes of cameras ``c2ws`` ``(N, 4, 4)`` (OpenGL
    axes: each looks down its -Z); the mean camera position when the axes are (nearly) parallel."""
    origins, dirs = c2ws[:, :3, 3], -c2ws[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    lhs, rhs = proj.sum(axis=0), np.einsum("nij,nj->i", proj, origins)  # the normal equations lhs x = rhs
    eig = np.linalg.eigvalsh(lhs)
    if eig[0] < 1e-3 * eig[-1]:
        return origins.mean(axis=0)
    return np.linalg.solve(lhs, rhs)


def framing_box(c2ws: np.ndarray, centre: np.ndarray) -> np.ndarray | None:
    """instant-ngp's unit cube ``(2, 3)`` for cameras ``c2ws`` ``(N, 4, 4)`` looking at ``centre`` ``(3,)``, had
    colmap2nerf prepared them (their mean distance to it scaled to :data:`NGP_CAMERA_DISTANCE`, read at the
    default :data:`NGP_SCALE`): the cube about ``centre`` whose half side is :data:`FRAMING` times the cameras'
    mean distance to it. None when they stand at ``centre``."""
    distance = float(np.linalg.norm(c2ws[:, :3, 3] - centre, axis=1).mean())
    if distance <= 1e-9 * (1.0 + float(np.abs(centre).max())):
        return None
    half = FRAMING * distance
    return np.stack([centre - half, centre + half])


def camera_box(c2ws: np.ndarray, centre: np.ndarray) -> np.ndarray | None:
    """The box ``(2, 3)`` about ``centre`` ``(3,)`` that holds every camera of ``c2ws`` ``(N, 4, 4)``, padded; None
    when the cameras and the centre are (nearly) one point, which gives no size."""
    half = np.abs(c2ws[:, :3, 3] - centre).max(axis=0)
    if float(half.max()) <= 1e-9 * (1.0 + float(np.abs(centre).max())):
        return None
    half = np.maximum(half, 1e-3 * float(half.max()))
    return _padded(np.stack([centre - half, centre + half]))


def _padded(box: np.ndarray) -> np.ndarray:
    pad = BOX_PADDING * float(np.max(box[1] - box[0]))
    return box + np.array([[-pad], [pad]])


def points_box(points: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``box`` ``(2, 3)`` shrunk to the sparse ``points`` ``(P, 3)`` inside it (see :data:`POINTS_PERCENTILE` and
    :data:`POINTS_PADDING`) and how many they are; None when fewer than :data:`POINTS_MIN` lie inside."""
    inside = points[((points > box[0]) & (points < box[1])).all(axis=1)]
    if len(inside) < POINTS_MIN:
        return None
    lo, hi = np.percentile(inside, [POINTS_PERCENTILE, 100.0 - POINTS_PERCENTILE], axis=0)
    pad = POINTS_PADDING * float(np.max(box[1] - box[0]))
    return np.stack([np.maximum(box[0], lo - pad), np.minimum(box[1], hi + pad)]), len(inside)


def triangulated_points(images: list[np.ndarray], c2ws: np.ndarray, intrs: list[Intrinsics]) -> np.ndarray | None:
    """Sparse points ``(P, 3)`` of ``images`` seen by cameras ``c2ws`` ``(N, 4, 4)`` with ``intrs``
    (:func:`raytrace.capture.sfm.triangulate`); None without pycolmap, or where it fails."""
    try:
        from raytrace.capture.sfm import triangulate
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="nerfkit-points-") as work:
        try:
            return triangulate(images, c2ws, intrs, Path(work))
        except ValueError:  # pycolmap's failed checks: no points, then
            return None


def _backdrop(images: list[np.ndarray]) -> np.ndarray | None:
    """The colour ``(3,)`` that covers :data:`BACKDROP_SHARE` of the border pixels of opaque ``images``, or None."""
    border = np.concatenate([np.concatenate([im[0], im[-1], im[:, 0], im[:, -1]])[:, :3] for im in images])
    quantised = np.round(border * 255.0).astype(np.int64)
    colours, counts = np.unique(quantised, axis=0, return_counts=True)
    colour = colours[np.argmax(counts)] / 255.0
    share = float((np.abs(border - colour).max(axis=1) <= BACKDROP_TOLERANCE).mean())
    return colour if share >= BACKDROP_SHARE else None


def _mask(image: np.ndarray, backdrop: np.ndarray | None) -> tuple[torch.Tensor, int]:
    """Foreground ``(h, w)`` bool, max-pooled so that the longer side has at most :data:`MASK_SIZE` pixels."""
    fg = image[..., 3] > 0 if backdrop is None else np.abs(image[..., :3] - backdrop).max(axis=2) > BACKDROP_TOLERANCE
    factor = max(1, -(-max(fg.shape) // MASK_SIZE))
    t = torch.from_numpy(fg.astype(np.float32))[None, None]
    return torch.nn.functional.max_pool2d(t, factor, ceil_mode=True)[0, 0] > 0, factor


def _project(points: torch.Tensor, c2w: np.ndarray, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions ``(P, 2)`` of world ``points`` ``(P, 3)`` in one camera, and whether each is in front."""
    c2w_t = torch.as_tensor(c2w, dtype=torch.float64)
    cam = (points - c2w_t[:3, 3]) @ c2w_t[:3, :3]
    z = -cam[:, 2]
    front = z > 1e-9 * cam.abs().max().clamp_min(1e-30)
    xy = torch.stack([cam[:, 0], -cam[:, 1]], dim=-1) / z.clamp_min(1e-30)[:, None]
    if any(intr.dist):
        xy = distort(xy, intr.dist)
    return torch.stack([xy[:, 0] * intr.fx + intr.cx, xy[:, 1] * intr.fy + intr.cy], dim=-1), front


def hull_box(c2ws: np.ndarray, intrs: list[Intrinsics], masks: list[tuple[torch.Tensor, int]],
             box: np.ndarray) -> np.ndarray | None:
    """The bounding box ``(2, 3)`` of the visual hull of foreground ``masks`` (each ``(h, w)`` bool with its
    pooling factor) seen by cameras ``c2ws`` ``(N, 4, 4)`` with ``intrs``, searched in ``box`` ``(2, 3)`` and
    then again about the first pass's result; None when the hull is empty.

    A grid point is in the hull when it lies inside the frames of at least :data:`HULL_IN_VIEW` of the views
    and on foreground in every view whose frame it lies in."""
    for _ in range(2):
        axes = [torch.linspace(float(box[0, i]), float(box[1, i]), HULL_CELLS + 1, dtype=torch.float64)
                for i in range(3)]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        seen = torch.zeros(len(pts), dtype=torch.int64)
        keep = torch.ones(len(pts), dtype=torch.bool)
        for c2w, intr, (mask, factor) in zip(c2ws, intrs, masks, strict=True):
            pix, front = _project(pts, c2w, intr)
            ij = torch.floor(pix / factor).long()
            h, w = mask.shape
            inside = front & (pix[:, 0] >= 0) & (pix[:, 1] >= 0) & (pix[:, 0] < intr.width) & (pix[:, 1] < intr.height)
            ij = torch.stack([ij[:, 0].clamp(0, w - 1), ij[:, 1].clamp(0, h - 1)], dim=-1)
            seen += inside.long()
            keep &= ~inside | mask[ij[:, 1], ij[:, 0]]
        keep &= seen >= HULL_IN_VIEW * len(c2ws)
        if not keep.any():
            return None
        cell = (box[1] - box[0]) / HULL_CELLS
        found = pts[keep].numpy()
        box = np.stack([found.min(axis=0) - cell, found.max(axis=0) + cell])
    return _padded(box)


def infer_bounds(c2ws: np.ndarray, intrs: list[Intrinsics], image_paths: list[Path], source: Path,
                 fields: list[str], bounded: bool | None = None, points: np.ndarray | None = None,
                 triangulate: bool = True) -> Bounds:
    """Bounds of a dataset that states none, from its cameras ``c2ws`` ``(N, 4, 4)``, their full-size ``intrs``
    and images (up to :data:`SAMPLED_IMAGES` of them are read; errors name ``source`` and the view's field in
    ``fields``); ``bounded`` (None: inferred) when the dataset states only that; its sparse ``points`` ``(P, 3)``
    where it has them (else an unbounded scene's are triangulated, unless not ``triangulate``). See the module
    docstring."""
    pick = np.unique(np.linspace(0, len(image_paths) - 1, min(SAMPLED_IMAGES, len(image_paths))).round().astype(int))
    images = [read_rgba(image_paths[i], source, fields[i]) for i in pick]
    transparent = any(bool((im[..., 3] < 1.0).any()) for im in images)
    backdrop = None if transparent else _backdrop(images)
    around = camera_box(c2ws, focus_point(c2ws))
    if around is None:
        return framed_bounds(c2ws, True if bounded is None else bounded, [])
    inferred = []
    kind = "transparent backgrounds" if transparent else (
        f"opaque images over one backdrop colour {np.round(backdrop, 3).tolist()}" if backdrop is not None
        else "opaque images")
    if bounded is None:
        bounded = transparent or backdrop is not None
        inferred.append(Inferred("scene", f"{'bounded' if bounded else 'unbounded'} ({kind})",
                                 "--scene-contraction " + ("mipnerf360" if bounded else "none")))
    box = None
    if bounded and (transparent or backdrop is not None):
        masks = [_mask(im, backdrop) for im in images]
        box = hull_box(c2ws[pick], [intrs[i] for i in pick], masks, around)
        if box is not None:
            inferred.append(Inferred("box", f"the visual hull of the {kind}", "--aabb"))
    if box is None:
        if not bounded and points is None and triangulate:
            points = triangulated_points(images, c2ws[pick], [intrs[i] for i in pick])
        return framed_bounds(c2ws, bounded, inferred, points)
    return Bounds(box, bounded, None, inferred)


def framed_bounds(c2ws: np.ndarray, bounded: bool, inferred: list[Inferred], points: np.ndarray | None = None
                  ) -> Bounds:
    """Bounds in :func:`framing_box` of cameras ``c2ws`` ``(N, 4, 4)`` (instant-ngp's default cube when they
    stand at one point), after the ``inferred`` choices; an unbounded scene's cube shrunk to its sparse
    ``points`` ``(P, 3)`` (:func:`points_box`) where they are given and enough of them lie inside it."""
    box = framing_box(c2ws, focus_point(c2ws))
    if box is None:
        return Bounds(ngp_box(None, None, None), bounded, None, [*inferred, Inferred(
            "box", "instant-ngp's default (the cameras are one point)", "--aabb")])
    shrunk = None if bounded or points is None else points_box(points, box)
    if shrunk is None:
        return Bounds(box, bounded, None, [*inferred, FRAMED])
    return Bounds(shrunk[0], bounded, None, [*inferred, Inferred(
        "box", f"{FRAMED.value}, shrunk to the {shrunk[1]} sparse points inside it", "--aabb")])
