"""The parser every command uses: a bad flag is one line naming it, exit status 2 (each command: test_fuzz_inputs)."""

from __future__ import annotations

import pytest

from raytrace.cliutil import ArgumentParser, int_range


def test_the_range_message_names_flag_bound_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser(prog="nerf-process")
    parser.add_argument("-b", "--batch-rays", type=int_range(1))
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["-b", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("nerf-process: error: --batch-rays: must be >= 1 (got 0); "
                                       "see nerf-process --help\n")


def test_help_still_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser(prog="p")
    parser.add_argument("--steps", type=int, default=7, help="steps")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--help"])
    assert stop.value.code == 0
    assert "(default: 7)" in capsys.readouterr().out
