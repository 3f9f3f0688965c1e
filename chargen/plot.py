"""Plots of a series run: figures through matplotlib (the `plot` extra) and a text plot for the terminal.

A figure's format follows its file's suffix (.png, .svg, .pdf: whatever matplotlib's backend writes),
so a user can also restyle it; the text plot needs nothing beyond numpy and is drawn on stderr.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chargen.checkpoint import atomic_write_bytes
from chargen.errors import UserError

FORMATS = ("png", "svg", "pdf")
COLORS = {"history": "#3c5a96", "forecast": "#e67814", "truth": "#28963c"}
INSTALL_HINT = 'pip install "chargen[plot]"'


@dataclass
class Line:
    """One polyline: x and y in data units, its legend label, colour (figure) and mark (text plot)."""

    x: np.ndarray
    y: np.ndarray
    label: str
    color: str = COLORS["history"]
    mark: str = "."


@dataclass
class Band:
    """A shaded range between two curves over x, such as a prediction interval (figures only)."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    label: str
    color: str = COLORS["forecast"]
    alpha: float = 0.2


@dataclass
class Figure:
    """What one plot shows: lines, shaded bands under them, a title."""

    lines: list[Line]
    bands: list[Band] = field(default_factory=list)
    title: str = ""


# -- files ------------------------------------------------------------------------------------------
def figure_path(path: str | Path) -> Path:
    """The path of a figure to write, checked before any work: a format matplotlib writes, and matplotlib
    installed (one line saying how to install it otherwise)."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise UserError(f"--plot {path}: give a file name ending in .png, .svg or .pdf (the format follows "
                        "the suffix)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return path


def write_figure(path: str | Path, figure: Figure) -> Path:
    """Draw the figure with matplotlib and write it (atomically) in the format of the path's suffix."""
    path = figure_path(path)
    from matplotlib.figure import Figure as MplFigure  # no pyplot: no global state, no display needed

    fig = MplFigure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for band in figure.bands:
        ax.fill_between(band.x, band.low, band.high, color=band.color, alpha=band.alpha, linewidth=0,
                        label=band.label)
    for line in figure.lines:
        ax.plot(line.x, line.y, color=line.color, linewidth=1.4, label=line.label)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # backtest forecasts are many lines under one label
    ax.legend(unique.values(), unique.keys(), loc="upper left", frameon=False)
    ax.set_title(figure.title)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lower().lstrip("."), dpi=110)
    atomic_write_bytes(path, buffer.getvalue())  # a full disk or an unwritable folder: one line naming the file
    return path


# -- text ---------------------------------------------------------------------------------------------
def _label(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


def text_plot(lines: list[Line], width: int = 72, height: int = 12) -> str:
    """A small character plot of the lines (each with its mark), the y range on the left, a legend below."""
    xs = np.concatenate([line.x for line in lines]).astype(np.float64)
    ys = np.concatenate([line.y for line in lines]).astype(np.float64)
    x_lo, x_hi, y_lo, y_hi = xs.min(), xs.max(), ys.min(), ys.max()
    grid = [[" "] * width for _ in range(height)]
    to_col = lambda x: np.round((x - x_lo) / max(x_hi - x_lo, 1e-12) * (width - 1)).astype(int)
    to_row = lambda y: np.round((y_hi - y) / max(y_hi - y_lo, 1e-12) * (height - 1)).astype(int)
    for line in lines:
        x, y = np.asarray(line.x, dtype=np.float64), np.asarray(line.y, dtype=np.float64)
        cols, rows = to_col(x), to_row(y)
        previous = None
        for c in range(cols.min(), cols.max() + 1):
            # Every point that falls in this column, joined to the previous column's last point.
            here = rows[cols == c]
            if len(here) == 0:
                here = to_row(np.interp(x_lo + c / max(width - 1, 1) * (x_hi - x_lo), x, y)).reshape(1)
            span = [*here, previous] if previous is not None else list(here)
            for r in range(min(span), max(span) + 1):
                grid[r][c] = line.mark
            previous = here[-1]
    hi, lo = _label(y_hi), _label(y_lo)
    margin = max(len(hi), len(lo))
    out = []
    for r, row in enumerate(grid):
        label = hi if r == 0 else lo if r == height - 1 else ""
        out.append(f"{label:>{margin}} |" + "".join(row).rstrip())
    legend = "   ".join(f"{mark} {label}" for label, mark in dict((l.label, l.mark) for l in lines).items())
    out.append(" " * margin + f" +{'-' * width}")
    out.append(" " * margin + f"  x {_label(x_lo)} .. {_label(x_hi)}    {legend}")
    return "\n".join(out)
