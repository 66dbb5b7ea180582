"""The sample budget and the static, sync-free training step: the adaptive ray count, the fixed-capacity sample
buffer and its overflow, static shapes from step to step, torch.compile(fullgraph=True) as the CPU proxy of CUDA
graph capture, and the native ops under ``torch.library.opcheck``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nerf.backends import _native_error, resolve_backend
from nerf.data import RaySampler, load_dataset
from nerf.marching import SlotBudget, StepRule, march_rays, march_rays_static, ray_aabb, ray_spans
from nerf.model import build_model
from nerf.occupancy import OccupancyGrid
from nerf.render import RayBatch, render_rays, render_rays_static
from nerf.resolve import resolve
from nerf.step import CANDIDATES_PER_SAMPLE, RayBudget, StaticStep, train_step
from tests.conftest import skip_without_native, tiny_config

BUDGET = 4096


def rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rays from a sphere of radius 3 towards points near the origin, ``(n, 3)`` each."""
    gen = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 3.0
    d = torch.nn.functional.normalize(torch.rand(n, 3, generator=gen) - 0.5 - o, dim=-1)
    return o, d


def half_grid() -> OccupancyGrid:
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), 8)
    grid.mask[:, :4] = False
    return grid


def test_static_march_matches_dynamic_and_overflow_drops_last_rays() -> None:
    o, d = rays(64)
    grid, aabb = half_grid(), torch.tensor([[-1.0] * 3, [1.0] * 3])
    rule = StepRule(0.05)
    ref = march_rays(o, d, aabb, grid, rule, 200)
    spans = ray_spans(o, d, aabb, rule, 200)
    full = march_rays_static(spans, rule, grid, SlotBudget(torch.tensor(64), len(ref) + 10, 100_000))
    assert full.fits.all() and int(full.wanted[0]) == len(ref)
    assert torch.equal(full.samples.ray_indices[: len(ref)], ref.ray_indices)
    assert torch.equal(full.samples.t_starts[: len(ref)], ref.t_starts)
    assert (full.samples.ray_indices[len(ref):] == 64).all() and (full.samples.t_ends[len(ref):] == 0).all()

    capacity = len(ref) // 2
    small = march_rays_static(spans, rule, grid, SlotBudget(torch.tensor(64), capacity, 100_000))
    again = march_rays_static(spans, rule, grid, SlotBudget(torch.tensor(64), capacity, 100_000))
    fit = int(small.fits.sum())
    assert 0 < fit < 64 and small.fits[:fit].all()  # a prefix of the rays: the last ones are dropped
    kept = int((ref.ray_indices < fit).sum())
    assert kept <= capacity < kept + int((ref.ray_indices == fit).sum())  # the next ray would not have fitted
    assert torch.equal(small.samples.ray_indices[:kept], ref.ray_indices[:kept])
    assert (small.samples.ray_indices[kept:] == 64).all()
    assert all(torch.equal(a, b) for a, b in zip(vars(small.samples).values(), vars(again.samples).values(),
                                                 strict=True))
    few = march_rays_static(spans, rule, grid, SlotBudget(torch.tensor(10), 100_000, 100_000))
    assert int(few.fits.sum()) == 10 and int(few.wanted[0]) == int((ref.ray_indices < 10).sum())


def test_ray_budget_converges_to_the_budget() -> None:
    budget = RayBudget(100, BUDGET, None, torch.device("cpu"))
    for _ in range(80):
        budget.update(torch.tensor(int(budget.rays) * 12), budget.rays)  # 12 samples a ray
    assert abs(int(budget.rays) - BUDGET // 12) <= 2
    for _ in range(80):
        budget.update(torch.tensor(int(budget.rays) * 1000), budget.rays)
    assert int(budget.rays) == budget.lo  # bounded


@pytest.fixture(scope="module")
def setup(ball: Path, tmp_path_factory: pytest.TempPathFactory):
    def make(backend: str = "torch", model: str = "ngp"):
        cfg = resolve(tiny_config(ball, tmp_path_factory.mktemp("runs"), backend=backend, model=model, batch_rays=256,
                          samples_per_step=BUDGET), None, "cpu")
        torch.manual_seed(0)
        dataset = load_dataset(ball, splits=("train",))
        model = build_model(cfg, dataset.aabb, torch.device("cpu"))
        opt = torch.optim.Adam(model.field.parameters(), lr=1e-2, eps=1e-15)  # made fused by the step
        sampler = RaySampler(dataset.splits["train"], torch.Generator().manual_seed(0))
        return cfg, model, opt, sampler
    return make


class ShapeRecorder(TorchDispatchMode):
    """Every op called, with the shapes of its tensor outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, tuple | list) else (out,)
        self.calls.append((str(func), tuple(tuple(t.shape) for t in flat if isinstance(t, torch.Tensor))))
        return out


def test_static_step_keeps_its_shapes_and_adapts_to_the_budget(setup) -> None:
    cfg, model, opt, sampler = setup()
    step = StaticStep(model, opt, sampler, cfg, torch.Generator().manual_seed(1), graph=False)
    stats = [step() for _ in range(30)]
    records = []
    for _ in range(2):
        with ShapeRecorder() as rec:
            stats.append(step())
        records.append(rec.calls)
    assert len(records[0]) > 50 and records[0] == records[1]
    assert not any("nonzero" in name or "_local_scalar_dense" in name for name, _ in records[0])  # no host sync
    used = torch.stack(stats[-10:])[:, 2]
    assert used.max() <= BUDGET and used.mean() > 0.6 * BUDGET  # rays grew until the samples filled the budget
    assert (torch.stack(stats)[:, 4] == 0).all()


def test_static_step_skips_a_nan_step_on_the_device(setup) -> None:
    cfg, model, opt, sampler = setup()
    step = StaticStep(model, opt, sampler, cfg, torch.Generator().manual_seed(1), graph=False)
    assert step()[4] == 0
    with torch.no_grad():
        model.field.density_mlp[0].weight[0, 0] = float("nan")
    poisoned = [p.detach().clone() for p in model.field.parameters()]
    steps = [float(s["step"]) for s in opt.state.values()]
    assert step()[4] == 1
    assert all(torch.allclose(p, q, equal_nan=True) for p, q in zip(model.field.parameters(), poisoned, strict=True))
    assert [float(s["step"]) for s in opt.state.values()] == steps


@pytest.mark.parametrize(("backend", "model"), [("torch", "nerf"), ("native", "ngp")])
def test_static_render_compiles_fullgraph(setup, backend: str, model: str) -> None:
    """The CPU proxy of CUDA graph capture: the step's forward (static marching, field, compositing, loss) traces
    into one graph, with fake kernels for the native ops, and its backward through AOT autograd. The torch
    reference hash encoding does not trace (``out=`` into a strided view), so the torch case uses the PE field."""
    if backend == "native":
        skip_without_native(_native_error(torch.device("cpu")))
    _, model, _, sampler = setup(backend, model)
    gen = torch.Generator().manual_seed(3)
    active = torch.tensor(300)

    def forward(origins: torch.Tensor, dirs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rays = RayBatch(origins, dirs, torch.ones(3))
        out, _ = render_rays_static(model, rays, SlotBudget(active, BUDGET, BUDGET * 16))
        return ((out["rgb"] - target) ** 2).mean()

    batch = sampler.sample(512, gen)
    forward(batch.origins, batch.dirs, batch.rgba[:, :3])  # eager first, as the step before its capture
    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    loss = compiled(batch.origins, batch.dirs, batch.rgba[:, :3])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.field.parameters())


def test_native_ops_pass_opcheck() -> None:
    skip_without_native(_native_error(torch.device("cpu")))
    backend = resolve_backend("native", "cpu")
    assert backend.name == "native"
    ops = torch.ops.nerf_native
    o, d = rays(32)
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    s = march_rays(o, d, aabb, None, 0.1, 64)
    n_samples = len(s)
    gen = torch.Generator().manual_seed(0)
    sigmas, rgbs = torch.rand(n_samples, generator=gen) * 5, torch.rand(n_samples, 3, generator=gen)
    args = (sigmas, rgbs, s.t_starts, s.t_ends, s.ray_indices, 32)
    torch.library.opcheck(ops.composite_forward.default, args)
    weights, trans, *_ = ops.composite_forward(*args)
    grads = (torch.rand(n_samples), torch.rand(32, 3), torch.rand(32), torch.rand(32))
    torch.library.opcheck(ops.composite_backward.default,
                          (*grads, sigmas, rgbs, s.t_starts, s.t_ends, s.ray_indices, weights, trans))
    from nerf.hashgrid import HashGridConfig, grid_layout, table_rows

    hcfg = HashGridConfig(levels=4, log2_table_size=10, max_resolution=64)
    layout = grid_layout(hcfg)
    x, table = torch.rand(100, 3, generator=gen), torch.rand(table_rows(hcfg), hcfg.features, generator=gen)
    enc_args = (x, table, layout.offsets, layout.scales, layout.table_size)
    torch.library.opcheck(ops.hash_encode_forward.default, enc_args)
    grad_out = torch.rand(100, hcfg.output_dim, generator=gen)
    torch.library.opcheck(ops.hash_encode_backward.default, (grad_out, *enc_args, True))
    t0, t_far, hit = ray_aabb(o, d, aabb)
    counts = torch.where(hit, torch.ceil((t_far - t0) / 0.1), 0).long()
    for cone_angle, contract in ((0.0, None), (1 / 256, aabb)):  # uniform steps; growing and contracted ones
        march_args = (o, d, t0, t_far, counts, half_grid().mask, aabb, False, 0.1, cone_angle, math.inf, contract, 0)
        torch.library.opcheck(ops.march_samples.default, march_args,
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_static_occupancy_update_finds_the_occupied_half_without_host_sync() -> None:
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), 16, threshold=0.5)
    gen = torch.Generator().manual_seed(0)

    def density(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] > 0).float()

    grid.update(density, 0, warmup_steps=1, generator=gen)  # warmup: every cell
    assert grid.mask[8:].all() and not grid.mask[:8].any()
    with ShapeRecorder() as rec:
        grid.update(density, 5, warmup_steps=1, n_samples=256, generator=gen)
    assert not any("nonzero" in name or "_local_scalar_dense" in name or "unique" in name for name, _ in rec.calls)
    assert grid.mask[8:].all() and not grid.mask[:8].any()  # occupied cells probed again: they stay


def test_static_step_adds_the_mean_distortion_of_the_rays_it_marched(setup) -> None:
    """With ``--distortion`` the static step's loss is the photometric one plus the weight times the mean
    :func:`nerf.render.ray_distortion` over the rays that fit (the same draws, replayed)."""
    losses = []
    for lam in (0.0, 1.0):
        cfg, model, opt, sampler = setup()
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, distortion=lam))
        step = StaticStep(model, opt, sampler, cfg, torch.Generator().manual_seed(5), graph=False)
        replay = torch.Generator().manual_seed(5)
        batch = sampler.sample(step.budget.hi, replay)
        background = torch.rand(batch.rgba[:, :3].shape, generator=replay)
        out, buf = render_rays_static(model, RayBatch(batch.origins, batch.dirs, background),
                                      SlotBudget(step.budget.rays, BUDGET, BUDGET * CANDIDATES_PER_SAMPLE),
                                      generator=replay, with_distortion=True)
        expected = (out["distortion"] * buf.fits).sum() / buf.fits.sum()
        losses.append(step()[0])
    assert expected > 1e-4
    torch.testing.assert_close(losses[1] - losses[0], expected.detach(), rtol=1e-3, atol=1e-6)


def test_dynamic_step_adds_the_mean_distortion(setup) -> None:
    """The same for :func:`nerf.step.train_step` (the CPU's step): plus the weight times the batch's mean
    distortion, replayed from the same draws."""
    cfg, model, _, sampler = setup()
    gen = torch.Generator().manual_seed(5)
    batch = sampler.sample(cfg.batch_rays)
    background = torch.rand(batch.rgba[:, :3].shape, generator=gen)
    out = render_rays(model, RayBatch(batch.origins, batch.dirs, background), jitter=True, generator=gen,
                      with_distortion=True)
    expected = out["distortion"].mean().item()
    losses = []
    for lam in (0.0, 1.0):
        cfg, model, opt, sampler = setup()
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, distortion=lam))
        losses.append(train_step(model, opt, sampler, cfg, torch.Generator().manual_seed(5))["loss"])
    assert expected > 1e-4
    assert losses[1] - losses[0] == pytest.approx(expected, rel=1e-3)
