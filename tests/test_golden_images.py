"""Golden images: each shipped scene rendered small against a stored reference, compared as Mitsuba 3 compares its
renders (``src/render/tests/test_renders.py``): a per-pixel Z-test of the render against the reference mean, with the
reference's variance, a Sidak correction over the pixels and a bounded fraction of outliers; and, more sensitive to
a small change over a region (a light a little brighter, a material a little darker), a Z-test of the means of
8x8 blocks and of the whole image (each value's difference clipped at the per-pixel limit, so that a few outliers
do not decide it).

The reference of a scene (``tests/golden/<scene>.png``, 16-bit, its RGBA channels side by side) is the mean of
:data:`REF_RENDERS` renders of :data:`SPP` samples per pixel with other seeds; ``<scene>_sd.png`` holds the standard
deviation of one such render, per pixel and channel. On a failure the render, the reference and a difference image
are written to ``tests/golden/failures/`` (git-ignored). Remake the references after an intended change of the
pictures with ``python -m tests.test_golden_images``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from raytrace.dataset import rig_poses, settings_for
from raytrace.render import render_image
from raytrace.scene import Scene, load_scene

ROOT = Path(__file__).resolve().parent.parent
SCENES = ("object", "cornell", "whitted", "garden")
GOLDEN = Path(__file__).resolve().parent / "golden"
FAILURES = GOLDEN / "failures"
WIDTH = 40
SPP = 64
REF_RENDERS = 32
SIGNIFICANCE = 0.001  # per image; stricter than Mitsuba's 0.01: the reference variance is estimated from 32 renders
OUTLIER_FRACTION = 0.0025  # Mitsuba accepts a render when 99.75 % of its pixels pass
BLOCKS = (8, WIDTH)  # block sides of the Z-test on means: 8x8 pixels, and the whole image
VARIANCE_FLOOR = 1e-6 / SPP  # a noise-free value (an empty background) may differ by float rounding and quantisation


def render(scene: Scene, seed: int | None = None) -> np.ndarray:
    """The scene's first test view, :data:`WIDTH` pixels wide at :data:`SPP` samples: ``(H, W, 4)`` float64 sRGB
    colour and alpha in [0, 1] (``seed`` replaces the scene's)."""
    if seed is not None:
        scene = dataclasses.replace(scene, settings=dataclasses.replace(scene.settings, seed=seed))
    settings = settings_for(scene, res=WIDTH)
    c2w = rig_poses(scene.rig, settings.counts)["test"][0]
    result = render_image(scene, torch.as_tensor(c2w), settings.intrinsics, spp=SPP)
    return result.rgba.double().numpy()


def write_png16(path: Path, image: np.ndarray) -> None:
    """``(H, W, 4)`` in [0, 1] as a 16-bit grey PNG of the four channels side by side (``(H, 4 W)``: Pillow writes
    no 16-bit RGBA)."""
    tiled = np.concatenate(np.moveaxis(image, -1, 0), axis=1)
    iio.imwrite(path, np.round(np.clip(tiled, 0.0, 1.0) * 65535).astype(np.uint16))


def read_png16(path: Path) -> np.ndarray:
    tiled = iio.imread(path).astype(np.float64) / 65535.0
    return np.stack(np.split(tiled, 4, axis=1), axis=-1)


@dataclasses.dataclass
class Comparison:
    """The outcome of :func:`compare`: the fraction of values failing the per-pixel test (``outliers``), the largest
    block Z statistic (``block_z``) against its threshold, and the per-value failures ``(H, W, C)`` bool."""

    outliers: float
    block_z: float
    block_limit: float
    failed: np.ndarray

    @property
    def passed(self) -> bool:
        return self.outliers <= OUTLIER_FRACTION and self.block_z <= self.block_limit


def _two_sided_z(tests: int) -> float:
    """The |Z| beyond which one of ``tests`` independent tests rejects at :data:`SIGNIFICANCE` overall (Sidak)."""
    alpha = 1.0 - (1.0 - SIGNIFICANCE) ** (1.0 / tests)
    lo, hi = 0.0, 40.0  # solve erfc(z / sqrt 2) = alpha by bisection
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.erfc(mid / math.sqrt(2.0)) > alpha else (lo, mid)
    return hi


def compare(image: np.ndarray, reference: np.ndarray, sd: np.ndarray) -> Comparison:
    """``image`` (one render of :data:`SPP` samples) against the ``reference`` mean of :data:`REF_RENDERS` such
    renders whose per-render standard deviation is ``sd``, all ``(H, W, C)``."""
    variance = np.maximum(sd**2, VARIANCE_FLOOR) * (1.0 + 1.0 / REF_RENDERS)
    diff = image - reference
    limit = _two_sided_z(diff.size)
    failed = np.abs(diff) / np.sqrt(variance) > limit
    clipped = np.clip(diff, -limit * np.sqrt(variance), limit * np.sqrt(variance))  # an outlier weighs no more
    h, w, c = diff.shape
    z = []
    for side in BLOCKS:
        hb, wb = h // side, w // side

        def blocks(a: np.ndarray, hb: int = hb, wb: int = wb, side: int = side) -> np.ndarray:
            return a[: hb * side, : wb * side].reshape(hb, side, wb, side, c).sum(axis=(1, 3)).ravel()

        z.append(np.abs(blocks(clipped)) / np.sqrt(blocks(variance)))
    z_all = np.concatenate(z)
    return Comparison(float(failed.mean()), float(z_all.max()), _two_sided_z(z_all.size), failed)


def write_failure(name: str, image: np.ndarray, reference: np.ndarray, failed: np.ndarray) -> Path:
    """Render, reference and difference (grey: |difference| x 4; red: failing pixels) as 8-bit PNGs in
    :data:`FAILURES`; the folder."""
    FAILURES.mkdir(parents=True, exist_ok=True)
    to8 = lambda a: np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)  # noqa: E731
    iio.imwrite(FAILURES / f"{name}_render.png", to8(image))
    iio.imwrite(FAILURES / f"{name}_reference.png", to8(reference))
    diff = np.repeat(np.abs(image - reference).max(axis=-1, keepdims=True) * 4.0, 3, axis=-1)
    diff[failed.any(axis=-1)] = (1.0, 0.0, 0.0)
    iio.imwrite(FAILURES / f"{name}_difference.png", to8(diff))
    return FAILURES


def stored(name: str) -> tuple[np.ndarray, np.ndarray]:
    return read_png16(GOLDEN / f"{name}.png"), read_png16(GOLDEN / f"{name}_sd.png")


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scene]:
    return {name: load_scene(ROOT / "datasets" / "scenes" / f"{name}.toml") for name in SCENES}


@pytest.mark.parametrize("name", SCENES)
def test_scene_matches_its_golden_image(name: str, scenes: dict[str, Scene]) -> None:
    image = render(scenes[name])
    reference, sd = stored(name)
    result = compare(image, reference, sd)
    if not result.passed:
        folder = write_failure(name, image, reference, result.failed)
        pytest.fail(f"{name}: {result.outliers:.2%} of values outside the per-pixel tolerance (at most "
                    f"{OUTLIER_FRACTION:.2%}), largest block Z {result.block_z:.1f} (limit {result.block_limit:.1f});"
                    f" render, reference and difference in {folder}")


CHANGED_MATERIAL = {"object": "torus", "cornell": "white", "whitted": "checker", "garden": "lawn"}
"""A material of a large part of each scene's golden view."""


def _brighter_light(scene: Scene) -> Scene:
    light = scene.lights[0]
    return dataclasses.replace(scene, lights=[dataclasses.replace(light, intensity=light.intensity * 1.05),
                                              *scene.lights[1:]])


def _darker_material(scene: Scene) -> Scene:
    name = CHANGED_MATERIAL[Path(scene.path).stem]
    material = scene.materials[name]
    darker = {"color": tuple(0.95 * v for v in material.color)}
    if material.checker is not None:
        checker = material.checker
        darker["checker"] = dataclasses.replace(checker, color1=tuple(0.95 * v for v in checker.color1),
                                                color2=tuple(0.95 * v for v in checker.color2))
    return dataclasses.replace(scene, materials={**scene.materials, name: dataclasses.replace(material, **darker)})


@pytest.mark.parametrize("change", [_brighter_light, _darker_material], ids=["light +5%", "material -5%"])
@pytest.mark.parametrize("name", SCENES)
def test_a_small_change_of_the_scene_fails_the_comparison(name: str, change, scenes: dict[str, Scene]) -> None:
    reference, sd = stored(name)
    assert not compare(render(change(scenes[name])), reference, sd).passed


@pytest.mark.parametrize("name", SCENES)
def test_another_seed_passes(name: str, scenes: dict[str, Scene]) -> None:
    """Monte Carlo noise alone (another seed for the jitter and the area-light samples) is within the tolerance."""
    reference, sd = stored(name)
    assert compare(render(scenes[name], seed=12345), reference, sd).passed


def make_references() -> None:
    """Write each scene's reference mean and per-render standard deviation into :data:`GOLDEN`."""
    GOLDEN.mkdir(exist_ok=True)
    for name in SCENES:
        scene = load_scene(ROOT / "datasets" / "scenes" / f"{name}.toml")
        renders = np.stack([render(scene, seed=1000 + i) for i in range(REF_RENDERS)])
        write_png16(GOLDEN / f"{name}.png", renders.mean(axis=0))
        write_png16(GOLDEN / f"{name}_sd.png", renders.std(axis=0, ddof=1))
        print(f"{name}: {renders.shape[2]}x{renders.shape[1]}, mean {renders.mean():.4f}", file=sys.stderr)


if __name__ == "__main__":
    make_references()
