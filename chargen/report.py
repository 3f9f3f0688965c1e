"""The inspector's report: what the model did on a text (`Recording`) and the blocks that show it.

`chargen.inspect` records the model and builds a `Report`, a list of blocks: headings, plain lines,
text shaded character by character on a colour scale, and legends for the scales. Two renderers draw
the same blocks: the terminal (`inspect.render_terminal`, with rich) and the page
(`inspect_html.page`). Both import this module and neither imports the other.

The scales: surprise runs white (0 bits: the model was sure) through yellow and orange to dark red
(8 bits and more: p <= 1/256); a unit runs blue (-1) through white (0) to red (+1), the range of a
tanh output. Without colour, characters at or above a threshold are underlined instead: 4 bits
(p < 1/16), or a unit at 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chargen.display import escape
from chargen.vocab import UNK_ID, Vocab

# Bits at or above which a character counts as surprising when colour is off (p < 1/16).
SURPRISING_BITS = 4.0
# Unit values at or above which a character is marked when colour is off.
ACTIVE_VALUE = 0.5

# Colour scales: (value, RGB) stops, linearly interpolated, clipped at both ends.
SURPRISE_STOPS = ((0.0, (255, 255, 255)), (1.0, (255, 240, 175)), (2.0, (254, 209, 118)),
                  (4.0, (250, 140, 60)), (6.0, (224, 60, 40)), (8.0, (150, 0, 38)))
UNIT_STOPS = ((-1.0, (49, 104, 196)), (0.0, (255, 255, 255)), (1.0, (214, 47, 39)))


@dataclass
class Recording:
    """What the model did on a text, one row per character."""

    text: str
    ids: np.ndarray                      # (N,) vocabulary ids (0 = <unk>)
    bits: np.ndarray                     # (N,) bits spent predicting each character; NaN for the first
    cell: str
    layers: int
    hidden: int
    top_ids: np.ndarray | None = None    # (N, 5) the model's likeliest characters before each one (row 0: -1)
    top_probs: np.ndarray | None = None  # (N, 5) their probabilities
    states: np.ndarray | None = None     # (N, S) every unit after reading each character (see inspect.unit_name)

    @property
    def units_per_layer(self) -> int:
        """Units recorded per layer: h, plus c for an LSTM."""
        return self.hidden * (2 if self.cell == "lstm" else 1)

    def total_bits(self) -> float:
        """Bits over every predicted character (all but the first)."""
        return float(np.sum(self.bits[1:], dtype=np.float64))

    def bits_per_char(self) -> float:
        """The mean over the predicted characters: `chargen eval`'s bits/char on one stream."""
        return self.total_bits() / max(len(self.text) - 1, 1)


def unknown_notice(vocab: Vocab, text: str, ids: np.ndarray) -> str | None:
    """The notice naming the characters of `text` the model does not know (None when it knows them all)."""
    count = int((ids == UNK_ID).sum())
    if not count:
        return None
    return (f"{count} character{'s' if count > 1 else ''} unknown to the model (fed as <unk>): "
            f"{' '.join(repr(c) for c in vocab.unknown(text)[:10])}")


# -- the blocks -------------------------------------------------------------------------------
@dataclass
class Shaded:
    """Characters [start, end) of the recording, each with a colour and the value it stands for."""

    start: int
    end: int
    values: np.ndarray               # (end - start,) what each colour stands for (bits, a unit); NaN = none
    stops: tuple                     # the colour scale (SURPRISE_STOPS, UNIT_STOPS), applied to values / scale
    label: str                       # what the values are: "bits", "2:c117", "inside quotes"
    mark_at: float                   # without colour, values / scale at or above this are underlined
    scale: float = 1.0               # e.g. a cell state's largest |c| in the text, so it spans the scale
    prefix: str = ""                 # plain text before the shaded text on its line
    inline: bool = False             # one line: newlines shown as ↵ (span lists)
    indent: str = ""                 # put at the start of every line of a multi-line block
    context: tuple[int, int] | None = None  # inline: the shaded span inside [start, end); the rest dim

    def rgb(self) -> np.ndarray:
        """(end - start, 3) uint8 colours; rows of NaN values are white (and not drawn)."""
        return colours(self.values / self.scale, self.stops)

    def marked(self) -> np.ndarray:
        """(end - start,) bool: the characters underlined when colour is off."""
        with np.errstate(invalid="ignore"):
            return self.values / self.scale >= self.mark_at


@dataclass
class Heading:
    """A bold line."""

    text: str


@dataclass
class PlainLine:
    """A line of plain text (a figure, a table row, a caption): no colour, not bold."""

    text: str


@dataclass
class Legend:
    """A colour scale with labelled swatches: (value, label) pairs, and what marks it when colour is off."""

    title: str
    stops: tuple
    swatches: list[tuple[float, str]]
    emphasis_note: str


Block = Shaded | Heading | PlainLine | Legend


@dataclass
class Report:
    """Everything one `inspect` shows, in order."""

    title: str
    recording: Recording
    vocab_chars: list[str]           # id -> character, for the page's top-5 lists
    blocks: list[Block] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def add(self, block: Block) -> None:
        self.blocks.append(block)


# -- colour scales ----------------------------------------------------------------------------
def colours(values: np.ndarray, stops: tuple) -> np.ndarray:
    """Map values to RGB on a piecewise-linear scale (NaN as 0; renderers leave NaN uncoloured)."""
    xs = np.array([s[0] for s in stops])
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    rgb = np.stack([np.interp(v, xs, [s[1][ch] for s in stops]) for ch in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def text_colour(rgb: np.ndarray) -> np.ndarray:
    """Black or white text for each background, whichever is more readable (ITU-R BT.601 luma)."""
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.where(luma[:, None] >= 140, 0, 255).repeat(3, axis=1).astype(np.uint8)


def surprise_legend() -> Legend:
    """The heat-map's scale: bits 0 to 8+, and the underline that stands in for colour."""
    return Legend("bits spent on each character (-log2 of the probability the model gave it)", SURPRISE_STOPS,
                  [(0, "0"), (1, "1"), (2, "2"), (4, "4"), (6, "6"), (8, "8+ bits")],
                  f"underlined: {SURPRISING_BITS:g} bits or more (p < 1/{2 ** SURPRISING_BITS:g})")


def unit_legend(what: str) -> Legend:
    """A unit's scale, -1 to +1 (`what` says what is coloured), and the underline that stands in for colour."""
    return Legend(what, UNIT_STOPS, [(-1, "-1"), (-0.5, "-0.5"), (0, "0"), (0.5, "+0.5"), (1, "+1")],
                  f"underlined: {ACTIVE_VALUE:g} or more")


def visible(ch: str, inline: bool = False) -> str:
    """A character of a shaded block as displayed: `display.escape`d, tabs too (each character is one
    coloured cell, and a tab's width would depend on its column).

    A newline stays a newline (a space before it carries its colour), or is ↵ in an inline block.
    """
    if ch == "\n":
        return "\u21b5" if inline else " \n"
    return escape(ch, keep="")
