"""The viewer's Qt-free render path (:mod:`viewer.core`): strips keep the lens, the rounds and the view grid render
what the trainer's renderer does, colour bars in the depth and error views."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from nerf.evaluate import colorize_depth, depth_colours
from nerf.metrics import psnr
from nerf.panels import BAR_HEIGHT, colour_bar
from nerf.render import RENDER_TERMINATION, VIEW_GRID_RESOLUTION, Radiance, RayBatch, render_image, render_rays
from viewer.core import ERROR_VMAX, RenderRequest, ViewRenderer, error_colours, error_heatmap


class DistortedRequest(RenderRequest):
    """A request whose camera has lens distortion."""

    def intrinsics(self, scale: float = 1.0):
        return dataclasses.replace(super().intrinsics(scale), dist=(0.3, -0.1, 0.02, 0.01))


def test_strips_keep_the_lens_distortion(tiny_run) -> None:
    _, result = tiny_run
    split, m = result.dataset.splits["test"], result.model
    req = DistortedRequest(split.poses[0].double().numpy(), split.intrinsics.camera_angle_x, 32, 32)
    frame = ViewRenderer(m, strip_pixels=32 * 5).render(req)  # strips of 5 rows
    whole = render_image(m, split.poses[0], req.intrinsics(), background=torch.ones(3))
    np.testing.assert_allclose(frame.rgb, whole["rgb"].numpy(), atol=1e-5)


def test_the_viewer_renders_in_rounds_what_render_rays_renders(tiny_run) -> None:
    _, result = tiny_run
    split, m = result.dataset.splits["test"], result.model
    req = RenderRequest(split.poses[0].double().numpy(), split.intrinsics.camera_angle_x, 32, 32)
    chunks = []

    def before_fn(radiance: Radiance, rays: RayBatch) -> dict[str, torch.Tensor]:
        chunks.append(len(rays))
        return render_rays(radiance, rays)

    rounds, before = ViewRenderer(m).render(req), ViewRenderer(m, rays_fn=before_fn).render(req)
    assert sum(chunks) == 32 * 32 and (before.opacity > 0.99).any()
    # the rounds end rays at transmittance RENDER_TERMINATION, render_rays at 1e-4: off by at most that
    np.testing.assert_allclose(rounds.rgb, before.rgb, rtol=0, atol=RENDER_TERMINATION + 1e-3)
    np.testing.assert_allclose(rounds.opacity, before.opacity, rtol=0, atol=RENDER_TERMINATION)


def test_the_view_grid_is_finer_and_renders_the_same_views(tiny_run) -> None:
    _, result = tiny_run
    split, m = result.dataset.splits["test"], result.model
    renderer = ViewRenderer(m, fine_grid=True)
    assert renderer.grid(0.5) is m.grid  # previews come before the view grid is built
    fine = renderer.grid()
    assert VIEW_GRID_RESOLUTION >= fine.resolution > m.grid.resolution and renderer.grid(0.5) is fine
    assert fine.mask.float().mean() < m.grid.mask.float().mean()
    for i in range(split.poses.shape[0]):
        req = RenderRequest(split.poses[i].double().numpy(), split.intrinsics.camera_angle_x, 32, 32)
        coarse = ViewRenderer(m).render(req)
        assert psnr(torch.from_numpy(renderer.render(req).rgb), torch.from_numpy(coarse.rgb)) > 40.0


def test_depth_and_error_views_carry_a_colour_bar(tiny_run) -> None:
    _, result = tiny_run
    split, m = result.dataset.splits["test"], result.model
    renderer = ViewRenderer(m)
    req = RenderRequest(split.poses[0].double().numpy(), split.intrinsics.camera_angle_x, 128, 128, mode="depth")
    frame = renderer.render(req)
    near, far = renderer.depth_range(req.c2w[:3, 3])
    plain = colorize_depth(torch.from_numpy(frame.depth * (frame.opacity > 0.5)), near, far)
    bar = colour_bar(depth_colours(near, far, 51), f"{near:.2f}", f"{far:.2f}")
    rows, cols = slice(128 - BAR_HEIGHT - 4, 124), slice(4, 55)
    np.testing.assert_array_equal(frame.display[rows, cols], bar)
    outside = np.ones((128, 128), bool)
    outside[rows, cols] = False
    np.testing.assert_array_equal(frame.display[outside], plain[outside])

    gt = np.clip(frame.rgb + 0.1, 0, 1)
    renderer.ground_truth = lambda *args, **kwargs: gt  # no scene file here: a stand-in truth
    renderer._ground_truth(frame, spp=1)
    bar = colour_bar(error_colours(51), "0", f"{ERROR_VMAX:g}")
    np.testing.assert_array_equal(frame.error[rows, cols], bar)
    np.testing.assert_array_equal(frame.error[outside], error_heatmap(frame.rgb, gt)[outside])
