"""The sync-free training step: with a sample budget (``cfg.samples_per_step``) every step marches a fixed number
of sample slots, and the rays per step adapt on the device (:class:`RayBudget`) so that they fill it; the ray, sample
and candidate buffers then have static shapes, the loss and the NaN/Inf check stay on the device (fused Adam skips a
bad update), and the step never waits for the host, so on CUDA it is captured once as a CUDA graph and replayed
(:class:`StaticStep`). Also the dynamic, host-synchronising :func:`train_step` and the optimiser both share.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nerf.config import TrainConfig
from nerf.data import RaySampler, TrainingBatch
from nerf.distributed import SINGLE, World, all_reduce_gradients
from nerf.marching import SlotBudget
from nerf.metrics import psnr_from_mse
from nerf.model import Model, first_line
from nerf.render import RayBatch, render_rays, render_rays_static
from nerf.volume import over

RAY_RANGE = 16
"""With a sample budget, the rays of a step stay within ``batch_rays / RAY_RANGE .. batch_rays * RAY_RANGE``."""

RAY_EMA = 0.9
"""Decay of the moving average of the budget a ray uses (instant-NGP and nerfacc adapt the same way)."""

CANDIDATES_PER_SAMPLE = 16
"""The static step's candidate buffer holds this many candidates per sample slot (most fall in empty space)."""

GRAPH_WARMUP = 3
"""Eager steps (on a side stream) before the static step is captured as a CUDA graph."""


class ShareDecay(torch.optim.lr_scheduler.LRScheduler):
    """The learning rate at ``share`` (in [0, 1]) of the run done, set before each :meth:`step`: each group's
    initial rate times ``final_factor ** share`` (an exponential decay over the run, by its steps or its time
    budget) times ``penalty`` (the cuts after NaN/Inf steps)."""

    def __init__(self, optimizer: torch.optim.Optimizer, final_factor: float) -> None:
        self.final_factor, self.share, self.penalty = final_factor, 0.0, 1.0
        super().__init__(optimizer)

    def get_lr(self) -> list[float | torch.Tensor]:
        decay = self.penalty * self.final_factor ** self.share
        return [base * decay for base in self.base_lrs]


def make_optimizer(cfg: TrainConfig, field: nn.Module, cameras: nn.Module | None = None
                   ) -> tuple[torch.optim.Optimizer, ShareDecay]:
    """Adam with instant-NGP's betas and eps, and :class:`ShareDecay` to ``lr * lr_final_factor``; fused, with the
    learning rate in a device tensor, where the static step runs (:func:`static_step_applies`). The pose
    refinement's ``cameras``, if any, are a second parameter group at ``capture.pose_lr``."""
    o = cfg.optim
    device = next(field.parameters()).device
    fused = static_step_applies(cfg, device)

    def rate(value: float) -> float | torch.Tensor:
        return torch.tensor(value, device=device) if fused else value

    groups: list[dict[str, Any]] = [{"params": list(field.parameters()), "lr": rate(o.lr)}]
    if cameras is not None:
        groups.append({"params": list(cameras.parameters()), "lr": rate(cfg.capture.pose_lr)})
    opt = torch.optim.Adam(groups, lr=rate(o.lr), betas=o.betas, eps=o.eps, fused=fused or None, capturable=fused)
    if o.lr_final_factor is None:  # a config not resolved (nerf.resolve.resolve), or a checkpoint's without it
        raise ValueError("optim.lr_final_factor is not set")
    return opt, ShareDecay(opt, o.lr_final_factor)


HUBER_BETA = 0.1
"""Where the Huber loss turns from quadratic to linear (per colour channel)."""


def training_target(
    rgba: torch.Tensor, background: torch.Tensor | None, random_background: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The colours ``(N, 3)`` a batch's straight-alpha pixels ``rgba (N, 4)`` are learned as, and the background
    ``(N, 3)`` they stand over: the split's ``background`` ``(3,)``, else a random colour per ray (from
    ``generator``) with ``random_background``, else white."""
    rgb = rgba[:, :3]
    if background is not None:
        background = background.to(rgb).expand_as(rgb)
    elif random_background:
        background = torch.rand(rgb.shape, generator=generator, device=generator.device).to(rgb.device)
    else:
        background = torch.ones_like(rgb)
    return over(rgba, background), background


def photometric_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, mse)`` of colours ``pred`` and ``target`` ``(N, 3)``: the mean ``kind`` (``huber`` or ``mse``) and
    squared error over the rays, or over those of ``weight`` ``(N,)`` 1 (no host synchronisation)."""
    mse = F.mse_loss(pred, target, reduction="none")
    err = F.smooth_l1_loss(pred, target, beta=HUBER_BETA, reduction="none") if kind == "huber" else mse
    if weight is None:
        return err.mean(), mse.mean()
    denominator = weight.sum().clamp(min=1) * 3
    return (err * weight[:, None]).sum() / denominator, (mse * weight[:, None]).sum() / denominator


def finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """0-d bool: no NaN or Inf in any of ``tensors``, read from each one's float32 sum (one pass, no host
    synchronisation): NaN and Inf carry into a sum; so does an overflow, of values near float32's limit, which
    counts as not finite too."""
    if not tensors:
        return torch.tensor(True)
    return torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for t in tensors])).all()


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """:func:`finite` on the host (one device synchronisation)."""
    return bool(finite(tensors))


def train_step(
    model: Model,
    opt: torch.optim.Optimizer,
    sampler: RaySampler,
    cfg: TrainConfig,
    generator: torch.Generator,
    world: World = SINGLE,
    budget: RayBudget | None = None,
    per_image: bool = True,
) -> dict[str, Any]:
    """One optimisation step on ``cfg.batch_rays`` random rays over all ranks (this rank draws its share and the
    gradients are those of the whole batch's mean loss), or on ``budget.rays`` of this rank, which then adapts to
    the samples used; ``per_image``: see :func:`training_rays`. Returns the batch's loss, PSNR and sample count,
    and ``finite``: False when the loss or a gradient was NaN/Inf, in which case the parameters were left as they
    were. Dynamic shapes; host-synchronising.
    """
    n = world.share(cfg.batch_rays) if budget is None else int(budget.rays)
    batch = sampler.sample(n)
    target, background = training_target(batch.rgba, sampler.split.background, cfg.random_background, generator)
    lam = cfg.optim.distortion or 0.0
    march = model.march
    # near_gradients is in half box diagonals (step_size * steps is the diagonal); near_radius in world units
    near_radius = (cfg.optim.near_gradients or 0.0) * 0.5 * march.step_size * march.steps
    out = render_rays(model, training_rays(model, batch, background, per_image), jitter=True, generator=generator,
                      with_distortion=lam > 0, near_radius=near_radius)
    loss, mse = photometric_loss(out["rgb"], target, cfg.optim.loss)
    if lam > 0:
        loss = loss + lam * out["distortion"].mean()
    loss = loss + pose_penalty(model, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    weight = n / cfg.batch_rays if budget is None else 1.0 / world.size
    extra = torch.stack([loss.detach() * weight, mse.detach() * weight, out["samples"].to(loss.device, loss.dtype)])
    loss_v, mse_v, samples = all_reduce_gradients(params, weight, extra, world).tolist()
    grads = [p.grad for p in params if p.grad is not None]
    finite = math.isfinite(loss_v) and math.isfinite(mse_v) and all_finite(grads)
    if finite:
        opt.step()
    else:
        opt.zero_grad(set_to_none=True)
    if budget is not None:
        budget.update(out["samples"].to(budget.rays.device), torch.tensor(n, device=budget.rays.device))
    return {"loss": loss_v, "psnr": psnr_from_mse(mse_v), "samples": int(samples), "rays": n * world.size,
            "finite": finite}


def training_rays(model: Model, batch: TrainingBatch, background: torch.Tensor, per_image: bool = True) -> RayBatch:
    """The batch's rays over ``background`` (``(3,)`` or ``(n, 3)``), moved by their images' pose deltas where the
    model refines poses, with the training image of each ray where the field has an appearance embedding; without
    ``per_image`` (before ``capture.per_image_start``), as their cameras give them, with the mean code."""
    origins, dirs = batch.origins, batch.dirs
    if not per_image:
        return RayBatch(origins, dirs, background, None)
    if model.cameras is not None:
        origins, dirs = model.cameras(batch.image_index, origins, dirs)
    image = batch.image_index if getattr(model.field, "appearance", None) is not None else None
    return RayBatch(origins, dirs, background, image)


def pose_penalty(model: Model, cfg: TrainConfig) -> torch.Tensor | float:
    """The pose deltas' L2 penalty (:meth:`nerf.per_image.CameraRefinement.penalty`); 0 without pose refinement."""
    if model.cameras is None:
        return 0.0
    return model.cameras.penalty(cfg.capture.pose_l2_rotation, cfg.capture.pose_l2_translation)


def static_step_applies(cfg: TrainConfig, device: torch.device, world: World = SINGLE) -> bool:
    """The static, sync-free step (:class:`StaticStep`) runs on CUDA with a sample budget in a single process; the
    CPU keeps the dynamic :func:`train_step` (faster there), and so do data-parallel runs (their gradients are
    all-reduced on the host's schedule), marches whose steps grow along the ray (cone angle, contraction:
    :attr:`nerf.render.MarchSettings.rule`), whose sample positions depend on the previous ones, and runs that
    scale near gradients (``optim.near_gradients``)."""
    return (device.type == "cuda" and bool(cfg.samples_per_step) and world.size == 1
            and not cfg.optim.near_gradients)


class RayBudget:
    """The rays of the next step for a fixed budget of ``samples`` (and ``candidates``, where the marching has a
    candidate buffer): an EMA of the budget share one ray used, kept on ``device`` (no host synchronisation);
    ``rays`` (0-d long) stays within ``[lo, hi]``."""

    def __init__(self, first: int, samples: int, candidates: int | None, device: torch.device) -> None:
        self.samples, self.candidates = samples, candidates
        self.lo, self.hi = max(1, first // RAY_RANGE), max(1, first * RAY_RANGE)
        self.share = torch.tensor(1.0 / first, device=device)  # budget fraction per ray
        self.rays = torch.tensor(first, device=device)

    def update(self, wanted: torch.Tensor, rays: torch.Tensor) -> None:
        """After a step whose ``rays`` (0-d) asked for ``wanted`` (samples, or ``(2,)`` samples and candidates)."""
        wanted = wanted.reshape(-1).float()
        used = wanted[0] / self.samples
        if self.candidates is not None and wanted.numel() > 1:
            used = torch.maximum(used, wanted[1] / self.candidates)
        self.share.lerp_(used / rays.clamp(min=1).float(), 1.0 - RAY_EMA)
        self.rays.copy_((1.0 / self.share.clamp(min=1e-12)).floor().clamp(self.lo, self.hi).long())


class StatsReader:
    """Reads the static step's ``(5,)`` stats without stalling the device: they are summed on the device, and every
    ``every`` steps the sum is copied (non-blocking, into pinned memory on CUDA) and the previous copy, long done,
    is read."""

    def __init__(self, device: torch.device, every: int) -> None:
        self.every = max(1, every)
        self.sum = torch.zeros(5, device=device)
        pinned = device.type == "cuda"
        self.host = torch.zeros(5, pin_memory=pinned)
        self.event = torch.cuda.Event() if pinned else None
        self.steps = self.pending = 0
        self.last = {"loss": math.nan, "psnr": math.nan, "samples": 0, "rays": 0, "finite": True, "bad": 0,
                     "read": False}

    def add(self, stats: torch.Tensor) -> dict[str, Any]:
        """Count one step's stats; returns the figures of the last window read (``read``: read just now)."""
        self.sum += stats
        self.steps += 1
        self.last = {**self.last, "bad": 0, "read": False}
        if self.steps % self.every == 0:
            if self.pending:
                if self.event is not None:
                    self.event.synchronize()
                loss, mse, samples, rays, bad = self.host.tolist()
                n = self.pending
                self.last = {"loss": loss / n, "psnr": psnr_from_mse(mse / n), "samples": round(samples / n),
                             "rays": round(rays / n), "finite": True, "bad": round(bad), "read": True}
            self.host.copy_(self.sum, non_blocking=self.event is not None)
            if self.event is not None:
                self.event.record()
            self.sum.zero_()
            self.pending = self.every
        return self.last


class StaticStep:
    """The training step with static shapes and no host synchronisation (see :func:`static_train_step`), on a
    buffer of ``budget.hi`` rays, ``cfg.samples_per_step`` sample slots and ``CANDIDATES_PER_SAMPLE`` times as
    many candidates. With ``graph`` (CUDA), it is captured once after :data:`GRAPH_WARMUP` eager steps and then
    replayed; if the capture fails, it says so in one line and stays eager. Each call returns ``(5,)`` device
    stats: loss, mse, samples used, rays used, 1 if the step was skipped (NaN/Inf)."""

    def __init__(self, model: Model, opt: torch.optim.Optimizer, sampler: RaySampler, cfg: TrainConfig,
                 generator: torch.Generator, graph: bool, per_image: bool = True) -> None:
        self.model, self.opt, self.sampler, self.cfg, self.generator = model, opt, sampler, cfg, generator
        self.per_image = per_image
        device = model.march.aabb.device
        samples = int(cfg.samples_per_step or 0)
        self.budget = RayBudget(cfg.batch_rays, samples, samples * CANDIDATES_PER_SAMPLE, device)
        self.graph_wanted = graph and device.type == "cuda"
        self.calls = 0
        self.graph: Any = None
        self.out: torch.Tensor | None = None

    def _prepare_optimizer(self) -> None:
        """Fused Adam (it skips NaN steps on the device), learning rate and step counts in device tensors, capturable
        on CUDA: also after a checkpoint of another device (whose state may have replaced all of it) was loaded."""
        device = self.budget.rays.device
        for group in self.opt.param_groups:
            group["fused"] = True
            group["capturable"] = group["capturable"] or device.type == "cuda"
            if not isinstance(group["lr"], torch.Tensor):  # a float would be frozen into the graph
                group["lr"] = torch.tensor(group["lr"], device=device)
        for state in self.opt.state.values():
            if "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32, device=device)

    def eager(self) -> torch.Tensor:
        return static_train_step(self.model, self.opt, self.sampler, self.cfg, self.generator, self.budget,
                                 self.per_image)

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            self._prepare_optimizer()
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if not self.graph_wanted:
            return self.eager()
        if self.calls <= GRAPH_WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.eager()
            torch.cuda.current_stream().wait_stream(side)
            return out
        try:
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                out = self.eager()
        except (RuntimeError, AttributeError) as e:
            self.graph_wanted = False
            print(f"nerf-train: CUDA graph capture failed, running the step eagerly ({first_line(e)})",
                  file=sys.stderr)
            return self.eager()
        self.graph, self.out = graph, out
        graph.replay()
        return out


def static_train_step(
    model: Model,
    opt: torch.optim.Optimizer,
    sampler: RaySampler,
    cfg: TrainConfig,
    generator: torch.Generator,
    budget: RayBudget,
    per_image: bool = True,
) -> torch.Tensor:
    """One optimisation step with static shapes and no host synchronisation: ``budget.hi`` rays are drawn (on the
    device, from ``generator``), the first ``budget.rays`` marched into ``cfg.samples_per_step`` slots (rays that
    do not fit are dropped, the last ones first), the loss is the mean over the rays marched, and fused Adam skips
    the update on the device when the loss or a gradient is NaN/Inf. ``budget`` then adapts; ``per_image``: see
    :func:`training_rays`. Returns the ``(5,)`` stats of :class:`StaticStep`."""
    batch = sampler.sample(budget.hi, generator)
    target, background = training_target(batch.rgba, sampler.split.background, cfg.random_background, generator)
    samples = int(cfg.samples_per_step or 0)
    lam = cfg.optim.distortion or 0.0
    slots = SlotBudget(budget.rays, samples, samples * CANDIDATES_PER_SAMPLE)
    out, buf = render_rays_static(model, training_rays(model, batch, background, per_image), slots, generator=generator,
                                  with_distortion=lam > 0)
    weight = buf.fits.to(target.dtype)
    count = buf.fits.sum()
    loss, mse = photometric_loss(out["rgb"], target, cfg.optim.loss, weight)
    if lam > 0:
        loss = loss + lam * (out["distortion"] * weight).sum() / count.clamp(min=1).to(target.dtype)
    loss = loss + pose_penalty(model, cfg)
    opt.zero_grad(set_to_none=False)
    loss.backward()
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    bad = ~(torch.isfinite(loss) & finite(grads))
    opt.found_inf = bad.float()
    opt.step()
    budget.update(buf.wanted, budget.rays)
    used = (buf.samples.ray_indices < budget.hi).sum()
    return torch.stack([loss.detach(), mse.detach(), used.to(loss.dtype), count.to(loss.dtype), bad.to(loss.dtype)])
