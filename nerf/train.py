"""A run's state between two steps (:class:`Session`): opening or resuming a run, one step with the occupancy-grid
update and NaN recovery (:meth:`Session.advance`), checkpoints. The loop that drives it is :mod:`nerf.loop`; the
optimisation step itself is :mod:`nerf.step`.

Data-parallel under ``torchrun`` (see :mod:`nerf.distributed`): ``batch_rays`` is the global batch, each rank
draws its share with its own generators, the gradients are averaged over the ranks, the occupancy grid is rank
0's on every rank, and only rank 0 writes the run folder. SIGINT / SIGTERM stop after the current step with a
checkpoint; a step whose loss or gradients are NaN/Inf is dropped (the parameters keep their last good values)
and the learning rate is lowered.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from nerf.checkpoint import checkpoint_path, latest_checkpoint, lock_run, run_folder, save_checkpoint
from nerf.config import TrainConfig
from nerf.data import Dataset, RaySampler, load_description
from nerf.distributed import (
    SINGLE,
    World,
    broadcast_object,
    broadcast_tensors_,
    current_world,
    gather_objects,
    max_over_ranks,
    rank_device,
)
from nerf.model import Model, build_model, first_line, load_run, resolve_device
from nerf.occupancy import decays_since
from nerf.resolve import resolve
from nerf.step import (
    RayBudget,
    ShareDecay,
    StaticStep,
    StatsReader,
    all_finite,
    make_optimizer,
    static_step_applies,
    train_step,
)
from raytrace.colmap import data_root
from raytrace.errors import InputError, is_finite_number
from raytrace.reader import read_dataset

NAN_LR_FACTOR = 0.5
"""The learning rate is multiplied by this after a step with a NaN/Inf loss or gradient."""

MAX_BAD_STEPS = 20
"""Consecutive non-finite steps after which training gives up (:class:`TrainingDiverged`)."""


class TrainingDiverged(RuntimeError):
    """The loss stayed NaN/Inf for :data:`MAX_BAD_STEPS` steps in a row, even at lower learning rates."""


def new_run_dir(cfg: TrainConfig) -> Path:
    name = data_root(Path(cfg.data).resolve()).name  # DATA/sparse/0 is named DATA
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.out) / name / stamp
    n = 1
    while run_dir.exists():
        run_dir = Path(cfg.out) / name / f"{stamp}-{n}"
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


@dataclass
class Session:
    """Everything a run needs between two steps; :meth:`advance` makes one step, :meth:`save` a checkpoint.

    In a distributed run every rank holds a session and calls both (they are collective); only rank 0 writes.
    """

    cfg: TrainConfig
    run_dir: Path
    dataset: Dataset
    model: Model
    opt: torch.optim.Optimizer
    sched: ShareDecay
    sampler: RaySampler
    generators: tuple[torch.Generator, torch.Generator]  # ray sampling, then per-step randomness
    step: int = 0
    seconds_before: float = 0.0  # training time of the run before this session
    world: World = SINGLE
    bad_steps: int = 0  # consecutive steps with a NaN/Inf loss or gradient
    last_good: dict[str, Any] | None = None  # in-memory copy of the last state known to be finite
    lock: Any = None  # the run folder's writer lock (rank 0), see :func:`nerf.checkpoint.lock_run`
    budget: RayBudget | None = None  # the eager step's adaptive ray count (with a sample budget)
    static: StaticStep | None = None  # the static step, where it applies (:func:`static_step_applies`)
    reader: StatsReader | None = None
    per_image: bool = False  # the codes and pose deltas learn (from ``capture.per_image_start`` of the run on)

    def __post_init__(self) -> None:
        if self.model.cameras is None and getattr(self.model.field, "appearance", None) is None:
            self.per_image = True  # nothing to wait for
        self._new_steps()

    def _new_steps(self) -> None:
        cfg, device = self.cfg, self.model.march.aabb.device
        if static_step_applies(cfg, device, self.world) and self.model.march.rule.uniform:
            self.static = StaticStep(self.model, self.opt, self.sampler, cfg, self.generators[1], cfg.cuda_graph,
                                     self.per_image)
            self.reader = StatsReader(device, cfg.log_every)
        elif cfg.samples_per_step:
            first, samples = self.world.share(cfg.batch_rays), self.world.share(cfg.samples_per_step)
            self.budget = RayBudget(first, samples, None, device)

    def advance(self, seconds: float | None = None) -> dict[str, Any]:
        """One training step (with the occupancy-grid update when due) after ``seconds`` of training (None: the
        time budget is not counted in the run's share done, see :meth:`share_done`). A step with a NaN/Inf
        loss or gradient changes no parameter, does not count, and lowers the learning rate by
        :data:`NAN_LR_FACTOR`. The static step's figures are those of the last window read
        (:class:`StatsReader`), and its NaN/Inf steps count and are seen when their window is read."""
        if seconds is not None:  # every rank's clock differs: they agree on the slowest
            seconds = max_over_ranks(seconds, self.world, self.model.march.aabb.device)
        if not self.per_image and self.share_done(seconds) >= self.cfg.capture.per_image_start:
            self._start_per_image()
        if self.step % self.cfg.march.grid_update_every == 0:
            grid = self.model.grid
            gen = self.generators[1] if self.static is not None else None
            every = self.cfg.march.grid_update_every
            grid.update(_density_fn(self.model), self.step, warmup_steps=self.cfg.march.grid_warmup, generator=gen,
                        decays=decays_since(self.step, every))
            broadcast_tensors_([grid.density, grid.mask], self.world)
        if self.static is not None and self.reader is not None:
            stats = self.reader.add(self.static())
            self.step += 1
            self._decay(seconds)
            if stats["bad"]:
                self._lower_lr(f"{stats['bad']} step(s) before step {self.step}: NaN/Inf loss or gradient; dropped")
            elif stats["read"]:
                self.bad_steps = 0
            return stats
        stats = train_step(self.model, self.opt, self.sampler, self.cfg, self.generators[1], self.world, self.budget,
                           self.per_image)
        if not stats["finite"]:
            self._lower_lr(f"step {self.step + 1}: NaN/Inf loss or gradient; step dropped")
            return stats
        self.bad_steps = 0
        self.step += 1
        self._decay(seconds)
        return stats

    def share_done(self, seconds: float | None) -> float:
        """The share of the run done after :attr:`step` steps and ``seconds`` of training: that of its steps or
        of its time budget, whichever is larger (``seconds`` None: of its steps; a run without a step count
        counts only its time)."""
        cfg = self.cfg
        done = self.step / cfg.steps if cfg.steps else 0.0
        if seconds is not None and cfg.time_budget:
            done = max(done, seconds / cfg.time_budget)
        return min(1.0, done)

    def _decay(self, seconds: float | None) -> None:
        """The learning rate of the next step: decayed by the run's :meth:`share_done`."""
        self.sched.share = self.share_done(seconds)
        self.sched.step()

    def _start_per_image(self) -> None:
        """Start the codes and pose deltas (``capture.per_image_start``)."""
        self.per_image = True
        if self.static is not None:  # its graph holds the rays without them
            self._new_steps()

    def _lower_lr(self, what: str) -> None:
        self.bad_steps += 1
        if self.bad_steps > MAX_BAD_STEPS:
            raise TrainingDiverged(f"{what} ({MAX_BAD_STEPS} in a row): training diverged; try a lower --lr")
        self.sched.penalty *= NAN_LR_FACTOR
        for group in self.opt.param_groups:
            group["lr"] *= NAN_LR_FACTOR
        if self.world.is_main:
            lr = self.opt.param_groups[0]["lr"]
            warnings.warn(f"{what}, learning rate lowered to {lr:.3g}", RuntimeWarning, stacklevel=3)

    def snapshot(self) -> None:
        """Remember the current state as the last good one (restored if the parameters ever become NaN/Inf)."""
        self.last_good = copy.deepcopy({
            "step": self.step,
            "field": self.model.field.state_dict(),
            "grid": self.model.grid.state_dict(),
            "cameras": self.model.cameras.state_dict() if self.model.cameras is not None else None,
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
        })

    def restore(self) -> None:
        """Go back to the state of :meth:`snapshot` (the learning rate stays as it is now)."""
        assert self.last_good is not None
        lrs, penalty = [g["lr"] for g in self.opt.param_groups], self.sched.penalty
        good = copy.deepcopy(self.last_good)
        self.model.field.load_state_dict(good["field"])
        self.model.grid.load_state_dict(good["grid"])
        if self.model.cameras is not None:
            self.model.cameras.load_state_dict(good["cameras"])
        self.opt.load_state_dict(good["opt"])
        self.sched.load_state_dict(good["sched"])
        self.sched.penalty = penalty
        for group, lr in zip(self.opt.param_groups, lrs, strict=True):
            group["lr"] = lr
        self.step = good["step"]
        if self.static is not None:  # its graph holds the optimiser state tensors just replaced
            self._new_steps()

    def save(self, seconds: float) -> Path:
        """Checkpoint the current step atomically; ``seconds`` is the run's total training time.

        Parameters holding NaN/Inf are never written: the last good state comes back first (see :meth:`restore`)
        and the learning rate is lowered."""
        params = [p.detach() for p in self.model.field.parameters()]
        if not all_finite(params) and self.last_good is not None:
            self._lower_lr(f"step {self.step}: NaN/Inf parameters; back to step {self.last_good['step']}")
            self.restore()
        rng = gather_objects([g.get_state() for g in self.generators], self.world)
        path = checkpoint_path(self.run_dir, self.step)
        if self.world.is_main:
            save_checkpoint(
                path,
                step=self.step,
                model_state=self.model.field.state_dict(),
                optimizer_state={"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()},
                grid_state=self.model.grid.state_dict(),
                cameras_state=self.model.cameras.state_dict() if self.model.cameras is not None else None,
                config=self.cfg.to_dict(),
                extra={
                    "rng": rng[0],
                    "rng_ranks": rng,
                    "seconds": seconds,
                    "backend": self.model.backend,
                    "aabb": self.model.march.aabb.tolist(),
                    "data_from_run": os.path.relpath(self.cfg.data, self.run_dir),
                    "train_images": len(self.dataset.splits["train"]),
                },
            )
        self.snapshot()
        return path


def _remove_partial_checkpoints(run_dir: Path) -> None:
    """Temporary files of a checkpoint being written when the process was killed (the real files are intact)."""
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for tmp in folder.glob(".step_*.tmp*"):
            tmp.unlink(missing_ok=True)


def open_session(cfg: TrainConfig, resume: str | Path | None = None, world: World | None = None) -> Session:
    """A new run (a fresh ``runs/<scene>/<time>/`` folder) or, with ``resume``, the run in that folder at its last
    checkpoint; ``steps`` and ``time_budget`` given in ``cfg`` override the resumed run's. ``world`` (default: the
    initialised process group, if any) makes it one rank of a data-parallel run."""
    world = current_world() if world is None else world
    device = rank_device(resolve_device(cfg.device), world)
    ckpt, lock = None, None
    if resume is not None:
        run_dir = run_folder(resume)
        overrides = {k: getattr(cfg, k) for k in ("steps", "time_budget") if getattr(cfg, k) is not None}
        cfg, model, ckpt = load_run(resume, str(device), None)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        if world.is_main:
            lock = lock_run(run_dir)
            _remove_partial_checkpoints(run_dir)
            cfg.save(run_dir / "config.json")
    else:
        cfg = dataclasses.replace(cfg, data=str(Path(cfg.data).resolve()))  # the run works from any folder
    torch.manual_seed(cfg.seed)
    description = read_dataset(cfg.data)
    dataset = load_description(description, cfg.downscale)
    new_dir = None
    if resume is None:
        cfg = resolve(cfg, description, device.type)
        model = build_model(cfg, torch.tensor(cfg.aabb, dtype=torch.float32).view(2, 3), device,
                            len(dataset.splits["train"]))
        run_dir = None
        if world.is_main:
            new_dir = run_dir = new_run_dir(cfg)
        run_dir = Path(broadcast_object(str(run_dir), world))
    try:
        if new_dir is not None:
            lock = lock_run(new_dir)
            cfg.save(new_dir / "config.json")
        session = _new_session(cfg, run_dir, dataset, model, device, resume, world)
    except BaseException:
        if new_dir is not None:
            remove_unstarted_run(new_dir)
        raise
    session.lock = lock
    if ckpt is not None:
        _restore_training_state(session, ckpt, session_source(resume, run_dir))
    session.snapshot()
    return session


def session_source(resume: str | Path | None, run_dir: Path) -> Path | None:
    """The checkpoint a resumed session starts from (None for a new run)."""
    if resume is None:
        return None
    return Path(resume) if Path(resume).is_file() else latest_checkpoint(run_dir)


def remove_unstarted_run(run_dir: Path) -> None:
    """Delete a new run's folder that holds no checkpoint (a failed start leaves no empty run behind)."""
    if latest_checkpoint(run_dir) is None:
        shutil.rmtree(run_dir, ignore_errors=True)


def _new_session(cfg: TrainConfig, run_dir: Path, dataset: Dataset, model: Model, device: torch.device,
                 resume: str | Path | None, world: World) -> Session:
    cameras = list(model.cameras.parameters()) if model.cameras is not None else []
    broadcast_tensors_([*model.field.parameters(), *model.field.buffers(), *model.grid.buffers(), *cameras], world)
    generators = (
        torch.Generator(device="cpu").manual_seed(cfg.seed + 2 * world.rank),
        torch.Generator(device=device).manual_seed(cfg.seed + 1 + 2 * world.rank),
    )
    source = session_source(resume, run_dir)
    if device.type == "cuda" and world.size > 1 and cfg.cuda_graph and world.is_main:
        print("nerf-train: data-parallel run: the eager step (no CUDA graph)", file=sys.stderr)
    try:
        opt, sched = make_optimizer(cfg, model.field, model.cameras)
    except (ValueError, OverflowError) as e:  # Adam refuses a negative lr, betas outside [0, 1)...
        raise InputError(source, "config" if source else "--lr/--betas/--eps", first_line(e)) from None
    return Session(cfg, run_dir, dataset, model, opt, sched,
                   RaySampler(dataset.splits["train"], generators[0], device), generators, world=world)


def _restore_training_state(session: Session, ckpt: dict[str, Any], source: Path) -> None:
    """Optimiser, scheduler, step, clock and this rank's generators from a checkpoint (a rank the checkpoint has
    no generator state for, after a change of world size, gets fresh seeds). A malformed or foreign state is an
    :class:`InputError`; what torch raises beyond that is our bug."""
    rank, state, extra = session.world.rank, ckpt.get("optimizer"), ckpt.get("extra")
    if not (isinstance(state, dict) and isinstance(state.get("optimizer"), dict)
            and isinstance(state.get("scheduler"), dict)):
        raise InputError(source, "optimizer", "cannot resume from it (no optimiser and scheduler state)")
    try:
        session.opt.load_state_dict(state["optimizer"])
        session.sched.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, TypeError) as e:  # torch's answer to a foreign or damaged state (only torch runs)
        raise InputError(source, "optimizer", f"cannot resume from it ({first_line(e)})") from None
    states = _generator_states(extra, len(session.generators))
    step = ckpt["step"]
    if states is None or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(source, "extra", "cannot resume from it (step, seconds or generator states malformed)")
    session.step = step
    session.seconds_before = float(extra.get("seconds", 0.0))
    if rank < len(states):
        for gen, gen_state in zip(session.generators, states[rank], strict=True):
            gen.set_state(gen_state)
    else:
        for i, gen in enumerate(session.generators):
            gen.manual_seed(session.cfg.seed + 2 * rank + i + 1_000_003 * session.step)


def _generator_states(extra: Any, count: int) -> list | None:
    """The per-rank generator states of a checkpoint's ``extra`` (``rng_ranks``, or an older single ``rng``),
    each ``count`` byte tensors; None when they or ``extra.seconds`` are malformed."""
    if not isinstance(extra, dict) or not is_finite_number(extra.get("seconds", 0.0)):
        return None
    states = extra.get("rng_ranks") or ([extra["rng"]] if "rng" in extra else None)
    ok = isinstance(states, list | tuple) and all(
        isinstance(s, list | tuple) and len(s) == count
        and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in s) for s in states)
    return list(states) if ok else None


def _density_fn(model: Model):
    """Optical thickness of one marching step at ``x``: instant-NGP's occupancy threshold applies to it."""
    step = model.march.step_size

    def density(x: torch.Tensor) -> torch.Tensor:
        return model.field.density(x)[0] * step

    return density
