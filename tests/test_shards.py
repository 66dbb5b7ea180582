"""``raytrace --shard I/N`` and ``--merge``: N shards and a merge give a single machine's dataset, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytrace.cli import main
from raytrace.dataset import parse_shard
from raytrace.dataset_format import SPLITS, transforms_path

from .test_cli_raytrace import SCENE, write_scene

FLAGS = ["--res", "12", "--quiet", "--workers", "1", "--device", "cpu"]


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shards_then_merge_equal_a_single_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    assert main([str(scene), "-o", str(tmp_path / "single"), *FLAGS]) == 0
    out = tmp_path / "sharded"
    assert main([str(scene), "-o", str(out), "--shard", "1/2", *FLAGS]) == 0
    assert not any(transforms_path(out, s).exists() for s in SPLITS)  # shards write frames only
    capsys.readouterr()
    assert main([str(scene), "-o", str(out), "--merge", *FLAGS]) == 2  # shard 0 not rendered yet
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "4 of 7 frames missing" in err and "train/r_0" in err and "val/r_1" in err
    assert "train/r_1" not in err and "val/r_0" not in err  # frames 1 and 3 belong to shard 1
    assert not any(transforms_path(out, s).exists() for s in SPLITS)
    assert main([str(scene), "-o", str(out), "--shard", "0/2", *FLAGS]) == 0
    assert main([str(scene), "-o", str(out), "--merge", *FLAGS]) == 0
    assert all_files(out) == all_files(tmp_path / "single")


def test_a_shard_rerun_renders_only_its_missing_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    out = tmp_path / "out"
    assert main([str(scene), "-o", str(out), "--shard", "0/3", *FLAGS]) == 0
    assert "rendered 3" in capsys.readouterr().out  # frames 0, 3, 6 of 7
    (out / "val" / "r_0.png").unlink()  # global frame 3
    assert main([str(scene), "-o", str(out), "--shard", "0/3", *FLAGS]) == 0
    assert "rendered 1, kept 2" in capsys.readouterr().out
    assert (out / "val" / "r_0.png").is_file() and not (out / "val" / "r_1.png").exists()  # frame 4: shard 1


def test_a_shard_never_touches_a_render_with_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    scene = write_scene(tmp_path / "scene.toml")
    out = tmp_path / "out"
    assert main([str(scene), "-o", str(out), *FLAGS]) == 0
    before = all_files(out)
    capsys.readouterr()
    other = write_scene(tmp_path / "other.toml", SCENE.replace("radius = 1.0", "radius = 0.8"))
    assert main([str(other), "-o", str(out), "--shard", "0/2", *FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ".raytrace_manifest.json" in err and "another scene" in err
    assert all_files(out) == before


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="I/N"):
        parse_shard(text)
    with pytest.raises(SystemExit) as exc:
        main(["scene.toml", "--shard", text])
    assert exc.value.code == 2
