"""Scene contraction (mip-NeRF 360's, L-infinity) and the steps that grow with distance: analytic values, round
trips, the cone-angle rule, disparity spacing, and the model built for an unbounded dataset."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from nerf.checkpoint import save_checkpoint
from nerf.config import MarchConfig, TrainConfig
from nerf.contraction import FAR_NORM, box_norm, contract, far_box, uncontract, unit_coords
from nerf.field import NGPField
from nerf.hashgrid import HashGridConfig
from nerf.marching import StepRule, march_rays
from nerf.model import build_model, load_run
from nerf.occupancy import OccupancyGrid
from nerf.render import MarchSettings, Radiance, RayBatch, render_rays
from nerf.resolve import (
    LR_FINAL_FACTOR,
    UNBOUNDED_CONE_ANGLE,
    UNBOUNDED_CPU_SAMPLES,
    UNBOUNDED_DISTORTION,
    UNBOUNDED_LR_FINAL_FACTOR,
    UNBOUNDED_NEAR_GRADIENTS,
    resolve,
)
from nerf.step import static_step_applies
from raytrace.bounds import Bounds
from raytrace.errors import InputError
from raytrace.reader import DatasetDescription

AABB = torch.tensor([[-2.0, -1.0, 0.0], [2.0, 3.0, 1.0]])


def test_contract_analytic() -> None:
    u = torch.tensor([[0.3, -0.5, 0.9], [1.0, 0.0, -1.0], [2.0, 0.0, 0.0], [0.0, -4.0, 2.0], [1e6, 0.0, 0.0]])
    expected = torch.tensor([[0.3, -0.5, 0.9], [1.0, 0.0, -1.0], [1.5, 0.0, 0.0], [0.0, -1.75, 0.875],
                             [2.0, 0.0, 0.0]])
    torch.testing.assert_close(contract(u), expected)
    # continuous across the box's faces, inside [-2, 2] everywhere
    face = torch.tensor([[1.0, 0.2, -0.7]])
    torch.testing.assert_close(contract(face * (1 + 1e-6)), face, atol=1e-5, rtol=0)
    assert contract(torch.randn(1000, 3) * 100).abs().max() <= 2.0


def test_unit_coords_put_the_box_in_the_middle_half() -> None:
    corners = AABB.clone()
    torch.testing.assert_close(unit_coords(corners, AABB, True), torch.tensor([[0.25] * 3, [0.75] * 3]))
    torch.testing.assert_close(unit_coords(corners, AABB, False), torch.tensor([[0.0] * 3, [1.0] * 3]))
    far = torch.tensor([[1e9, 1.0, 0.5]])
    assert unit_coords(far, AABB, True)[0, 0] == pytest.approx(1.0)
    assert float(box_norm(far_box(AABB)[1:], AABB)) == pytest.approx(FAR_NORM)


def test_uncontract_inverts_unit_coords() -> None:
    g = torch.Generator().manual_seed(0)
    unit = torch.rand(5000, 3, generator=g) * 0.998 + 0.001
    world = uncontract(unit, AABB)
    torch.testing.assert_close(unit_coords(world, AABB, True), unit, atol=2e-5, rtol=0)
    assert (box_norm(world, AABB) > 10).any()  # the outer cells lie far outside the box


def test_bad_march_values() -> None:
    with pytest.raises(ValueError, match="scene_contraction"):
        MarchConfig(scene_contraction="cascades")
    with pytest.raises(ValueError, match="cone_angle"):
        MarchConfig(cone_angle=-0.1)


def test_cone_angle_steps_grow_with_distance() -> None:
    """dt = clamp(t * cone_angle, step, max_step) along each ray, each step starting where the last ended."""
    o = torch.tensor([[-10.0, 0.5, 0.5], [0.1, 0.2, 0.3]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    box = torch.tensor([[-20.0, -20.0, -20.0], [20.0, 20.0, 20.0]])
    rule = StepRule(0.05, cone_angle=0.02, max_step=0.3)
    s = march_rays(o, d, box, None, rule, 10_000)
    for r, t_far in ((0, 30.0), (1, 19.7)):
        starts, ends = s.t_starts[s.ray_indices == r], s.t_ends[s.ray_indices == r]
        torch.testing.assert_close(ends[:-1], starts[1:], rtol=0, atol=0)
        dt = (ends - starts)[:-1]
        torch.testing.assert_close(dt, (starts[:-1] * 0.02).clamp(0.05, 0.3))
        assert starts[0] == 0 and ends[-1] == pytest.approx(t_far) and starts[-1] < t_far
    dt0 = (s.t_ends - s.t_starts)[s.ray_indices == 0]
    assert dt0.min() == pytest.approx(0.05) and dt0.max() == pytest.approx(0.3)  # both clamps reached
    uniform = march_rays(o, d, box, None, StepRule(0.05), 10_000)
    assert len(s) < len(uniform) / 2


def test_contracted_march_reaches_infinity_evenly_in_disparity() -> None:
    """Outside the box a contracted march steps n**2 times the inner step (n: box norm), out to FAR_NORM."""
    o = torch.tensor([[0.0, 1.0, 0.5], [6.0, 1.0, 0.5]])
    d = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    step = 0.01
    s = march_rays(o, d, AABB, None, StepRule(step, contract_aabb=AABB), 100_000)
    for r in (0, 1):
        starts, ends = s.t_starts[s.ray_indices == r], s.t_ends[s.ray_indices == r]
        x = o[r] + d[r] * starts[:, None]
        n = box_norm(x, AABB).clamp(min=1.0)
        torch.testing.assert_close((ends - starts)[:-1], (step * n * n)[:-1])
        assert float(box_norm(o[r] + d[r] * ends[-1], AABB)) == pytest.approx(FAR_NORM, rel=1e-4)
        outside = n > 1.0
        disparity = 1.0 / n[outside]
        gaps = (disparity[:-1] - disparity[1:]).abs()
        assert gaps.max() < 0.01  # no jump in disparity bigger than the box's step (0.01 / half-width 2)
    assert 300 < len(s) < 1500  # (4 / 0.01 inside, about 2 / 0.01 outside on ray 0)


def test_contracted_grid_and_field_cover_far_space() -> None:
    grid = OccupancyGrid(AABB, resolution=16, contracted=True)
    calls: list[torch.Tensor] = []

    def density(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return (box_norm(x, AABB) > 3.5).float()  # only the far world (the outer ring of cells) is dense

    grid.update(density, step=0)
    points = torch.cat(calls)
    assert torch.isfinite(points).all() and box_norm(points, AABB).max() > 100
    far = torch.tensor([[1e4, 1.0, 0.5], [1.0, 1e4, 0.5]])
    near = torch.tensor([[0.0, 1.0, 0.5], [3.0, 1.0, 0.5]])
    assert grid.occupied(far).all() and not grid.occupied(near).any()
    field = NGPField(TrainConfig().field, AABB, HashGridConfig(levels=2, log2_table_size=8), contracted=True)
    assert (field.density(far)[0] > 0).all()
    bounded = NGPField(TrainConfig().field, AABB, HashGridConfig(levels=2, log2_table_size=8))
    assert (bounded.density(far)[0] == 0).all()


def described(bounded: bool) -> DatasetDescription:
    """A description with no views whose bounds are :data:`AABB`, ``bounded`` or not."""
    return DatasetDescription(Path("."), "ours", {}, Bounds(AABB.double().numpy(), bounded), False)


def test_unbounded_dataset_builds_a_contracted_model() -> None:
    base = TrainConfig(backend="torch")
    cfg = resolve(base, described(False), "cpu")
    assert cfg.march.scene_contraction == "mipnerf360" and cfg.march.cone_angle == UNBOUNDED_CONE_ANGLE
    assert cfg.aabb == tuple(AABB.reshape(-1).tolist())
    bounded = resolve(base, described(True), "cpu")
    assert bounded.march.scene_contraction == "none" and bounded.march.cone_angle == 0.0
    assert cfg.optim.distortion == UNBOUNDED_DISTORTION and cfg.optim.near_gradients == UNBOUNDED_NEAR_GRADIENTS
    assert bounded.optim.distortion == 0.0 and bounded.optim.near_gradients == 0.0
    assert cfg.optim.lr_final_factor == UNBOUNDED_LR_FINAL_FACTOR and bounded.optim.lr_final_factor == LR_FINAL_FACTOR
    assert cfg.samples_per_step == UNBOUNDED_CPU_SAMPLES and bounded.samples_per_step == 0  # the CPU preset's
    chosen = dataclasses.replace(base, optim=dataclasses.replace(base.optim, distortion=0.5, near_gradients=0.0,
                                                                 lr_final_factor=0.5))
    assert resolve(chosen, described(False), "cpu").optim == chosen.optim  # explicit values stay
    assert resolve(TrainConfig(model="nerf"), described(False), "cpu").march.scene_contraction == "none"
    assert TrainConfig.from_dict(cfg.to_dict()).march == cfg.march  # the config (and checkpoints) record it
    assert TrainConfig.from_dict(cfg.to_dict()).optim == cfg.optim
    assert not static_step_applies(dataclasses.replace(cfg, samples_per_step=1 << 18), torch.device("cuda"))
    model = build_model(cfg, AABB, torch.device("cpu"))
    assert model.field.contracted and model.grid.contracted and model.march.contracted
    assert model.march.rule.contract_aabb is not None and model.march.rule.cone_angle == UNBOUNDED_CONE_ANGLE
    assert model.march.max_step == pytest.approx(math.sqrt(16 + 16 + 1) / cfg.march.grid_resolution)
    plain = build_model(bounded, AABB, torch.device("cpu"))
    assert not plain.field.contracted and plain.march.rule.uniform


class FarShell(torch.nn.Module):
    """A field whose only matter is a grey shell beyond ``n = 100`` box half-widths (a sky)."""

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (box_norm(x, AABB) > 100.0).float() * 50.0, x.new_zeros(x.shape[0], 1)

    def view(self, d: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        return d

    def colour(self, features: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return torch.full_like(view, 0.5)


@pytest.mark.parametrize("contracted", [True, False])
def test_rays_leaving_the_box_reach_the_sky(contracted: bool) -> None:
    """A contracted march carries rays past the box to the far shell (opaque, far depth); a bounded one stops."""
    march = MarchSettings(AABB, 64, contracted=contracted, cone_angle=UNBOUNDED_CONE_ANGLE if contracted else 0.0)
    o = torch.tensor([[0.0, 1.0, 0.5], [5.0, 20.0, 0.5]])
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.3, 0.2], [0.0, 1.0, 0.0]]), dim=-1)
    out = render_rays(Radiance(FarShell(), None, march), RayBatch(o, d, torch.zeros(3)))
    if contracted:
        torch.testing.assert_close(out["opacity"], torch.ones(2), atol=1e-3, rtol=0)
        torch.testing.assert_close(out["rgb"], torch.full((2, 3), 0.5), atol=1e-3, rtol=0)
        assert (box_norm(o + d * out["depth"][:, None], AABB) > 100.0).all()
    else:
        assert (out["opacity"] == 0).all()


def test_contracted_checkpoint_loads_contracted(tmp_path) -> None:
    cfg = resolve(TrainConfig(backend="torch", hash=HashGridConfig(levels=2, log2_table_size=8)), described(False),
                  "cpu")
    model = build_model(cfg, AABB, torch.device("cpu"))
    save_checkpoint(tmp_path / "step.pt", step=1, model_state=model.field.state_dict(), optimizer_state=None,
                    grid_state=model.grid.state_dict(), config=cfg.to_dict(), extra={"aabb": AABB.tolist()})
    loaded_cfg, loaded, _ = load_run(tmp_path / "step.pt", "cpu")
    assert loaded_cfg.march.scene_contraction == "mipnerf360"
    assert loaded.field.contracted and loaded.grid.contracted and loaded.march.contracted
    assert (loaded.march.cone_angle, loaded.march.max_step) == (model.march.cone_angle, model.march.max_step)
    _, viewing, _ = load_run(tmp_path / "step.pt", "cpu", cone_angle=0.01)
    assert viewing.march.cone_angle == 0.01 and viewing.march.contracted
    with pytest.raises(InputError, match="--cone-angle: cone_angle must be in"):
        load_run(tmp_path / "step.pt", "cpu", cone_angle=-1.0)


def test_contracted_grid_thresholds_the_thickness_of_its_longer_steps() -> None:
    """A thin density far away (below the threshold per inner step) stays occupied: its steps are n**2 longer."""
    grid = OccupancyGrid(AABB, resolution=16, threshold=0.01, contracted=True)
    grid.update(lambda x: torch.full((x.shape[0],), 0.001), step=0)
    far, inner = torch.tensor([[1e4, 1.0, 0.5]]), torch.tensor([[0.0, 1.0, 0.5]])
    assert grid.occupied(far).all() and not grid.occupied(inner).any()
