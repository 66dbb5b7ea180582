import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from nerf.metrics import depth_errors, psnr, ssim


def test_psnr_of_known_mse() -> None:
    target = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0))
    sign = torch.where(torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(1)) < 0.5, -1.0, 1.0)
    assert psnr(target + 0.1 * sign, target) == pytest.approx(20.0, abs=1e-4)  # MSE 1e-2
    assert psnr(target + 0.01, target) == pytest.approx(40.0, abs=1e-3)  # MSE 1e-4
    assert psnr(target, target) == math.inf


def _pair(seed: int, h: int = 40, w: int = 33) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(h, w, 3))
    y = np.clip(x + rng.normal(scale=0.1, size=x.shape), 0.0, 1.0)
    return x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_equals_skimage(seed: int) -> None:
    x, y = _pair(seed)
    ours = ssim(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    ref = structural_similarity(
        x.astype(np.float32).astype(np.float64),
        y.astype(np.float32).astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=1.0,
    )
    assert ours == pytest.approx(ref, abs=1e-4)
    assert 0.2 < ours < 0.95  # a real, imperfect similarity, so the comparison means something


def test_ssim_of_an_image_with_itself_is_one_and_rejects_small_images() -> None:
    x = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(3))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    assert ssim(x, 1.0 - x) < 0.0  # inverted contrast
    with pytest.raises(ValueError, match="11x11"):
        ssim(x[:10], x[:10])


def test_depth_errors_by_hand() -> None:
    gt = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    pred = torch.tensor([[1.5, 1.0], [3.0, 9.0]])
    mask = gt > 0  # the last pixel (error 9) is not covered
    err = depth_errors(pred, gt, mask)
    assert err["mae"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert err["rmse"] == pytest.approx(math.sqrt((0.25 + 1.0 + 0.0) / 3))
    empty = depth_errors(pred, gt, torch.zeros_like(mask))
    assert math.isnan(empty["mae"]) and math.isnan(empty["rmse"])
