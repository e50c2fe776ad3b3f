"""The geometry of the dashboard's inline SVG: a job's loss curves and a model's architecture diagram.

Pure functions from data to coordinates; the templates only place what these return, so the numbers
are tested here without a browser. A curve has one point per epoch record up to two per horizontal
pixel of the chart; a longer history is thinned to the extremes of each pixel column (``thinned``),
so a card stays a few kilobytes however many epochs a job runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import counted

# The loss chart's drawing area inside its viewBox, in SVG user units.
CHART_WIDTH, CHART_HEIGHT = 560, 180
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 56, 12, 10, 24

# The architecture diagram: one box per layer, left to right.
BOX_WIDTH, BOX_HEIGHT, BOX_GAP, DIAGRAM_MARGIN = 118, 64, 34, 8

# Points a curve keeps per pixel column of the drawing area (CHART_WIDTH units: the chart is drawn at
# most CHART_WIDTH pixels wide) once it has more than that: the lowest and the highest.
POINTS_PER_COLUMN = 2

SERIES = (("loss", "training"), ("val_loss", "validation"))
LOG_SCALE_RATIO = 100  # highest / lowest loss from which the y axis is logarithmic


@dataclass(frozen=True)
class Series:
    key: str  # the history field: "loss" or "val_loss"
    label: str
    path: str  # SVG path data: "M x,y L x,y ...", one point per epoch up to POINTS_PER_COLUMN per pixel
    points: int  # drawn in the path
    epochs: int  # epochs with a value (more than ``points`` when the curve was thinned)
    last: float


@dataclass(frozen=True)
class LossChart:
    width: int
    height: int
    series: list[Series]
    y_ticks: list[tuple[float, str]]  # (y coordinate, label)
    x_ticks: list[tuple[float, str]]
    frame: tuple[float, float, float, float]  # left, top, right, bottom of the drawing area
    logarithmic: bool


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def thinned(points: list[tuple[int, float]], column_of, columns: int) -> list[tuple[int, float]]:
    """``points`` (epoch, value) in epoch order as they are when there are at most ``POINTS_PER_COLUMN``
    per column on average; else, from each column (``column_of(epoch)``: 0 to ``columns - 1``), its
    lowest and highest point, plus the first and the last point, still in epoch order. A spike, the
    best loss and the final loss all stay drawn, and a path has at most 2 * columns + 2 points."""
    if len(points) <= POINTS_PER_COLUMN * columns:
        return points
    lowest, highest = {}, {}  # column -> index of its lowest / highest point (the first one on ties)
    for i, (epoch, value) in enumerate(points):
        column = column_of(epoch)
        if column not in lowest or value < points[lowest[column]][1]:
            lowest[column] = i
        if column not in highest or value > points[highest[column]][1]:
            highest[column] = i
    kept = {0, len(points) - 1, *lowest.values(), *highest.values()}
    return [points[i] for i in sorted(kept)]


def loss_chart(history: list[dict], epochs: int) -> LossChart | None:
    """Training and validation loss against the epoch, scaled to the chart; None before the first epoch.

    The x axis spans all ``epochs`` the job will run, so a running job's curve grows to the right. The
    y axis is logarithmic once the loss spans two decades (as a converging loss soon does), so the
    late epochs are not a flat line at the bottom.
    """
    if not history:
        return None
    left, top = CHART_LEFT, CHART_TOP
    right, bottom = CHART_WIDTH - CHART_RIGHT, CHART_HEIGHT - CHART_BOTTOM
    columns = {key: [(r["epoch"], _number(r.get(key))) for r in history] for key, _ in SERIES}
    values = [v for points in columns.values() for _, v in points if v is not None]
    low, high = min(values), max(values)
    logarithmic = low > 0 and high / low >= LOG_SCALE_RATIO
    scale = math.log10 if logarithmic else float
    scaled_low, scaled_high = scale(low), scale(high)
    if scaled_high == scaled_low:  # a flat curve sits in the middle rather than dividing by zero
        scaled_low, scaled_high = scaled_low - 0.5, scaled_high + 0.5
    last_epoch = max(epochs, history[-1]["epoch"], 2)

    def x(epoch):
        return left + (epoch - 1) / (last_epoch - 1) * (right - left)

    def y(value):
        return bottom - (scale(value) - scaled_low) / (scaled_high - scaled_low) * (bottom - top)

    pixels = right - left

    def pixel_column(epoch):
        return min(int(x(epoch) - left), pixels - 1)

    series = []
    for key, label in SERIES:
        points = [(epoch, value) for epoch, value in columns[key] if value is not None]
        if not points:
            continue
        drawn = thinned(points, pixel_column, pixels)
        path = " ".join(f"{'L' if i else 'M'}{x(e):.2f},{y(v):.2f}" for i, (e, v) in enumerate(drawn))
        series.append(Series(key, label, path, len(drawn), len(points), points[-1][1]))
    middle = math.sqrt(low * high) if logarithmic else (low + high) / 2
    y_ticks = [(y(v), f"{v:.3g}") for v in (high, middle, low)]
    x_ticks = [(x(1), "1"), (x(last_epoch), str(last_epoch))]
    return LossChart(CHART_WIDTH, CHART_HEIGHT, series, y_ticks, x_ticks, (left, top, right, bottom), logarithmic)


@dataclass(frozen=True)
class DiagramBox:
    x: float
    y: float
    kind: str  # "io" for the input and output ends, "linear" or "activation" for layers
    title: str
    detail: str


@dataclass(frozen=True)
class Diagram:
    width: float
    height: float
    boxes: list[DiagramBox]
    arrows: list[tuple[float, float, float]]  # x from, x to, y
    box_width: float = BOX_WIDTH
    box_height: float = BOX_HEIGHT


def architecture_diagram(layers: list[dict], inputs: int, outputs: int) -> Diagram:
    """Input, each layer of a model document, output: boxes joined by arrows."""
    entries = [("io", "input", counted(inputs, "feature"))]
    for layer in layers:
        if "in_features" in layer and "out_features" in layer:
            parameters = layer["in_features"] * layer["out_features"] + layer["out_features"]
            detail = f"{layer['in_features']} → {layer['out_features']} · {parameters} params"
            entries.append(("linear", layer["type"], detail))
        else:
            entries.append(("activation", layer["type"], "elementwise"))
    entries.append(("io", "output", counted(outputs, "value")))
    y = DIAGRAM_MARGIN
    boxes = [DiagramBox(DIAGRAM_MARGIN + i * (BOX_WIDTH + BOX_GAP), y, kind, title, detail)
             for i, (kind, title, detail) in enumerate(entries)]
    arrows = [(box.x + BOX_WIDTH, following.x - 4, y + BOX_HEIGHT / 2) for box, following in zip(boxes, boxes[1:])]
    width = boxes[-1].x + BOX_WIDTH + DIAGRAM_MARGIN
    return Diagram(width, BOX_HEIGHT + 2 * DIAGRAM_MARGIN, boxes, arrows)


def architecture_summary(layers: list[dict], inputs: int) -> str:
    """``2 → Linear 3 → Tanh → Linear 1 → Sigmoid``: the input width, then each layer (a Linear with its
    output width)."""
    parts = [str(inputs)]
    for layer in layers:
        parts.append(f"{layer['type']} {layer['out_features']}" if "out_features" in layer else layer["type"])
    return " → ".join(parts)
