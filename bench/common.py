"""What every benchmark shares: a description of the machine and appending a section to ``bench/RESULTS.md``."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line: CPU, cores, GPU if any, torch and Python versions."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def command() -> str:
    """The command line that ran this benchmark."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def append_results(section: str, body: str, results: Path = RESULTS) -> None:
    """Append ``body`` under a dated sub-heading of ``## section`` (the section is created when missing)."""
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry = f"\n### {stamp}\n\n- machine: {machine()}\n- command: `{command()}`\n\n{body.strip()}\n"
    heading = f"## {section}"
    if heading not in text:
        text = text.rstrip() + f"\n\n{heading}\n"
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt
    text = text[:end].rstrip() + "\n" + entry + text[end:]
    results.write_text(text if text.endswith("\n") else text + "\n")
