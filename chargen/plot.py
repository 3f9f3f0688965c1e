"""Line plots without a plotting library: a PNG rasteriser (numpy + zlib) and a text plot for the terminal.

Why not matplotlib: it is not among the project's packages, and a forecast plot needs only lines, a
grid, tick labels and a legend. The PNG is RGB, 8 bits, one zlib stream (PNG spec, ISO/IEC 15948);
text is drawn from a built-in 5x7 bitmap font (lower-case letters, digits and a few signs).
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chargen.checkpoint import atomic_write_bytes
from chargen.errors import UserError

# 5x7 glyphs: 7 rows, each a 5-bit row pattern as two hex digits (bit 4 = leftmost pixel).
FONT = {
    "0": "0e11131519110e", "1": "040c040404040e", "2": "0e11010204081f", "3": "1f02040201110e",
    "4": "02060a121f0202", "5": "1f101e0101110e", "6": "0608101e11110e", "7": "1f010204080808",
    "8": "0e11110e11110e", "9": "0e11110f01020c", "-": "0000001f000000", ".": "00000000000c0c",
    "+": "0004041f040400", "a": "00000e010f110f", "b": "1010161911111e", "c": "00000e1010110e",
    "d": "01010d1311110f", "e": "00000e111f100e", "f": "0609081c080808", "g": "000f11110f010e",
    "h": "10101619111111", "i": "04000c0404040e", "j": "0200060202120c", "k": "10101214181412",
    "l": "0c04040404040e", "m": "00001a15151111", "n": "00001619111111", "o": "00000e1111110e",
    "p": "00001e111e1010", "q": "00000d130f0101", "r": "00001619101010", "s": "00000e100e011e",
    "t": "08081c08080906", "u": "0000111111130d", "v": "00001111110a04", "w": "0000111115150a",
    "x": "0000110a040a11", "y": "000011110f010e", "z": "00001f0204081f", "(": "02040808080402",
    ")": "08040202020408", "=": "00001f001f0000", ",": "000000000c0408", ":": "000c0c000c0c00",
    "/": "00010204081000",
}
SCALE = 2                      # font pixels per glyph pixel
ADVANCE = 6 * SCALE            # one character cell, spacing included
COLORS = {"history": (60, 90, 150), "forecast": (230, 120, 20), "truth": (40, 150, 60)}


@dataclass
class Line:
    """One polyline: x and y in data units, its legend label, colour (PNG) and mark (text plot)."""

    x: np.ndarray
    y: np.ndarray
    label: str
    color: tuple[int, int, int] = (60, 90, 150)
    mark: str = "."


# -- PNG ------------------------------------------------------------------------------------------
def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG (filter 0 on every row)."""
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + chunk(b"IEND", b""))


def nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return np.arange(first, hi + step * 1e-6, step)


def _label(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


class Canvas:
    """An RGB image with the primitives a line plot needs."""

    def __init__(self, width: int, height: int):
        self.rgb = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        h, w, _ = self.rgb.shape
        self.rgb[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = color

    def text(self, x: int, y: int, text: str, color=(40, 40, 40)) -> None:
        """Draw text with its top-left corner at (x, y); letters are drawn lower-case."""
        block = np.ones((SCALE, SCALE), dtype=bool)
        for k, ch in enumerate(text.lower()):
            code = FONT.get(ch)
            if code is None:
                continue  # space, or a sign the font lacks
            bits = np.array([[(int(code[2 * r:2 * r + 2], 16) >> (4 - c)) & 1 for c in range(5)]
                             for r in range(7)], dtype=bool)
            ys, xs = np.nonzero(np.kron(bits, block))
            xs, ys = xs + x + k * ADVANCE, ys + y
            keep = (xs >= 0) & (xs < self.rgb.shape[1]) & (ys >= 0) & (ys < self.rgb.shape[0])
            self.rgb[ys[keep], xs[keep]] = color

    def polyline(self, px: np.ndarray, py: np.ndarray, color, width: int = 2) -> None:
        """Connect the points (pixel coordinates) with straight segments `width` pixels thick."""
        if len(px) == 1:
            px, py = np.repeat(px, 2), np.repeat(py, 2)
        dx, dy = np.diff(px), np.diff(py)
        samples = np.ceil(np.maximum(np.abs(dx), np.abs(dy))).astype(int) + 1  # one per pixel step
        seg = np.repeat(np.arange(len(dx)), samples)
        t = np.concatenate([np.linspace(0, 1, n) for n in samples])
        xs = np.round(px[seg] + t * dx[seg]).astype(int)
        ys = np.round(py[seg] + t * dy[seg]).astype(int)
        h, w, _ = self.rgb.shape
        for ox in range(width):
            for oy in range(width):
                x, y = xs + ox - width // 2, ys + oy - width // 2
                keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                self.rgb[y[keep], x[keep]] = color


def render(lines: list[Line], title: str = "", width: int = 900, height: int = 420) -> np.ndarray:
    """The plot as an (H, W, 3) uint8 image: grid, tick labels, the lines, a legend and a title."""
    xs = np.concatenate([line.x for line in lines]).astype(np.float64)
    ys = np.concatenate([line.y for line in lines]).astype(np.float64)
    x_lo, x_hi = float(xs.min()), float(xs.max())
    y_lo, y_hi = float(ys.min()), float(ys.max())
    pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 1.0)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_ticks = nice_ticks(y_lo, y_hi)
    x_ticks = nice_ticks(x_lo, x_hi, 8)
    left = max(len(_label(v)) for v in y_ticks) * ADVANCE + 16
    top, bottom, right = 62, 34, 20  # the title, then the legend, above the plot
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (left + (np.asarray(x, float) - x_lo) / (x_hi - x_lo) * (plot_w - 1),
                top + (y_hi - np.asarray(y, float)) / (y_hi - y_lo) * (plot_h - 1))

    canvas = Canvas(width, height)
    for v in y_ticks:
        _, py = to_px(x_lo, v)
        canvas.rect(left, int(py), left + plot_w, int(py) + 1, (225, 225, 225))
        label = _label(v)
        canvas.text(left - 8 - len(label) * ADVANCE, int(py) - 7, label, (90, 90, 90))
    for v in x_ticks:
        px, _ = to_px(v, y_lo)
        canvas.rect(int(px), top, int(px) + 1, top + plot_h, (225, 225, 225))
        label = _label(v)
        canvas.text(int(px) - len(label) * ADVANCE // 2, top + plot_h + 10, label, (90, 90, 90))
    for x0, y0, x1, y1 in ((left, top, left + plot_w, top + 1), (left, top + plot_h - 1, left + plot_w, top + plot_h),
                           (left, top, left + 1, top + plot_h), (left + plot_w - 1, top, left + plot_w, top + plot_h)):
        canvas.rect(x0, y0, x1, y1, (120, 120, 120))
    for line in lines:
        canvas.polyline(*to_px(line.x, line.y), line.color)

    canvas.text(left, 10, title)
    seen: dict[str, tuple] = {}
    for line in lines:
        seen.setdefault(line.label, line.color)
    x = width - right
    for label, color in reversed(list(seen.items())):
        x -= len(label) * ADVANCE + 34
        canvas.rect(x, 38, x + 22, 42, color)
        canvas.text(x + 28, 33, label)
    return canvas.rgb


def png_path(path: str | Path) -> Path:
    """The path of a PNG to write; a one-line error unless it ends in .png (checked before any work)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"--plot {path}: the plot is a PNG image; give a file name ending in .png")
    return path


def write_png(path: str | Path, lines: list[Line], title: str = "") -> Path:
    """Render the lines and write them to a .png file; returns the path."""
    path = png_path(path)
    data = png_bytes(render(lines, title))
    atomic_write_bytes(path, data)  # a full disk or an unwritable folder: one line naming the file
    return path


# -- text ---------------------------------------------------------------------------------------------
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
