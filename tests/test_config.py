"""The nested training config: flags, presets, config.json round trips, older flat configs, bad values."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nerf.cli import add_config_flags, config_from_args
from nerf.config import (
    PRESETS,
    SECTIONS,
    MarchConfig,
    TrainConfig,
    check_config,
    config_flags,
    field_docs,
    flag_name,
)
from nerf.field import FieldConfig
from nerf.hashgrid import HashGridConfig
from nerf.model import build_model
from nerf.resolve import resolve
from raytrace.errors import InputError
from raytrace.reader import read_dataset

from .conftest import tiny_config


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?")
    add_config_flags(parser)
    return config_from_args(parser.parse_args(["data", *argv]))


def test_every_field_has_a_flag_with_its_default_in_the_help() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    text = " ".join(parser.format_help().split())
    for flag in ("--geo-features", "--sh-degree", "--log2-table-size", "--march-steps", "--grid-decay", "--lr",
                 "--loss", "--eval-every", "--random-background"):
        assert flag in text, flag
    assert "(default: 15)" in text  # geo_features
    assert "(default: cpu 17, gpu 19)" in text  # log2_table_size, from the presets
    assert "(default: 0.9 0.99)" in text  # betas


def test_flags_reach_their_sections_and_the_model(tmp_path: Path) -> None:
    cfg = parse("--device", "cpu", "--geo-features", "7", "--sh-degree", "2", "--log2-table-size", "12",
                "--march-steps", "64", "--lr", "0.005", "--betas", "0.8", "0.9", "--no-random-background")
    assert cfg.field == FieldConfig(geo_features=7, sh_degree=2)
    assert cfg.hash == HashGridConfig(log2_table_size=12, max_resolution=PRESETS["cpu"]["hash"].max_resolution)
    assert cfg.march == MarchConfig(steps=64, grid_resolution=PRESETS["cpu"]["march"].grid_resolution)
    assert (cfg.optim.lr, cfg.optim.betas, cfg.random_background) == (0.005, (0.8, 0.9), False)
    model = build_model(resolve(cfg, None, "cpu"), torch.tensor([[-1.0] * 3, [1.0] * 3]), torch.device("cpu"))
    assert model.field.density_mlp[-1].out_features == 1 + 7
    assert model.field.color_mlp[0].in_features == 2**2 + 7
    assert model.march.steps == 64


def test_no_flag_leaves_the_preset_to_decide() -> None:
    cfg = parse("--device", "cpu")
    assert cfg.hash is None and cfg.march is None and cfg.steps is None
    resolved = resolve(cfg, None, "cpu")
    preset_march = dataclasses.replace(PRESETS["cpu"]["march"], scene_contraction="none", cone_angle=0.0)  # bounded
    assert (resolved.hash, resolved.march, resolved.steps) == (PRESETS["cpu"]["hash"], preset_march, 3000)
    assert resolve(cfg, None, "cuda").hash == HashGridConfig()  # the GPU preset is instant-NGP's


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = resolve(tiny_config(tmp_path, tmp_path, levels=4, hidden=8, sh_degree=3, lr=0.02), None, "cpu")
    cfg.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["hash"]["levels"] == 4 and data["field"]["sh_degree"] == 3 and data["optim"]["lr"] == 0.02
    assert TrainConfig.from_dict(data, tmp_path / "config.json") == cfg


def test_an_older_flat_config_is_read_into_its_sections(tmp_path: Path) -> None:
    flat = {"data": "d", "levels": 4, "features": 2, "log2_table_size": 12, "base_resolution": 16,
            "max_resolution": 64, "hidden": 8, "march_steps": 32, "grid_resolution": 16, "lr": 0.02, "loss": "mse"}
    cfg = TrainConfig.from_dict(flat, "old.json")
    assert cfg.hash == HashGridConfig(levels=4, log2_table_size=12, max_resolution=64)
    assert cfg.march == MarchConfig(steps=32, grid_resolution=16)
    assert (cfg.field.hidden, cfg.optim.lr, cfg.optim.loss) == (8, 0.02, "mse")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"hash": {"levels": "16"}}, "config.hash.levels"),
        ({"hash": {"levels": 0}}, "config.hash"),
        ({"field": {"width": 3}}, "config.field.width"),
        ({"optim": {"betas": [0.9]}}, "config.optim.betas"),
        ({"field": None}, "config.field"),
        ({"steps": True}, "config.steps"),
        ({"colour": 1}, "config.colour"),
        ({"march": [1]}, "config.march"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(tmp_path: Path, change: dict, where: str) -> None:
    data = resolve(tiny_config(tmp_path, tmp_path), None, "cpu").to_dict()
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    with pytest.raises(InputError, match=f"cfg.json: {where}[:.]") as exc:
        TrainConfig.from_dict(data, "cfg.json")
    assert "\n" not in str(exc.value)


def test_every_flag_is_documented_by_its_field() -> None:
    """A field's docstring is its flag's --help (no table of strings beside the dataclasses to drift from them)."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    helps = {name: a.help for a in parser._actions for name in a.option_strings}
    for section, f in config_flags():
        doc = field_docs(SECTIONS[section] if section else TrainConfig).get(f.name)
        assert doc, f"{section}.{f.name} has no docstring"
        assert helps[flag_name(section, f.name)].startswith(doc)


def test_config_module_loads_without_torch() -> None:
    code = "import sys, nerf.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_resolve_takes_the_box_from_the_dataset_unless_aabb_is_given(ball: Path) -> None:
    description = read_dataset(ball, splits=("train",))
    cfg = resolve(TrainConfig(), description, "cpu")
    assert cfg.aabb == tuple(description.bounds.aabb.reshape(-1)) and cfg.march.scene_contraction == "none"
    given = resolve(TrainConfig(aabb=(-1.0, -2.0, -3.0, 1.0, 2.0, 3.0)), description, "cpu")
    assert given.aabb == (-1.0, -2.0, -3.0, 1.0, 2.0, 3.0)
    with pytest.raises(InputError, match="--aabb: min corner"):
        check_config(TrainConfig(aabb=(1.0, 0.0, 0.0, 0.0, 1.0, 1.0)))
