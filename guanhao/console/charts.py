"""Server-rendered SVG charts: the geometry of column and bar charts, computed here and drawn by
`macros/charts.html` (no JavaScript). Colours are Semi's chart palette (`--semi-color-data-N`); every chart
comes with its figures as a table, so nothing is said by colour or shape alone."""

import math
from dataclasses import dataclass, field

WIDTH = 480
HEIGHT = 220
LEFT = 40  # room for the value axis
BOTTOM = 28  # room for the category labels
TOP = 12


def nice_max(value: int) -> int:
    """A round top for the value axis (1, 2, 5 × 10ⁿ), at least 1."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    value: int
    colour: int
    label: str


@dataclass
class Chart:
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    ticks: list[tuple[float, int]] = field(default_factory=list)  # (y or x, value)
    labels: list[tuple[float, float, str]] = field(default_factory=list)  # (x, y, text)
    legend: list[tuple[int, str]] = field(default_factory=list)  # (colour, name)


def columns(categories: list[str], series: list[tuple[str, list[int]]], *, label_every: int = 1) -> Chart:
    """Stacked columns: one per category, one segment per series (bottom first)."""
    chart = Chart(WIDTH, HEIGHT, legend=[(i, name) for i, (name, _) in enumerate(series)])
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    top = nice_max(max(totals, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / max(len(categories), 1)
    bar_w = max(4.0, slot * 0.6)
    for value in range(0, top + 1, max(1, top // 5)):  # top is 1, 2 or 5 × 10ⁿ: whole steps
        chart.ticks.append((TOP + plot_h - plot_h * value / top, value))
    for i, category in enumerate(categories):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base: float = TOP + plot_h
        for colour, (name, values) in enumerate(series):
            h = plot_h * values[i] / top
            if values[i]:
                chart.rects.append(Rect(x, base - h, bar_w, h, values[i], colour, f"{category} {name}"))
            base -= h
        if i % label_every == 0:
            chart.labels.append((x + bar_w / 2, HEIGHT - 8, category))
    return chart


def bars(rows: list[tuple[str, int]], *, label_width: int = 120) -> Chart:
    """Horizontal bars, one per row (label, value), each its own colour."""
    row_h = 32
    height = max(row_h * len(rows) + TOP, row_h + TOP)
    chart = Chart(WIDTH, height)
    top = nice_max(max((v for _, v in rows), default=0))
    plot_w = WIDTH - label_width - 40
    for i, (label, value) in enumerate(rows):
        y = TOP + row_h * i
        chart.rects.append(Rect(label_width, y, max(plot_w * value / top, 1 if value else 0), 20, value, i % 10, label))
        chart.labels.append((label_width - 8, y + 15, label))
    return chart
