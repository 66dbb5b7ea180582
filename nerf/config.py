"""Training configuration, nested by component, saved as ``config.json`` in every run folder and in every checkpoint.

The top level holds the run's own settings (data, device, backend, steps, logging...); ``hash`` (the encoding,
:class:`nerf.hashgrid.HashGridConfig`), ``field`` (the MLPs, :class:`nerf.field.FieldConfig`), ``march`` (ray
marching and the occupancy grid, :class:`MarchConfig`), ``optim`` (:class:`OptimConfig`) and ``capture`` (appearance
embedding and pose refinement, :class:`nerf.capture.CaptureConfig`) hold their component's. ``None`` means "take
it from the preset" (CPU or GPU sizes); :meth:`TrainConfig.resolved` fills it.
Every field is one ``nerf-train`` flag named after it (:data:`FLAG_NAMES` lists the exceptions).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerf.backends import BACKENDS
from nerf.capture import CaptureConfig
from nerf.contraction import CONTRACTIONS
from nerf.field import FieldConfig
from nerf.hashgrid import HashGridConfig
from raytrace.atomic import write_json
from raytrace.cliutil import device_name, float_range, int_range
from raytrace.errors import InputError


@dataclass(frozen=True)
class MarchConfig:
    """Ray marching and the occupancy grid (instant-NGP's values)."""

    steps: int = 1024  # samples along the aabb diagonal
    grid_resolution: int = 128
    grid_decay: float = 0.95
    grid_threshold: float = 0.01
    grid_update_every: int = 16
    grid_warmup: int = 256
    scene_contraction: str = "auto"  # auto (from the dataset's bounded) | none | mipnerf360 (see nerf.contraction)
    cone_angle: float | None = None  # step = clamp(t * cone_angle, step, cell); None: 1/256 if contracted, else 0

    def __post_init__(self) -> None:
        if self.scene_contraction not in ("auto", *CONTRACTIONS):
            raise ValueError(f"scene_contraction must be one of auto, {', '.join(CONTRACTIONS)}, "
                             f"got {self.scene_contraction!r}")
        if self.cone_angle is not None and not 0.0 <= self.cone_angle < 1.0:
            raise ValueError(f"cone_angle must be in [0, 1), got {self.cone_angle}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam with instant-NGP's betas and eps, an exponential learning-rate decay, and the loss."""

    lr: float = 1e-2
    lr_final_factor: float = 0.03  # learning rate decays exponentially to lr * this at the last step
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    loss: str = "huber"  # huber | mse
    distortion: float | None = None  # mip-NeRF 360's distortion loss weight; None: 0.03 if contracted, else 0
    near_gradients: float | None = None  # radius, in half box diagonals, of near-camera gradient scaling;
    # None: 1 if contracted, else 0 (off). See nerf.render.scale_near_gradients


SECTIONS: dict[str, type] = {"hash": HashGridConfig, "field": FieldConfig, "march": MarchConfig, "optim": OptimConfig,
                             "capture": CaptureConfig}
"""The nested components of :class:`TrainConfig` and their dataclasses."""

FLAG_NAMES = {("march", "steps"): "march_steps"}
"""``(section, field)`` whose flag is not the field's own name (``--steps`` is the run's step count)."""


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run. ``None`` (``hash``, ``march``, ``steps``, ``batch_rays``): the preset's."""

    data: str = ""
    preset: str = "auto"  # auto | cpu | gpu
    device: str = "auto"  # auto | cpu | cuda | mps | cuda:1 ...
    backend: str = "auto"  # auto | torch | native | tcnn
    model: str = "ngp"  # ngp (hash grid) | nerf (2020 positional-encoding MLP, the baseline)
    downscale: int = 1
    seed: int = 0
    steps: int | None = None
    time_budget: float | None = None  # seconds of training; stops early when reached
    batch_rays: int | None = None  # rays of the first step; they adapt to samples_per_step
    samples_per_step: int | None = None  # the fixed sample budget of a step (0: batch_rays rays every step; None
    # after the CPU preset: decided by the scene, nerf.model.resolve_scene)
    cuda_graph: bool = True  # on CUDA: capture the static step once as a CUDA graph and replay it
    random_background: bool = True
    checkpoint_every: int = 500
    eval_every: int = 0  # 0: evaluate only at the end
    log_every: int = 25
    render_chunk: int = 8192
    turntable_frames: int = 48
    out: str = "runs"
    hash: HashGridConfig | None = None
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    march: MarchConfig | None = None
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    capture: CaptureConfig = dataclasses.field(default_factory=CaptureConfig)

    def resolved(self, device_type: str) -> TrainConfig:
        """A copy with every ``None`` filled from the preset that fits ``device_type``."""
        preset = preset_name(self.preset, device_type)
        values = {k: v for k, v in PRESETS[preset].items() if getattr(self, k) is None}
        return dataclasses.replace(self, preset=preset, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> TrainConfig:
        """Rebuild a config written by :meth:`to_dict` (or an older flat one: each flat key is its flag's name).

        A key this version does not know, a value of the wrong type or one a component refuses is an
        :class:`InputError` naming ``source`` and ``config.<section>.<key>``."""
        if not isinstance(data, dict):
            raise InputError(source, "config", f"expected a dict, got {type(data).__name__}")
        data = _nest_flat_keys(data)
        cfg = _build(cls, data, source, "config")
        check_config(cfg, source or "config")
        return cfg

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


CHOICES: dict[str, tuple[str, ...]] = {
    "preset": ("auto", "cpu", "gpu"),
    "backend": BACKENDS,
    "model": ("ngp", "nerf"),
    "optim.loss": ("huber", "mse"),
    "march.scene_contraction": ("auto", *CONTRACTIONS),
}
"""The allowed values of the string fields that are one of a few (``section.name`` for a section's)."""

_UNIT = float_range(0.0, 1.0)
RANGES: dict[str, Any] = {
    "device": device_name,
    "downscale": int_range(1, 64),
    "seed": int_range(0, 2**31 - 1),
    "steps": int_range(1, 10**8),
    "time_budget": float_range(0.0, lo_open=True),
    "batch_rays": int_range(1, 2**24),
    "samples_per_step": int_range(0, 2**28),
    "checkpoint_every": int_range(1),
    "eval_every": int_range(0),
    "log_every": int_range(1),
    "render_chunk": int_range(1, 2**24),
    "turntable_frames": int_range(0, 10_000),
    "hash.levels": int_range(1, 64),
    "hash.features": int_range(1, 8),
    "hash.log2_table_size": int_range(1, 26),
    "hash.base_resolution": int_range(1, 2**16),
    "hash.max_resolution": int_range(1, 2**20),
    "field.hidden": int_range(1, 4096),
    "field.geo_features": int_range(1, 4096),
    "field.color_hidden": int_range(1, 4096),
    "field.color_layers": int_range(0, 64),
    "field.sh_degree": int_range(1, 4),
    "march.steps": int_range(1, 2**16),
    "march.grid_resolution": int_range(1, 1024),
    "march.grid_decay": _UNIT,
    "march.grid_threshold": float_range(0.0),
    "march.grid_update_every": int_range(1),
    "march.grid_warmup": int_range(0),
    "march.cone_angle": float_range(0.0, 1.0, hi_open=True),
    "optim.lr": float_range(0.0, 10.0, lo_open=True),
    "optim.lr_final_factor": float_range(0.0, lo_open=True),
    "optim.betas": float_range(0.0, 1.0, hi_open=True),
    "optim.eps": float_range(0.0, 1.0),
    "optim.distortion": float_range(0.0),
    "optim.near_gradients": float_range(0.0),
    "capture.appearance_dims": int_range(1, 1024),
    "capture.pose_lr": float_range(0.0, 10.0),
    "capture.pose_l2_rotation": float_range(0.0),
    "capture.pose_l2_translation": float_range(0.0),
}
"""The argparse ``type=`` of each numeric flag and the device (``section.name`` for a section's); the same checks
apply to a config read from a file (:func:`check_config`)."""


def check_config(cfg: TrainConfig, source: str | Path | None = None) -> None:
    """Raise :class:`InputError` for a value outside its flag's range or choices (naming the flag, or ``source``
    and ``config.<key>`` for a config read from a file)."""
    for section, f in config_flags():
        holder = getattr(cfg, section) if section else cfg
        value = getattr(holder, f.name) if holder is not None else None
        key = f"{section}.{f.name}" if section else f.name
        if value is None:
            continue
        where = f"config.{key}" if source is not None else flag_name(section, f.name)
        if key in CHOICES and value not in CHOICES[key]:
            raise InputError(source, where, f"{value!r} is not one of {', '.join(CHOICES[key])}")
        check = RANGES.get(key)
        if check is None:
            continue
        for v in value if isinstance(value, tuple) else (value,):
            try:
                check(str(v))
            except Exception as e:  # argparse.ArgumentTypeError: the flag's own message
                raise InputError(source, where, str(e)) from None


def preset_name(preset: str, device_type: str) -> str:
    """``auto`` -> ``gpu`` on CUDA, else ``cpu``; an unknown preset is an :class:`InputError`."""
    name = preset if preset != "auto" else ("gpu" if device_type == "cuda" else "cpu")
    if name not in PRESETS:
        raise InputError(None, "--preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name


def flag_name(section: str | None, name: str) -> str:
    """The ``nerf-train`` option of a config field: ``--log2-table-size``, ``--march-steps``..."""
    return "--" + FLAG_NAMES.get((section, name), name).replace("_", "-") if section else "--" + name.replace("_", "-")


def config_flags() -> list[tuple[str | None, dataclasses.Field]]:
    """``(section or None, field)`` of every field that has a flag, top level first (``data`` is positional)."""
    top = [(None, f) for f in dataclasses.fields(TrainConfig) if f.name != "data" and f.name not in SECTIONS]
    return top + [(s, f) for s, kind in SECTIONS.items() for f in dataclasses.fields(kind)]


def _nest_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Move the flat keys of an older config (``levels``, ``march_steps``...) into their sections (a copy)."""
    owner = {FLAG_NAMES.get((s, f.name), f.name): (s, f.name) for s, f in config_flags() if s is not None}
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items() if k not in owner}
    for key, value in data.items():
        if key in owner:
            section, name = owner[key]
            if not isinstance(out.get(section), dict):
                out[section] = {}
            out[section][name] = value
    return out


_KINDS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _check_value(value: Any, kind: Any) -> bool:
    """``value`` (from JSON or a checkpoint) has the type ``kind`` (a field's resolved annotation)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_check_value(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        return isinstance(value, list | tuple) and len(value) == len(args) and all(
            _check_value(v, a) for v, a in zip(value, args, strict=True))
    allowed = _KINDS.get(kind)
    if allowed is None:
        return False
    ok = isinstance(value, allowed) and (bool in allowed) == isinstance(value, bool)
    return ok and (not isinstance(value, int | float) or abs(value) < 2**31)  # huge ints: no float, no model


def _build(cls: type, data: dict[str, Any], source: str | Path | None, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(source, f"{where}.{unknown[0]}", "unknown config key (written by another version?)")
    values: dict[str, Any] = {}
    for key, value in data.items():
        section = SECTIONS.get(key) if cls is TrainConfig else None
        if section is not None and isinstance(value, dict):
            values[key] = _build(section, value, source, f"{where}.{key}")
            continue
        if section is not None and value is None and key in PRESETS["cpu"]:
            values[key] = None
            continue
        if section is not None or not _check_value(value, hints[key]):
            raise InputError(source, f"{where}.{key}", f"expected {hints[key]}, got {type(value).__name__} {value!r}")
        values[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except ValueError as e:
        raise InputError(source, where, str(e)) from None


# Presets: the CPU one fits 2 cores (a 100x100 object scene in minutes); the GPU one is instant-NGP's.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        steps=3000,
        batch_rays=2048,  # samples_per_step left to the scene (nerf.model.resolve_scene): a fixed batch for
        # bounded scenes (2^16 samples/step reached 28.26 dB in the demo's 360 s, a fixed batch 28.78 dB)
        hash=HashGridConfig(log2_table_size=17, max_resolution=512),
        march=MarchConfig(steps=256, grid_resolution=64),
    ),
    "gpu": dict(
        steps=20000,
        batch_rays=8192,
        samples_per_step=1 << 18,
        hash=HashGridConfig(log2_table_size=19, max_resolution=2048),
        march=MarchConfig(steps=1024, grid_resolution=128),
    ),
}
