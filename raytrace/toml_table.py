"""Reading a TOML table with typed, checked getters: each bad value is an :class:`InputError` naming the file and
the field (``objects[2].radius``), and :meth:`TomlTable.finish` rejects the keys nobody asked for."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from raytrace.errors import InputError, is_finite_number

Vec3 = tuple[float, float, float]
MISSING: Any = object()


def describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


class TomlTable:
    """A TOML table being read: typed, checked getters; ``finish`` rejects the keys nobody asked for."""

    def __init__(self, file: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise InputError(file, where or None, f"expected a table, got {describe(data)}")
        self.file, self.where, self.data, self.used = file, where, data, set[str]()

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, problem: str) -> InputError:
        return InputError(self.file, self.field(key), problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = MISSING) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is MISSING:
                typo = difflib.get_close_matches(key, [k for k in self.data if k not in self.used], n=1)
                if typo:
                    raise self.error(typo[0], f"unknown key (did you mean {key!r}?)")
                raise self.error(key, "missing (required)")
            return default
        return self.data[key]

    def number(
        self,
        key: str,
        default: Any = MISSING,
        low: float | None = None,
        strict: bool = False,
        high: float | None = None,
    ) -> float:
        if not self.has(key):
            return self.raw(key, default)
        v = self.raw(key)
        if not is_finite_number(v):
            raise self.error(key, f"expected a number, got {describe(v)}")
        if low is not None and (v <= low if strict else v < low):
            raise self.error(key, f"must be {'>' if strict else '>='} {low:g}, got {v:g}")
        if high is not None and v >= high:
            raise self.error(key, f"must be < {high:g}, got {v:g}")
        return float(v)

    def integer(self, key: str, default: Any = MISSING, low: int | None = None) -> int:
        if not self.has(key):
            return self.raw(key, default)
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"expected an integer, got {describe(v)}")
        if low is not None and v < low:
            raise self.error(key, f"must be >= {low}, got {v}")
        return v

    def boolean(self, key: str, default: Any = MISSING) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self.error(key, f"expected true or false, got {describe(v)}")
        return v

    def string(self, key: str, default: Any = MISSING, choices: tuple[str, ...] | None = None) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise self.error(key, f"expected a string, got {describe(v)}")
        if choices is not None and v not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def vector(
        self,
        key: str,
        default: Any = MISSING,
        size: int = 3,
        low: float | None = None,
        strict: bool = False,
        nonzero: bool = False,
    ) -> tuple[float, ...]:
        if not self.has(key):
            return self.raw(key, default)
        v = self.raw(key)
        ok = isinstance(v, list | tuple) and len(v) == size
        if not ok or not all(is_finite_number(x) for x in v):
            raise self.error(key, f"expected a list of {size} numbers, got {describe(v)}")
        if low is not None and any((x <= low if strict else x < low) for x in v):
            raise self.error(key, f"every component must be {'>' if strict else '>='} {low:g}, got {v}")
        if nonzero and not any(v):
            raise self.error(key, "must not be the zero vector")
        return tuple(float(x) for x in v)

    def colour(self, key: str, default: Any = MISSING) -> Vec3:
        return self.vector(key, default, low=0.0)

    def table(self, key: str, default: Any = MISSING) -> TomlTable | None:
        v = self.raw(key, default)
        return None if v is None else TomlTable(self.file, self.field(key), v)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used)) or "none"
            raise self.error(unknown[0], f"unknown key (expected one of: {known})")
