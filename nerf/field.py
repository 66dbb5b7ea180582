"""The instant-NGP radiance field: hash grid -> density MLP; SH(direction) + geometry -> colour MLP."""

from __future__ import annotations

import torch
from torch import nn

from nerf.config import FieldConfig
from nerf.contraction import unit_coords
from nerf.hashgrid import EncodeFn, HashGrid, HashGridConfig, hash_encode
from nerf.per_image import AppearanceEmbedding
from nerf.sh import sh_encode

TRUNC_EXP_MAX = 15.0
"""``trunc_exp``'s gradient is ``exp(min(x, TRUNC_EXP_MAX))``."""
UNTRAINED_DIAGONAL_DEPTH = 3**0.5
"""The optical depth of the untrained field along its box's diagonal, whatever the scene's size: instant-NGP's
(density 1 across its unit cube). ``sigma = trunc_exp(raw) * density_scale``, ``density_scale`` = this / the box's
diagonal, so one marching step of the untrained field (1/256 of the diagonal or less) is below the occupancy
threshold (0.01) and the grid prunes empty space from its first updates, rather than after training has pushed the
density of every empty cell down (hundreds of steps in a large box)."""


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` whose gradient is ``exp(min(x, 15))``, so large log-densities cannot blow up training."""
    return _TruncExp.apply(x)


def check_aabb(aabb: torch.Tensor) -> torch.Tensor:
    """A float32 copy of ``aabb`` ``(2, 3)`` (min corner, max corner); ValueError unless min < max."""
    aabb = torch.as_tensor(aabb, dtype=torch.float32)
    if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
        raise ValueError(f"aabb must be (2, 3) with min < max, got {aabb.tolist()}")
    return aabb.clone()


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, no biases (as tiny-cuda-nn's FullyFusedMLP)."""
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(in_dim, hidden, bias=False), nn.ReLU(inplace=True)]
        in_dim = hidden
    mods.append(nn.Linear(in_dim, out_dim, bias=False))
    return nn.Sequential(*mods)


class NGPField(nn.Module):
    """``density(x) -> (sigma (N,), geo (N, geo_features))``; ``forward(x, d) -> (sigma (N,), rgb (N, 3))``.

    ``x`` are world points ``(N, 3)``, normalised into ``aabb`` ``(2, 3)`` (min, max corners); points outside
    it get density 0, unless ``contracted``: then all of space maps into the grid (:mod:`nerf.contraction`).
    ``d`` are unit directions ``(N, 3)``. ``encode_fn`` is the backend's hash encoding. With ``appearance_images``
    > 0 the colour MLP also takes an appearance code of ``appearance_dims`` per training image
    (:class:`nerf.per_image.AppearanceEmbedding`): ``image`` ``(N,)`` picks each point's, ``None`` the mean code.
    """

    def __init__(
        self,
        cfg: FieldConfig,
        aabb: torch.Tensor,
        hash_cfg: HashGridConfig | None = None,
        encode_fn: EncodeFn = hash_encode,
        contracted: bool = False,
        appearance_images: int = 0,
        appearance_dims: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.contracted = contracted
        self.register_buffer("aabb", check_aabb(aabb))
        self.register_buffer("density_scale", UNTRAINED_DIAGONAL_DEPTH / (self.aabb[1] - self.aabb[0]).norm())
        self.encoding = HashGrid(hash_cfg or HashGridConfig(), encode_fn)
        self.density_mlp = mlp(self.encoding.output_dim, cfg.hidden, 1, 1 + cfg.geo_features)
        self.appearance = AppearanceEmbedding(appearance_images, appearance_dims) if appearance_images > 0 else None
        codes = appearance_dims if self.appearance is not None else 0
        self.color_mlp = mlp(cfg.sh_degree**2 + cfg.geo_features + codes, cfg.color_hidden, cfg.color_layers, 3)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World points ``(N, 3)`` -> grid coordinates ``(N, 3)`` (``[0, 1]`` inside the aabb, or everywhere when
        contracted)."""
        return unit_coords(x, self.aabb, self.contracted)

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sigma (N,)`` and geometry features ``(N, geo_features)`` at world points ``x`` ``(N, 3)``."""
        unit = self.normalize(x)
        inside = ((unit >= 0.0) & (unit <= 1.0)).all(dim=-1)
        out = self.density_mlp(self.encoding(unit))
        sigma = trunc_exp(out[:, 0]) * self.density_scale
        sigma = torch.where(inside, sigma, torch.zeros((), dtype=out.dtype, device=out.device))
        return sigma, out[:, 1:]

    def forward(
        self, x: torch.Tensor, d: torch.Tensor, image: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``sigma (N,)`` and ``rgb (N, 3)`` in ``(0, 1)`` at world points ``x`` seen along ``d`` (in training image
        ``image`` ``(N,)``, see :meth:`rgb`)."""
        sigma, geo = self.density(x)
        return sigma, self.rgb(geo, d, image)

    def rgb(self, geo: torch.Tensor, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """``rgb (N, 3)`` in ``(0, 1)`` from :meth:`density`'s features ``(N, geo_features)`` seen along ``d``; with
        an appearance embedding, in the training images ``image`` ``(N,)`` (``None``: the mean code)."""
        return self.colour(geo, self.view(d, image))

    def view(self, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The colour MLP's inputs ``(N, sh_degree**2 [+ appearance_dims])`` that depend on the ray alone, along unit
        ``d`` ``(N, 3)`` in training images ``image`` ``(N,)`` (see :meth:`rgb`): the renderers compute them once
        a ray, not once a sample, and :meth:`colour` takes them per sample."""
        encoded = sh_encode(d, self.cfg.sh_degree)
        if self.appearance is None:
            return encoded
        return torch.cat([encoded, self.appearance(image, d.shape[0]).to(encoded.dtype)], dim=-1)

    def colour(self, geo: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """``rgb (N, 3)`` from features ``geo`` ``(N, geo_features)`` and :meth:`view` ``(N, ...)``."""
        sh = self.cfg.sh_degree**2
        view = view.to(geo.dtype)
        return torch.sigmoid(self.color_mlp(torch.cat([view[:, :sh], geo, view[:, sh:]], dim=-1)))
