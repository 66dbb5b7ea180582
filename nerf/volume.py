"""Volume rendering of packed samples (sorted by ray, then by ``t``): weights, transmittance, compositing."""

from __future__ import annotations

from collections.abc import Callable

import torch


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """The dtype of running sums over many samples: float64, but float32 on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def segment_exclusive_cumsum(values: torch.Tensor, ray_indices: torch.Tensor) -> torch.Tensor:
    """Per-ray exclusive prefix sum ``(S,)`` of ``values`` ``(S,)`` over packed samples sorted by ray.

    One global cumsum minus each ray's running total at its first sample; accumulated in
    :func:`accumulation_dtype` so that long batches do not lose the precision of short rays.
    """
    if values.numel() == 0:
        return values.clone()
    acc_dtype = accumulation_dtype(values.device)
    inclusive = torch.cumsum(values.to(acc_dtype), dim=0)
    exclusive = inclusive - values.to(acc_dtype)
    first = torch.searchsorted(ray_indices, ray_indices)  # each sample's ray's first sample
    return (exclusive - exclusive[first]).to(values.dtype)


def render_weights(
    sigmas: torch.Tensor, deltas: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(S,)`` and transmittance before each sample ``(S,)``.

    ``T_i = exp(-sum_{j<i, same ray} sigma_j delta_j)``, ``alpha_i = 1 - exp(-sigma_i delta_i)``,
    ``w_i = T_i alpha_i``. ``n_rays`` is accepted for symmetry with :func:`accumulate` (samples are packed).
    """
    del n_rays
    tau = sigmas * deltas
    transmittance = torch.exp(-segment_exclusive_cumsum(tau, ray_indices))
    alpha = 1.0 - torch.exp(-tau)
    return transmittance * alpha, transmittance


def accumulate(
    weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """Per-ray weighted sums ``(n_rays, C)`` of ``values`` ``(S, C)``; the opacity ``(n_rays,)`` if None."""
    if values is None:
        out = torch.zeros(n_rays, dtype=weights.dtype, device=weights.device)
        return out.index_add(0, ray_indices, weights)
    out = torch.zeros(n_rays, values.shape[-1], dtype=values.dtype, device=values.device)
    return out.index_add(0, ray_indices, weights[:, None] * values)


def composite(
    sigmas: torch.Tensor,
    rgbs: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Composite packed samples into ``rgb (n_rays, 3)``, ``depth (n_rays,)``, ``opacity (n_rays,)``, and
    return the sample ``weights (S,)``.

    ``depth`` is the expected interval mid-point ``t`` normalised by opacity (0 where the opacity is 0).
    ``background`` ``(3,)`` or ``(n_rays, 3)`` fills the transparent rest; None leaves it black.
    """
    weights, _ = render_weights(sigmas, t_ends - t_starts, ray_indices, n_rays)
    opacity = accumulate(weights, None, ray_indices, n_rays)
    rgb = accumulate(weights, rgbs, ray_indices, n_rays)
    depth_sum = accumulate(weights, (0.5 * (t_starts + t_ends))[:, None], ray_indices, n_rays)[:, 0]
    rgb, depth = finish_composite(rgb, depth_sum, opacity, background)
    return {"rgb": rgb, "depth": depth, "opacity": opacity, "weights": weights}


def finish_composite(
    rgb: torch.Tensor, depth_sum: torch.Tensor, opacity: torch.Tensor, background: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The accumulated (premultiplied) ``rgb (N, 3)`` over ``background`` (``(3,)`` or ``(N, 3)``; None: black)
    and the depth ``(N,)``: the weighted ``depth_sum (N,)`` over ``opacity (N,)``, 0 where the opacity is 0."""
    if background is not None:
        rgb = rgb + (1.0 - opacity)[:, None] * background.to(rgb)
    positive = opacity > 0
    return rgb, torch.where(positive, depth_sum / torch.where(positive, opacity, 1.0), 0.0)


def over(rgba: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Straight-alpha ``rgba (..., 4)`` over ``background`` (broadcastable to ``(..., 3)``): ``(..., 3)``."""
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + background * (1.0 - alpha)


def distortion(
    weights: torch.Tensor, s_starts: torch.Tensor, s_ends: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """mip-NeRF 360's distortion loss of each ray ``(n_rays,)``: ``sum_ij w_i w_j |m_i - m_j| + sum_i w_i^2 ds_i / 3``
    over its packed samples ``(S,)`` (sorted by ray, then by ``s``), with ``m`` the mid-point and ``ds`` the length
    of the interval ``[s_starts, s_ends]`` in a normalised distance (:func:`nerf.marching.step_coordinates`). Small
    when each ray's weight sits in one short interval (a surface); floaters and fog in front of it raise it.
    O(S): the pair sum is ``2 sum_i w_i (m_i W_i - (wm)_i)``, ``W_i`` and ``(wm)_i`` the ray's exclusive prefix sums."""
    mids = 0.5 * (s_starts + s_ends)
    before = segment_exclusive_cumsum(weights, ray_indices)
    before_m = segment_exclusive_cumsum(weights * mids, ray_indices)
    per_sample = 2.0 * weights * (mids * before - before_m) + weights.square() * (s_ends - s_starts) / 3.0
    return accumulate(per_sample, None, ray_indices, n_rays)


CompositeFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor | None],
    dict[str, torch.Tensor],
]
"""A compositing function with the arguments and outputs of :func:`composite` (positional): the reference, or
:func:`nerf.backends.native_composite`."""


def early_terminated(transmittance: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(S,)`` bool: the samples still contributing (transmittance before them at least ``eps``)."""
    return transmittance >= eps
