"""The project's one error type for bad input: a one-line message naming the file and the field."""

from __future__ import annotations

from pathlib import Path


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
