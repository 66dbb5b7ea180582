"""The viewer's camera model: orbit, pan, zoom and fly to a camera-to-world matrix and intrinsics. No Qt.

The camera is stored as its rotation ``(3, 3)`` (columns: right, up, back; OpenGL axes as in
:mod:`raytrace.camera`), its eye position ``(3,)`` and the distance to the orbit target on its -Z axis, so a
dataset camera is reproduced bit for bit by :meth:`OrbitCamera.from_c2w` followed by :meth:`OrbitCamera.c2w`.
The world is Z-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from raytrace.camera import Intrinsics, look_at

WORLD_UP = np.array([0.0, 0.0, 1.0])
MAX_ELEVATION = math.radians(89.0)  # orbiting stops short of the poles, where "up" is undefined
MIN_DISTANCE = 1e-3


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle`` radians about the unit ``axis`` (right-handed, Rodrigues)."""
    x, y, z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


@dataclass
class OrbitCamera:
    """A pinhole camera that orbits ``target``: ``rotation`` ``(3, 3)``, ``eye`` ``(3,)``, ``distance`` to the
    target along the view axis, horizontal field of view ``fov_x`` in radians."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    eye: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 4.0]))
    distance: float = 4.0
    fov_x: float = math.radians(50.0)

    @classmethod
    def looking_at(cls, eye: np.ndarray, target: np.ndarray, fov_x: float = math.radians(50.0)) -> OrbitCamera:
        """A camera at ``eye`` looking at ``target`` with no roll (``raytrace.camera.look_at``)."""
        eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
        return cls.from_c2w(look_at(eye, target), float(np.linalg.norm(eye - target)), fov_x)

    @classmethod
    def from_c2w(cls, c2w: np.ndarray, distance: float, fov_x: float = math.radians(50.0)) -> OrbitCamera:
        """Snap to the camera ``c2w`` ``(4, 4)`` (exactly: ``c2w()`` returns it), orbiting a target ``distance``
        in front of it."""
        m = np.asarray(c2w, dtype=np.float64)
        return cls(m[:3, :3].copy(), m[:3, 3].copy(), max(float(distance), MIN_DISTANCE), fov_x)

    def copy(self) -> OrbitCamera:
        return OrbitCamera(self.rotation.copy(), self.eye.copy(), self.distance, self.fov_x)

    @property
    def right(self) -> np.ndarray:
        return self.rotation[:, 0]

    @property
    def up(self) -> np.ndarray:
        return self.rotation[:, 1]

    @property
    def back(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def target(self) -> np.ndarray:
        """The orbit centre ``(3,)``, ``distance`` along the view direction."""
        return self.eye - self.distance * self.back

    @property
    def elevation(self) -> float:
        """Angle of the eye above the target's horizontal plane, radians."""
        return math.asin(float(np.clip(self.back[2], -1.0, 1.0)))

    def c2w(self) -> np.ndarray:
        """Camera-to-world ``(4, 4)`` float64 (OpenGL axes)."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.eye
        return m

    def intrinsics(self, width: int, height: int) -> Intrinsics:
        """Square pixels, centred principal point, this camera's horizontal field of view."""
        return Intrinsics.from_fov(width, height, self.fov_x)

    def _rotate_about_target(self, rot: np.ndarray) -> None:
        target = self.target
        self.rotation = rot @ self.rotation
        self.eye = target + self.distance * self.back

    def orbit(self, yaw: float, pitch: float) -> None:
        """Turn around the target: ``yaw`` radians about the world up axis, ``pitch`` radians up (positive
        raises the eye); the elevation stays within +-89 degrees. The distance to the target is kept."""
        self._rotate_about_target(rotation_about(WORLD_UP, yaw))
        new_elevation = float(np.clip(self.elevation + pitch, -MAX_ELEVATION, MAX_ELEVATION))
        delta = new_elevation - self.elevation
        if abs(delta) > 0.0:
            self._rotate_about_target(rotation_about(self.right, -delta))

    def pan(self, dx: float, dy: float) -> None:
        """Move eye and target together by ``dx`` along the camera's right and ``dy`` along its up axis, in
        units of the distance to the target (so a drag feels the same at any zoom)."""
        self.eye = self.eye + self.distance * (dx * self.right + dy * self.up)

    def zoom(self, factor: float) -> None:
        """Multiply the distance to the target by ``factor`` (below 1 moves closer); the target stays."""
        target = self.target
        self.distance = max(self.distance * float(factor), MIN_DISTANCE)
        self.eye = target + self.distance * self.back

    def fly(self, forward: float, right: float, up: float) -> None:
        """Translate eye and target: ``forward`` along the view direction, ``right`` along the camera's right
        axis, ``up`` along the world up axis (scene units)."""
        self.eye = self.eye - forward * self.back + right * self.right + up * WORLD_UP


def project(points: np.ndarray, c2w: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` to pixel positions ``(N, 2)`` (x, y; pixel centres at +0.5) and a mask ``(N,)``
    of the points in front of the camera."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    p = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -p[:, 2]
    front = depth > 1e-6
    z = np.where(front, depth, 1.0)
    xy = np.stack([intr.cx + intr.fx * p[:, 0] / z, intr.cy - intr.fy * p[:, 1] / z], axis=-1)
    return xy, front


def frustum_points(c2w: np.ndarray, intr: Intrinsics, depth: float) -> np.ndarray:
    """The apex and the four image corners (top-left, top-right, bottom-right, bottom-left) at ``depth`` in
    front of the camera: ``(5, 3)`` world points."""
    c2w = np.asarray(c2w, dtype=np.float64)
    corners = np.array([[0.0, 0.0], [intr.width, 0.0], [intr.width, intr.height], [0.0, intr.height]])
    x = (corners[:, 0] - intr.cx) / intr.fx
    y = -(corners[:, 1] - intr.cy) / intr.fy
    cam = np.stack([x, y, -np.ones(4)], axis=-1) * depth
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return np.concatenate([c2w[None, :3, 3], world], axis=0)
