"""Property-based fuzzing of the loaders: mutated scene files, dataset JSON and checkpoints either load or fail
with the project's one-line :class:`InputError` naming a file, never a traceback from deep inside."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nerf.checkpoint import checkpoint_path, load_checkpoint
from nerf.config import TrainConfig
from nerf.data import load_dataset
from nerf.model import load_run
from nerf.train import open_session
from raytrace.dataset import settings_for, write_dataset
from raytrace.dataset_format import read_transforms, transforms_path
from raytrace.errors import InputError
from raytrace.scene import load_scene

from .conftest import SCENE, tiny_config

SCENES = Path(__file__).resolve().parent.parent / "datasets" / "scenes"
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def loads_or_fails_cleanly(load: Callable[[Path], Any], path: Path) -> None:
    """``load(path)`` succeeds or raises an InputError whose message is one line naming a file."""
    try:
        load(path)
    except InputError as e:
        message = str(e)
        assert "\n" not in message and e.file is not None and e.file in message, message


# ---- tree mutations ------------------------------------------------------------------------------------------

def node_paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys / indices) to a node of nested dicts and lists, the root included."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += node_paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += node_paths(v, (*prefix, i))
    return out


def mutate(tree: Any, data: st.DataObject, values: st.SearchStrategy) -> Any:
    """A copy of ``tree`` with one node deleted, replaced by a random value (often another number where it was
    a number), or given a random new child."""
    tree = copy.deepcopy(tree)
    path = data.draw(st.sampled_from(node_paths(tree)[1:]))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    op = data.draw(st.sampled_from(["delete", "replace", "add"]))
    if op == "delete":
        del parent[path[-1]]
    elif op == "replace":
        node = parent[path[-1]]
        is_number = isinstance(node, int | float) and not isinstance(node, bool)
        parent[path[-1]] = data.draw(NUMBERS | values if is_number else values)
    else:
        node = parent[path[-1]]
        if isinstance(node, dict):
            node[data.draw(st.text("abcdefgxyz_", min_size=1, max_size=8))] = data.draw(values)
        elif isinstance(node, list):
            node.append(data.draw(values))
        else:
            parent[path[-1]] = [node, data.draw(values)]
    return tree


def mutate_bytes(raw: bytes, data: st.DataObject) -> bytes:
    """``raw`` truncated, with a byte replaced, bytes inserted or a range deleted."""
    i = data.draw(st.integers(0, len(raw) - 1))
    op = data.draw(st.sampled_from(["truncate", "replace", "insert", "delete"]))
    if op == "truncate":
        return raw[:i]
    if op == "replace":
        return raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1 :]
    if op == "insert":
        return raw[:i] + data.draw(st.binary(min_size=1, max_size=8)) + raw[i:]
    return raw[:i] + raw[i + data.draw(st.integers(1, 64)) :]


WORDS = st.sampled_from(["", "sphere", "box", "mesh", "plane", "diffuse", "glass", "mirror", "emissive", "torus",
                         "transparent", "hemisphere", "meshes/blob.ply", "textures/tiles.png", "../nope.png",
                         "./train/r_0", "./train/r_0_depth.npy", "scene.toml", "white"])
SMALL_INTS = st.integers(-3, 40)
BIG_INTS = st.sampled_from([2**63, 10**400, -(10**400)])  # valid JSON and (for tomllib) TOML, not floats
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 0.5, 1e308, -0.0])
TEXT = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), max_size=10) | WORDS


def nested(scalars: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=3),
                        max_leaves=8)


NUMBERS = SMALL_INTS | BIG_INTS | FLOATS | st.booleans()  # what a number is replaced with half the time
TOML_VALUES = nested(st.booleans() | SMALL_INTS | BIG_INTS | FLOATS | TEXT)
JSON_VALUES = nested(st.none() | st.booleans() | SMALL_INTS | BIG_INTS | st.integers() | FLOATS | TEXT)


# ---- scene files ---------------------------------------------------------------------------------------------

def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def to_toml(tree: dict[str, Any]) -> str:
    """Nested dicts and lists as TOML (inline tables and arrays) that ``tomllib`` reads back equal."""
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in tree.items())


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A copy of the shipped scenes (with their meshes and textures) and their parsed contents."""
    folder = tmp_path_factory.mktemp("fuzz_scenes") / "scenes"
    shutil.copytree(SCENES, folder)
    trees = [tomllib.loads(p.read_text()) for p in sorted(SCENES.glob("*.toml"))]
    return folder, [*trees, tomllib.loads(SCENE)]


def test_toml_writer_round_trips(scenes) -> None:
    _, trees = scenes
    for tree in trees:
        assert tomllib.loads(to_toml(tree)) == tree


@FUZZ
@given(data=st.data())
def test_mutated_scene_files_load_or_fail_cleanly(scenes, data: st.DataObject) -> None:
    folder, trees = scenes
    tree = mutate(data.draw(st.sampled_from(trees)), data, TOML_VALUES)
    path = folder / "fuzz.toml"
    path.write_text(to_toml(tree), encoding="utf-8")
    loads_or_fails_cleanly(load_scene, path)


@FUZZ
@given(data=st.data())
def test_damaged_scene_bytes_load_or_fail_cleanly(scenes, data: st.DataObject) -> None:
    folder, _ = scenes
    source = data.draw(st.sampled_from(sorted(SCENES.glob("*.toml"))))
    path = folder / "fuzz_bytes.toml"
    path.write_bytes(mutate_bytes(source.read_bytes(), data))
    loads_or_fails_cleanly(load_scene, path)


# ---- dataset JSON --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny rendered dataset (8x8 views) and its train JSON."""
    root = tmp_path_factory.mktemp("fuzz_data")
    (root / "ball.toml").write_text(SCENE)
    scene = load_scene(root / "ball.toml")
    write_dataset(scene, root / "ball", settings_for(scene, views=3, val=1, test=1, res=8), progress=False)
    return root / "ball", json.loads(transforms_path(root / "ball", "train").read_text())


def load_train_split(json_path: Path) -> None:
    read_transforms(json_path)
    load_dataset(json_path.parent, splits=("train", "test"))


@FUZZ
@given(data=st.data())
def test_mutated_dataset_json_loads_or_fails_cleanly(dataset, data: st.DataObject) -> None:
    root, valid = dataset
    path = transforms_path(root, "train")
    try:
        path.write_text(json.dumps(mutate(valid, data, JSON_VALUES)))
        loads_or_fails_cleanly(load_train_split, path)
    finally:
        path.write_text(json.dumps(valid))


@FUZZ
@given(data=st.data())
def test_damaged_dataset_json_bytes_load_or_fail_cleanly(dataset, data: st.DataObject) -> None:
    root, valid = dataset
    path = transforms_path(root, "train")
    try:
        path.write_bytes(mutate_bytes(json.dumps(valid, indent=1).encode(), data))
        loads_or_fails_cleanly(load_train_split, path)
    finally:
        path.write_text(json.dumps(valid))


# ---- checkpoints ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, dict[str, Any]]:
    """A real checkpoint of a tiny model (one training step), its bytes and its contents."""
    root, _ = dataset
    cfg = tiny_config(root, tmp_path_factory.mktemp("fuzz_runs"), levels=2, log2_table_size=8, grid_resolution=8,
                      march_steps=16, batch_rays=64, hidden=8, color_hidden=8)
    session = open_session(cfg)
    session.advance()
    path = session.save(1.0)
    return path, path.read_bytes(), load_checkpoint(path)


def load_and_resume(path: Path) -> None:
    load_run(path, "cpu")
    open_session(TrainConfig(device="cpu"), resume=path.parent.parent)


@FUZZ
@given(data=st.data())
def test_mutated_checkpoints_load_or_fail_cleanly(checkpoint, tmp_path_factory, data: st.DataObject) -> None:
    _, _, ckpt = checkpoint
    path = checkpoint_path(tmp_path_factory.getbasetemp() / "fuzz_ckpt", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mutate(ckpt, data, JSON_VALUES), path)
    loads_or_fails_cleanly(load_and_resume, path)


@FUZZ
@given(data=st.data())
def test_damaged_checkpoint_bytes_fail_cleanly(checkpoint, tmp_path_factory, data: st.DataObject) -> None:
    """A damaged file is refused in one line, unless the damage touched no content (the zip's alignment padding,
    say): then it loads into exactly what was saved."""
    _, raw, saved = checkpoint
    path = checkpoint_path(tmp_path_factory.getbasetemp() / "fuzz_bytes", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mutate_bytes(raw, data))
    try:
        loaded = load_checkpoint(path)
    except InputError as e:
        assert "\n" not in str(e) and e.file == str(path), str(e)
        return
    assert same_content(loaded, saved)
    load_and_resume(path)


def same_content(a: Any, b: Any) -> bool:
    """Nested dicts, lists and tuples of equal tensors (same dtype, bitwise) and equal other values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_content(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same_content(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(format_version=1), "format version 1"),
        (lambda c: c["config"].update(backend="tcnn"), "tcnn"),
        (lambda c: c["config"].update(levels=3), "does not fit"),
        (lambda c: c["config"].update(new_option=1), "unknown config key"),
        (lambda c: c["config"].update(levels="16"), "config.hash.levels"),
        (lambda c: c.update(extra=None), "extra.aabb"),
        (lambda c: c["extra"].update(rng_ranks=[[1, 2]]), "cannot resume"),
    ],
)
def test_checkpoint_from_another_version_or_backend_gets_a_clear_message(checkpoint, tmp_path, change, expected):
    _, _, ckpt = checkpoint
    changed = copy.deepcopy(ckpt)
    change(changed)
    path = checkpoint_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    torch.save(changed, path)
    with pytest.raises(InputError, match=expected) as exc:
        load_and_resume(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_truncated_checkpoint_gets_a_clear_message(checkpoint, tmp_path):
    _, raw, _ = checkpoint
    path = tmp_path / "step_0000001.pt"
    for size in (0, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:size])
        with pytest.raises(InputError, match="truncated or corrupt"):
            load_checkpoint(path)


# ---- flag values ---------------------------------------------------------------------------------------------

BAD_FLAGS: dict[str, list[list[str]]] = {
    "raytrace": [["--views", "0"], ["--views", "1000000000"], ["--res", "0"], ["--res", "-8"], ["--spp", "0"],
                 ["--val", "-1"], ["--workers", "0"], ["--threads", "x"], ["--device", "foo"], ["--bogus"]],
    "nerf-train": [["--batch-rays", "0"], ["--checkpoint-every", "0"], ["--march-steps", "0"],
                   ["--grid-update-every", "0"], ["--levels", "0"], ["--downscale", "0"],
                   ["--log2-table-size", "40"], ["--max-resolution", "-8"], ["--steps", "-5"],
                   ["--time-budget", "-1"], ["--hidden", "0"], ["--turntable-frames", "-3"],
                   ["--render-chunk", "0"], ["--lr-final-factor", "nan"], ["--lr", "inf"], ["--betas", "0.9", "1"],
                   ["--grid-decay", "1.5"], ["--device", "foo"], ["--preset", "tpu"], ["--loss", "l1"],
                   ["--backend", "foo"], ["--model", "gan"], ["--gpus", "0"], ["--bogus"]],
    "nerf-eval": [["--device", "foo"], ["--backend", "foo"], ["--split", "nope"], ["--bogus"]],
    "nerf-export": [["--mesh", "--resolution", "0"], ["--mesh", "--threshold", "nan"], ["--mesh", "--device", "foo"],
                    ["--mesh", "-o", "mesh.xyz"], ["--mesh", "--bogus"]],
    "nerf-view": [["--device", "foo"], ["--target-fps", "0"], ["--backend", "foo"], ["--bogus"]],
    "nerf-process": [["--frames", "1"], ["--max-image-size", "0"], ["--matcher", "vocab"], ["--mapper", "sfm"],
                     ["--camera-model", "FISHEYE9"], ["--bogus"]],
}


def command_main(command: str) -> Callable[[list[str]], int]:
    from nerf.cli import eval_main, export_main, train_main
    from raytrace.capture.cli import main as process_main
    from raytrace.cli import main as raytrace_main
    from viewer.cli import main as view_main

    return {"raytrace": raytrace_main, "nerf-train": train_main, "nerf-eval": eval_main,
            "nerf-export": export_main, "nerf-view": view_main, "nerf-process": process_main}[command]


@pytest.mark.parametrize(("command", "flags"), [(c, f) for c, cases in BAD_FLAGS.items() for f in cases],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_flag_values_are_refused_where_parsed(command: str, flags: list[str], capsys) -> None:
    """Zero, negative, huge, NaN and unknown values and unknown flags: exit 2 and one line naming the flag."""
    positional = [] if command == "nerf-train" else ["scene.toml" if command == "raytrace" else "no-such-run"]
    with pytest.raises(SystemExit) as exc:
        command_main(command)([*positional, *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    flag = next(f for f in flags if f.startswith("-") and f != "--mesh")
    assert err.count("\n") == 1, err
    assert err.startswith(f"{command}: error: ") and flag in err and err.endswith(f"; see {command} --help\n"), err


def test_flag_types_accept_their_range() -> None:
    from nerf.config import RANGES

    assert RANGES["march.grid_decay"]("0.5") == 0.5
    assert RANGES["optim.lr_final_factor"]("0.03") == 0.03
    with pytest.raises(Exception, match="finite"):
        RANGES["optim.lr_final_factor"]("nan")


def test_config_files_get_the_flag_checks(tmp_path: Path) -> None:
    """A config read from a file (checkpoint, config.json) is held to the flags' ranges, naming the key."""
    data = TrainConfig(data="d").to_dict()
    data["render_chunk"] = 0
    with pytest.raises(InputError, match=r"cfg.json: config.render_chunk: must be in \[1"):
        TrainConfig.from_dict(data, "cfg.json")
    data = TrainConfig(data="d").to_dict()
    data["optim"]["loss"] = "l1"
    with pytest.raises(InputError, match=r"config\.optim\.loss: 'l1' is not one of huber, mse"):
        TrainConfig.from_dict(data, "cfg.json")
