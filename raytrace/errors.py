"""The project's one error type for bad input: a one-line message naming the file and the field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input (scene file, dataset JSON, image, checkpoint).

    ``str(err)`` is one line: ``<file>: <where>: <problem>``.
    """

    def __init__(self, file: str | Path | None, where: str | None, problem: str) -> None:
        self.file = str(file) if file is not None else None
        self.where = where
        self.problem = problem
        parts = [p for p in (self.file, where) if p]
        super().__init__(": ".join([*parts, problem]).replace("\n", " "))


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float (a TOML or JSON integer can be too large for one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
