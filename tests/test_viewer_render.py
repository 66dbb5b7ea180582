"""The viewer's render path: strips keep the lens, colour bars in the depth and error views, and a refresh of the
same view (live training) never shows a coarser image over a sharper one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

import torch

from nerf.evaluate import colorize_depth, depth_colours
from nerf.metrics import psnr
from nerf.panels import BAR_HEIGHT, colour_bar
from nerf.render import VIEW_GRID_RESOLUTION, render_image, render_rays
from viewer.core import ERROR_VMAX, RenderRequest, ViewRenderer, error_colours, error_heatmap

from .test_viewer_window import WAIT_MS, current_frame, open_window


class DistortedRequest(RenderRequest):
    """A request whose camera has lens distortion."""

    def intrinsics(self, scale: float = 1.0):
        return dataclasses.replace(super().intrinsics(scale), dist=(0.3, -0.1, 0.02, 0.01))


def test_strips_keep_the_lens_distortion(tiny_run) -> None:
    _, result = tiny_run
    split, m = result.dataset.splits["test"], result.model
    req = DistortedRequest(split.poses[0].double().numpy(), split.intrinsics.camera_angle_x, 32, 32)
    frame = ViewRenderer(m, strip_pixels=32 * 5).render(req)  # strips of 5 rows
    whole = render_image(m.field, m.grid, split.poses[0], req.intrinsics(), m.march, torch.ones(3))
    np.testing.assert_allclose(frame.rgb, whole["rgb"].numpy(), atol=1e-5)


def test_the_viewer_renders_in_rounds_what_render_rays_renders(tiny_run) -> None:
    _, result = tiny_run
    split, m = result.dataset.splits["test"], result.model
    req = RenderRequest(split.poses[0].double().numpy(), split.intrinsics.camera_angle_x, 32, 32)
    chunks = []

    def before_fn(*args):
        chunks.append(args[2].shape[0])
        return render_rays(*args)

    rounds, before = ViewRenderer(m).render(req), ViewRenderer(m, rays_fn=before_fn).render(req)
    assert sum(chunks) == 32 * 32 and (before.opacity > 0.99).any()
    np.testing.assert_allclose(rounds.rgb, before.rgb, atol=1e-3)
    np.testing.assert_allclose(rounds.opacity, before.opacity, atol=1e-4)


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


def test_a_refresh_of_the_same_view_keeps_the_sharper_image_until_as_fine(qtbot, tiny_run) -> None:
    window = open_window(qtbot, tiny_run, width=64, height=64)
    current_frame(qtbot, window)
    window.worker.controller.target_fps = 1000.0  # a 1 ms frame period: the first pass is a coarse preview
    shown: list[tuple[int, float]] = []
    window.frameShown.connect(lambda f: shown.append((f.request.serial, f.scale)))
    window.request_render()  # the same view again, as live training asks after each step
    qtbot.waitUntil(window.rendering_done, timeout=WAIT_MS)
    assert shown == [(window.serial, 1.0)]
    window.camera.zoom(0.8)  # a new view: its coarse pass is shown at once
    window.request_render()
    qtbot.waitUntil(window.rendering_done, timeout=WAIT_MS)
    assert shown[1][1] < 1.0 and shown[-1] == (window.serial, 1.0)
