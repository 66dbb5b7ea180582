"""The model: a field, its occupancy grid and how rays are marched; built from a config, or loaded from a run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from nerf.backends import BackendUnavailable, resolve_backend
from nerf.checkpoint import latest_checkpoint, load_checkpoint, locate_dataset, run_folder
from nerf.config import TrainConfig
from nerf.field import NGPField
from nerf.field_pe import PENeRFField
from nerf.occupancy import OccupancyGrid
from nerf.per_image import CameraRefinement
from nerf.render import MarchSettings, Radiance
from raytrace.errors import InputError, is_finite_number


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
class Model(Radiance):
    """What a checkpoint holds besides the optimiser: the :class:`~nerf.render.Radiance` (field, occupancy grid and
    how rays are marched, with the kernels of the backend named ``backend``) and, with pose refinement, the training
    cameras' deltas."""

    grid: OccupancyGrid  # a model always has one
    backend: str
    cameras: CameraRefinement | None = None


def build_model(cfg: TrainConfig, aabb: torch.Tensor, device: torch.device, train_images: int = 0) -> Model:
    """A fresh model for a resolved config (see :func:`nerf.resolve.resolve`) on ``device``.

    The backend is resolved once into one bundle: its hash encoding goes to the field, its marching and
    compositing to :class:`MarchSettings`. ``--model nerf`` has no hash grid and uses the ``torch`` bundle. An
    appearance embedding or pose refinement needs the number of ``train_images``."""
    m = cfg.march
    if cfg.hash is None or m is None or m.scene_contraction == "auto" or m.cone_angle is None:
        raise ValueError("build_model needs a resolved config (nerf.resolve.resolve)")
    contracted = m.scene_contraction != "none"
    aabb = aabb.to(device=device, dtype=torch.float32)
    if cfg.model not in ("ngp", "nerf"):
        raise InputError(None, "--model", f"unknown model {cfg.model!r}; choose ngp or nerf")
    try:
        backend = resolve_backend(cfg.backend if cfg.model == "ngp" else "torch", device, cfg.hash)
    except BackendUnavailable as e:
        raise InputError(None, "--backend", str(e)) from None
    if cfg.model == "nerf" and contracted:
        raise InputError(None, "--scene-contraction", "--model nerf has no contraction; use --scene-contraction none")
    appearance, poses = bool(cfg.capture.appearance_embedding), bool(cfg.capture.pose_refinement)
    if appearance and cfg.model == "nerf":
        raise InputError(None, "--appearance-embedding", "--model nerf has no appearance embedding")
    if (appearance or poses) and train_images < 1:
        raise ValueError("an appearance embedding or pose refinement needs the number of training images")
    field = (NGPField(cfg.field, aabb, cfg.hash, backend.encode, contracted,
                      train_images if appearance else 0, cfg.capture.appearance_dims) if cfg.model == "ngp"
             else PENeRFField(aabb))
    grid = OccupancyGrid(aabb, m.grid_resolution, m.grid_decay, m.grid_threshold, cfg.seed, contracted)
    diagonal = float((aabb[1] - aabb[0]).norm())
    march = MarchSettings(aabb, m.steps, backend.composite, backend.march_candidates, contracted, m.cone_angle,
                          diagonal / m.grid_resolution)
    cameras = CameraRefinement(train_images, 0.5 * diagonal).to(device) if poses else None
    return Model(field.to(device), grid.to(device), march, backend.name, cameras)


def load_run(
    run_dir: str | Path, device: str = "auto", backend: str | None = None, cone_angle: float | None = None
) -> tuple[TrainConfig, Model, dict]:
    """Load a run's config, model and latest checkpoint (or the checkpoint file ``run_dir``):
    ``(cfg, model, checkpoint dict)``. ``backend`` (default: the config's) overrides the run's; so does
    ``cone_angle`` (default: the run's), the march's step growth (fewer far samples when viewing).

    Raises :class:`InputError` naming the checkpoint when it does not describe a model this version can build."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir if run_dir.is_file() else latest_checkpoint(run_dir)
    if ckpt_path is None:
        raise InputError(run_dir, "checkpoints", "no checkpoint found in this run folder")
    ckpt = load_checkpoint(ckpt_path)
    cfg = TrainConfig.from_dict(ckpt["config"], ckpt_path)
    unresolved = [k for k in ("batch_rays", "hash", "march") if getattr(cfg, k) is None]
    if cfg.steps is None and cfg.time_budget is None:  # a run under a time budget alone has no step count
        unresolved.insert(0, "steps")
    if unresolved:
        raise InputError(ckpt_path, f"config.{unresolved[0]}", "missing (a checkpoint stores a resolved config)")
    if backend is not None:
        cfg.backend = backend
    if cone_angle is not None:
        try:
            cfg.march = dataclasses.replace(cfg.march, cone_angle=cone_angle)
        except ValueError as e:
            raise InputError(None, "--cone-angle", str(e)) from None
    dev = resolve_device(device)
    extra = ckpt.get("extra") or {}
    aabb = extra.get("aabb") if isinstance(extra, dict) else None
    if aabb is None:
        raise InputError(ckpt_path, "extra.aabb", "missing")
    if not (isinstance(aabb, list) and len(aabb) == 2 and all(
            isinstance(row, list) and len(row) == 3 and all(map(is_finite_number, row)) for row in aabb)):
        raise InputError(ckpt_path, "extra.aabb", f"expected 2 rows of 3 finite numbers, got {aabb!r}")
    from_run = extra.get("data_from_run")
    cfg.data = locate_dataset(cfg.data, run_folder(ckpt_path), from_run if isinstance(from_run, str) else None)
    try:
        model = build_model(cfg, torch.tensor(aabb, dtype=torch.float32), dev, int(extra.get("train_images", 0)))
    except InputError as e:
        hint = "; checkpoints run on every backend: try --backend auto" if e.where == "--backend" else ""
        raise InputError(ckpt_path, f"config.{(e.where or '').lstrip('-')}", f"{e.problem}{hint}") from None
    except ValueError as e:  # a component refuses a value of the config
        raise InputError(ckpt_path, "config", f"cannot build its model ({first_line(e)})") from None
    modules = [("model", model.field), ("grid", model.grid)]
    if model.cameras is not None:
        modules.append(("cameras", model.cameras))
    for key, module in modules:
        state = ckpt.get(key)
        if state is None and key == "grid":
            continue
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) or k.endswith("_extra_state")
                                                for k, v in state.items())):
            raise InputError(ckpt_path, key, "expected a dict of tensors")
        try:
            module.load_state_dict(state)
        except (RuntimeError, ValueError) as e:  # torch's answer to missing keys and other shapes
            raise InputError(ckpt_path, key, f"does not fit this model ({first_line(e)})") from None
    return cfg, model, ckpt


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
