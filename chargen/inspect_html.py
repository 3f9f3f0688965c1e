"""The inspector's report as one self-contained HTML page: no network resources, works offline.

Each character is a span with its background colour inline. Hovering a character shows, in the
box at the top right, the probability the model gave it, its top 5 predictions there, and the
value of the unit that colours the text; on opening, the box shows the most surprising character.
Model text only ever reaches the page escaped (html.escape) or through textContent in the script,
and its control and bidirectional characters are shown as escapes (`report.visible`), as in the terminal.
It draws the blocks of report.py; chargen.inspect builds them and imports this module only to write a page.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from chargen.checkpoint import atomic_write_bytes
from chargen.report import Heading, Legend, PlainLine, Report, Shaded, colours, text_colour, visible
from chargen.vocab import UNK_ID

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; background: #fff; margin: 1.5em 24em 4em 1.5em; }
h1 { font-size: 1.25em; } h2 { font-size: 1.05em; margin: 1.2em 0 .3em; }
.text { font: 14px/1.6 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre-wrap;
        overflow-wrap: anywhere; margin: .2em 0; }
.text span[data-i]:hover { outline: 1px solid #000; }
.indent { margin-left: 2em; }
.dim { color: #999; }
.swatch { font-family: monospace; padding: 0 .5em; margin-right: .25em; white-space: nowrap; }
.notice { color: #a33; }
#info { position: fixed; top: 1em; right: 1em; width: 21em; padding: .6em .8em; background: #f7f7f7;
        border: 1px solid #bbb; border-radius: 4px; font: 13px/1.5 ui-monospace, monospace; white-space: pre; }
#info .head { font-weight: bold; }
"""

SCRIPT = """
const D = JSON.parse(document.getElementById("data").textContent);
const info = document.getElementById("info");
const unknown = new Set(D.unknown);
const fmt = p => p >= 0.001 ? p.toFixed(4) : p.toExponential(2);
function line(text, cls) {
  const d = document.createElement("div");
  d.textContent = text;
  if (cls) d.className = cls;
  return d;
}
function show(i, b) {
  info.replaceChildren(line("character " + (i + 1) + ": " + D.shown[i], "head"));
  if (unknown.has(i)) info.append(line("unknown to the model: fed as <unk>"));
  const bits = D.bits[i];
  info.append(bits === null ? line("the first character: nothing before it to predict it from")
                            : line("probability " + fmt(Math.pow(2, -bits)) + " (" + bits.toFixed(2) + " bits)"));
  const top = D.top[i];
  if (top) {
    info.append(line("the model's top " + top.length + " here:"));
    for (const [c, p] of top) info.append(line("  " + c.padEnd(6) + fmt(p)));
  }
  const block = D.blocks[b];
  if (block && block.label !== "bits" && i >= block.start && i < block.start + block.values.length) {
    const v = block.values[i - block.start];
    info.append(line(block.label + " = " + (v === null ? "-" : v.toFixed(3))));
  }
}
document.addEventListener("mouseover", e => {
  const s = e.target.closest("[data-i]");
  if (s) show(+s.dataset.i, +s.parentElement.dataset.b);
});
show(D.focus, D.focusBlock);
"""


def shown_char(ch: str) -> str:
    """A character as the hover box lists it: visible space and newline, escaped controls."""
    return {" ": "\u2423", "\n": "\u21b5"}.get(ch) or visible(ch, inline=True)


def _rgb(c: np.ndarray) -> str:
    return "#%02x%02x%02x" % tuple(int(x) for x in c)


def _shaded_html(block: Shaded, number: int, text: str) -> str:
    """One shaded block: a div of spans, each carrying its character's index for the hover box."""
    bg = block.rgb()
    fg = text_colour(bg)
    parts = [html.escape(block.prefix)]
    for k in range(block.end - block.start):
        i = block.start + k
        shown = html.escape(visible(text[i], block.inline))
        newline = shown == " \n"
        if newline:  # the newline's colour on a space at the end of its line
            shown = " "
        if block.context is not None and not block.context[0] <= k < block.context[1]:
            parts.append(f'<span data-i="{i}" class="dim">{shown}</span>')
        elif np.isnan(block.values[k]):
            parts.append(f'<span data-i="{i}">{shown}</span>')
        else:
            parts.append(f'<span data-i="{i}" style="background:{_rgb(bg[k])};color:{_rgb(fg[k])}">{shown}</span>')
        if newline:
            parts.append("\n")
    classes = "text indent" if block.indent else "text"
    return f'<div class="{classes}" data-b="{number}">{"".join(parts)}</div>'


def _legend_html(block: Legend) -> str:
    bg = colours(np.array([v for v, _ in block.swatches]), block.stops)
    swatches = "".join(f'<span class="swatch" style="background:{_rgb(b)};color:{_rgb(f)}">{html.escape(label)}</span>'
                       for (_, label), b, f in zip(block.swatches, bg, text_colour(bg)))
    return f"<p>{html.escape(block.title)}: {swatches}</p>"


def _rounded(values: np.ndarray, digits: int) -> list:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in values]


def page(report: Report) -> str:
    """The whole page as a string."""
    rec = report.recording
    text = rec.text
    body, blocks = [], []
    for block in report.blocks:
        if isinstance(block, Heading):
            body.append(f"<h2>{html.escape(block.text)}</h2>")
        elif isinstance(block, PlainLine):
            body.append(f'<div class="text">{html.escape(block.text)}</div>')
        elif isinstance(block, Legend):
            body.append(_legend_html(block))
        elif isinstance(block, Shaded):
            body.append(_shaded_html(block, len(blocks), text))
            blocks.append({"label": block.label, "start": block.start, "values": _rounded(block.values, 4)})
    top = [None] * len(text)
    if rec.top_ids is not None:
        for i in range(1, len(text)):
            top[i] = [["<unk>" if c == UNK_ID else shown_char(report.vocab_chars[c]), round(float(p), 5)]
                      for c, p in zip(rec.top_ids[i], rec.top_probs[i])]
    # The box opens on the most surprising character of the first shaded block.
    focus, focus_block = int(np.nanargmax(rec.bits)), -1
    if blocks:
        lo = blocks[0]["start"]
        shown = rec.bits[lo:lo + len(blocks[0]["values"])]
        if np.isfinite(shown).any():
            focus, focus_block = lo + int(np.nanargmax(shown)), 0
    data = {"shown": [shown_char(c) for c in text], "bits": _rounded(rec.bits, 3), "top": top,
            "blocks": blocks, "focus": focus, "focusBlock": focus_block,
            "unknown": np.flatnonzero(rec.ids == UNK_ID).tolist()}
    # Inside <script>, "</" could end the element early; "<\/" means the same to JSON.parse.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    notices = "".join(f'<p class="notice">{html.escape(n)}</p>' for n in report.notices)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(report.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(report.title)}</h1>\n{notices}\n" + "\n".join(body) +
            '\n<div id="info">hover over a character</div>\n'
            f'<script type="application/json" id="data">{payload}</script>\n<script>{SCRIPT}</script>\n'
            "</body>\n</html>\n")


def write_page(report: Report, path: Path) -> None:
    """Write the page (UTF-8); a path that cannot be written is a user error."""
    atomic_write_bytes(path, page(report).encode("utf-8"))
