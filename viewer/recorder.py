"""Camera paths: keyframes interpolated smoothly (Catmull-Rom positions, slerped rotations), and their video.

No Qt here: the window shows the progress of :func:`write_video` through its ``progress`` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from raytrace.atomic import atomic_path


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation ``(3, 3)`` -> unit quaternion ``(4,)`` as (w, x, y, z) with w >= 0."""
    m = np.asarray(r, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.empty(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q /= np.linalg.norm(q)
    return q if q[0] >= 0.0 else -q


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) ``(4,)`` -> rotation ``(3, 3)``."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions along the shorter arc, ``t`` in [0, 1]."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def catmull_rom(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, t: float) -> np.ndarray:
    """The uniform Catmull-Rom spline through ``p1`` (t = 0) and ``p2`` (t = 1)."""
    t2, t3 = t * t, t * t * t
    return 0.5 * (
        2.0 * p1 + (p2 - p0) * t + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * t2 + (3.0 * p1 - p0 - 3.0 * p2 + p3) * t3
    )


@dataclass
class Keyframe:
    """One camera on a path: camera-to-world ``(4, 4)`` and horizontal field of view in radians."""

    c2w: np.ndarray
    fov_x: float


@dataclass
class CameraPath:
    """Keyframes in order; :meth:`sample` gives the smooth path through all of them."""

    keyframes: list[Keyframe] = field(default_factory=list)

    def add(self, c2w: np.ndarray, fov_x: float) -> None:
        self.keyframes.append(Keyframe(np.asarray(c2w, dtype=np.float64).copy(), float(fov_x)))

    def clear(self) -> None:
        self.keyframes.clear()

    def __len__(self) -> int:
        return len(self.keyframes)

    def at(self, s: float) -> Keyframe:
        """The camera at path parameter ``s`` in [0, len - 1]; integer ``s`` gives keyframe ``s`` exactly."""
        n = len(self.keyframes)
        if n == 0:
            raise ValueError("the camera path has no keyframes")
        s = float(np.clip(s, 0.0, n - 1))
        i = min(int(np.floor(s)), max(n - 2, 0))
        t = s - i
        if n == 1 or t == 0.0:
            k = self.keyframes[i]
            return Keyframe(k.c2w.copy(), k.fov_x)
        if t == 1.0:
            k = self.keyframes[i + 1]
            return Keyframe(k.c2w.copy(), k.fov_x)
        pos = [self.keyframes[min(max(j, 0), n - 1)].c2w[:3, 3] for j in (i - 1, i, i + 1, i + 2)]
        start, end = self.keyframes[i], self.keyframes[i + 1]
        rot = quaternion_to_matrix(slerp(*(matrix_to_quaternion(k.c2w[:3, :3]) for k in (start, end)), t))
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rot, catmull_rom(*pos, t)
        return Keyframe(c2w, (1.0 - t) * start.fov_x + t * end.fov_x)

    def sample(self, frames: int) -> list[Keyframe]:
        """``frames`` cameras evenly spaced in the path parameter, first and last keyframes included."""
        if frames < 2:
            raise ValueError(f"a video needs at least 2 frames, got {frames}")
        return [self.at(s) for s in np.linspace(0.0, len(self.keyframes) - 1, frames)]


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int,
    progress: Callable[[int], bool] | None = None,
) -> bool:
    """Encode uint8 ``(H, W, 3)`` frames into an MP4 at ``path`` (atomically). ``progress(i)`` is called after
    frame ``i``; when it returns False the video is abandoned and nothing is written. Returns whether it was."""
    try:
        with atomic_path(path) as tmp:
            writer = imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, format="FFMPEG")
            try:
                for i, frame in enumerate(frames):
                    writer.append_data(frame)
                    if progress is not None and not progress(i):
                        raise _Cancelled
            finally:
                writer.close()
    except _Cancelled:
        return False
    return True


class _Cancelled(Exception):
    pass
