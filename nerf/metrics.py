"""Image and depth quality metrics: PSNR, SSIM (the standard Gaussian-window one) and depth errors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr_from_mse(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error of values in [0, 1]: ``inf`` for 0, ``nan`` for
    a NaN/Inf error."""
    if not math.isfinite(mse):
        return math.nan
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images ``(..., 3)`` in [0, 1]; ``inf`` for identical images."""
    return psnr_from_mse(torch.mean((pred.double() - target.double()) ** 2).item())


def _gaussian_window(device: torch.device) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(SSIM_WINDOW,)`` float64 (scipy's, truncated at radius 5)."""
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean structural similarity of images ``(H, W, 3)`` in [0, 1] (data range 1).

    Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) covariances, averaged
    over the pixels whose window lies inside the image and over the channels: the same number as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1, data_range=1.0)``. Both sides must be at least 11 pixels.
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"ssim needs two (H, W, C) images of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    if min(pred.shape[0], pred.shape[1]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(pred.shape)}"
        )
    x = pred.double().permute(2, 0, 1).unsqueeze(1)  # (C, 1, H, W): each channel on its own
    y = target.double().permute(2, 0, 1).unsqueeze(1).to(x.device)
    g = _gaussian_window(x.device)

    def blur(img: torch.Tensor) -> torch.Tensor:  # separable "valid" Gaussian filter
        return F.conv2d(F.conv2d(img, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean().item()


def depth_errors(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean absolute and root-mean-square error of depth ``(H, W)`` over the pixels where ``mask`` ``(H, W)``
    (bool) is set; both are ``nan`` when no pixel is."""
    diff = (pred.double() - gt.double().to(pred.device))[mask.to(pred.device)]
    if diff.numel() == 0:
        return {"mae": math.nan, "rmse": math.nan}
    return {"mae": diff.abs().mean().item(), "rmse": diff.square().mean().sqrt().item()}
