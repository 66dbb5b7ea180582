"""``nerf-view`` on the command line: without a display it says how to get one, in one line, before Qt aborts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from viewer.cli import DISPLAY_VARIABLES, no_display_message

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux")
def test_without_a_display_one_line_suggests_xvfb_and_the_exit_code_is_not_zero(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in DISPLAY_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "viewer.cli", "runs/ball/my run", "--size", "320x240"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].endswith("xvfb-run -a nerf-view 'runs/ball/my run' --size 320x240")
    assert "no display" in lines[0]


def test_a_display_or_a_qt_platform_is_enough():
    assert no_display_message(["run"], {}) is not None or not sys.platform.startswith("linux")
    for name in DISPLAY_VARIABLES:
        assert no_display_message(["run"], {name: ":0"}) is None
    assert no_display_message(["run"], {"DISPLAY": ""}) == no_display_message(["run"], {})
