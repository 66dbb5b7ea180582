"""The ``raytrace`` command line: a run, bad input (exit 2, one line, nothing written), ``--help``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raytrace.cli import main
from raytrace.dataset_format import SPLITS, read_transforms, transforms_path

SCENE = """
[render]
background = "transparent"
spp = 1

[camera]
radius = 4.0
fov = 40
width = 16
height = 8
views = { train = 3, val = 2, test = 2 }

[materials.grey]
type = "diffuse"

[[objects]]
type = "sphere"
radius = 1.0
material = "grey"

[[lights]]
type = "directional"
direction = [0.0, 0.0, -1.0]
intensity = 2.0
"""


def write_scene(path: Path, text: str = SCENE) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_writes_a_dataset_with_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = write_scene(tmp_path / "scene.toml")
    out = tmp_path / "out"
    args = ["--res", "8", "--views", "2", "--val", "1", "--test", "1", "--quiet"]
    rc = main([str(scene), "-o", str(out), *args])
    assert rc == 0
    for split, n in zip(SPLITS, (2, 1, 1), strict=True):
        t = read_transforms(transforms_path(out, split))
        assert len(t.frames) == n and (t.w, t.h) == (8, 4)
    stdout = capsys.readouterr().out
    assert str(out) in stdout and "rendered 4" in stdout


def test_invalid_scene_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "bad.toml", SCENE.replace("radius = 1.0", "radius = -1.0"))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "raytrace.cli", str(scene), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bad.toml" in lines[0] and "radius" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()


def test_missing_scene_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.toml"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.toml" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--workers" in text and "(default: 1)" in text and "--views" in text and "--res" in text


def test_cli_imports_lazily(tmp_path: Path) -> None:
    """``--help`` loads neither torch nor open3d; a scene without meshes, boxes or area lights loads without
    open3d; idle OpenMP threads sleep (set before torch loads)."""
    scene = write_scene(tmp_path / "s.toml")
    code = (
        "import os, sys\n"
        "import raytrace.cli\n"
        "print('torch' in sys.modules, 'open3d' in sys.modules, os.environ['OMP_WAIT_POLICY'])\n"
        "from raytrace.scene import load_scene\n"
        f"load_scene({str(scene)!r})\n"
        "print('open3d' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.stdout.split() == ["False", "False", "PASSIVE", "False"], proc.stderr


def test_default_workers_fill_the_cores_but_not_small_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    import raytrace.frames as frames

    monkeypatch.setattr(frames, "available_cores", lambda: 4)
    assert [frames.default_workers(n) for n in (1, 7, 8, 16, 31, 130)] == [1, 1, 1, 2, 3, 4]
    assert frames.default_workers(130, threads=2) == 2
