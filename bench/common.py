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


OUR_KEYS = ("scene_aabb", "bounded", "scene")
"""The JSON keys only our datasets write: what a dataset of another tool would lack."""
DEPTH_KEYS = ("distance_path", "normal_path", "depth_path", "depth_file_path")


def dataset_copy(src: Path, dst: Path, scale: float = 1.0, drop: tuple[str, ...] = ()) -> Path:
    """Our dataset in ``src`` as JSON files in ``dst`` (the images and depth maps stay where they are, named by
    absolute path) whose poses, ``scene_aabb`` and depth are in units ``scale`` times smaller (depth then comes from
    the z-depth PNGs, their ``integer_depth_scale`` times ``scale``), less the keys ``drop`` (top level and frame)."""
    import json

    from raytrace.dataset_format import SPLITS, transforms_path

    dst.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        path = transforms_path(src, split)
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for fr in data["frames"]:
            fr["transform_matrix"] = [[*row[:3], row[3] * scale] for row in fr["transform_matrix"][:3]] + \
                [fr["transform_matrix"][3]]
            for key in ("file_path", *DEPTH_KEYS):
                if key in fr:
                    fr[key] = str((src / fr[key]).resolve())
            for key in (*drop, *(("distance_path", "normal_path", "depth_file_path") if scale != 1.0 else ())):
                fr.pop(key, None)
        if "scene_aabb" in data:
            data["scene_aabb"] = [[v * scale for v in corner] for corner in data["scene_aabb"]]
        if "integer_depth_scale" in data:
            data["integer_depth_scale"] *= scale
        transforms_path(dst, split).write_text(json.dumps({k: v for k, v in data.items() if k not in drop}))
    return dst
