"""The 2020 NeRF model (positional encoding + one MLP), the baseline the hash grid must beat.

It has the same interface as :class:`nerf.field.NGPField` so that the same sampler, renderer and trainer
drive both; the hierarchical sampling of the original paper is replaced by the shared occupancy-grid marcher.
"""

from __future__ import annotations

import torch
from torch import nn

from nerf.field import trunc_exp


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """``(N, D)`` -> ``(N, D * (1 + 2 * n_freqs))``: x, sin(2^k pi x), cos(2^k pi x)."""
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * torch.pi
    scaled = x[..., None, :] * freqs[:, None]
    return torch.cat([x, scaled.sin().flatten(-2), scaled.cos().flatten(-2)], dim=-1)


class PENeRFField(nn.Module):
    """Positional-encoding NeRF.

    ``density(x (N, 3)) -> (sigma (N,), features (N, width))``; ``forward(x, d) -> (sigma (N,), rgb (N, 3))``.
    """

    def __init__(
        self, aabb: torch.Tensor, width: int = 128, depth: int = 4, pos_freqs: int = 10, dir_freqs: int = 4
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb.clone().float())
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs
        layers: list[nn.Module] = []
        in_dim = 3 * (1 + 2 * pos_freqs)
        for _ in range(depth):
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        self.trunk = nn.Sequential(*layers)
        self.sigma_head = nn.Linear(width, 1)
        self.color = nn.Sequential(
            nn.Linear(width + 3 * (1 + 2 * dir_freqs), width // 2), nn.ReLU(), nn.Linear(width // 2, 3)
        )

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unit = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0) & (unit <= 1)).all(dim=-1)
        h = self.trunk(positional_encoding(unit * 2 - 1, self.pos_freqs))
        sigma = trunc_exp(self.sigma_head(h)[..., 0] - 1.0) * inside
        return sigma, h

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma, h = self.density(x)
        return sigma, self.rgb(h, d)

    def rgb(self, h: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``rgb (N, 3)`` from :meth:`density`'s features ``(N, width)`` seen along ``d`` ``(N, 3)``."""
        return self.colour(h, self.view(d))

    def view(self, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The colour inputs ``(N, 3 (1 + 2 dir_freqs))`` of rays along ``d`` ``(N, 3)`` (the encoded direction;
        ``image``: no appearance embedding here), see :meth:`nerf.field.NGPField.view`."""
        return positional_encoding(d, self.dir_freqs)

    def colour(self, h: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """``rgb (N, 3)`` from features ``h`` ``(N, width)`` and :meth:`view` ``(N, ...)``."""
        return torch.sigmoid(self.color(torch.cat([h, view], dim=-1)))
