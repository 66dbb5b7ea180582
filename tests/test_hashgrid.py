"""The reference hash-grid encoding: layout, values at vertices, interpolation, clamping, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.hashgrid import HashGrid, HashGridConfig, hash_encode, level_layouts, param_count, table_rows

# 4 levels, growth exactly 2: scales 3, 7, 15, 31 (R = 4, 8, 16, 32 vertices per axis); T = 4096.
# R^3 = 64, 512, 4096 fit (dense); 32768 does not (hashed). Sizes 64, 512, 4096, 4096.
SMALL = HashGridConfig(levels=4, features=2, log2_table_size=12, base_resolution=4, max_resolution=32)
SMALL_SCALES = [3.0, 7.0, 15.0, 31.0]
SMALL_OFFSETS = [0, 64, 576, 4672]
SMALL_ROWS = 8768


def python_index(ijk: tuple[int, int, int], level: int, cfg: HashGridConfig = SMALL) -> int:
    """tiny-cuda-nn's index of a vertex in the table, with plain Python integers (dense indices wrap around)."""
    x, y, z = ijk
    lay = level_layouts(cfg)[level]
    res = lay.resolution
    if res**3 <= cfg.table_size:
        return lay.offset + (x + y * res + z * res * res) % lay.size
    return lay.offset + ((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) % 2**32 % cfg.table_size


def at_vertex(vertices: torch.Tensor, scale: float) -> torch.Tensor:
    """Points whose vertex coordinates ``p * s + 0.5`` are ``vertices`` ``(N, 3)``."""
    return (vertices.double() - 0.5) / scale


def random_table(cfg: HashGridConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(table_rows(cfg), cfg.features, generator=g, dtype=dtype)


def test_small_layout_by_hand() -> None:
    layouts = level_layouts(SMALL)
    assert [lay.scale for lay in layouts] == SMALL_SCALES
    assert [lay.resolution for lay in layouts] == [4, 8, 16, 32]
    assert [lay.hashed for lay in layouts] == [False, False, False, True]
    assert [lay.size for lay in layouts] == [64, 512, 4096, 4096]
    assert [lay.offset for lay in layouts] == SMALL_OFFSETS
    assert table_rows(SMALL) == SMALL_ROWS
    assert param_count(SMALL) == SMALL_ROWS * 2
    assert SMALL.growth == pytest.approx(2.0)


def test_default_layout_matches_tiny_cuda_nn() -> None:
    """Scales ``16 * b**l - 1``, ``ceil(scale) + 1`` vertices, dense sizes rounded up to a multiple of 8."""
    cfg = HashGridConfig()
    layouts = level_layouts(cfg)
    for level, lay in enumerate(layouts):
        assert lay.scale == pytest.approx(16 * cfg.growth**level - 1, rel=1e-6)
        assert lay.resolution == math.ceil(lay.scale) + 1
    resolutions = [16, 23, 31, 43, 59, 81, 112, 154, 213, 295, 407, 562, 777, 1073, 1483, 2048]
    assert [lay.resolution for lay in layouts] == resolutions
    by_hand = 2 * (16**3 + 12168 + 29792 + 79512 + 205384 + 11 * 2**19)  # 23^3 = 12167 -> 12168, ...
    assert param_count(cfg) == by_hand == 12_196_240
    assert sum(lay.hashed for lay in layouts) == 11  # 81^3 > 2^19 from level 5 on
    assert HashGridConfig(levels=1).growth == 1.0


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_values_at_vertices_are_table_entries(level: int, device: torch.device) -> None:
    table = random_table(SMALL, torch.float32).to(device)
    res = level_layouts(SMALL)[level].resolution
    g = torch.Generator().manual_seed(level)
    vertices = torch.randint(1, res, (64, 3), generator=g)  # p * s + 0.5 reaches vertices 1 .. R - 1
    vertices[0] = torch.tensor([res - 1, res - 1, res - 1])
    vertices[1] = torch.tensor([1, 1, 1])
    vertices[2] = torch.tensor([3, res - 1, 1])
    x = at_vertex(vertices, SMALL_SCALES[level]).float().to(device)
    out = hash_encode(x, table, SMALL).cpu()
    for row, ijk in enumerate(vertices.tolist()):
        expected = table[python_index(tuple(ijk), level)].cpu()
        torch.testing.assert_close(out[row, 2 * level : 2 * level + 2], expected, rtol=1e-5, atol=1e-5)


def test_upper_faces_wrap_around_like_tiny_cuda_nn() -> None:
    """At p = 1 the vertex coordinate is s + 0.5: the upper corner R is not clamped and its dense index wraps."""
    table = random_table(SMALL)
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    out = hash_encode(x, table, SMALL)[:, :2]  # level 0: s = 3, R = 4, cells [3, 4] x [0, 1] x [0, 1]
    for row, lower in enumerate([(3, 0, 0), (3, 3, 3)]):
        corners = [(lower[0] + i, lower[1] + j, lower[2] + k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        expected = torch.stack([table[python_index(c, 0)] for c in corners]).mean(0)
        torch.testing.assert_close(out[row], expected)
    assert python_index((4, 0, 0), 0) == python_index((0, 1, 0), 0)  # the wrap: x = R is the next row's x = 0
    assert python_index((4, 4, 4), 0) == 84 % 64


def test_hashed_index_uses_all_three_primes() -> None:
    """A hashed level must differ when only y or only z changes (guards against dropped primes)."""
    table = random_table(SMALL)
    vertices = torch.tensor([[5, 7, 9], [5, 8, 9], [5, 7, 10], [6, 7, 9]])
    feats = hash_encode(at_vertex(vertices, SMALL_SCALES[3]), table, SMALL)[:, 6:8]
    for i in range(1, 4):
        assert not torch.allclose(feats[0], feats[i])
        torch.testing.assert_close(feats[i], table[python_index(tuple(vertices[i].tolist()), 3)])


@pytest.mark.parametrize("level", [1, 3])
def test_linear_along_an_edge(level: int) -> None:
    table = random_table(SMALL)
    a, b = (2, 3, 4), (2, 4, 4)  # an edge along y
    for t in (0.5, 0.25):
        x = at_vertex(torch.tensor([[a[0], a[1] + t, a[2]]]), SMALL_SCALES[level])
        out = hash_encode(x, table, SMALL)[0, 2 * level : 2 * level + 2]
        ta, tb = table[python_index(a, level)], table[python_index(b, level)]
        torch.testing.assert_close(out, (1 - t) * ta + t * tb)


def test_trilinear_at_cell_centre_is_mean_of_corners() -> None:
    table = random_table(SMALL)
    x = at_vertex(torch.tensor([[1.5, 2.5, 0.5]]), SMALL_SCALES[0])
    corners = [(1 + i, 2 + j, 0 + k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    expected = torch.stack([table[python_index(c, 0)] for c in corners]).mean(0)
    torch.testing.assert_close(hash_encode(x, table, SMALL)[0, :2], expected)


def test_points_are_clamped_to_unit_cube() -> None:
    table = random_table(SMALL)
    x = torch.tensor([[-0.5, 0.3, 1.7], [2.0, -1.0, 0.5], [1.0, 0.0, 0.999]], dtype=torch.float64)
    torch.testing.assert_close(hash_encode(x, table, SMALL), hash_encode(x.clamp(0, 1), table, SMALL))
    assert torch.isfinite(hash_encode(x, table, SMALL)).all()


def test_output_is_level_major() -> None:
    table = torch.zeros(table_rows(SMALL), 2, dtype=torch.float64)
    table[SMALL_OFFSETS[2] :, 1] = 1.0  # feature 1 of levels 2 and 3 only
    out = hash_encode(torch.rand(5, 3, dtype=torch.float64), table, SMALL)
    assert out.shape == (5, 8)
    torch.testing.assert_close(
        out, torch.tensor([0, 0, 0, 0, 0, 1, 0, 1.0], dtype=torch.float64).expand(5, 8)
    )


def test_gradcheck_table_and_x() -> None:
    # Scales 1 (R = 2, dense, 8 rows) and 7 (R = 8, hashed: 512 > 64).
    cfg = HashGridConfig(levels=2, features=2, log2_table_size=6, base_resolution=2, max_resolution=8)
    assert [lay.hashed for lay in level_layouts(cfg)] == [False, True]
    g = torch.Generator().manual_seed(0)
    cells = torch.randint(1, 7, (6, 3), generator=g)  # away from cell faces on level 1 (finite differences)
    x = at_vertex(cells + 0.2 + 0.6 * torch.rand(6, 3, generator=g, dtype=torch.float64), 7.0).requires_grad_()
    table = random_table(cfg).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: hash_encode(x, t, cfg), (x, table), eps=1e-6, atol=1e-6)


def test_table_gradient_is_the_interpolation_weights() -> None:
    table = random_table(SMALL).requires_grad_()
    x = at_vertex(torch.tensor([[1.25, 2.0, 2.0]]), SMALL_SCALES[0])  # exactly (0.25, 0.5, 0.5)
    hash_encode(x, table, SMALL)[0, 0].backward()
    grad = table.grad[:, 0]
    assert grad[python_index((1, 2, 2), 0)].item() == pytest.approx(0.75)
    assert grad[python_index((2, 2, 2), 0)].item() == pytest.approx(0.25)
    assert grad.sum().item() == pytest.approx(1.0)
    assert table.grad[:, 1].abs().sum().item() == 0.0


def test_hashgrid_module(device: torch.device) -> None:
    grid = HashGrid(SMALL).to(device)
    assert grid.table.shape == (SMALL_ROWS, 2)
    assert grid.table.abs().max().item() <= 1e-4
    assert grid.output_dim == 8
    assert sum(p.numel() for p in grid.parameters()) == param_count(SMALL)
    out = grid(torch.rand(10, 3, device=device))
    assert out.shape == (10, 8) and out.device.type == device.type

    calls = []

    def fake(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
        calls.append(cfg)
        return torch.zeros(x.shape[0], cfg.output_dim, device=x.device)

    grid.encode_fn = fake
    assert grid(torch.rand(3, 3, device=device)).abs().sum().item() == 0.0
    assert calls == [SMALL]


def test_bad_shapes_raise() -> None:
    table = random_table(SMALL)
    with pytest.raises(ValueError, match="x must be"):
        hash_encode(torch.rand(4, 2, dtype=torch.float64), table, SMALL)
    with pytest.raises(ValueError, match="table must be"):
        hash_encode(torch.rand(4, 3, dtype=torch.float64), table[:-1], SMALL)
    with pytest.raises(ValueError):
        HashGridConfig(base_resolution=64, max_resolution=32)


def test_growth_formula() -> None:
    cfg = HashGridConfig(levels=8, base_resolution=16, max_resolution=512)
    assert cfg.growth == pytest.approx(math.exp(math.log(32) / 7))
    assert level_layouts(cfg)[-1].scale == pytest.approx(511.0, rel=1e-6)  # max_resolution - 1
    assert level_layouts(cfg)[-1].resolution == 512
