"""Multiresolution hash encoding (instant-NGP), pure PyTorch: the reference every other backend must match.

Layout (one table for all levels, levels stored one after another):

- level ``l`` has resolution ``N_l = floor(base_resolution * growth**l)`` and ``(N_l + 1)**3`` grid vertices;
- a level is dense when ``(N_l + 1)**3 <= T = 2**log2_table_size``: ``size = (N_l + 1)**3`` and vertex
  ``(x, y, z)`` has index ``x + y*(N_l+1) + z*(N_l+1)**2``;
- otherwise it is hashed: ``size = T`` and the index is
  ``((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) mod 2**32 mod T``;
- a point ``p`` in ``[0, 1]**3`` sits at vertex coordinates ``p * N_l`` and interpolates its 8 corner
  vertices trilinearly (the upper corner clamped to ``N_l``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)
"""Per-axis hash primes (x, y, z), as in instant-NGP."""


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of the encoding; defaults are instant-NGP's for synthetic scenes."""

    levels: int = 16
    features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048

    def __post_init__(self) -> None:
        if self.levels < 1 or self.features < 1:
            raise ValueError(f"levels and features must be >= 1, got {self.levels}, {self.features}")
        if not 1 <= self.log2_table_size <= 32:
            raise ValueError(f"log2_table_size must be in [1, 32], got {self.log2_table_size}")
        if not 1 <= self.base_resolution <= self.max_resolution:
            raise ValueError(
                "need 1 <= base_resolution <= max_resolution, "
                f"got {self.base_resolution}, {self.max_resolution}"
            )

    @property
    def growth(self) -> float:
        """Per-level scale ``b = exp((ln max_res - ln base_res) / (levels - 1))`` (1 for a single level)."""
        if self.levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.levels - 1))

    @property
    def table_size(self) -> int:
        """``T``: the number of entries of a hashed level."""
        return 1 << self.log2_table_size

    @property
    def output_dim(self) -> int:
        """Encoded width ``levels * features``."""
        return self.levels * self.features


@dataclass(frozen=True)
class LevelLayout:
    """Where one level lives in the shared table."""

    resolution: int
    size: int
    offset: int
    hashed: bool


def level_resolution(cfg: HashGridConfig, level: int) -> int:
    """``N_l = floor(base_resolution * growth**level)``; a relative 1e-9 guards against ``2047.9999...``."""
    return math.floor(cfg.base_resolution * cfg.growth**level * (1.0 + 1e-9))


def level_layouts(cfg: HashGridConfig) -> list[LevelLayout]:
    """The layout of every level, in storage order."""
    layouts, offset = [], 0
    for level in range(cfg.levels):
        res = level_resolution(cfg, level)
        dense_size = (res + 1) ** 3
        hashed = dense_size > cfg.table_size
        size = cfg.table_size if hashed else dense_size
        layouts.append(LevelLayout(resolution=res, size=size, offset=offset, hashed=hashed))
        offset += size
    return layouts


def table_rows(cfg: HashGridConfig) -> int:
    """Rows of the table: the sum of the level sizes."""
    return sum(layout.size for layout in level_layouts(cfg))


def param_count(cfg: HashGridConfig) -> int:
    """Trainable parameters: ``sum over levels of size * features``."""
    return table_rows(cfg) * cfg.features


def hash_encode(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """Encode points ``x`` ``(N, 3)`` in ``[0, 1]`` (clamped first) with ``table`` ``(rows, F)``.

    Returns ``(N, levels * F)`` in the table's dtype, level-major (``[l0 f0, l0 f1, l1 f0, ...]``).
    Differentiable by autograd with respect to ``table`` and ``x``.
    """
    if x.dim() != 2 or x.shape[-1] != 3:
        raise ValueError(f"x must be (N, 3), got {tuple(x.shape)}")
    rows = table_rows(cfg)
    if table.shape != (rows, cfg.features):
        raise ValueError(f"table must be ({rows}, {cfg.features}), got {tuple(table.shape)}")
    n, levels = x.shape[0], cfg.levels
    x = x.to(table.dtype).clamp(0.0, 1.0)
    # Corner c = 4*bx + 2*by + bz: indices and weights are outer products over the three axes.
    indices = torch.empty(n, levels, 2, 2, 2, dtype=torch.long, device=x.device)
    weights = []
    for level, layout in enumerate(level_layouts(cfg)):
        pos = x * layout.resolution
        lower = pos.detach().floor()
        frac = pos - lower
        i0 = lower.long()
        i1 = (i0 + 1).clamp_(max=layout.resolution)
        cx, cy, cz = torch.stack([i0, i1], dim=1).unbind(-1)  # each (N, 2): [lower, upper]
        out = indices[:, level]
        if layout.hashed:
            xy = cx[:, :, None, None] ^ (cy * PRIMES[1])[:, None, :, None]
            torch.bitwise_xor(xy, (cz * PRIMES[2])[:, None, None, :], out=out)
            out &= cfg.table_size - 1  # T divides 2**32: "mod 2**32, then mod T" keeps the low bits
        else:
            side = layout.resolution + 1
            xy = cx[:, :, None, None] + (cy * side)[:, None, :, None]
            torch.add(xy, (cz * (side * side))[:, None, None, :], out=out)
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
