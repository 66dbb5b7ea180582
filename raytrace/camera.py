"""Cameras and rays: the project's single source of truth for camera conventions.

Conventions (shared by the raytracer, the trainer and the viewer):

- ``c2w`` is a camera-to-world 4x4 matrix in the OpenGL / Blender / NeRF-synthetic convention:
  camera +X right, +Y up, and the camera looks down -Z.
- The world is Z-up, as in Blender and the NeRF-synthetic datasets.
- Pixel (i, j) is column i, row j (row 0 at the top); its centre is at (i + 0.5, j + 0.5).
- Focal length in pixels: ``0.5 * W / tan(0.5 * camera_angle_x)``.
- Ray directions are unit vectors, so a ray parameter ``t`` is the metric distance along the ray (our
  datasets' exact depth, ``distance_path``). The depth other NeRF tools read (instant-ngp, nerfstudio) is the
  z-depth, the distance along the camera's viewing axis: ``z = t * cos(angle to the axis)``, equal at the
  image centre and smaller towards the corners; :func:`z_per_distance` gives that factor per pixel.
- Lens distortion (COLMAP's / OpenCV's model, coefficients ``(k1, k2, p1, p2)``) acts on normalised image
  coordinates ``((x - cx) / fx, (y - cy) / fy)`` with +y down, as in OpenCV; rays undistort the pixel
  positions (the images are never resampled).
- COLMAP (and OpenCV) poses are world-to-camera with camera +X right, +Y down, +Z forward;
  :func:`colmap_to_c2w` and :func:`c2w_to_colmap` are the one place where that changes into ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

UNDISTORT_ITERATIONS = 10  # Newton steps of undistort(); converges to ~1e-7 for realistic lenses
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # flips camera +Y down / +Z forward to +Y up / -Z forward

Distortion = tuple[float, float, float, float]
NO_DISTORTION: Distortion = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``, with OpenCV lens distortion
    ``dist`` = ``(k1, k2, p1, p2)`` (all zero: none)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: Distortion = NO_DISTORTION

    @classmethod
    def from_fov(cls, width: int, height: int, camera_angle_x: float) -> Intrinsics:
        """Square pixels, principal point at the image centre; ``camera_angle_x`` in radians."""
        f = focal_from_fov(width, camera_angle_x)
        return cls(width, height, f, f, 0.5 * width, 0.5 * height)

    @property
    def camera_angle_x(self) -> float:
        """Horizontal field of view in radians."""
        return 2.0 * math.atan(0.5 * self.width / self.fx)

    def scaled(self, factor: float) -> Intrinsics:
        """The same camera for an image resized by ``factor`` (e.g. 0.5 halves each side)."""
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        return Intrinsics(w, h, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, self.dist)


def focal_from_fov(width: int, camera_angle_x: float) -> float:
    """Focal length in pixels from the horizontal field of view (radians)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def pixel_grid(intr: Intrinsics, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixel-centre coordinates of every pixel, row-major: ``(H*W, 2)`` float32 as (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(intr.height, device=device, dtype=torch.float32),
        torch.arange(intr.width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) + 0.5


def camera_rays(
    c2w: torch.Tensor, intr: Intrinsics, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through image positions ``pixels`` (``(N, 2)``, (x, y) in pixels, centres at +0.5).

    ``c2w`` is ``(4, 4)`` (one camera) or ``(N, 4, 4)`` (one per ray). Returns world-space
    origins ``(N, 3)`` and unit directions ``(N, 3)``.
    """
    c2w = c2w.to(device=pixels.device, dtype=pixels.dtype)
    xy = torch.stack([(pixels[:, 0] - intr.cx) / intr.fx, (pixels[:, 1] - intr.cy) / intr.fy], dim=-1)
    if any(intr.dist):
        xy = undistort(xy, intr.dist)
    d_cam = torch.stack([xy[:, 0], -xy[:, 1], -torch.ones_like(xy[:, 0])], dim=-1)
    rot = c2w[..., :3, :3]
    d = (rot @ d_cam.unsqueeze(-1)).squeeze(-1) if rot.dim() == 3 else d_cam @ rot.T
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., :3, 3].expand_as(d)
    return o.contiguous(), d


def distort(xy: torch.Tensor, dist: Distortion) -> torch.Tensor:
    """OpenCV distortion of normalised image coordinates ``xy`` ``(N, 2)`` (+y down) by ``(k1, k2, p1, p2)``."""
    k1, k2, p1, p2 = dist
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + k2 * r2)
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort(xy: torch.Tensor, dist: Distortion, iterations: int = UNDISTORT_ITERATIONS) -> torch.Tensor:
    """The inverse of :func:`distort`: ``(N, 2)`` undistorted coordinates, by Newton's method from ``xy``."""
    k1, k2, p1, p2 = dist
    xd, yd = xy[:, 0], xy[:, 1]
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + k2 * r2)
        d_radial = 2.0 * k1 + 4.0 * k2 * r2  # d radial / d r2, times 2
        fx = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
        fx_x = radial + x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
        fx_y = x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        fy_x = x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        fy_y = radial + y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
        det = fx_x * fy_y - fx_y * fy_x
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x = x - (fx * fy_y - fy * fx_y) / det
        y = y - (fy * fx_x - fx * fy_x) / det
    return torch.stack([x, y], dim=-1)


def colmap_to_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """Our camera-to-world ``(4, 4)`` float64 (OpenGL axes) from a COLMAP pose: the world-to-camera rotation as
    a unit quaternion ``qvec`` (w, x, y, z) and translation ``tvec`` (3,), camera +X right, +Y down, +Z forward
    (``X_cam = R X_world + t``)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.abs(qvec).max()  # scipy normalises the rest
    rot = Rotation.from_quat([x, y, z, w]).as_matrix()
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T
    c2w[:3, 3] = -rot.T @ np.asarray(tvec, dtype=np.float64)
    return c2w @ OPENCV_TO_OPENGL


def c2w_to_colmap(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`colmap_to_c2w`: ``(qvec (w, x, y, z), tvec)`` of our camera-to-world ``(4, 4)``."""
    cv = np.asarray(c2w, dtype=np.float64) @ OPENCV_TO_OPENGL
    rot = cv[:3, :3].T
    x, y, z, w = Rotation.from_matrix(rot).as_quat()
    qvec = np.array([w, x, y, z])
    return (qvec if w >= 0 else -qvec), -rot @ cv[:3, 3]


def image_rays(c2w: torch.Tensor, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of one camera, row-major: origins and directions ``(H*W, 3)``."""
    return camera_rays(c2w, intr, pixel_grid(intr, c2w.device))


def z_per_distance(intr: Intrinsics, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W)`` float32: z-depth (along the viewing axis) per unit of distance along each pixel-centre ray,
    ``1 / |((x - cx) / fx, (y - cy) / fy, 1)|``; ``z = factor * t`` and ``t = z / factor``."""
    xy = pixel_grid(intr, device).double()
    x, y = (xy[:, 0] - intr.cx) / intr.fx, (xy[:, 1] - intr.cy) / intr.fy
    return torch.rsqrt(1.0 + x * x + y * y).float().view(intr.height, intr.width)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world ``(4, 4)`` float64 for a camera at ``eye`` looking at ``target`` (OpenGL axes)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:  # looking along `up`: pick any perpendicular right axis
        right = np.cross(np.array([0.0, 1.0, 0.0]) if abs(back[1]) < 0.9 else np.array([1.0, 0.0, 0.0]), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, eye
    return c2w


def rig_positions(
    count: int,
    radius: float | tuple[float, float],
    target: np.ndarray,
    hemisphere: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """``count`` camera positions ``(count, 3)`` in directions uniformly distributed on a sphere (or its upper,
    z >= 0, half) around ``target``, at distance ``radius``, or uniform in ``radius = (near, far)``."""
    v = rng.normal(size=(count, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if hemisphere:
        v[:, 2] = np.abs(v[:, 2])
    r = rng.uniform(*radius, size=(count, 1)) if isinstance(radius, tuple) else radius
    return np.asarray(target, dtype=np.float64) + r * v
