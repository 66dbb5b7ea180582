"""Labels and colour bars drawn into uint8 images (text through matplotlib's Agg canvas, cached per string)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

LABEL_HEIGHT = 18
"""Pixels of the label strip above each panel."""

BAR_HEIGHT = 20
"""Pixels of a colour bar: a gradient of ``BAR_HEIGHT // 3`` rows over the range's ends written in text."""

INK = np.array([20, 20, 20], np.float32)
PAPER = np.array([255, 255, 255], np.float32)


@functools.lru_cache(maxsize=512)
def text_mask(text: str, width: int, height: int, align: str = "center") -> np.ndarray:
    """``(height, width)`` float32 ink coverage in [0, 1] of ``text`` on one line (``align``: left, center or
    right; clipped where it is wider than ``width``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100.0
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    x = {"left": 2.0 / width, "center": 0.5, "right": 1.0 - 2.0 / width}[align]
    fig.text(x, 0.5, text, ha=align, va="center", fontsize=0.62 * height * 72.0 / dpi, family="DejaVu Sans")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[:height, :width]
    return 1.0 - rgba[..., 0].astype(np.float32) / 255.0


def _ink(mask: np.ndarray) -> np.ndarray:
    """Ink coverage ``(h, w)`` -> dark text on white, uint8 ``(h, w, 3)``."""
    return (PAPER + mask[..., None] * (INK - PAPER) + 0.5).astype(np.uint8)


def label_strip(label: str, width: int) -> np.ndarray:
    """uint8 ``(LABEL_HEIGHT, width, 3)``: ``label`` centred, dark on white."""
    return _ink(text_mask(label, width, LABEL_HEIGHT))


def colour_bar(colours: np.ndarray, low: str, high: str) -> np.ndarray:
    """uint8 ``(BAR_HEIGHT, W, 3)``: the gradient ``colours`` ``(W, 3)`` uint8 (low end on the left) over ``low``
    written at the left and ``high`` at the right."""
    width = colours.shape[0]
    rows = BAR_HEIGHT // 3
    text = BAR_HEIGHT - rows
    mask = np.maximum(text_mask(low, width, text, "left"), text_mask(high, width, text, "right"))
    return np.concatenate([np.broadcast_to(colours, (rows, width, 3)), _ink(mask)], axis=0)


def labelled_panels(panels: list[np.ndarray], labels: list[str], bars: list[np.ndarray | None]) -> np.ndarray:
    """Panels uint8 ``(H, W, 3)`` side by side, each under its label and over its colour bar (``None``: a white
    strip) -> uint8 ``(LABEL_HEIGHT + H + BAR_HEIGHT, n * W, 3)`` (no bar strip when every bar is ``None``)."""
    columns = []
    for panel, label, bar in zip(panels, labels, bars, strict=True):
        w = panel.shape[1]
        column = [label_strip(label, w), panel]
        if any(b is not None for b in bars):
            column.append(bar if bar is not None else np.full((BAR_HEIGHT, w, 3), 255, np.uint8))
        columns.append(np.concatenate(column, axis=0))
    return np.concatenate(columns, axis=1)


def with_colour_bar(
    image: np.ndarray, colours_fn: Callable[[int], np.ndarray], low: str, high: str, fraction: float = 0.4
) -> np.ndarray:
    """A copy of uint8 ``(H, W, 3)`` ``image`` with a colour bar pasted in its bottom-left corner, ``fraction`` of
    its width wide (the image unchanged where it is too small to hold one). ``colours_fn(n)`` gives the bar's
    ``(n, 3)`` uint8 gradient."""
    h, w, _ = image.shape
    width = int(w * fraction)
    if h < 3 * BAR_HEIGHT or width < 48:
        return image
    out = image.copy()
    out[h - BAR_HEIGHT - 4 : h - 4, 4 : 4 + width] = colour_bar(colours_fn(width), low, high)
    return out
