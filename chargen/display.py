"""Showing model text in a terminal safely: one escaping rule, one colour decision, one probability scale.

The commands that show text to a person go through here (`interactive`, `inspect` and its page, the
`series` backtest table), so they escape the same characters and agree on when there is colour.
(`generate` writes the raw text: its standard output is the product, often a file.)

- Escaping: a model learns whatever its corpus holds, log files with ESC sequences included. Written
  raw, an ESC could move the cursor or retitle the window, a CR overwrite the line, and a right-to-left
  override reorder what is displayed (the "Trojan Source" trick, CVE-2021-42574). `escape` shows such
  characters as Python escapes (`\\x1b`, `\\r`, `\\u202e`); everything else is written as it is.
- Colour: decided by rich's Console, as for every rich output: none into a pipe or file, none with
  NO_COLOR set (https://no-color.org), none with TERM=dumb.
- Painting: colours are rich style names; `sgr` asks rich once for the SGR codes it writes for one, and
  `paint` frames text in them exactly as rich does. `interactive` streams one character at a time: a
  Console.print per character measured 0.48 ms on the (busy) 2-core CPU, more than sampling the character
  takes (0.18 ms at ~5,600 characters a second), so it writes the codes itself: one write per character.

Importing this module imports rich.style (a few ms, for the bands' codes), never rich.console or
torch: `import chargen.interactive` stays light.
"""
from __future__ import annotations

import functools
import sys
import unicodedata
from typing import TextIO

# The bidirectional marks (ALM, LRM, RLM), embeddings and overrides (LRE RLE PDF LRO RLO) and
# isolates (LRI RLI FSI PDI): invisible format characters that change the order text is shown in.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Control characters (C0, DEL, C1) and the line and paragraph separators (U+2028, U+2029).
_ESCAPED_CATEGORIES = frozenset(("Cc", "Zl", "Zp"))
RESET = "\x1b[0m"  # SGR 0: back to the terminal's own colours


def escape(text: str, keep: str = "\n\t") -> str:
    """`text` as it may be written to a terminal: control characters, line and paragraph separators and
    bidirectional controls shown as `\\x1b`, `\\r`, `\\u2028`, `\\u202e`, except those in `keep` (the
    layout characters the caller wants to take effect); everything else as it is."""
    if text.isprintable():  # none of those characters (all are non-printable): the common case, fast
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if ch not in keep and (unicodedata.category(ch) in _ESCAPED_CATEGORIES or ch in BIDI_CONTROLS)
                   else ch for ch in text)


# -- colour -----------------------------------------------------------------------------------------
def make_console(file: TextIO | None = None):
    """A rich Console for model text: no markup, no highlighting, no emoji codes, no wrapping.

    Whether it colours is rich's decision from the stream and the environment (see `colour_on`).
    """
    from rich.console import Console

    return Console(file=file or sys.stdout, markup=False, highlight=False, emoji=False, soft_wrap=True)


def colour_on(console) -> bool:
    """Whether `console` shows colours: a terminal (or FORCE_COLOR), not TERM=dumb, no NO_COLOR."""
    return console.color_system is not None and not console.no_color


def terminal_has_colour(stream: TextIO) -> bool:
    """Whether text written to `stream` should be coloured, decided as for every rich output."""
    return colour_on(make_console(stream))


@functools.cache
def sgr(style: str) -> str:
    """The SGR parameters rich writes for `style` on a 16-colour terminal: "cyan" -> "36", "bold" -> "1".

    Rich renders a style as ESC [ parameters m, the text, then RESET; the parameters are taken from that.
    """
    from rich.color import ColorSystem
    from rich.style import Style

    rendered = Style.parse(style).render("_", color_system=ColorSystem.STANDARD)
    return rendered.removeprefix("\x1b[").partition("m_")[0]


def switch(parameters: str) -> str:
    """The escape sequence that switches the terminal to SGR `parameters` (from `sgr`)."""
    return f"\x1b[{parameters}m"


def paint(text: str, parameters: str | None) -> str:
    """`text` in SGR `parameters`, reset after it, as rich writes a styled piece; unchanged for None."""
    return f"{switch(parameters)}{text}{RESET}" if parameters else text


# -- the probability scale --------------------------------------------------------------------------
# Bands of the probability the model gave a character (interactive's /probs): (lowest probability of
# the band, SGR colour, legend label), the colours named as rich names them.
PROB_BANDS = tuple((low, sgr(colour), label) for low, colour, label in (
    (0.8, "green", "80-100%"),
    (0.5, "cyan", "50-80%"),
    (0.2, "yellow", "20-50%"),
    (0.05, "magenta", "5-20%"),
    (0.0, "red", "under 5%"),
))


def prob_colour(p: float) -> str:
    """The SGR colour of the band a probability falls in (`PROB_BANDS`)."""
    for low, colour, _ in PROB_BANDS:
        if p >= low:
            return colour
    return PROB_BANDS[-1][1]


def prob_legend() -> str:
    """The probability legend: each band's label in its colour."""
    return "probability the model gave each character: " + "  ".join(
        paint(label, colour) for _, colour, label in PROB_BANDS)
