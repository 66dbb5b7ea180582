"""The training loop: sample rays, render them, step Adam, keep the occupancy grid fresh, checkpoint."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nerf.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, save_checkpoint
from nerf.config import TrainConfig
from nerf.data import Dataset, RaySampler, load_dataset
from nerf.field import NGPField
from nerf.field_pe import PENeRFField
from nerf.occupancy import OccupancyGrid
from nerf.render import MarchSettings, render_rays
from raytrace.errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(None, "--device", f"{name} requested but torch sees no CUDA device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class Model:
    """What a checkpoint holds besides the optimiser: the field, its occupancy grid, and how rays are marched."""

    field: nn.Module
    grid: OccupancyGrid
    march: MarchSettings
    backend: str


def build_model(cfg: TrainConfig, aabb: torch.Tensor, device: torch.device) -> Model:
    """A fresh model for a resolved config (see :meth:`TrainConfig.resolved`)."""
    from nerf.backends import resolve_backend

    aabb = aabb.to(device=device, dtype=torch.float32)
    backend = "torch"
    if cfg.model == "ngp":
        backend, encode_fn = resolve_backend(cfg.backend, device)
        field: nn.Module = NGPField(cfg.field_config(), aabb)
        field.encoding.encode_fn = encode_fn
    elif cfg.model == "nerf":
        field = PENeRFField(aabb)
    else:
        raise InputError(None, "--model", f"unknown model {cfg.model!r}; choose ngp or nerf")
    grid = OccupancyGrid(aabb, cfg.grid_resolution, decay=cfg.grid_decay, threshold=cfg.grid_threshold)
    return Model(field.to(device), grid.to(device), MarchSettings(aabb, cfg.march_steps), backend)


def make_optimizer(
    cfg: TrainConfig, field: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with instant-NGP's betas and eps, and an exponential decay to ``lr * lr_final_factor``."""
    opt = torch.optim.Adam(field.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    gamma = cfg.lr_final_factor ** (1.0 / max(1, cfg.steps))
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


def psnr_from_mse(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def train_step(
    model: Model,
    opt: torch.optim.Optimizer,
    sampler: RaySampler,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One optimisation step on a random batch of rays; returns loss, PSNR and the sample count."""
    batch = sampler.sample(cfg.batch_rays)
    device = batch.origins.device
    rgb, alpha = batch.rgba[:, :3], batch.rgba[:, 3:]
    if cfg.random_background:
        background = torch.rand(rgb.shape, generator=generator, device=generator.device).to(device)
    else:
        background = torch.ones_like(rgb)
    target = rgb * alpha + background * (1.0 - alpha)
    out = render_rays(
        model.field, model.grid, batch.origins, batch.dirs, model.march, background, jitter=True, generator=generator
    )
    mse = F.mse_loss(out["rgb"], target)
    loss = F.smooth_l1_loss(out["rgb"], target, beta=0.1) if cfg.loss == "huber" else mse
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": float(loss.detach()), "psnr": psnr_from_mse(float(mse.detach())), "samples": int(out["samples"])}


def new_run_dir(cfg: TrainConfig) -> Path:
    name = Path(cfg.data).resolve().name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out) / name / stamp
    n = 1
    while run_dir.exists():
        run_dir = Path(cfg.out) / name / f"{stamp}-{n}"
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


@dataclass
class TrainResult:
    run_dir: Path
    model: Model
    dataset: Dataset
    config: TrainConfig
    step: int
    seconds: float


@dataclass
class Session:
    """Everything a run needs between two steps; :meth:`advance` makes one step, :meth:`save` a checkpoint."""

    cfg: TrainConfig
    run_dir: Path
    dataset: Dataset
    model: Model
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    sampler: RaySampler
    generators: tuple[torch.Generator, torch.Generator]  # ray sampling, then per-step randomness
    step: int = 0
    seconds_before: float = 0.0  # training time of the run before this session

    def advance(self) -> dict[str, float]:
        """One training step (with the occupancy-grid update when due)."""
        if self.step % self.cfg.grid_update_every == 0:
            self.model.grid.update(_density_fn(self.model), self.step, warmup_steps=self.cfg.grid_warmup)
        stats = train_step(self.model, self.opt, self.sampler, self.cfg, self.generators[1])
        self.sched.step()
        self.step += 1
        return stats

    def save(self, seconds: float) -> Path:
        """Checkpoint the current step atomically; ``seconds`` is the run's total training time."""
        path = checkpoint_path(self.run_dir, self.step)
        save_checkpoint(
            path,
            step=self.step,
            model_state=self.model.field.state_dict(),
            optimizer_state={"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()},
            grid_state=self.model.grid.state_dict(),
            config=self.cfg.to_dict(),
            extra={
                "rng": [g.get_state() for g in self.generators],
                "seconds": seconds,
                "backend": self.model.backend,
                "aabb": self.model.march.aabb.tolist(),
            },
        )
        return path


def load_run(run_dir: str | Path, device: str = "auto", backend: str | None = None):
    """Load a run's config, model and latest checkpoint: ``(cfg, model, checkpoint dict)``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir if run_dir.is_file() else latest_checkpoint(run_dir)
    if ckpt_path is None:
        raise InputError(run_dir, "checkpoints", "no checkpoint found in this run folder")
    ckpt = load_checkpoint(ckpt_path)
    cfg = TrainConfig.from_dict(ckpt["config"], ckpt_path)
    if backend is not None:
        cfg.backend = backend
    dev = resolve_device(device)
    aabb = (ckpt.get("extra") or {}).get("aabb")
    if aabb is None:
        raise InputError(ckpt_path, "extra.aabb", "missing")
    aabb = torch.tensor(aabb, dtype=torch.float32)
    model = build_model(cfg, aabb, dev)
    try:
        model.field.load_state_dict(ckpt["model"])
        if ckpt.get("grid") is not None:
            model.grid.load_state_dict(ckpt["grid"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(ckpt_path, "model", f"does not fit this model ({first})") from None
    return cfg, model, ckpt


def open_session(cfg: TrainConfig, resume: str | Path | None = None) -> Session:
    """A new run (a fresh ``runs/<scene>/<time>/`` folder) or, with ``resume``, the run in that folder at its last
    checkpoint; ``steps`` and ``time_budget`` given in ``cfg`` override the resumed run's."""
    ckpt = None
    if resume is not None:
        run_dir = Path(resume)
        overrides = {k: getattr(cfg, k) for k in ("steps", "time_budget") if getattr(cfg, k) is not None}
        cfg, model, ckpt = load_run(run_dir, cfg.device, None)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        device = model.march.aabb.device
    else:
        device = resolve_device(cfg.device)
        cfg = cfg.resolved(device.type)
    torch.manual_seed(cfg.seed)
    dataset = load_dataset(cfg.data, splits=("train", "val", "test"), downscale=cfg.downscale)
    if resume is None:
        model = build_model(cfg, dataset.aabb, device)
        run_dir = new_run_dir(cfg)
        cfg.save(run_dir / "config.json")
    generators = (
        torch.Generator(device="cpu").manual_seed(cfg.seed),
        torch.Generator(device=device).manual_seed(cfg.seed + 1),
    )
    opt, sched = make_optimizer(cfg, model.field)
    session = Session(cfg, run_dir, dataset, model, opt, sched,
                      RaySampler(dataset.splits["train"], generators[0], device), generators)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"]["optimizer"])
        sched.load_state_dict(ckpt["optimizer"]["scheduler"])
        for gen, state in zip(generators, ckpt["extra"]["rng"], strict=True):
            gen.set_state(state)
        session.step = int(ckpt["step"])
        session.seconds_before = float(ckpt["extra"].get("seconds", 0.0))
    return session


def train(cfg: TrainConfig, resume: str | Path | None = None, quiet: bool = False) -> TrainResult:
    """Train (or resume) a run; writes checkpoints and TensorBoard logs, and returns the trained model."""
    from torch.utils.tensorboard import SummaryWriter

    session = open_session(cfg, resume)
    cfg, start_step = session.cfg, session.step
    writer = SummaryWriter(str(session.run_dir / "tb"))
    t0 = time.perf_counter()
    samples_seen = 0

    def seconds() -> float:
        return session.seconds_before + time.perf_counter() - t0

    bar = tqdm(total=cfg.steps, initial=start_step, disable=quiet, desc="train", unit="step", dynamic_ncols=True)
    try:
        while session.step < cfg.steps and (cfg.time_budget is None or seconds() < cfg.time_budget):
            stats = session.advance()
            step = session.step
            samples_seen += stats["samples"]
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = samples_seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}", samples_s=f"{rate:.3g}")
                writer.add_scalar("train/loss", stats["loss"], step)
                writer.add_scalar("train/psnr", stats["psnr"], step)
                writer.add_scalar("train/samples_per_ray", stats["samples"] / cfg.batch_rays, step)
                writer.add_scalar("train/lr", session.opt.param_groups[0]["lr"], step)
            if step % cfg.checkpoint_every == 0:
                session.save(seconds())
            bar.update(1)
    finally:
        bar.close()
        writer.close()
    total = seconds()
    if resume is None or session.step > start_step:
        session.save(total)
    return TrainResult(session.run_dir, session.model, session.dataset, cfg, session.step, total)


def _density_fn(model: Model):
    """Optical thickness of one marching step at ``x``: instant-NGP's occupancy threshold applies to it."""
    step = model.march.step_size

    def density(x: torch.Tensor) -> torch.Tensor:
        return model.field.density(x)[0] * step

    return density
