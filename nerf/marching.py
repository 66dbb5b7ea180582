"""Ray marching through the aabb (or, in a contracted scene, out to "infinity") with occupancy-grid empty-space
skipping, producing packed samples."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nerf.contraction import box_norm, far_box
from nerf.occupancy import OccupancyGrid
from nerf.volume import accumulation_dtype, early_terminated, segment_exclusive_cumsum

MARCH_CHUNK = 1 << 21
"""Candidate samples materialised at once while marching (bounds the memory of long rays)."""
EVAL_CHUNK = 1 << 17
"""Points per call of ``sigma_fn`` in :func:`prune_occluded` (bounds the encoder's memory)."""
PRUNE_FIRST_ROUND = 16
"""Samples per ray in the first round of :func:`prune_occluded`."""
ROUND_GROWTH = 2.0
"""Each round of :func:`prune_occluded` and :func:`nerf.render.render_rays_rounds` takes this many times the samples
of the last one (rounded down)."""
GAP_POINTS = 4
"""Points of the midpoint rule that counts the steps in a gap between two samples (:func:`step_coordinates`)."""


def ray_aabb(
    o: torch.Tensor, d: torch.Tensor, aabb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test of rays ``o, d`` ``(N, 3)`` against ``aabb`` ``(2, 3)``.

    Returns ``t_near (N,)`` (>= 0: a ray starting inside enters at 0), ``t_far (N,)`` and ``hit (N,)`` bool
    (``t_far > t_near``). Rays that miss get ``t_far = t_near``.
    """
    tiny = torch.finfo(d.dtype).tiny
    safe = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
    inv = 1.0 / safe
    t0 = (aabb[0] - o) * inv
    t1 = (aabb[1] - o) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    hit = t_far > t_near
    return t_near, torch.where(hit, t_far, t_near), hit


@dataclass
class Samples:
    """Packed samples sorted by ray, then ``t``: intervals ``[t_starts, t_ends]`` on rays ``ray_indices``."""

    ray_indices: torch.Tensor  # (S,) long
    t_starts: torch.Tensor  # (S,)
    t_ends: torch.Tensor  # (S,)

    def __len__(self) -> int:
        return self.ray_indices.numel()

    @property
    def t_mids(self) -> torch.Tensor:
        """``(S,)`` interval mid-points."""
        return 0.5 * (self.t_starts + self.t_ends)

    @property
    def deltas(self) -> torch.Tensor:
        """``(S,)`` interval lengths."""
        return self.t_ends - self.t_starts

    def positions(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``(S, 3)`` world points at the interval mid-points of rays ``o, d`` ``(N, 3)``."""
        return o[self.ray_indices] + d[self.ray_indices] * self.t_mids[:, None]

    def select(self, keep: torch.Tensor) -> Samples:
        """The samples where ``keep`` ``(S,)`` bool is True, or at indices ``keep`` ``(K,)`` long (order kept)."""
        return Samples(self.ray_indices[keep], self.t_starts[keep], self.t_ends[keep])


@dataclass(frozen=True)
class StepRule:
    """How long the step from ``t`` is: ``dt = clamp(t * cone_angle, step, max_step)`` (instant-NGP's cone-angle
    growth), times ``n**2`` outside the box ``contract_aabb`` ``(2, 3)`` of a contracted scene (``n``:
    :func:`nerf.contraction.box_norm` at ``t``; evenly spaced in disparity). ``uniform`` (``cone_angle = 0``, no
    contraction): sample ``k`` starts at ``t0 + k * step``; otherwise every step starts where the last one ended."""

    step: float
    cone_angle: float = 0.0
    max_step: float = math.inf
    contract_aabb: torch.Tensor | None = None

    @property
    def uniform(self) -> bool:
        return self.cone_angle == 0.0 and self.contract_aabb is None

    def lengths(self, o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``dt`` ``(N,)`` of the steps from ``t`` ``(N,)`` along rays ``o, d`` ``(N, 3)``."""
        dt = (t * self.cone_angle).clamp(self.step, self.max_step)
        if self.contract_aabb is None:
            return dt
        n = box_norm(o + d * t[:, None], self.contract_aabb).clamp(min=1.0)
        return dt * (n * n)


def _chunks(counts: torch.Tensor, budget: int) -> list[tuple[int, int]]:
    """Split rays into consecutive ranges of at most ``budget`` samples each (or a single longer ray)."""
    n = counts.numel()
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if n else 0
    if total <= budget:
        return [(0, n)] if n else []
    marks = torch.arange(budget, total, budget, device=counts.device)
    cuts = torch.searchsorted(ends, marks, right=True).tolist()
    return list(itertools.pairwise(sorted({0, n, *cuts})))


@dataclass(frozen=True)
class RaySpans:
    """Rays ``o, d`` ``(N, 3)`` with where their marching starts and ends, ``t0``, ``t_far`` ``(N,)``, and their
    candidate ``counts`` ``(N,)`` long; ``first``: the index of row 0 among all the rays of the march (the samples'
    ray indices count from it)."""

    o: torch.Tensor
    d: torch.Tensor
    t0: torch.Tensor
    t_far: torch.Tensor
    counts: torch.Tensor
    first: int = 0

    def rows(self, start: int, end: int) -> RaySpans:
        """Rays ``start .. end - 1``."""
        return RaySpans(self.o[start:end], self.d[start:end], self.t0[start:end], self.t_far[start:end],
                        self.counts[start:end], self.first + start)


def march_candidates(spans: RaySpans, rule: StepRule, grid: OccupancyGrid | None) -> Samples:
    """The kept samples of the rays ``spans``: ray ``r``'s candidate ``k < counts[r]`` is
    ``[s, min(s + dt, t_far[r])]``, kept where its mid-point is occupied in ``grid`` (always without a grid).
    ``rule.uniform``: ``s = t0[r] + k * step``, ``dt = step``; otherwise ``s`` starts at ``t0[r]`` and moves on by
    ``dt = rule.lengths(s)`` while ``s < t_far[r]``."""
    if not rule.uniform:
        return _march_sequential(spans, rule, grid)
    c, device = spans.counts, spans.o.device
    rays = torch.repeat_interleave(torch.arange(c.numel(), device=device), c)
    starts = torch.cumsum(c, 0) - c
    k = torch.arange(rays.numel(), device=device) - starts[rays]
    s = candidate_intervals(spans.t0, spans.t_far, rays, k, rule.step)
    if grid is not None:
        s = s.select(grid.occupied(s.positions(spans.o, spans.d)))
    return Samples(s.ray_indices + spans.first, s.t_starts, s.t_ends)


def _march_sequential(spans: RaySpans, rule: StepRule, grid: OccupancyGrid | None) -> Samples:
    """:func:`march_candidates` with steps that depend on ``t``: all rays step together, one step per loop."""
    o, d, t_far, cap = spans.o, spans.d, spans.t_far, spans.counts
    s = spans.t0.clone()
    active = ((cap > 0) & (s < t_far)).nonzero().squeeze(-1)
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    k = 0
    while active.numel():
        start, ro, rd = s[active], o[active], d[active]
        nxt = start + rule.lengths(ro, rd, start)
        end = torch.minimum(nxt, t_far[active])
        mid = 0.5 * (start + end)
        x = ro + rd * mid[:, None]
        keep = torch.ones_like(start, dtype=torch.bool) if grid is None else grid.occupied(x)
        parts.append((active[keep], start[keep], end[keep]))
        s[active] = nxt
        k += 1
        active = active[(cap[active] > k) & (nxt < t_far[active])]
    if not parts:
        empty = s.new_empty(0)
        return Samples(cap.new_empty(0), empty, empty.clone())
    rays, starts, ends = (torch.cat(p) for p in zip(*parts, strict=True))
    order = torch.sort(rays, stable=True).indices
    return Samples(rays[order] + spans.first, starts[order], ends[order])


def candidate_intervals(
    t0: torch.Tensor, t_far: torch.Tensor, rays: torch.Tensor, k: torch.Tensor, step_size: float
) -> Samples:
    """Candidate ``k`` ``(S,)`` long of rays ``rays`` ``(S,)``: ``[s, min(s + step, t_far)]``, ``s = t0 + k * step``
    (``t0, t_far`` ``(N,)``)."""
    starts = t0[rays] + k.to(t0.dtype) * step_size
    return Samples(rays, starts, torch.minimum(starts + step_size, t_far[rays]))


CandidatesFn = Callable[[RaySpans, StepRule, OccupancyGrid | None], Samples]
"""The signature of :func:`march_candidates` (the native twin: :func:`nerf.backends.native_march_candidates`)."""


def march_rays(
    o: torch.Tensor,
    d: torch.Tensor,
    aabb: torch.Tensor,
    grid: OccupancyGrid | None,
    step_size: float | StepRule,
    max_steps: int,
    *,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    near: float = 0.0,
    candidates_fn: CandidatesFn = march_candidates,
) -> Samples:
    """March rays ``o, d`` ``(N, 3)`` through ``aabb`` ``(2, 3)`` in steps of ``step_size`` (a float: a uniform
    :class:`StepRule`), from :func:`ray_spans`.

    Uniform: ray ``r`` gets the intervals ``[t0 + k * step, t0 + (k + 1) * step]`` (the last one clipped to
    ``t_far``) for ``k < ceil((t_far - t0) / step)``, at most ``max_steps`` of them, where
    ``t0 = max(t_near, near)`` plus, with ``jitter``, a uniform offset in ``[0, step)`` per ray (drawn from
    ``generator`` on the rays' device). Otherwise the steps follow the rule, at most ``max_steps``; a contracted
    rule marches every ray from ``near`` to where it leaves :func:`nerf.contraction.far_box` ("infinity") and
    ignores ``aabb``. Only intervals whose mid-point lies in an occupied cell of ``grid`` are kept (all of them if
    ``grid`` is None). ``candidates_fn`` generates and tests the candidates.
    """
    rule = step_size if isinstance(step_size, StepRule) else StepRule(step_size)
    spans = ray_spans(o, d, aabb, rule, max_steps, jitter=jitter, generator=generator, near=near)
    parts = [candidates_fn(spans.rows(start, end), rule, grid) for start, end in _chunks(spans.counts, MARCH_CHUNK)]
    if not parts:
        empty = torch.empty(0, device=o.device, dtype=o.dtype)
        return Samples(torch.empty(0, dtype=torch.long, device=o.device), empty, empty.clone())
    if len(parts) == 1:
        return parts[0]
    fields = ("ray_indices", "t_starts", "t_ends")
    return Samples(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))


def ray_spans(
    o: torch.Tensor,
    d: torch.Tensor,
    aabb: torch.Tensor,
    rule: StepRule,
    max_steps: int,
    *,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    near: float = 0.0,
) -> RaySpans:
    """Rays ``o, d`` ``(N, 3)`` with where their march starts and ends and their candidate counts (see
    :func:`march_rays`)."""
    if not rule.step > 0.0:
        raise ValueError(f"step_size must be > 0, got {rule.step}")
    n = o.shape[0]
    box = aabb if rule.contract_aabb is None else far_box(rule.contract_aabb)
    t_near, t_far, hit = ray_aabb(o, d, box.to(o))
    t0 = t_near.clamp(min=near)
    if jitter:
        t0 = t0 + torch.rand(n, device=o.device, dtype=o.dtype, generator=generator) * rule.step
    if rule.uniform:
        counts = torch.ceil((t_far - t0) / rule.step).clamp(0, max_steps).long()
    else:
        counts = torch.full((n,), max_steps, dtype=torch.long, device=o.device)
    return RaySpans(o, d, t0, t_far, torch.where(hit, counts, torch.zeros_like(counts)))


@dataclass(frozen=True)
class SlotBudget:
    """The static step's fixed sizes: the first ``active`` rays (0-d long tensor, on the device) are marched over
    at most ``candidates`` candidate intervals into at most ``samples`` sample slots."""

    active: torch.Tensor
    samples: int
    candidates: int


@dataclass
class SampleBuffer:
    """Fixed-capacity packed samples (:func:`march_rays_static`). ``samples`` has ``capacity`` slots; the unused
    ones belong to the dump ray ``N`` (one past the last ray) with empty intervals, so the buffer stays sorted by
    ray and composites as it is with ``N + 1`` rays. ``fits`` ``(N,)`` bool: the rays marched whole (a prefix of
    the active rays); ``wanted`` ``(2,)`` long: the samples (among the first ``candidate_capacity`` candidates) and
    the candidates the active rays asked for."""

    samples: Samples
    fits: torch.Tensor
    wanted: torch.Tensor


def march_rays_static(spans: RaySpans, rule: StepRule, grid: OccupancyGrid | None, slots: SlotBudget) -> SampleBuffer:
    """:func:`march_rays` with static shapes and no host synchronisation: the first ``slots.active`` of the rays
    ``spans`` (:func:`ray_spans`) are marched in the uniform steps of ``rule`` over at most ``slots.candidates``
    candidates into at most ``slots.samples`` samples. Rays are taken whole and in order: overflow drops the last
    rays (deterministic)."""
    if not rule.uniform:
        raise ValueError("the static step marches uniform steps only (no cone angle, no contraction)")
    active, capacity, candidate_capacity = slots.active, slots.samples, slots.candidates
    o, d, t0, t_far = spans.o, spans.d, spans.t0, spans.t_far
    n, device = o.shape[0], o.device
    counts = torch.where(torch.arange(n, device=device) < active, spans.counts, torch.zeros_like(spans.counts))
    ends = torch.cumsum(counts, 0)
    slot = torch.arange(candidate_capacity, device=device)
    rays = torch.searchsorted(ends, slot, right=True).clamp_(max=n - 1)
    cand = candidate_intervals(t0, t_far, rays, slot - (ends - counts)[rays], rule.step)
    keep = slot < ends[-1]
    if grid is not None:
        keep = keep & grid.occupied(cand.positions(o, d))
    per_ray = torch.zeros(n, dtype=torch.long, device=device).index_add_(0, rays, keep.long())
    kept_ends = torch.cumsum(per_ray, 0)
    fits = (ends <= candidate_capacity) & (kept_ends <= capacity) & (torch.arange(n, device=device) < active)
    keep = keep & fits[rays]
    dest = torch.where(keep, torch.cumsum(keep.long(), 0) - 1, capacity)  # dropped: the spare slot ``capacity``
    ray_indices = torch.full((capacity + 1,), n, dtype=torch.long, device=device).scatter_(0, dest, rays)
    t_starts = torch.zeros(capacity + 1, dtype=o.dtype, device=device).scatter_(0, dest, cand.t_starts)
    t_ends = torch.zeros(capacity + 1, dtype=o.dtype, device=device).scatter_(0, dest, cand.t_ends)
    samples = Samples(ray_indices[:capacity], t_starts[:capacity], t_ends[:capacity])
    return SampleBuffer(samples, fits, torch.stack([kept_ends[-1], ends[-1]]))


def step_coordinates(
    samples: Samples, o: torch.Tensor, d: torch.Tensor, rule: StepRule, points: int = GAP_POINTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each sample ``(S,)`` lies along its ray of ``o, d`` ``(N, 3)``, counted in marching steps: the
    ``(s_starts, s_ends)`` ``(S,)`` of its interval, from its ray's first sample. A marched interval is one step
    (its length over ``rule``'s step at its start: 1 but for a ray's clipped last one); a gap between two samples
    (empty space the grid skipped) is ``integral dt / step(t)``, by the midpoint rule on ``points`` sub-intervals.
    So a step counts the same near the camera and far out, where steps are long (as mip-NeRF 360's samples,
    spaced evenly in its ``s``)."""
    if len(samples) == 0:
        return samples.t_starts, samples.t_ends
    rays = samples.ray_indices
    ro, rd = o[rays], d[rays]
    lengths = samples.deltas / rule.lengths(ro, rd, samples.t_starts)
    before = torch.cat([samples.t_starts[:1], samples.t_ends[:-1]])  # the previous sample's end
    first = torch.ones_like(rays, dtype=torch.bool)
    first[1:] = rays[1:] != rays[:-1]
    width = torch.where(first, 0.0, samples.t_starts - before) / points
    gaps = torch.zeros_like(width)
    for q in range(points):
        gaps = gaps + width / rule.lengths(ro, rd, before + (q + 0.5) * width)
    starts = segment_exclusive_cumsum(gaps + lengths, rays) + gaps
    return starts, starts + lengths


def round_samples(first: torch.Tensor, take: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of packed samples sorted by ray: the indices ``(K,)`` of ``take`` ``(m,)`` consecutive samples of
    each of ``m`` rays from its sample ``first`` ``(m,)`` on, and which of the ``m`` rays each belongs to ``(K,)``
    (sorted)."""
    local = torch.repeat_interleave(torch.arange(take.numel(), device=take.device), take)
    offsets = torch.cumsum(take, 0) - take
    return (first - offsets)[local] + torch.arange(local.numel(), device=take.device), local


def prune_occluded(
    samples: Samples,
    o: torch.Tensor,
    d: torch.Tensor,
    sigma_fn: Callable[[torch.Tensor], torch.Tensor],
    eps: float = 1e-4,
) -> Samples:
    """Drop samples hidden behind opaque matter: evaluate ``sigma_fn`` (world points ``(S, 3)`` -> ``(S,)``)
    without gradients (in chunks) at the samples of rays ``o, d`` ``(N, 3)`` and keep those whose transmittance
    before them is at least ``eps``. The caller then re-evaluates the survivors with gradients (nerfacc's trick).

    The samples are evaluated in rounds (:data:`PRUNE_FIRST_ROUND` per ray, then :data:`ROUND_GROWTH` times the
    last round's), and a ray whose transmittance fell below ``eps`` takes no further round (its later samples would
    all be dropped): the cost follows the samples kept, not how far the rays reach."""
    n = o.shape[0]
    if len(samples) == 0:
        return samples
    with torch.no_grad():
        counts = torch.bincount(samples.ray_indices, minlength=n)
        first = torch.cumsum(counts, 0) - counts
        done = torch.zeros_like(counts)  # samples of each ray evaluated so far
        acc = accumulation_dtype(o.device)
        depth = torch.zeros(n, dtype=acc, device=o.device)  # their optical depth
        keep = torch.zeros(len(samples), dtype=torch.bool, device=o.device)
        live = counts.nonzero().squeeze(-1)
        size = PRUNE_FIRST_ROUND
        while live.numel():
            take = (counts[live] - done[live]).clamp(max=size)
            index, local = round_samples(first[live] + done[live], take)
            part = samples.select(index)
            sigmas = in_chunks(sigma_fn, part.positions(o, d), chunk=EVAL_CHUNK).reshape(-1)
            tau = (sigmas * part.deltas).to(acc)
            before = depth[part.ray_indices] + segment_exclusive_cumsum(tau, local)
            keep[index] = early_terminated(torch.exp(-before), eps)
            depth.index_add_(0, part.ray_indices, tau)
            done[live] += take
            live = live[(done[live] < counts[live]) & early_terminated(torch.exp(-depth[live]), eps)]
            size = int(size * ROUND_GROWTH)
    return samples.select(keep)


def in_chunks(fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], *inputs: torch.Tensor,
              chunk: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``fn`` over ``chunk`` rows of ``inputs`` ``(S, ...)`` at a time, its outputs (a tensor or a tuple of them)
    concatenated along the rows."""
    if len(inputs[0]) <= chunk:
        return fn(*inputs)
    parts = [fn(*(x[i : i + chunk] for x in inputs)) for i in range(0, len(inputs[0]), chunk)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))
    return torch.cat(parts)
