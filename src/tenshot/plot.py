"""Line plots drawn with Pillow (the report's loss curves; matplotlib is not a dependency).

A plot is one series against training steps: a framed axes box with light grid lines at "nice" ticks
(1, 2 or 5 times a power of ten, Heckbert's "nice numbers", Graphics Gems 1990), tick labels, and a log
y axis when the values are positive and span at least a decade. Images are drawn at twice their CSS
size so that lines and labels stay sharp on high-density screens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCALE = 2  # pixels per CSS pixel
WIDTH, HEIGHT = 520, 260  # CSS pixels
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 62, 14, 28, 38
CURVE = (8, 81, 156)  # the series (or its running mean when the raw series is drawn faint)
RAW = (158, 202, 225)  # the raw series behind a running mean
GRID = (230, 230, 230)
FRAME = (90, 90, 90)
TEXT = (40, 40, 40)
SMOOTH_ABOVE = 50  # more points than this: the raw series faint, a running mean on top
PAD = 0.04  # share of the data range left free at each end of the y axis


def nice_step(span: float, count: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``count`` intervals over ``span``."""
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10.0 * power


def linear_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Multiples of a nice step inside ``[low, high]`` (about ``count`` of them)."""
    step = nice_step(high - low, count)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten inside ``[low, high]``; 1-2-5 multiples as well when fewer than three powers fit."""
    powers = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    inside = [10.0**p for p in powers if low * (1 - 1e-9) <= 10.0**p <= high * (1 + 1e-9)]
    if len(inside) >= 3:
        return inside
    return [m * 10.0**p for p in powers for m in (1, 2, 5) if low * (1 - 1e-9) <= m * 10.0**p <= high * (1 + 1e-9)]


def uses_log_scale(values: Sequence[float]) -> bool:
    """A log y axis for positive values spanning at least a decade (max / min >= 10)."""
    values = np.asarray(values, dtype=float)
    return bool(len(values) and values.min() > 0 and values.max() / values.min() >= 10.0)


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the tick step needs (no ``-0``)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    text = f"{round(value, decimals):g}"
    return "0" if text == "-0" else text


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean: each value averaged with its neighbours in a ``window`` wide span (shorter at
    the ends), so that the mean does not lag behind a falling loss."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    index = np.arange(len(values))
    starts = np.maximum(0, index - window // 2)
    ends = np.minimum(len(values), index - window // 2 + window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size * SCALE)


def line_plot(steps: Sequence[float], values: Sequence[float], title: str) -> Image.Image:
    """``values`` against ``steps`` as an RGB image of ``WIDTH x HEIGHT`` CSS pixels (times :data:`SCALE`)."""
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise ValueError(f"expected two equal non-empty 1-d series, got {x.shape} and {y.shape}")
    log = uses_log_scale(y)
    s = SCALE
    image = Image.new("RGB", (WIDTH * s, HEIGHT * s), "white")
    draw = ImageDraw.Draw(image)
    label_font, title_font = _font(11), _font(13)
    left, right = MARGIN_LEFT * s, (WIDTH - MARGIN_RIGHT) * s
    top, bottom = MARGIN_TOP * s, (HEIGHT - MARGIN_BOTTOM) * s

    x_low, x_high = float(x.min()), float(x.max())
    if x_high == x_low:
        x_low, x_high = x_low - 1.0, x_high + 1.0
    t = np.log10(y) if log else y
    t_low, t_high = float(t.min()), float(t.max())
    span = t_high - t_low or abs(t_high) * 0.1 or 1.0
    t_low, t_high = t_low - PAD * span, t_high + PAD * span

    def px(value: np.ndarray | float) -> np.ndarray:
        return left + (np.asarray(value, dtype=float) - x_low) / (x_high - x_low) * (right - left)

    def py(value: np.ndarray | float) -> np.ndarray:
        v = np.log10(value) if log else np.asarray(value, dtype=float)
        return bottom - (v - t_low) / (t_high - t_low) * (bottom - top)

    x_ticks = [tick for tick in linear_ticks(x_low, x_high, 6) if tick == int(tick)]
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    if log:
        y_ticks = log_ticks(10.0**t_low, 10.0**t_high)
        y_labels = [f"{tick:g}" for tick in y_ticks]
    else:
        y_ticks = linear_ticks(t_low, t_high, 5)
        y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else abs(y_ticks[0]) or 1.0
        y_labels = [tick_label(tick, y_step) for tick in y_ticks]

    for tick, label in zip(y_ticks, y_labels):
        row = float(py(tick))
        draw.line([(left, row), (right, row)], fill=GRID, width=s)
        draw.line([(left - 4 * s, row), (left, row)], fill=FRAME, width=s)
        draw.text((left - 7 * s, row), label, fill=TEXT, font=label_font, anchor="rm")
    for tick in x_ticks:
        column = float(px(tick))
        draw.line([(column, top), (column, bottom)], fill=GRID, width=s)
        draw.line([(column, bottom), (column, bottom + 4 * s)], fill=FRAME, width=s)
        draw.text((column, bottom + 7 * s), tick_label(tick, x_step), fill=TEXT, font=label_font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=FRAME, width=s)
    draw.text(((left + right) / 2, HEIGHT * s - 3 * s), "step", fill=TEXT, font=label_font, anchor="mb")

    caption = title + (" (log scale)" if log else "")
    points_x = px(x)
    if len(y) > SMOOTH_ABOVE:
        window = max(2, len(y) // 25)
        draw.line(list(zip(points_x, py(y))), fill=RAW, width=s)
        draw.line(list(zip(points_x, py(running_mean(y, window)))), fill=CURVE, width=2 * s)
        caption += f"; dark: running mean of {window} logged values"
    elif len(y) == 1:
        cx, cy = float(points_x[0]), float(py(y)[0])
        draw.ellipse([cx - 3 * s, cy - 3 * s, cx + 3 * s, cy + 3 * s], fill=CURVE)
    else:
        draw.line(list(zip(points_x, py(y))), fill=CURVE, width=2 * s)
    draw.text((left, top - 8 * s), caption, fill=TEXT, font=title_font, anchor="ls")
    return image
