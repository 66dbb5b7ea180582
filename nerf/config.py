"""Training configuration, nested by component, saved as ``config.json`` in every run folder and in every checkpoint.

The top level holds the run's own settings (data, device, backend, steps, logging...); ``hash`` (the encoding,
:class:`HashGridConfig`), ``field`` (the MLPs, :class:`FieldConfig`), ``march`` (ray marching and the occupancy
grid, :class:`MarchConfig`), ``optim`` (:class:`OptimConfig`) and ``capture`` (appearance embedding and pose
refinement, :class:`CaptureConfig`) hold their component's. The dataclasses hold plain
values; ``None`` and ``auto`` mean "decided for this run", by :func:`nerf.resolve.resolve` alone. Every field is
one ``nerf-train`` flag named after it (:data:`FLAG_NAMES` lists the exceptions); its docstring (the string under
it) is the flag's ``--help`` (:func:`field_docs`). No torch here.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerf.names import BACKENDS, CONTRACTIONS, LOSSES, MODELS, PRESET_NAMES
from raytrace.atomic import write_json
from raytrace.cliutil import device_name, float_range, int_range
from raytrace.errors import InputError


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of the encoding; defaults are instant-NGP's for synthetic scenes."""

    levels: int = 16
    """number of hash-grid levels (L)"""
    features: int = 2
    """number of features per hash-grid level (F)"""
    log2_table_size: int = 19
    """log2 of the hash table's rows per level (T)"""
    base_resolution: int = 16
    """resolution of the coarsest hash-grid level (N_min)"""
    max_resolution: int = 2048
    """resolution of the finest hash-grid level (N_max)"""

    def __post_init__(self) -> None:
        if self.levels < 1 or self.features < 1:
            raise ValueError(f"levels and features must be >= 1, got {self.levels}, {self.features}")
        if not 1 <= self.log2_table_size <= 32:
            raise ValueError(f"log2_table_size must be in [1, 32], got {self.log2_table_size}")
        if not 1 <= self.base_resolution <= self.max_resolution:
            raise ValueError(
                "need 1 <= base_resolution <= max_resolution, "
                f"got {self.base_resolution}, {self.max_resolution}"
            )

    @property
    def growth(self) -> float:
        """Per-level scale ``b = exp((ln max_res - ln base_res) / (levels - 1))`` (1 for a single level)."""
        if self.levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.levels - 1))

    @property
    def table_size(self) -> int:
        """``T``: the number of entries of a hashed level."""
        return 1 << self.log2_table_size

    @property
    def output_dim(self) -> int:
        """Encoded width ``levels * features``."""
        return self.levels * self.features


@dataclass(frozen=True)
class FieldConfig:
    """Sizes of the MLPs; defaults are instant-NGP's (the encoding's are :class:`HashGridConfig`)."""

    hidden: int = 64
    """number of neurons per layer of the density MLP"""
    geo_features: int = 15
    """number of geometry features the density MLP hands to the colour MLP"""
    color_hidden: int = 64
    """number of neurons per layer of the colour MLP"""
    color_layers: int = 2
    """number of hidden layers of the colour MLP"""
    sh_degree: int = 4
    """spherical-harmonics degree of the direction encoding (1..4)"""


@dataclass(frozen=True)
class MarchConfig:
    """Ray marching and the occupancy grid (instant-NGP's values)."""

    steps: int = 1024
    """number of ray-marching samples along the scene box's diagonal"""
    grid_resolution: int = 128
    """number of occupancy-grid cells per axis"""
    grid_decay: float = 0.95
    """decay of the occupancy grid's moving average per update"""
    grid_threshold: float = 0.01
    """occupancy threshold on the optical thickness of one marching step"""
    grid_update_every: int = 16
    """updates the occupancy grid every N steps"""
    grid_warmup: int = 256
    """number of steps during which every occupancy cell is updated"""
    scene_contraction: str = "auto"
    """none, or mipnerf360: space outside the box is contracted into the grids and rays are marched to infinity;
    auto: from the dataset (stated or inferred bounded or not)"""
    cone_angle: float | None = None
    """the marching step grows as clamp(t * cone_angle, step, cell); none: decided for the scene"""

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
    """learning rate of Adam at the first step"""
    lr_final_factor: float | None = None
    """the learning rate decays exponentially to lr times this at the run's end (its last step, or its time
    budget's end); none: decided for the scene"""
    betas: tuple[float, float] = (0.9, 0.99)
    """Adam's betas (moment decay rates), each in [0, 1)"""
    eps: float = 1e-15
    """Adam's epsilon (added to the denominator)"""
    loss: str = "huber"
    """the photometric loss: huber or mse"""
    distortion: float | None = None
    """weight of mip-NeRF 360's distortion loss, which pulls each ray's weight together into one surface (fewer
    floaters and samples); none: decided for the scene"""
    near_gradients: float | None = None
    """scales the gradients of samples nearer to the camera than this many half box diagonals by
    (distance / radius)^2, against floaters in front of the cameras (see nerf.render.scale_near_gradients); none:
    decided for the scene"""


@dataclass(frozen=True)
class CaptureConfig:
    """What photographs need and renders do not: a per-image appearance code and per-image pose deltas."""

    appearance_embedding: bool | None = None
    """learns a code per training image (exposure, white balance) fed to the colour MLP; novel views take the mean
    code; none: on for captured data (photographs), off for renders"""
    appearance_dims: int = 4
    """length of each image's appearance code (exposure and white balance are a few numbers; a longer code lets
    the colour MLP tell the training views apart and keep each one's own colours)"""
    pose_refinement: bool | None = None
    """refines each training camera's pose (SO3 x R3 deltas, L2-regularised); none: on for captured data"""
    pose_lr: float = 5e-5
    """Adam's learning rate of the pose deltas, decayed as the field's"""
    pose_l2_rotation: float = 1e-3
    """weight of the mean rotation correction (radians) in the loss"""
    pose_l2_translation: float = 1e-2
    """weight of the mean translation correction (half box diagonals) in the loss"""
    per_image_start: float = 0.5
    """share of the run (of its steps, or of its time budget where that ends first) before the codes and pose
    deltas learn; until then every training ray takes the mean code and its camera as given"""


SECTIONS: dict[str, type] = {"hash": HashGridConfig, "field": FieldConfig, "march": MarchConfig, "optim": OptimConfig,
                             "capture": CaptureConfig}
"""The nested components of :class:`TrainConfig` and their dataclasses."""

FLAG_NAMES = {("march", "steps"): "march_steps"}
"""``(section, field)`` whose flag is not the field's own name (``--steps`` is the run's step count)."""


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run. ``None`` (``hash``, ``march``, ``steps``, ``batch_rays``): the preset's."""

    data: str = ""
    """dataset folder (any format nerf-train reads)"""
    preset: str = "auto"
    """sizes the batch, grid and step count for a CPU or a GPU; auto picks from the device"""
    device: str = "auto"
    """torch device to train on: auto, cpu, cuda, cuda:N, mps"""
    backend: str = "auto"
    """hash-grid backend (with its marching and compositing); auto takes the fastest available"""
    model: str = "ngp"
    """the model: ngp (hash grid) or nerf (the 2020 positional-encoding MLP baseline)"""
    downscale: int = 1
    """divides the image resolution by this integer"""
    seed: int = 0
    """seeds the ray sampling, the per-step randomness and the occupancy grid's cell choice"""
    steps: int | None = None
    """number of training steps to run; under a time budget none unless given (the budget ends the run)"""
    time_budget: float | None = None
    """stops training after this many seconds; the learning rate then decays over them (or over the steps, if
    given and fewer)"""
    batch_rays: int | None = None
    """rays of the first step (the global batch: split over the processes of a data-parallel run); with
    --samples-per-step they adapt to the budget, within 1/16 to 16 times this"""
    samples_per_step: int | None = None
    """samples per step: the number of rays adapts to it (0: --batch-rays rays every step); none: the GPU preset's
    2^18, on the CPU a budget for contracted scenes and a fixed batch for bounded ones"""
    cuda_graph: bool = True
    """on CUDA, captures the sync-free training step once as a CUDA graph and replays it"""
    random_background: bool = True
    """composites the training images over a random colour (images with alpha only)"""
    checkpoint_every: int = 500
    """writes a checkpoint every N steps"""
    eval_every: int = 0
    """evaluate the val split every N steps and log its PSNR to TensorBoard (0: only the test split at the end)"""
    log_every: int = 25
    """logs the training loss to TensorBoard every N steps"""
    render_chunk: int = 1 << 16
    """number of rays rendered at once in evaluation (fewer rounds per view; a device short of memory halves it)"""
    turntable_frames: int = 48
    """number of frames of the turntable video written at the end (0: no video)"""
    out: str = "runs"
    """the folder that holds the new run, as <out>/<scene>/<time>/"""
    aabb: tuple[float, float, float, float, float, float] | None = None
    """the scene box, min corner then max corner, in the dataset's world; none: the dataset's (stated or
    inferred)"""
    inferred: tuple[str, ...] = ()
    """what the run decided that the dataset did not state, with the flag that overrides each (not a flag)"""
    hash: HashGridConfig | None = None
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    march: MarchConfig | None = None
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    capture: CaptureConfig = dataclasses.field(default_factory=CaptureConfig)

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
    "preset": PRESET_NAMES,
    "backend": BACKENDS,
    "model": MODELS,
    "optim.loss": LOSSES,
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
    "aabb": float_range(),
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
    "capture.per_image_start": float_range(0.0, 1.0),
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
    box = cfg.aabb
    if box is not None and not all(math.isfinite(box[i]) and box[i] < box[i + 3] for i in range(3)):
        raise InputError(source, "config.aabb" if source is not None else "--aabb",
                         f"min corner must be below max corner on every axis, got {list(box)}")


def preset_name(preset: str, device_type: str) -> str:
    """``auto`` -> ``gpu`` on CUDA, else ``cpu``; an unknown preset is an :class:`InputError`."""
    name = preset if preset != "auto" else ("gpu" if device_type == "cuda" else "cpu")
    if name not in PRESETS:
        raise InputError(None, "--preset", f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name


def flag_name(section: str | None, name: str) -> str:
    """The ``nerf-train`` option of a config field: ``--log2-table-size``, ``--march-steps``..."""
    return "--" + FLAG_NAMES.get((section, name), name).replace("_", "-") if section else "--" + name.replace("_", "-")


NOT_FLAGS = ("data", "inferred")
"""Top-level fields without a ``--`` flag (``data`` is positional, ``inferred`` the run's record)."""


def config_flags() -> list[tuple[str | None, dataclasses.Field]]:
    """``(section or None, field)`` of every field that has a flag, top level first."""
    top = [(None, f) for f in dataclasses.fields(TrainConfig) if f.name not in NOT_FLAGS and f.name not in SECTIONS]
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
        if len(args) == 2 and args[1] is Ellipsis:
            return isinstance(value, list | tuple) and all(_check_value(v, args[0]) for v in value)
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


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring (the string literal under it) of each field of dataclass ``cls``, one line of text each."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


# Presets: the CPU one fits 2 cores (a 100x100 object scene in minutes); the GPU one is instant-NGP's.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        steps=3000,
        batch_rays=2048,
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
