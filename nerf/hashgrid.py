"""Multiresolution hash encoding (instant-NGP), pure PyTorch: the reference every other backend must match.

The function and the table layout are those of tiny-cuda-nn's ``HashGrid`` (the instant-NGP implementation), so
a table trained with any backend (``torch``, ``native``, ``tcnn``) is the same parameter vector for the others.
Levels are stored one after another in one ``(rows, F)`` table; with ``b`` the per-level growth and
``T = 2**log2_table_size``:

- level ``l`` has scale ``s_l = base_resolution * 2**(l * log2 b) - 1`` (float32 arithmetic) and
  ``R_l = ceil(s_l) + 1`` vertices per axis;
- it is dense when ``R_l**3 <= T``: ``size = R_l**3`` rounded up to a multiple of 8 and vertex ``(x, y, z)`` has
  index ``(x + y*R_l + z*R_l**2) mod size``;
- otherwise it is hashed: ``size = T`` and the index is
  ``((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) mod 2**32 mod T``;
- a point ``p``, clamped to ``[0, 1]**3``, sits at vertex coordinates ``p * s_l + 0.5`` and interpolates its 8
  corner vertices trilinearly. The +0.5 staggers the levels; on the upper faces the upper corner is ``R_l`` and
  its index wraps around (tcnn does not clamp it either).

Rounding: ``p * s_l + 0.5`` is a product then a sum, each rounded (here and in the native kernels, bit for bit);
tcnn fuses them (``fmaf``) and computes ``s_l`` with the GPU's ``exp2f``, so it agrees to float32 rounding only.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nerf.config import HashGridConfig

PRIMES = (1, 2654435761, 805459861)
"""Per-axis hash primes (x, y, z), as in instant-NGP."""


@dataclass(frozen=True)
class LevelLayout:
    """Where one level lives in the shared table."""

    scale: float  # s_l: vertex coordinates are p * s_l + 0.5 (a float32 value)
    resolution: int  # R_l = ceil(s_l) + 1 vertices per axis
    size: int
    offset: int
    hashed: bool


def _f32(value: float) -> float:
    """``value`` rounded to the nearest float32."""
    return struct.unpack("f", struct.pack("f", value))[0]


def level_scale(cfg: HashGridConfig, level: int) -> float:
    """``s_l = base_resolution * 2**(level * log2 b) - 1`` in float32 arithmetic, as tiny-cuda-nn computes it
    (each operation rounded once; plain Python, so that ``torch.compile`` sees constants)."""
    log2_growth = _f32(math.log2(_f32(cfg.growth)))
    power = _f32(2.0 ** _f32(level * log2_growth))
    return _f32(_f32(power * cfg.base_resolution) - 1.0)


@functools.cache
def level_layouts(cfg: HashGridConfig) -> tuple[LevelLayout, ...]:
    """The layout of every level, in storage order."""
    layouts, offset = [], 0
    for level in range(cfg.levels):
        scale = level_scale(cfg, level)
        res = math.ceil(scale) + 1
        hashed = res**3 > cfg.table_size
        size = cfg.table_size if hashed else min(-(-(res**3) // 8) * 8, cfg.table_size)
        layouts.append(LevelLayout(scale=scale, resolution=res, size=size, offset=offset, hashed=hashed))
        offset += size
    return tuple(layouts)


MAX_LEVELS = 32
"""Most levels a layout may have (the native kernels pass every level to a kernel by value)."""


@dataclass(frozen=True, eq=False)
class GridLayout:
    """The level layout the native ops take, built once per config by :func:`grid_layout` and validated here, on
    the host, before any kernel sees it.

    ``offsets`` ``(L + 1,)`` int64 on the CPU: level ``l`` owns rows ``offsets[l] .. offsets[l + 1]`` of the
    table (``offsets[L]`` = rows); ``scales`` ``(L,)`` float32 on the CPU: ``s_l``. A level's resolution is
    ``ceil(s_l) + 1`` and it is hashed when ``R_l**3 > table_size``.
    """

    offsets: torch.Tensor
    scales: torch.Tensor
    features: int
    table_size: int

    def __post_init__(self) -> None:
        levels, s, o = self.scales.numel(), self.scales, self.offsets
        if s.shape != (levels,) or s.dtype != torch.float32 or s.device.type != "cpu":
            raise ValueError(f"scales must be (L,) float32 on the CPU, got {tuple(s.shape)} {s.dtype}")
        if o.shape != (levels + 1,) or o.dtype != torch.int64 or o.device.type != "cpu":
            raise ValueError(f"offsets must be ({levels + 1},) int64 on the CPU, got {tuple(o.shape)} {o.dtype}")
        if not 1 <= levels <= MAX_LEVELS:
            raise ValueError(f"need 1..{MAX_LEVELS} levels, got {levels}")
        if self.features < 1 or self.table_size < 1 or self.table_size & (self.table_size - 1):
            raise ValueError(f"need features >= 1 and a power-of-2 table size, got {self.features}, {self.table_size}")
        if int(self.offsets[0]) != 0:
            raise ValueError(f"the first level must start at row 0, got {int(self.offsets[0])}")
        for level, (scale, start, end) in enumerate(
            zip(self.scales.tolist(), self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True)
        ):
            if not 0.0 <= scale < 2.0**31:
                raise ValueError(f"level {level}: scale {scale} outside [0, 2**31)")
            res, size = math.ceil(scale) + 1, end - start
            if res**3 > self.table_size:
                if size != self.table_size:
                    raise ValueError(f"hashed level {level}: {size} rows, the table size is {self.table_size}")
            elif not res**3 <= size <= self.table_size:
                raise ValueError(f"dense level {level} needs R^3 = {res}^3 rows, at most {self.table_size}, has {size}")

    @property
    def levels(self) -> int:
        return self.scales.numel()

    @property
    def rows(self) -> int:
        """Rows of the table."""
        return int(self.offsets[-1])


@functools.cache
def grid_layout(cfg: HashGridConfig) -> GridLayout:
    """The :class:`GridLayout` of ``cfg`` (one object per config)."""
    layouts = level_layouts(cfg)
    offsets = [lay.offset for lay in layouts] + [layouts[-1].offset + layouts[-1].size]
    return GridLayout(
        offsets=torch.tensor(offsets, dtype=torch.int64),
        scales=torch.tensor([lay.scale for lay in layouts], dtype=torch.float32),
        features=cfg.features,
        table_size=cfg.table_size,
    )


def table_rows(cfg: HashGridConfig) -> int:
    """Rows of the table: the sum of the level sizes."""
    return sum(layout.size for layout in level_layouts(cfg))


def param_count(cfg: HashGridConfig) -> int:
    """Trainable parameters: ``sum over levels of size * features``."""
    return table_rows(cfg) * cfg.features


def hash_encode(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """Encode points ``x`` ``(N, 3)`` in ``[0, 1]`` (clamped first, NaN read as 0) with ``table`` ``(rows, F)``.

    Returns ``(N, levels * F)`` in the table's dtype, level-major (``[l0 f0, l0 f1, l1 f0, ...]``).
    Differentiable by autograd with respect to ``table`` and ``x``.
    """
    if x.dim() != 2 or x.shape[-1] != 3:
        raise ValueError(f"x must be (N, 3), got {tuple(x.shape)}")
    rows = table_rows(cfg)
    if table.shape != (rows, cfg.features):
        raise ValueError(f"table must be ({rows}, {cfg.features}), got {tuple(table.shape)}")
    n, levels = x.shape[0], cfg.levels
    x = x.to(table.dtype).nan_to_num(0.0).clamp(0.0, 1.0)  # a NaN point reads vertex 0's cell
    # Corner c = 4*bx + 2*by + bz: indices and weights are outer products over the three axes.
    indices = torch.empty(n, levels, 2, 2, 2, dtype=torch.long, device=x.device)
    weights = []
    for level, layout in enumerate(level_layouts(cfg)):
        pos = x * layout.scale + 0.5  # two roundings, as the native kernels (tcnn's fmaf rounds once)
        lower = pos.detach().floor()
        frac = pos - lower
        i0 = lower.long()
        cx, cy, cz = torch.stack([i0, i0 + 1], dim=1).unbind(-1)  # each (N, 2): [lower, upper]
        out = indices[:, level]
        if layout.hashed:
            xy = cx[:, :, None, None] ^ (cy * PRIMES[1])[:, None, :, None]
            torch.bitwise_xor(xy, (cz * PRIMES[2])[:, None, None, :], out=out)
            out &= cfg.table_size - 1  # T divides 2**32: "mod 2**32, then mod T" keeps the low bits
        else:
            side = layout.resolution
            xy = cx[:, :, None, None] + (cy * side)[:, None, :, None]
            torch.add(xy, (cz * (side * side))[:, None, None, :], out=out)
            out %= layout.size
        out += layout.offset
        wx, wy, wz = torch.stack([1.0 - frac, frac], dim=1).unbind(-1)
        weights.append((wx[:, :, None, None] * wy[:, None, :, None]) * wz[:, None, None, :])
    w = torch.stack(weights, dim=1).reshape(n * levels, 1, 8)
    feats = table.index_select(0, indices.reshape(-1)).view(n * levels, 8, cfg.features)
    return torch.bmm(w, feats).reshape(n, cfg.output_dim)


EncodeFn = Callable[[torch.Tensor, torch.Tensor, HashGridConfig], torch.Tensor]


class HashGrid(nn.Module):
    """The encoding's parameters plus a swappable ``encode_fn`` (backends plug in here)."""

    def __init__(self, cfg: HashGridConfig, encode_fn: EncodeFn = hash_encode) -> None:
        super().__init__()
        self.cfg = cfg
        self.encode_fn = encode_fn
        self.table = nn.Parameter(torch.empty(table_rows(cfg), cfg.features).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        """``levels * features``."""
        return self.cfg.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3)`` in ``[0, 1]`` -> ``(N, levels * features)``."""
        return self.encode_fn(x, self.table, self.cfg)
