"""The native hash-grid kernels (nerf/csrc) against the PyTorch reference, on the CPU and (where there is one)
CUDA.

Each test draws a fresh seed and prints it (pytest shows it on failure). Skipped only where the native library
is not built (`make native`) or not built for the device.
"""

from __future__ import annotations

import pytest
import torch

from nerf.backends import (
    NATIVE,
    TORCH,
    BackendUnavailable,
    _native_error,
    available_backends,
    native_hash_encode,
    resolve_backend,
)
from nerf.hashgrid import GridLayout, HashGrid, HashGridConfig, grid_layout, hash_encode, level_layouts, table_rows
from nerf.marching import march_candidates
from nerf.volume import composite
from tests.conftest import skip_without_native

CONFIGS = {
    # T = 256: R = 2, 4 dense; 8, 16 hashed. F = 3 exercises an odd feature count.
    "log2T8": HashGridConfig(levels=4, features=3, log2_table_size=8, base_resolution=2, max_resolution=16),
    # T = 4096: R = 4 .. 14 dense (9^3 = 729 padded to 736 rows), 20 .. 64 hashed.
    "log2T12": HashGridConfig(levels=8, features=4, log2_table_size=12, base_resolution=4, max_resolution=64),
    # The default: 6 dense levels, 10 hashed.
    "log2T19": HashGridConfig(),
}


def make_points(cfg: HashGridConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random points, some outside [0, 1], points exactly on every level's cell boundaries, cube corners."""
    inside = torch.rand(n, 3, generator=gen)
    outside = torch.rand(n // 8, 3, generator=gen) * 1.4 - 0.2
    boundary = []
    for lay in level_layouts(cfg):
        k = torch.randint(1, lay.resolution, (n // 8, 3), generator=gen).float()
        on_grid = ((k - 0.5) / lay.scale).clamp(0.0, 1.0)  # p * s + 0.5 on a vertex
        mixed = torch.where(torch.rand(n // 8, 3, generator=gen) < 0.5, on_grid, inside[: n // 8])
        boundary += [on_grid, mixed]
    corners = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0]])
    return torch.cat([inside, outside, *boundary, corners])


def make_table(cfg: HashGridConfig, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(table_rows(cfg), cfg.features, generator=gen) * 2 - 1


def reference_grads(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig, grad_out: torch.Tensor):
    x = x.clone().requires_grad_()
    table = table.clone().requires_grad_()
    hash_encode(x, table, cfg).backward(grad_out)
    return x.grad, table.grad


def native_grads(x: torch.Tensor, table: torch.Tensor, cfg: HashGridConfig, grad_out: torch.Tensor):
    x = x.clone().requires_grad_()
    table = table.clone().requires_grad_()
    native_hash_encode(x, table, cfg).backward(grad_out)
    return x.grad, table.grad


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Relative 1e-5 per element, with an absolute floor of 1e-5 of the largest magnitude (cancellation)."""
    atol = 1e-5 * float(expected.abs().max()) + 1e-7
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_matches_reference(name: str, native_device: torch.device, gen: torch.Generator) -> None:
    cfg = CONFIGS[name]
    assert any(lay.hashed for lay in level_layouts(cfg)) and not all(lay.hashed for lay in level_layouts(cfg))
    x, table = make_points(cfg, 4096, gen), make_table(cfg, gen)
    expected = hash_encode(x, table, cfg)
    actual = native_hash_encode(x.to(native_device), table.to(native_device), cfg).cpu()
    assert actual.shape == (x.shape[0], cfg.output_dim)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_backward_matches_reference(name: str, native_device: torch.device, gen: torch.Generator) -> None:
    cfg = CONFIGS[name]
    x, table = make_points(cfg, 4096, gen), make_table(cfg, gen)
    grad_out = torch.randn(x.shape[0], cfg.output_dim, generator=gen)
    ref_x, ref_table = reference_grads(x, table, cfg, grad_out)
    dev = native_device
    nat_x, nat_table = native_grads(x.to(dev), table.to(dev), cfg, grad_out.to(dev))
    assert_close_scaled(nat_table.cpu(), ref_table, "dL/dtable")
    assert_close_scaled(nat_x.cpu(), ref_x, "dL/dx")
    outside = ((x < 0) | (x > 1)).any(dim=1)
    assert outside.any() and (nat_x.cpu()[(x < 0) | (x > 1)] == 0).all()


def test_table_grad_only_when_x_is_constant(native_device: torch.device, gen: torch.Generator) -> None:
    cfg = CONFIGS["log2T12"]
    x, table = make_points(cfg, 1024, gen).to(native_device), make_table(cfg, gen).to(native_device)
    table.requires_grad_()
    native_hash_encode(x, table, cfg).square().sum().backward()
    expected = table.detach().cpu().clone().requires_grad_()
    hash_encode(x.cpu(), expected, cfg).square().sum().backward()
    assert x.grad is None
    assert_close_scaled(table.grad.cpu(), expected.grad, "dL/dtable")


@pytest.mark.parametrize("name", CONFIGS)
def test_values_do_not_depend_on_whether_x_needs_a_gradient(name: str, native_device: torch.device,
                                                             gen: torch.Generator) -> None:
    """Where x needs a gradient the CPU forward also computes each output's derivative along each axis (a kernel
    of its own, whose input gradient test_backward_matches_reference checks); its values are the plain
    forward's, bit for bit."""
    cfg = CONFIGS[name]
    x, table = make_points(cfg, 2048, gen).to(native_device), make_table(cfg, gen).to(native_device)
    plain = native_hash_encode(x, table, cfg)
    wanting = native_hash_encode(x.clone().requires_grad_(), table, cfg)
    assert torch.equal(plain, wanting.detach())


def test_cpu_backward_is_deterministic(gen: torch.Generator) -> None:
    skip_without_native(_native_error(torch.device("cpu")))
    cfg = CONFIGS["log2T12"]
    x, table = torch.rand(50_000, 3, generator=gen), make_table(cfg, gen)
    grad_out = torch.randn(x.shape[0], cfg.output_dim, generator=gen)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n_threads in (threads, threads, 1):
            torch.set_num_threads(n_threads)
            runs.append(native_grads(x, table, cfg, grad_out))
    finally:
        torch.set_num_threads(threads)
    for gx, gt in runs[1:]:
        assert torch.equal(gt, runs[0][1]) and torch.equal(gx, runs[0][0])


def test_hashgrid_module_after_state_dict(native_device: torch.device, gen: torch.Generator) -> None:
    cfg = CONFIGS["log2T19"]
    reference = HashGrid(cfg)
    with torch.no_grad():
        reference.table.copy_(make_table(cfg, gen))
    native = HashGrid(cfg, encode_fn=native_hash_encode).to(native_device)
    native.load_state_dict(reference.state_dict())
    x = torch.rand(2048, 3, generator=gen)
    torch.testing.assert_close(native(x.to(native_device)).cpu(), reference(x), rtol=1e-5, atol=1e-6)


def test_vertices_reproduce_table_entries(native_device: torch.device, gen: torch.Generator) -> None:
    """At a grid vertex the encoding is that vertex's table row (dense level: row x + y R + z R^2)."""
    cfg = CONFIGS["log2T8"]
    table = make_table(cfg, gen)
    lay = level_layouts(cfg)[1]  # s = 3, R = 4, dense
    v = torch.randint(1, lay.resolution, (64, 3), generator=gen)
    x = ((v.double() - 0.5) / lay.scale).float().to(native_device)
    out = native_hash_encode(x, table.to(native_device), cfg).cpu()
    side = lay.resolution
    rows = lay.offset + v[:, 0] + side * v[:, 1] + side * side * v[:, 2]
    torch.testing.assert_close(out[:, cfg.features : 2 * cfg.features], table[rows], rtol=1e-5, atol=1e-6)


def test_layout_matches_level_layouts() -> None:
    for cfg in CONFIGS.values():
        layout, levels = grid_layout(cfg), level_layouts(cfg)
        assert layout is grid_layout(cfg)  # built once per config
        assert layout.offsets.tolist() == [lay.offset for lay in levels] + [table_rows(cfg)]
        assert layout.scales.tolist() == [lay.scale for lay in levels]  # float32 values, exactly
        assert (layout.features, layout.table_size, layout.rows) == (cfg.features, cfg.table_size, table_rows(cfg))


def test_inconsistent_layout_is_refused_on_the_host() -> None:
    """Validated once when the layout is built, for every device, before any kernel could read out of bounds."""
    good = grid_layout(CONFIGS["log2T8"])  # R = 2, 4 dense (8, 64 rows); 8, 16 hashed (256 rows)
    offsets, scales = good.offsets, good.scales

    def layout(offsets: torch.Tensor = offsets, scales: torch.Tensor = scales, table_size: int = 256) -> GridLayout:
        return GridLayout(offsets, scales, good.features, table_size)

    with pytest.raises(ValueError, match="dense level 0"):
        layout(offsets=torch.tensor([0, 7, 71, 327, 583]))
    with pytest.raises(ValueError, match="hashed level 3"):
        layout(offsets=offsets - torch.tensor([0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="power-of-2"):
        layout(table_size=255)
    with pytest.raises(ValueError, match="dense level 1"):
        layout(scales=scales + torch.tensor([0.0, 1.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="int64"):
        layout(offsets=offsets.int())
    with pytest.raises(ValueError, match="levels"):
        GridLayout(torch.arange(34, dtype=torch.int64) * 8, torch.ones(33), 1, 256)


def test_op_rejects_a_table_of_another_size(native_device: torch.device) -> None:
    cfg = CONFIGS["log2T8"]
    layout = grid_layout(cfg)
    table = torch.zeros(table_rows(cfg), cfg.features, device=native_device)
    x = torch.rand(8, 3, device=native_device)
    with pytest.raises(ValueError, match="table must be"):
        native_hash_encode(x, table[:-1], cfg)
    with pytest.raises(RuntimeError, match="the layout has 584 rows"):  # the op itself, called directly
        torch.ops.nerf_native.hash_encode_forward(x, table[:-1], layout.offsets, layout.scales, layout.table_size)
    with pytest.raises(ValueError, match="float32"):
        native_hash_encode(x.double(), table.double(), cfg)


def test_backend_selection() -> None:
    assert available_backends("cpu")[-1] == "torch"
    assert resolve_backend("torch", "cpu") == TORCH
    assert (TORCH.encode, TORCH.march_candidates, TORCH.composite) == (hash_encode, march_candidates, composite)
    native_here = _native_error(torch.device("cpu")) is None
    assert resolve_backend("auto", "cpu") == (NATIVE if native_here else TORCH)
    with pytest.raises(BackendUnavailable, match="choose one of"):
        resolve_backend("fastest", "cpu")
    with pytest.raises(BackendUnavailable, match="CUDA devices only"):
        resolve_backend("tcnn", "cpu")
