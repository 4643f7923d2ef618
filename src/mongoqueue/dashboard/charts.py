"""Time charts drawn as SVG on the server (pure functions; no JavaScript).

:func:`time_chart` takes any series ``{name: [(epoch seconds, value), ...]}``
over a time window and lays it out with a labelled time axis (UTC clock times)
and a value axis with round ticks (0, 2, 4, ... or 0, 100, 200, ...), as lines or as bars of a
fixed bucket (per-minute counts). The template ``_chart.html`` draws it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["COLOURS", "Chart", "scale", "time_chart"]

#: The colour of each state's series on every chart.
COLOURS = {
    "waiting": "#2f6fb0",
    "delayed": "#b07a1a",
    "running": "#2a9a5b",
    "failed": "#c0392b",
    "completed": "#2a9a5b",
    "retried": "#b07a1a",
}
_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Line:
    name: str
    colour: str
    points: str
    last: float  # the latest value, for the legend


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int  # plot area
    top: int
    plot_width: int
    plot_height: int
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    lines: list[Line]
    bars: list[Bar]
    unit: str
    empty: bool

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height

    @property
    def right(self) -> int:
        return self.left + self.plot_width


def scale(peak: float) -> tuple[float, int]:
    """A value axis for ``peak``: a round step (1, 2, 5 times a power of ten, at least 1)
    and a count of steps (at most 5) whose top reaches ``peak``: 3 gives 0-1-2-3,
    358 gives 0 to 400 by 100."""
    step = 1.0
    while peak / step > 5:
        for factor in (2, 2.5, 2):  # 1 -> 2 -> 5 -> 10 -> 20 -> 50 ...
            step *= factor
            if peak / step <= 5:
                break
    return step, max(1, math.ceil(peak / step))


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def time_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    start: float,
    end: float,
    *,
    unit: str,
    bars: str | None = None,
    bucket: float = 60.0,
    width: int = 720,
    height: int = 200,
) -> Chart:
    """Lay out ``series`` between ``start`` and ``end`` (epoch seconds).

    With ``bars`` set to a series name, that series is drawn as bars, one per
    ``bucket`` seconds starting at each point's time; every other series is a line.
    """
    left, top, right_margin, bottom_margin = 48, 10, 12, 24
    plot_w, plot_h = width - left - right_margin, height - top - bottom_margin
    span = max(end - start, 1.0)
    values = [v for points in series.values() for _, v in points]
    step_value, steps = scale(max(values, default=0.0))
    peak = step_value * steps

    def x_at(t: float) -> float:
        return round(left + (min(max(t, start), end) - start) / span * plot_w, 1)

    def y_at(v: float) -> float:
        return round(top + plot_h - v / peak * plot_h, 1)

    step = next((s for s in _TIME_STEPS if span / s <= 6), _TIME_STEPS[-1])
    x_ticks = []
    t = math.ceil(start / step) * step
    while t <= end:
        label = time.strftime("%H:%M" if step < 86400 else "%m-%d", time.gmtime(t))
        x_ticks.append(Tick(x_at(t), label))
        t += step
    y_ticks = [Tick(y_at(step_value * i), _number(step_value * i)) for i in range(steps + 1)]

    lines, drawn = [], []
    for name, points in series.items():
        if name == bars:
            for at, value in points:
                if value <= 0 or at + bucket < start or at > end:
                    continue  # an empty bucket draws no bar
                x0, x1 = x_at(at), x_at(at + bucket)
                y = y_at(value)
                minute = time.strftime("%H:%M", time.gmtime(at))
                drawn.append(
                    Bar(x0, y, max(round(x1 - x0 - 1, 1), 1.0), round(top + plot_h - y, 1),
                        f"{minute} UTC: {_number(value)} {unit}")
                )  # fmt: skip
            continue
        inside = [(at, v) for at, v in points if start <= at <= end]
        text = " ".join(f"{x_at(at)},{y_at(v)}" for at, v in inside)
        lines.append(Line(name, COLOURS.get(name, "#555"), text, inside[-1][1] if inside else 0))
    return Chart(
        width,
        height,
        left,
        top,
        plot_w,
        plot_h,
        x_ticks,
        y_ticks,
        lines,
        drawn,
        unit,
        empty=not values,
    )
