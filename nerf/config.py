"""Training configuration: one dataclass, saved beside every checkpoint, with CPU and GPU presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerf.field import FieldConfig
from nerf.hashgrid import HashGridConfig
from raytrace.atomic import write_json
from raytrace.errors import InputError


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run. ``None`` means "take it from the preset"."""

    data: str = ""
    preset: str = "auto"  # auto | cpu | gpu
    device: str = "auto"  # auto | cpu | cuda | mps | cuda:1 ...
    backend: str = "auto"  # auto | torch | native | tcnn
    model: str = "ngp"  # ngp (hash grid) | nerf (2020 positional-encoding MLP, the baseline)
    downscale: int = 1
    seed: int = 0
    steps: int | None = None
    time_budget: float | None = None  # seconds of training; stops early when reached
    batch_rays: int | None = None
    lr: float = 1e-2
    lr_final_factor: float = 0.03  # learning rate decays exponentially to lr * this at the last step
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    loss: str = "huber"  # huber | mse
    levels: int = 16
    features: int = 2
    log2_table_size: int | None = None
    base_resolution: int = 16
    max_resolution: int | None = None
    hidden: int = 64
    color_hidden: int = 64
    color_layers: int = 2
    grid_resolution: int | None = None
    grid_decay: float = 0.95
    grid_threshold: float = 0.01
    grid_update_every: int = 16
    grid_warmup: int = 256
    march_steps: int | None = None  # samples along the aabb diagonal
    random_background: bool = True
    checkpoint_every: int = 500
    eval_every: int = 0  # 0: evaluate only at the end
    log_every: int = 25
    render_chunk: int = 8192
    turntable_frames: int = 48
    out: str = "runs"

    def resolved(self, device_type: str) -> TrainConfig:
        """A copy with every ``None`` filled from the preset that fits ``device_type``."""
        preset = self.preset if self.preset != "auto" else ("gpu" if device_type == "cuda" else "cpu")
        if preset not in PRESETS:
            raise InputError(None, "--preset", f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        values = {k: v for k, v in PRESETS[preset].items() if getattr(self, k) is None}
        return dataclasses.replace(self, preset=preset, **values)

    def hash_config(self) -> HashGridConfig:
        return HashGridConfig(
            levels=self.levels,
            features=self.features,
            log2_table_size=self.log2_table_size,
            base_resolution=self.base_resolution,
            max_resolution=self.max_resolution,
        )

    def field_config(self) -> FieldConfig:
        return FieldConfig(
            hash=self.hash_config(),
            hidden=self.hidden,
            color_hidden=self.color_hidden,
            color_layers=self.color_layers,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> TrainConfig:
        """Rebuild a config; an unknown or mistyped key is an InputError naming ``source`` and the key."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(source, unknown[0], "unknown config key (written by another version?)")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()), path)
        except FileNotFoundError:
            raise InputError(path, None, "config file not found") from None
        except json.JSONDecodeError as e:
            raise InputError(path, None, f"not valid JSON ({e})") from None


# Presets: the CPU one fits 2 cores (a 100x100 object scene in minutes); the GPU one is instant-NGP's.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        steps=3000,
        batch_rays=2048,
        log2_table_size=17,
        max_resolution=512,
        grid_resolution=64,
        march_steps=256,
    ),
    "gpu": dict(
        steps=20000,
        batch_rays=8192,
        log2_table_size=19,
        max_resolution=2048,
        grid_resolution=128,
        march_steps=1024,
    ),
}


def config_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "data"]

