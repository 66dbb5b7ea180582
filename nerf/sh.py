"""Real spherical-harmonics direction encoding, with tiny-cuda-nn's / instant-NGP's constants and order."""

from __future__ import annotations

import torch

MAX_DEGREE = 4


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Unit directions ``(N, 3)`` -> ``(N, degree**2)`` real SH basis values (bands 0 .. degree-1)."""
    if not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in [1, {MAX_DEGREE}], got {degree}")
    if d.dim() != 2 or d.shape[-1] != 3:
        raise ValueError(f"d must be (N, 3), got {tuple(d.shape)}")
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]  # 1/(2 sqrt(pi))
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            1.0925484305920792 * xy,
            -1.0925484305920792 * yz,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * xz,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)
