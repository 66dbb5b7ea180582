"""The reference hash-grid encoding: layout, values at vertices, interpolation, clamping, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from nerf.hashgrid import HashGrid, HashGridConfig, hash_encode, level_layouts, param_count, table_rows

# 4 levels, growth exactly 2: resolutions 4, 8, 16, 32; T = 4096. (N+1)^3 = 125, 729 fit (dense);
# 4913 and 35937 do not (hashed). Sizes 125, 729, 4096, 4096.
SMALL = HashGridConfig(levels=4, features=2, log2_table_size=12, base_resolution=4, max_resolution=32)
SMALL_RES = [4, 8, 16, 32]
SMALL_OFFSETS = [0, 125, 854, 4950]
SMALL_ROWS = 9046


def python_index(ijk: tuple[int, int, int], resolution: int, log2_t: int) -> int:
    """The instant-NGP index of a vertex within its level, with plain Python integers."""
    x, y, z = ijk
    side = resolution + 1
    if side**3 <= 2**log2_t:
        return x + y * side + z * side * side
    return ((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) % 2**32 % 2**log2_t


def random_table(cfg: HashGridConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(table_rows(cfg), cfg.features, generator=g, dtype=dtype)


def test_small_layout_by_hand() -> None:
    layouts = level_layouts(SMALL)
    assert [lay.resolution for lay in layouts] == SMALL_RES
    assert [lay.hashed for lay in layouts] == [False, False, True, True]
    assert [lay.size for lay in layouts] == [125, 729, 4096, 4096]
    assert [lay.offset for lay in layouts] == SMALL_OFFSETS
    assert table_rows(SMALL) == SMALL_ROWS
    assert param_count(SMALL) == SMALL_ROWS * 2
    assert SMALL.growth == pytest.approx(2.0)


def test_default_param_count_matches_instant_ngp_formula() -> None:
    cfg = HashGridConfig()
    resolutions = [16, 22, 30, 42, 58, 80, 111, 153, 212, 294, 406, 561, 776, 1072, 1482, 2048]
    assert [lay.resolution for lay in level_layouts(cfg)] == resolutions
    expected = sum(min((n + 1) ** 3, 2**19) * 2 for n in resolutions)
    by_hand = 2 * (17**3 + 23**3 + 31**3 + 43**3 + 59**3 + 11 * 2**19)
    assert param_count(cfg) == expected == by_hand == 12_197_850
    assert sum(lay.hashed for lay in level_layouts(cfg)) == 11  # 81^3 > 2^19 from level 5 on
    assert HashGridConfig(levels=1).growth == 1.0


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_values_at_vertices_are_table_entries(level: int, device: torch.device) -> None:
    table = random_table(SMALL, torch.float32).to(device)
    n = SMALL_RES[level]
    g = torch.Generator().manual_seed(level)
    vertices = torch.randint(0, n + 1, (64, 3), generator=g)
    vertices[0] = torch.tensor([n, n, n])  # the far corner (upper index clamped)
    vertices[1] = torch.tensor([0, 0, 0])
    vertices[2] = torch.tensor([3, n, 1])
    x = (vertices.double() / n).float().to(device)
    out = hash_encode(x, table, SMALL).cpu()
    for row, ijk in enumerate(vertices.tolist()):
        index = SMALL_OFFSETS[level] + python_index(tuple(ijk), n, SMALL.log2_table_size)
        expected = table[index].cpu()
        torch.testing.assert_close(out[row, 2 * level : 2 * level + 2], expected, rtol=1e-5, atol=1e-6)


def test_hashed_index_uses_all_three_primes() -> None:
    """A hashed level must differ when only y or only z changes (guards against dropped primes)."""
    table = random_table(SMALL)
    n = SMALL_RES[3]
    x = torch.tensor([[5, 7, 9], [5, 8, 9], [5, 7, 10], [6, 7, 9]], dtype=torch.float64) / n
    feats = hash_encode(x, table, SMALL)[:, 6:8]
    for i in range(1, 4):
        assert not torch.allclose(feats[0], feats[i])
        vertex = (x[i] * n).round().long().tolist()
        torch.testing.assert_close(feats[i], table[SMALL_OFFSETS[3] + python_index(tuple(vertex), n, 12)])


@pytest.mark.parametrize("level", [1, 3])
def test_linear_along_an_edge(level: int) -> None:
    table = random_table(SMALL)
    n = SMALL_RES[level]
    a, b = (2, 3, 4), (2, 4, 4)  # an edge along y
    for t in (0.5, 0.25):
        x = torch.tensor([[a[0], a[1] + t, a[2]]], dtype=torch.float64) / n
        out = hash_encode(x, table, SMALL)[0, 2 * level : 2 * level + 2]
        ta = table[SMALL_OFFSETS[level] + python_index(a, n, 12)]
        tb = table[SMALL_OFFSETS[level] + python_index(b, n, 12)]
        torch.testing.assert_close(out, (1 - t) * ta + t * tb)


def test_trilinear_at_cell_centre_is_mean_of_corners() -> None:
    table = random_table(SMALL)
    n = SMALL_RES[0]
    x = torch.tensor([[1.5, 2.5, 0.5]], dtype=torch.float64) / n
    corners = [(1 + i, 2 + j, 0 + k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    expected = torch.stack([table[python_index(c, n, 12)] for c in corners]).mean(0)
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
    # Resolutions 2 (dense, 27 rows) and 8 (hashed, 729 > 64).
    cfg = HashGridConfig(levels=2, features=2, log2_table_size=6, base_resolution=2, max_resolution=8)
    assert [lay.hashed for lay in level_layouts(cfg)] == [False, True]
    g = torch.Generator().manual_seed(0)
    cells = torch.randint(0, 8, (6, 3), generator=g)
    x = ((cells + 0.2 + 0.6 * torch.rand(6, 3, generator=g, dtype=torch.float64)) / 8).requires_grad_()
    table = random_table(cfg).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: hash_encode(x, t, cfg), (x, table), eps=1e-6, atol=1e-6)


def test_table_gradient_is_the_interpolation_weights() -> None:
    table = random_table(SMALL).requires_grad_()
    n = SMALL_RES[0]
    x = torch.tensor([[1.25, 0.0, 0.0]], dtype=torch.float64) / n
    hash_encode(x, table, SMALL)[0, 0].backward()
    grad = table.grad[:, 0]
    assert grad[python_index((1, 0, 0), n, 12)].item() == pytest.approx(0.75)
    assert grad[python_index((2, 0, 0), n, 12)].item() == pytest.approx(0.25)
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
    assert level_layouts(cfg)[-1].resolution == 512
