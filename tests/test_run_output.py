"""What a run leaves for people: files readable under the umask, the start-up line, a bar that counts the time
budget, announced and timed evaluation and turntable, labelled panels."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf.cli import finish_run
from nerf.evaluate import PANEL_LABELS, colorize_depth, to_uint8
from nerf.loop import progress_bar, train
from nerf.panels import BAR_HEIGHT, LABEL_HEIGHT, labelled_panels
from nerf.render import render_image
from raytrace.atomic import write_text
from tests.conftest import SCENE, tiny_config

BUDGET = 150.0


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def run_under_umask_022(tmp_path_factory: pytest.TempPathFactory):
    """A dataset, a 4-step run under a time budget and its evaluation, all made under umask 022; with the stderr
    of the training and of :func:`finish_run`."""
    from raytrace.dataset import settings_for, write_dataset
    from raytrace.scene import load_scene

    root = tmp_path_factory.mktemp("modes")
    (root / "ball.toml").write_text(SCENE)
    err = io.StringIO()
    with umask(0o022), contextlib.redirect_stderr(err):
        scene = load_scene(root / "ball.toml")
        write_dataset(scene, root / "ball", settings_for(scene), progress=False)
        cfg = tiny_config(root / "ball", root / "runs", steps=4, checkpoint_every=2, time_budget=BUDGET,
                          turntable_frames=2)
        result = train(cfg)
        finish_run(result)
    return root / "ball", result, err.getvalue()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_written_is_readable_by_all_under_umask_022(run_under_umask_022) -> None:
    data, result, _ = run_under_umask_022
    run = result.run_dir
    files = [run / "config.json", run / "metrics.json", *sorted((run / "checkpoints").iterdir()),
             *sorted((run / "renders").iterdir()), *(p for p in sorted(data.rglob("*")) if p.is_file())]
    assert {p.suffix for p in files} >= {".json", ".png", ".pt", ".toml"}
    wrong = {str(p): oct(_mode(p)) for p in files if _mode(p) != 0o644}
    assert not wrong


def test_atomic_writes_follow_another_umask(tmp_path: Path) -> None:
    with umask(0o077):
        write_text(tmp_path / "private.txt", "x")
    with umask(0o002):
        write_text(tmp_path / "group.txt", "x")
    assert _mode(tmp_path / "private.txt") == 0o600 and _mode(tmp_path / "group.txt") == 0o664


def test_start_up_line_names_device_backend_preset_and_run_folder(run_under_umask_022) -> None:
    _, result, err = run_under_umask_022
    first = err.splitlines()[0]
    assert first.startswith("training on cpu with the torch backend, cpu preset, 4 steps or 150 s")
    assert str(result.run_dir) in first


def test_under_a_time_budget_the_bar_counts_seconds_to_the_budget(run_under_umask_022) -> None:
    _, result, err = run_under_umask_022
    assert f"/{BUDGET:.0f} s" in err and "step=" not in err.splitlines()[0]
    with contextlib.redirect_stderr(io.StringIO()):
        by_time = progress_bar(result.config, 0, 20.0)
        by_steps = progress_bar(tiny_config(Path("d"), Path("o"), steps=300), 10, 0.0)
    assert (by_time.total, by_time.n, by_time.unit) == (BUDGET, 20.0, "s")  # a resumed run: its seconds so far
    assert (by_steps.total, by_steps.n, by_steps.unit) == (300, 10, "step")


def test_evaluation_and_turntable_are_announced_and_timed(run_under_umask_022) -> None:
    _, _, err = run_under_umask_022
    lines = err.splitlines()
    for what in ("evaluating 3 test views", "turntable: 2 frames at 32x32"):
        assert f"{what}..." in lines
        assert any(line.startswith(f"{what}: ") and line.endswith(" s") for line in lines), what


def test_render_panels_are_labelled_over_the_unlabelled_images(run_under_umask_022) -> None:
    _, result, _ = run_under_umask_022
    split = result.dataset.splits["test"]
    image = iio.imread(result.run_dir / "renders" / "test_000.png")
    w, h = split.intrinsics.width, split.intrinsics.height
    assert image.shape == (LABEL_HEIGHT + h + BAR_HEIGHT, 4 * w, 3)
    m = result.model
    out = render_image(m, split.poses[0], split.intrinsics, background=torch.ones(3))
    np.testing.assert_allclose(image[LABEL_HEIGHT : LABEL_HEIGHT + h, w : 2 * w], to_uint8(out["rgb"]), atol=1)
    strip = image[:LABEL_HEIGHT]
    for k in range(4):  # each label is dark ink on white
        panel = strip[:, k * w : (k + 1) * w]
        assert panel.max() == 255 and panel.min() < 128, PANEL_LABELS[k]


def test_labelled_panels_put_labels_above_and_colour_bars_below() -> None:
    panels = [np.full((40, 100, 3), 90, np.uint8), colorize_depth(torch.linspace(1, 2, 100).expand(40, 100), 1, 2)]
    bar = np.zeros((BAR_HEIGHT, 100, 3), np.uint8)
    image = labelled_panels(panels, ["truth", "depth"], [None, bar])
    assert image.shape == (LABEL_HEIGHT + 40 + BAR_HEIGHT, 200, 3)
    np.testing.assert_array_equal(image[LABEL_HEIGHT : LABEL_HEIGHT + 40], np.concatenate(panels, axis=1))
    assert (image[-BAR_HEIGHT:, :100] == 255).all() and (image[-BAR_HEIGHT:, 100:] == 0).all()
    labels = image[:LABEL_HEIGHT]
    assert (labels < 128).any() and not np.array_equal(labels[:, :100], labels[:, 100:])  # two different words
    plain = labelled_panels(panels, ["truth", "depth"], [None, None])
    assert plain.shape == (LABEL_HEIGHT + 40, 200, 3)
