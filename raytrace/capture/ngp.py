"""A COLMAP model as instant-ngp's ``transforms.json``, normalised exactly as instant-ngp's
``scripts/colmap2nerf.py`` does, so that instant-ngp and nerfstudio read it as it is.

colmap2nerf's steps (poses in our OpenGL camera axes, :func:`raytrace.camera.colmap_to_c2w`): the world's axes
are cycled (x, y, z) -> (y, x, -z) (:data:`COLMAP2NERF_AXES`); the sum of the cameras' up vectors is turned to +Z;
the point closest to all optical axes (:func:`closest_point_to_axes`) becomes the origin; the world is scaled so
that the mean camera distance is :data:`MEAN_CAMERA_DISTANCE`. ``aabb_scale`` is derived from the sparse points
(:func:`aabb_scale_for`) rather than colmap2nerf's constant.
"""

from __future__ import annotations

import numpy as np

from raytrace.colmap import ColmapModel
from raytrace.dataset_format import Frame, Transforms
from raytrace.reader import transform_poses

COLMAP2NERF_AXES = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
"""colmap2nerf's change of world axes (rows swapped, z negated: a proper rotation)."""
MEAN_CAMERA_DISTANCE = 4.0  # colmap2nerf's "nerf sized" scale
NGP_SCALE = 0.33  # instant-ngp's default ``scale``: world * scale + 0.5 lies in its unit cube
AABB_SCALES = tuple(2**k for k in range(8))  # instant-ngp's aabb_scale: a power of two, 1 to 128
AABB_COVERAGE = 0.95  # the chosen aabb_scale's box holds at least this fraction of the sparse points
AXIS_WEIGHT_MIN = 1e-5  # colmap2nerf's: pairs of near-parallel axes are skipped


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """colmap2nerf's ``rotmat``: the rotation ``(3, 3)`` turning direction ``a`` onto ``b`` about their cross
    product (for opposite directions, about the axis most perpendicular to ``a``)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1.0 + 1e-10:
        axis = np.eye(3)[int(np.argmin(np.abs(a)))]
        axis = np.cross(a, axis)
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + k + k @ k * ((1.0 - c) / (float(np.dot(v, v)) + 1e-10))


def closest_point_to_axes(c2ws: np.ndarray) -> np.ndarray:
    """colmap2nerf's centre of attention ``(3,)``: for each pair of cameras ``c2ws`` ``(N, 4, 4)`` the midpoint of
    the closest points of their optical axes (each kept in front of its camera), weighted by the squared sine of
    the angle between the axes; the mean camera position when every pair is near-parallel."""
    o, d = c2ws[:, :3, 3], c2ws[:, :3, 2] / np.linalg.norm(c2ws[:, :3, 2], axis=1, keepdims=True)
    oa, da, ob, db = o[:, None], d[:, None], o[None], d[None]
    c = np.cross(da, db)
    denom = (c * c).sum(-1)
    t = ob - oa
    ta = np.minimum((t * np.cross(db, c)).sum(-1) / (denom + 1e-10), 0.0)[..., None]
    tb = np.minimum((t * np.cross(da, c)).sum(-1) / (denom + 1e-10), 0.0)[..., None]
    p = 0.5 * (oa + ta * da + ob + tb * db)
    w = np.where(denom > AXIS_WEIGHT_MIN, denom, 0.0)
    if w.sum() <= 0.0:
        return o.mean(axis=0)
    return (p * w[..., None]).sum(axis=(0, 1)) / w.sum()


def ngp_normalization(c2ws: np.ndarray) -> np.ndarray:
    """colmap2nerf's similarity ``(4, 4)`` from a COLMAP model's world into instant-ngp's ("nerf units"), for the
    model's cameras ``c2ws`` ``(N, 4, 4)`` (OpenGL camera axes)."""
    cycled = COLMAP2NERF_AXES @ c2ws
    up = cycled[:, :3, 1].sum(axis=0)
    rot = np.eye(4)
    rot[:3, :3] = rotation_between(up, np.array([0.0, 0.0, 1.0]))
    turned = rot @ cycled
    centre = closest_point_to_axes(turned)
    mean_distance = float(np.linalg.norm(turned[:, :3, 3] - centre, axis=1).mean())
    scale = MEAN_CAMERA_DISTANCE / max(mean_distance, 1e-12)
    sim = np.eye(4)
    sim[:3, :3] *= scale
    sim[:3, 3] = -scale * centre
    return sim @ rot @ COLMAP2NERF_AXES


def aabb_scale_for(points: np.ndarray) -> int:
    """The smallest of :data:`AABB_SCALES` whose box (instant-ngp's unit cube scaled about its centre) holds at
    least :data:`AABB_COVERAGE` of ``points`` ``(P, 3)`` in nerf units; the largest when none does, 1 without
    points. With the default ``scale`` and ``offset`` the box is the cube of half side ``0.5 * s / 0.33``."""
    if len(points) == 0:
        return 1
    extent = np.abs(points).max(axis=1) * NGP_SCALE
    for s in AABB_SCALES:
        if np.mean(extent <= 0.5 * s) >= AABB_COVERAGE:
            return s
    return AABB_SCALES[-1]


def ngp_transforms(model: ColmapModel, image_folder: str = "images") -> tuple[Transforms, np.ndarray]:
    """instant-ngp's ``transforms.json`` contents for ``model`` (one shared camera; frames sorted by image name,
    ``file_path`` ``<image_folder>/<name>``) and the similarity ``(4, 4)`` applied to the model's world."""
    images = sorted(model.images.values(), key=lambda im: im.name)
    (camera,) = {model.cameras[im.camera_id] for im in images}
    intr = camera.intrinsics()
    c2ws = np.stack([im.c2w() for im in images])
    sim = ngp_normalization(c2ws)
    poses = transform_poses(sim, c2ws)
    points = model.xyz @ sim[:3, :3].T + sim[:3, 3]
    frames = [Frame(f"{image_folder}/{im.name}", pose) for im, pose in zip(images, poses, strict=True)]
    t = Transforms(camera_angle_x=intr.camera_angle_x, frames=frames, fl_x=intr.fx, fl_y=intr.fy, cx=intr.cx,
                   cy=intr.cy, w=intr.width, h=intr.height, aabb_scale=aabb_scale_for(points), dist=intr.dist,
                   extra={"camera_angle_y": 2.0 * float(np.arctan(0.5 * intr.height / intr.fy))})
    return t, sim
