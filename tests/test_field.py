"""The instant-NGP field: trunc_exp, parameter count, output shapes and ranges, the aabb."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.field import UNTRAINED_DIAGONAL_DEPTH, FieldConfig, NGPField, trunc_exp
from nerf.hashgrid import HashGridConfig, param_count
from nerf.sh import sh_encode

SMALL_HASH = HashGridConfig(levels=4, features=2, log2_table_size=12, base_resolution=4, max_resolution=32)
AABB = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]])


def test_trunc_exp_value_and_clamped_gradient() -> None:
    x = torch.tensor([-3.0, 0.0, 1.0, 15.0, 20.0, 30.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, x.detach().exp())
    y.sum().backward()
    expected = torch.tensor([math.exp(-3), 1.0, math.e, math.exp(15), math.exp(15), math.exp(15)])
    torch.testing.assert_close(x.grad, expected.double())


def test_param_count_is_hash_plus_mlp_weights() -> None:
    field = NGPField(FieldConfig(), AABB, SMALL_HASH)
    enc = SMALL_HASH.levels * SMALL_HASH.features  # 8
    density_mlp = enc * 64 + 64 * (1 + 15)
    color_mlp = (16 + 15) * 64 + 64 * 64 + 64 * 3
    assert sum(p.numel() for p in field.parameters()) == param_count(SMALL_HASH) + density_mlp + color_mlp
    assert all(m.bias is None for m in field.modules() if isinstance(m, torch.nn.Linear))


def test_default_field_param_count() -> None:
    field = NGPField(FieldConfig(), AABB)
    mlps = 32 * 64 + 64 * 16 + 31 * 64 + 64 * 64 + 64 * 3
    assert sum(p.numel() for p in field.parameters()) == 12_196_240 + mlps  # the hash grid: see test_hashgrid.py


def test_outputs_shapes_ranges_and_aabb(device: torch.device) -> None:
    torch.manual_seed(0)
    field = NGPField(FieldConfig(color_layers=1, sh_degree=3), AABB, SMALL_HASH).to(device)
    with torch.no_grad():
        field.encoding.table.uniform_(-1, 1)
    g = torch.Generator().manual_seed(1)
    inside = (AABB[0] + torch.rand(200, 3, generator=g) * (AABB[1] - AABB[0])).to(device)
    outside = torch.tensor([[1.01, 0, 0], [0, -2.5, 0], [0, 0, 1.6], [5, 5, 5], [0, 0, -0.51]], device=device)
    d = torch.nn.functional.normalize(torch.randn(205, 3, generator=g), dim=-1).to(device)
    sigma, rgb = field(torch.cat([inside, outside]), d)
    assert sigma.shape == (205,) and rgb.shape == (205, 3)
    assert (sigma[:200] > 0).all() and (sigma[200:] == 0).all()
    assert ((rgb > 0) & (rgb < 1)).all()
    s2, geo = field.density(inside)
    assert geo.shape == (200, 15)
    torch.testing.assert_close(s2, sigma[:200])


def test_density_is_exp_of_first_output_and_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    field = NGPField(FieldConfig(), AABB, SMALL_HASH)
    with torch.no_grad():
        field.encoding.table.uniform_(-1, 1)
    x = AABB[0] + torch.rand(64, 3) * (AABB[1] - AABB[0])
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    unit = (x - AABB[0]) / (AABB[1] - AABB[0])
    raw = field.density_mlp(field.encoding(unit))
    sigma, geo = field.density(x)
    torch.testing.assert_close(sigma, raw[:, 0].exp() * math.sqrt(3) / (AABB[1] - AABB[0]).norm())
    torch.testing.assert_close(geo, raw[:, 1:])
    sigma, rgb = field(x, d)
    (sigma.sum() + rgb.sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_colour_depends_on_direction_and_density_does_not() -> None:
    torch.manual_seed(0)
    field = NGPField(FieldConfig(), AABB, SMALL_HASH)
    x = torch.zeros(2, 3)
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    sigma, rgb = field(x, d)
    assert sigma[0] == sigma[1]
    assert not torch.allclose(rgb[0], rgb[1])


def test_a_rays_colour_inputs_computed_once_give_each_samples_colour_and_gradients() -> None:
    """The renderers compute ``view`` (SH of the direction, appearance code) once a ray and gather it per sample:
    the same colours and gradients (to the directions, the codes, the MLP) as per sample, in the colour MLP's
    input layout ``[SH, geometry features, code]`` that checkpoints hold."""
    torch.manual_seed(0)
    field = NGPField(FieldConfig(), AABB, SMALL_HASH, appearance_images=5, appearance_dims=4)
    with torch.no_grad():
        field.appearance.codes.weight.normal_()
    rays, samples = 7, 50
    dirs = torch.nn.functional.normalize(torch.randn(rays, 3), dim=-1)
    image = torch.randint(0, 5, (rays,))
    index = torch.randint(0, rays, (samples,))
    geo = torch.randn(samples, 15)
    outputs = []
    for per_ray in (True, False):
        field.zero_grad()
        d = dirs.clone().requires_grad_()
        rgb = field.colour(geo, field.view(d, image)[index]) if per_ray else field.rgb(geo, d[index], image[index])
        rgb.square().sum().backward()
        outputs.append((rgb.detach(), d.grad, field.appearance.codes.weight.grad.clone(),
                        field.color_mlp[0].weight.grad.clone()))
    for per_ray, per_sample in zip(*outputs, strict=True):
        torch.testing.assert_close(per_ray, per_sample)
    layout = torch.cat([sh_encode(dirs[index], 4), geo, field.appearance.codes.weight[image[index]]], dim=-1)
    torch.testing.assert_close(outputs[0][0], torch.sigmoid(field.color_mlp(layout)).detach())


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 2), torch.tensor([[0, 0, 0], [1, 1, 0.0]])])
def test_aabb_must_be_2x3_min_below_max(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="aabb"):
        NGPField(FieldConfig(), bad, SMALL_HASH)


@pytest.mark.parametrize("size", [0.1, 1.0, 30.0])
def test_untrained_density_is_the_same_optical_depth_at_any_scale(size: float) -> None:
    """Across the box's diagonal the untrained field is sqrt(3) thick (instant-NGP's unit cube at density 1),
    so one step of 1/256 of the diagonal stays below the occupancy threshold 0.01 however large the scene."""
    torch.manual_seed(0)
    box = AABB * size
    field = NGPField(FieldConfig(), box, SMALL_HASH)
    x = box[0] + torch.rand(4096, 3) * (box[1] - box[0])
    with torch.no_grad():
        thickness = field.density(x)[0] * (box[1] - box[0]).norm()
    torch.testing.assert_close(thickness, torch.full_like(thickness, math.sqrt(3)), rtol=1e-3, atol=0)
    assert UNTRAINED_DIAGONAL_DEPTH / 256 < 0.01
