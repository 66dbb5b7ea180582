"""What every command line shares: the parser (a bad flag is one line), flag types (ranges, finiteness, devices),
the help formatter, and the error boundary that turns expected faults into one line and the documented exit code
(2 bad input, 1 failure, 130 interrupted)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from raytrace.errors import InputError, is_finite_number

EXIT_FAILURE = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_WRITE_FAILED = ("unexpected pos", "file write failed", "failed writing")  # torch.save on a full disk
_OOM = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``[lo, hi]`` (either end open when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_bounds(lo, hi)} (got {value})")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=``: a finite float in ``[lo, hi]`` (``lo_open`` / ``hi_open``: that end excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not is_finite_number(value)
        bad |= lo is not None and (value <= lo if lo_open else value < lo)
        bad |= hi is not None and (value >= hi if hi_open else value > hi)
        if bad:
            raise argparse.ArgumentTypeError(f"must be a finite number{_bounds(lo, hi, lo_open, hi_open, ' ')} "
                                             f"(got {text})")
        return value

    parse.__name__ = "float"
    return parse


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False,
            lead: str = "") -> str:
    """``>= 1``, ``< 1`` or ``in [0, 1)`` (``lead`` before it; nothing when both ends are open)."""
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f"{lead}{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{lead}{'<' if hi_open else '<='} {hi}"
    return f"{lead}in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


positive_int = int_range(1)
count_int = int_range(0)


def device_name(text: str) -> str:
    """An argparse ``type=``: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (availability is checked later)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, mps, cuda or cuda:N, got {text!r}")
    return text


def check_device(name: str) -> None:
    """Raise :class:`InputError` for a device this machine's torch cannot use (``auto`` always can)."""
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(None, "--device", f"{name} requested but torch sees no CUDA device")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(None, "--device", f"{name}: torch sees {torch.cuda.device_count()} CUDA devices")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(None, "--device", "mps requested but torch sees no Apple GPU")


def check_memory(need: int, where: str, what: str) -> None:
    """Raise :class:`InputError` (naming the flags ``where``) when ``need`` bytes exceed this machine's memory:
    checked before allocating, so a size typo is one line instead of a crash or a swapping machine."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    if total and need > total:
        raise InputError(None, where, f"{what} needs about {need / 2**30:.0f} GiB, this machine has "
                         f"{total / 2**30:.0f} GiB")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default once: not for ``None`` / suppressed defaults or help that states its own."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS, False) or "default" in text:
            return text
        return super()._get_help_string(action)


_ARGUMENT = re.compile(r"^argument (\S+): (.*)$", re.S)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every command: defaults shown in ``--help`` (:class:`HelpFormatter`), and a bad flag is one
    line, ``PROG: error: --flag: problem; see PROG --help``, with exit status 2 (argparse prints its usage first);
    ``quiet`` (a process that is not the one reporting, such as a data-parallel rank > 0): the exit status only."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.quiet = quiet

    def error(self, message: str) -> NoReturn:
        match = _ARGUMENT.match(message)
        if match:  # "argument -o/--out: ..." -> "--out: ..."
            names = match[1].split("/")
            message = f"{next((n for n in names if n.startswith('--')), names[0])}: {match[2]}"
        message = " ".join(message.split())
        self.exit(EXIT_INPUT, None if self.quiet else f"{self.prog}: error: {message}; see {self.prog} --help\n")


def add_hidden_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs: Any) -> None:
    """An old spelling of a flag, still accepted, not shown in ``--help``."""
    parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def run_command(prog: str, body: Callable[[], int], quiet: bool = False) -> int:
    """Run ``body`` (a command's work, returning its exit status) inside the error boundary: bad input, an
    environment fault (unwritable path, full disk, no memory, missing device) or Ctrl-C becomes one line on stderr
    (none when ``quiet``) and exit status 2, 1 or 130; never a traceback. Our own bugs go through."""
    try:
        return body()
    except InputError as e:
        return _report(prog, str(e), EXIT_INPUT, quiet)
    except KeyboardInterrupt:
        return _report(prog, "interrupted", EXIT_INTERRUPTED, quiet)
    except MemoryError:
        return _report(prog, "out of memory (try a smaller size or count)", EXIT_FAILURE, quiet)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _report(prog, f"{where}{e.strerror or e}", EXIT_FAILURE, quiet)
    except RuntimeError as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if any(s in text.lower() for s in _OOM):
            return _report(prog, f"out of memory (try a smaller size or count): {text}", EXIT_FAILURE, quiet)
        if any(s in text for s in _WRITE_FAILED):
            return _report(prog, f"writing failed (disk full?): {text}", EXIT_FAILURE, quiet)
        raise


def _report(prog: str, message: str, code: int, quiet: bool) -> int:
    if not quiet:
        print(f"{prog}: error: {message}" if code != EXIT_INTERRUPTED else f"{prog}: {message}", file=sys.stderr)
    return code
