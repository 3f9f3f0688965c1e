"""See inside a character model: a surprise heat-map of any text, and a neuron inspector.

    chargen inspect --run NAME FILE                  each character coloured by the bits the model spent on it
    chargen inspect --run NAME FILE --neuron 2:c117  coloured by one unit (layer 2, cell state of unit 117)
    chargen inspect --run NAME FILE --neurons find   the units that track simple properties of the text
    ... --html page.html                             the same as a self-contained page (inspect_html.py)

Where the numbers come from:
- Bits per character: `textlm.evaluate_text(per_char=True)` over the text as one stream, so the
  model sees all the text before each character and the bits add up to what `chargen eval
  --streams 1` (`api.evaluate(..., streams=1)`) reports. (`eval` by default cuts a text of over
  512 characters into parallel streams that each start without context: a slightly higher figure.)
- Hidden units and the top-5 predictions: the model stepped one character at a time by the
  numpy `NumpyStepper`, which hands back every layer's state (LSTM: h and the cell state c)
  after each character. Why not `nn.LSTM` layer by layer: its fused kernel returns per step only
  the hidden output h, never the cell state c, which would have to be rebuilt from the gates in
  a second recurrence; the stepper already computes exactly the model's equations (tests hold
  it to the torch model) and exposes every state.

Units are named LAYER:UNIT for the hidden output h and LAYER:cUNIT for an LSTM's cell state,
layers counted from 1 (nearest the input) and units from 0 (their index in the weights).

A report (report.py) is a list of blocks (headings, lines, shaded text, legends) built here once and
drawn by two renderers: the terminal (`render_terminal`: rich Text objects, markup off, model text
escaped by `display.escape`) and the page (inspect_html.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from chargen.display import make_console
from chargen.errors import UserError
from chargen.log import info
from chargen.report import (ACTIVE_VALUE, SURPRISE_STOPS, SURPRISING_BITS, UNIT_STOPS, Heading, Legend, PlainLine,
                            Recording, Report, Shaded, colours, surprise_legend, text_colour, unit_legend,
                            unknown_notice, visible)

DEFAULT_MAX_CHARS = 5000
TOP_PREDICTIONS = 5
EXCERPT_CHARS = 160
LN2 = math.log(2)


# -- properties of the text -----------------------------------------------------------------
# Each maps the text to one value per character: the property's state after reading that
# character, which is what a unit of the hidden state (also after reading it) can track.
QUOTE_OPEN, QUOTE_CLOSE = "\u201c\u00ab", "\u201d\u00bb"  # “ « and ” »
BRACKET_OPEN, BRACKET_CLOSE = "([{", ")]}"


def _paragraph_ends(text: str) -> set[int]:
    """Indices of the second newline of each blank line: an open quote or bracket ends there."""
    return {i for i in range(1, len(text)) if text[i] == "\n" and text[i - 1] == "\n"}


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening quote up to (not including) its closing quote, else 0.

    Straight double quotes toggle; typographic “ « open and ” » close. A blank line ends an
    unclosed quote (a quotation running over paragraphs opens again in the next one).
    """
    out = np.zeros(len(text), dtype=np.float32)
    inside = False
    ends = _paragraph_ends(text)
    for i, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        elif ch in QUOTE_OPEN:
            inside = True
        elif ch in QUOTE_CLOSE or i in ends:
            inside = False
        out[i] = inside
    return out


def inside_brackets(text: str) -> np.ndarray:
    """1 from an opening bracket ( [ { up to its closing one (nested ones counted), else 0."""
    out = np.zeros(len(text), dtype=np.float32)
    depth = 0
    ends = _paragraph_ends(text)
    for i, ch in enumerate(text):
        if ch in BRACKET_OPEN:
            depth += 1
        elif ch in BRACKET_CLOSE:
            depth = max(0, depth - 1)  # a stray closing bracket ("1) first") opens nothing
        elif i in ends:
            depth = 0
        out[i] = depth > 0
    return out


def line_position(text: str) -> np.ndarray:
    """How far into its line the text is after each character: 1 after a line's first character,
    2 after its second, ..., and 0 after a newline (a new line is about to begin)."""
    idx = np.arange(len(text))
    newline = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == ord("\n")
    # the first character of the line holding i = one past the last newline before i
    line_start = np.maximum.accumulate(np.where(np.concatenate([[True], newline[:-1]]), idx, 0))
    return np.where(newline, 0, idx - line_start + 1).astype(np.float32)


def word_start(text: str) -> np.ndarray:
    """1 on the first character of a word (a letter or digit after a non-word character), else 0.

    An apostrophe between letters keeps the word going ("don't" is one word).
    """
    out = np.zeros(len(text), dtype=np.float32)
    for i, ch in enumerate(text):
        if not ch.isalnum():
            continue
        prev = text[i - 1] if i else ""
        in_word = prev.isalnum() or (prev in "'\u2019" and i >= 2 and text[i - 2].isalnum())
        out[i] = not in_word
    return out


def upper_case(text: str) -> np.ndarray:
    """1 on an upper-case letter, else 0."""
    return np.fromiter((ch.isupper() for ch in text), dtype=np.float32, count=len(text))


def digits(text: str) -> np.ndarray:
    """1 on a digit, else 0."""
    return np.fromiter((ch.isdigit() for ch in text), dtype=np.float32, count=len(text))


PROPERTIES: dict[str, Callable[[str], np.ndarray]] = {
    "inside quotes": inside_quotes,
    "inside brackets": inside_brackets,
    "position in line": line_position,
    "start of word": word_start,
    "upper case": upper_case,
    "digit": digits,
}


# -- recording the model over a text (into a report.Recording) ----------------------------------
def surprise_bits(model, ids: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Bits the model spends on each character of `ids` in one continuous pass: (N,), NaN first.

    This is `evaluate_text(per_char=True)` on a single stream: the exact computation behind the
    `eval` figure, so the values add up to it.
    """
    from chargen.textlm import evaluate_text

    result = evaluate_text(model, ids, streams=1, device=device, per_char=True)
    bits = np.full(len(ids), np.nan)
    bits[1:] = result["per_char_nats"].astype(np.float64) / LN2
    return bits


def step_through(stepper, ids: np.ndarray, keep_states: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Feed `ids` one by one: the top-5 predictions before each character and, if asked, every state after it.

    Returns top_ids (N, 5), top_probs (N, 5) (row 0, before any character, is -1 / NaN) and
    states (N, layers * units_per_layer) laid out per layer as [h (H), c (H) for an LSTM].
    """
    n = len(ids)
    k = min(TOP_PREDICTIONS, stepper.vocab_size)
    top_ids = np.full((n, k), -1, dtype=np.int64)
    top_probs = np.full((n, k), np.nan, dtype=np.float32)
    per_layer = stepper.hidden * (2 if stepper.cell == "lstm" else 1)
    states = np.empty((n, stepper.layers * per_layer), dtype=np.float32) if keep_states else None
    state = stepper.zero_state(1)
    for i, char_id in enumerate(np.asarray(ids, dtype=np.int64)):
        logits, state = stepper.step(np.array([char_id]), state)
        if keep_states:
            # state: (h,) or (h, c), each (1, layers, H) -> per layer [h | c]
            states[i] = np.stack([part[0] for part in state], axis=1).reshape(-1)
        if i + 1 < n:  # the prediction for the next character
            z = logits[0].astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            best = np.argsort(-p, kind="stable")[:k]
            top_ids[i + 1], top_probs[i + 1] = best, p[best]
    return top_ids, top_probs, states


def unit_name(index: int, rec: Recording) -> str:
    """LAYER:UNIT (hidden output) or LAYER:cUNIT (LSTM cell state) of a column of `rec.states`."""
    layer, rest = divmod(index, rec.units_per_layer)
    cell, unit = divmod(rest, rec.hidden)
    return f"{layer + 1}:{'c' if cell else ''}{unit}"


def parse_unit(spec: str, cell: str, layers: int, hidden: int) -> int:
    """The column of the recorded states named by `spec` (e.g. 2:117 or 2:c117); a user error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(c?)(\d+)\s*", spec)
    kind = f"{layers}x{hidden} {cell.upper()}"
    if not m:
        cell_hint = " or LAYER:cUNIT for a cell state" if cell == "lstm" else ""
        raise UserError(f"--neuron {spec!r} is not LAYER:UNIT{cell_hint} (e.g. --neuron 1:0)")
    layer, is_cell, unit = int(m[1]), bool(m[2]), int(m[3])
    if not 1 <= layer <= layers:
        raise UserError(f"--neuron {spec}: this {kind} has layers 1 to {layers}")
    if not 0 <= unit < hidden:
        raise UserError(f"--neuron {spec}: this {kind} has units 0 to {hidden - 1} in each layer")
    if is_cell and cell != "lstm":
        raise UserError(f"--neuron {spec}: a {cell.upper()} has no cell state; use --neuron {layer}:{unit}")
    per_layer = hidden * (2 if cell == "lstm" else 1)
    return (layer - 1) * per_layer + is_cell * hidden + unit


def is_cell_state(index: int, rec: Recording) -> bool:
    """Whether a column of `rec.states` is an LSTM cell state (else a hidden output)."""
    return (index % rec.units_per_layer) >= rec.hidden


def unit_scale(index: int, rec: Recording) -> float:
    """What a unit is divided by to span the colour scale [-1, 1]: 1 for h (a tanh already), and
    a cell state's largest |c| over the text (c is unbounded; through tanh a counting cell saturates)."""
    if not is_cell_state(index, rec):
        return 1.0
    return max(float(np.abs(rec.states[:, index]).max()), 1e-6)


# -- ranking units ----------------------------------------------------------------------------
def correlations(states: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """Pearson r of every unit (columns of states, (N, S)) with one property (N,); 0 for a constant unit."""
    x = states.astype(np.float64)
    x -= x.mean(axis=0)
    p = prop.astype(np.float64) - prop.mean()
    denom = np.sqrt((x * x).sum(axis=0) * (p @ p))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p @ x) / denom
    return np.where(denom > 0, r, 0.0)


def rank_units(states: np.ndarray, props: dict[str, np.ndarray], top: int) -> dict[str, list[tuple[int, float]]]:
    """For each property that varies in the text: the `top` units with the largest |r|, as (column, r)."""
    ranked = {}
    for name, prop in props.items():
        if prop.min() == prop.max():
            continue  # e.g. no digits in the text: nothing to track
        r = correlations(states, prop)
        best = np.argsort(-np.abs(r), kind="stable")[:top]
        ranked[name] = [(int(i), float(r[i])) for i in best]
    return ranked


# -- surprising spans -------------------------------------------------------------------------
@dataclass
class Span:
    """A stretch of text the model found hard: characters [start, end) and the bits spent on them."""

    start: int
    end: int
    bits: float


def _best_segment(a: np.ndarray) -> tuple[float, int, int]:
    """The maximum-sum contiguous segment of `a`: (sum, start, end); an empty array gives (-inf, 0, 0)."""
    if len(a) == 0:
        return -math.inf, 0, 0
    prefix = np.concatenate([[0.0], np.cumsum(a)])
    lows = np.minimum.accumulate(prefix)
    gains = prefix[1:] - lows[:-1]  # best segment ending at each j
    end = int(np.argmax(gains)) + 1
    start = int(np.argmin(prefix[:end]))
    return float(gains[end - 1]), start, end


def surprising_spans(bits: np.ndarray, count: int = 5) -> list[Span]:
    """The `count` disjoint stretches with the most bits above twice the text's mean (at least 1 bit).

    Each character scores bits - threshold; a span is a maximum-sum segment of those scores, so it
    takes in an easy character between two hard ones but not a run of easy ones. Best first.
    """
    scored = np.nan_to_num(bits, nan=0.0)
    threshold = max(2 * float(np.nanmean(bits)), 1.0)
    excess = np.where(np.isnan(bits), -threshold, scored - threshold)
    pieces = [(0, len(bits))]
    spans = []
    while len(spans) < count and pieces:
        found = [(_best_segment(excess[lo:hi]), lo, hi) for lo, hi in pieces]
        (gain, s, e), lo, hi = max(found, key=lambda f: f[0][0])
        if gain <= 0:
            break
        pieces.remove((lo, hi))
        pieces += [piece for piece in ((lo, lo + s), (lo + e, hi)) if piece[1] > piece[0]]
        spans.append(Span(lo + s, lo + e, float(scored[lo + s:lo + e].sum())))
    return spans


def excerpt_window(prop: np.ndarray, text: str, width: int = EXCERPT_CHARS) -> tuple[int, int]:
    """Where a property varies most: a `width`-character window with the largest variance of it.

    Of equally good windows the middle one is taken (the changes sit inside, not at an edge);
    the window then reaches back to the start of its first line when that is near.
    """
    n = len(prop)
    if n <= width:
        return 0, n
    c1 = np.concatenate([[0.0], np.cumsum(prop, dtype=np.float64)])
    c2 = np.concatenate([[0.0], np.cumsum(prop.astype(np.float64) ** 2)])
    mean = (c1[width:] - c1[:-width]) / width
    variance = (c2[width:] - c2[:-width]) / width - mean ** 2
    best = np.flatnonzero(variance >= variance.max() - 1e-9)
    start = int(best[len(best) // 2])
    line_start = text.rfind("\n", max(0, start - width // 2), start) + 1
    return (line_start if line_start > 0 else start), start + width


def _position(text: str, i: int) -> str:
    """'line L, col C' of character i, both from 1."""
    line = text.count("\n", 0, i) + 1
    column = i - (text.rfind("\n", 0, i) + 1) + 1
    return f"line {line}, col {column}"


def surprise_report(report: Report, spans: int = 5) -> None:
    """The heat-map of the whole text, its legend, the total and the most surprising spans."""
    r = report.recording
    n = len(r.text)
    report.add(Shaded(0, n, r.bits, SURPRISE_STOPS, "bits", SURPRISING_BITS))
    report.add(surprise_legend())
    report.add(PlainLine(f"total: {r.total_bits():,.1f} bits for {n - 1:,} predicted characters = "
                         f"{r.bits_per_char():.4f} bits/char, {r.bits_per_char() * LN2:.4f} nats/char (as "
                         "`chargen eval --streams 1` reports; the first character has no context and is not scored)"))
    found = surprising_spans(r.bits, spans)
    if found:
        report.add(Heading("most surprising spans"))
    for span in found:
        shown_end = min(span.end, span.start + 60)  # a long span is cut in the list, not in the heat-map
        lo, hi = max(0, span.start - 24), min(n, shown_end + 24)  # with some context either side
        report.add(Shaded(lo, hi, r.bits[lo:hi], SURPRISE_STOPS, "bits", SURPRISING_BITS,
                       prefix=f"{span.bits:7.1f} bits in {span.end - span.start:3d} "
                              f"char{'s' if span.end - span.start > 1 else ' '}, "
                              f"{_position(r.text, span.start):18s}  ",
                       inline=True, context=(span.start - lo, shown_end - lo)))


def describe_unit(index: int, rec: Recording) -> str:
    """In words: "2:c117 = layer 2, cell state c of unit 117 (coloured by c / 7.31, its largest |c| here)"."""
    name = unit_name(index, rec)
    layer, unit = name.split(":")
    if unit.startswith("c"):
        return (f"{name} = layer {layer}, cell state c of unit {unit[1:]} "
                f"(coloured by c / {unit_scale(index, rec):.3g}, its largest |c| here)")
    return f"{name} = layer {layer}, hidden output h of unit {unit}"


def neuron_report(report: Report, index: int, props: dict[str, np.ndarray]) -> None:
    """The whole text coloured by one unit, and how that unit correlates with each property."""
    r = report.recording
    raw = r.states[:, index]
    name = unit_name(index, r)
    report.add(Shaded(0, len(r.text), raw, UNIT_STOPS, name, ACTIVE_VALUE, unit_scale(index, r)))
    report.add(unit_legend(f"unit {describe_unit(index, r)}, after reading each character"))
    report.add(PlainLine(f"{name} over the text: mean {raw.mean():+.3f}, min {raw.min():+.3f}, max {raw.max():+.3f}"))
    varying = {prop: values for prop, values in props.items() if values.min() != values.max()}
    if varying:
        report.add(PlainLine("correlation (Pearson r) with: " + ", ".join(
            f"{prop} {correlations(raw[:, None], values)[0]:+.2f}" for prop, values in varying.items())))


def find_report(report: Report, props: dict[str, np.ndarray], top: int) -> None:
    """A table of the units that track each property best, then one excerpt per property coloured by each."""
    r = report.recording
    n = len(r.text)
    kinds = "hidden outputs h and cell states c" if r.cell == "lstm" else "hidden outputs h"
    report.add(Heading(f"units that track properties of the text (Pearson r over {n:,} characters; "
                       f"{r.states.shape[1]:,} units: {r.layers} layer{'s' if r.layers > 1 else ''} x "
                       f"{r.hidden} {kinds})"))
    ranked = rank_units(r.states, props, top)
    width = max(len(p) for p in props)
    for prop in props:
        cells = ("   ".join(f"{unit_name(i, r):>7s} {corr:+.2f}" for i, corr in ranked[prop]) if prop in ranked
                 else "constant in this text: nothing to track")
        report.add(PlainLine(f"  {prop:{width}s}  {cells}"))
    report.add(unit_legend("excerpts: the property (divided by its maximum), then each unit after reading each "
                           "character (a cell state divided by its largest |c| in the text)"))
    for prop, best in ranked.items():
        values = props[prop]
        lo, hi = excerpt_window(values, r.text)
        binary = set(np.unique(values)) <= {0.0, 1.0}
        scope = f"{int(values.sum()):,} of {n:,} characters" if binary else f"0 to {int(values.max())}"
        report.add(Heading(f"{prop} ({scope}), characters {lo:,} to {hi:,}"))
        report.add(PlainLine("  the property:"))
        report.add(Shaded(lo, hi, values[lo:hi], UNIT_STOPS, prop, ACTIVE_VALUE, float(values.max()), indent="    "))
        for i, corr in best:
            unit = r.states[:, i]
            report.add(PlainLine(f"  {unit_name(i, r)}  r = {corr:+.2f}  "
                                 f"(from {unit.min():+.2f} to {unit.max():+.2f})"))
            report.add(Shaded(lo, hi, unit[lo:hi], UNIT_STOPS, unit_name(i, r), ACTIVE_VALUE, unit_scale(i, r),
                              indent="    "))


# -- the terminal -----------------------------------------------------------------------------
def render_terminal(report: Report, console) -> None:
    """Draw a report with rich: Text objects with styles only (no markup), model text escaped.

    Without colour (NO_COLOR on a terminal) the emphasised characters are underlined instead;
    into a pipe or file rich writes plain text, and a span in the list is set off by ⟦ ⟧.
    """
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    cache: dict[tuple, Style] = {}

    def style(bg=None, fg=None, underline: bool = False, dim: bool = False) -> Style:
        key = (None if bg is None else tuple(bg), None if fg is None else tuple(fg), underline, dim)
        if key not in cache:
            cache[key] = Style(bgcolor=None if bg is None else Color.from_rgb(*map(int, bg)),
                               color=None if fg is None else Color.from_rgb(*map(int, fg)),
                               underline=underline or None, dim=dim or None)
        return cache[key]

    underline = console.no_color and console.color_system is not None
    plain = console.color_system is None or console.no_color
    text = report.recording.text
    console.print(Text(report.title, style="bold"))
    for block in report.blocks:
        if isinstance(block, (Heading, PlainLine)):
            console.print(Text(block.text, style="bold" if isinstance(block, Heading) else ""))
        elif isinstance(block, Legend):
            if plain and not underline:
                continue  # plain text (a pipe, a file): no colours to explain
            out = Text(block.title + ":  ")
            bg = colours(np.array([v for v, _ in block.swatches]), block.stops)
            for (_, label), b, f in zip(block.swatches, bg, text_colour(bg)):
                out.append(f" {label} ", style(b, f))
                out.append(" ")
            if underline:
                out.append(f"({block.emphasis_note})")
            console.print(out)
        elif isinstance(block, Shaded):
            bg = block.rgb()
            fg = text_colour(bg)
            marked = block.marked()
            out = Text(block.prefix + block.indent)
            for k in range(block.end - block.start):
                shown = visible(text[block.start + k], block.inline)
                if block.context is not None and not block.context[0] <= k < block.context[1]:
                    out.append(shown, style(dim=True))
                    continue
                if plain and block.context is not None and k == block.context[0]:
                    out.append("\u27e6")
                if np.isnan(block.values[k]):
                    s = style()
                else:
                    s = style(bg[k], fg[k], underline=bool(underline and marked[k]))
                if shown == " \n":  # the newline's colour on a space at the end of its line
                    if not plain:
                        out.append(" ", s)
                    out.append("\n" + block.indent)
                else:
                    out.append(shown, s)
                if plain and block.context is not None and k == block.context[1] - 1:
                    out.append("\u27e7")
            console.print(out, soft_wrap=True)


# -- the command ------------------------------------------------------------------------------
def inspect_text(run_dir: Path, text: str, *, name: str = "text", neuron: str | None = None,
                 find: bool = False, top: int = 3, predictions: bool = False) -> Report:
    """The report on `text` (already read and cut): surprise, one unit (`neuron`), or `find`.

    predictions: also record the top-5 predictions before each character (the page shows them).
    """
    from chargen.api import load
    from chargen.stepper import NumpyStepper

    _, m = char_run(run_dir)
    # A typo in the unit fails now, before the model is loaded and run.
    index = None if neuron is None else parse_unit(neuron, m["cell"], m["layers"], m["hidden"])
    if len(text) < 2:
        raise UserError(f"{name} has fewer than 2 characters; nothing to predict")
    model, vocab, _ = load(run_dir)
    ids = vocab.encode_normalized(text)
    rec = Recording(text, ids, surprise_bits(model, ids), m["cell"], m["layers"], m["hidden"])
    units = neuron is not None or find
    if units or predictions:
        weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
        rec.top_ids, rec.top_probs, rec.states = step_through(NumpyStepper(weights, m), ids, keep_states=units)
    report = Report(f"{run_dir.name} ({m['layers']}x{m['hidden']} {m['cell'].upper()}) on {name}: "
                    f"{len(text):,} characters, {rec.bits_per_char():.4f} bits/char", rec,
                    [vocab.id_to_char(i) for i in range(len(vocab))])
    notice = unknown_notice(vocab, text, ids)
    if notice:
        report.notices.append(notice)
    props = {prop: detect(text) for prop, detect in PROPERTIES.items()} if units else {}
    if find:
        find_report(report, props, top)
    elif neuron is not None:
        neuron_report(report, index, props)
    else:
        surprise_report(report)
    return report


def char_run(run_dir: Path) -> tuple:
    """(Vocab, model config dict) of a character run; a user error for a time-series or incomplete run."""
    from chargen.checkpoint import TOKENIZER, check_complete, read_config
    from chargen.heads import require_head
    from chargen.vocab import Vocab

    model = read_config(run_dir)["model"]
    require_head(run_dir, model, "char")
    check_complete(run_dir, (TOKENIZER,))
    return Vocab.load(run_dir / TOKENIZER), model


def run_inspect(run_dir: Path, file: Path, *, neuron: str | None = None, find: bool = False,
                html: Path | None = None, max_chars: int = DEFAULT_MAX_CHARS, encoding: str = "utf-8",
                top: int = 3, out: TextIO | None = None) -> Report:
    """`chargen inspect`: read `file`, cut it to `max_chars`, show the report in the terminal or write a page.

    On a classifier run, the report is of its decision on the text (chargen.classify_inspect).
    """
    from chargen.checkpoint import read_config
    from chargen.corpus import read_text

    if max_chars < 2:
        raise UserError(f"--max-chars must be at least 2, not {max_chars}")
    if top < 1:
        raise UserError(f"--top must be at least 1, not {top}")
    is_classifier = read_config(run_dir)["model"].get("head") == "classify"
    if is_classifier and (neuron is not None or find or html is not None):
        raise UserError(f"{run_dir} is a text-classifier run: inspect shows which characters moved its "
                        "decision; --neuron, --neurons and --html are for character-model runs")
    if html is not None and not Path(html).resolve().parent.is_dir():
        raise UserError(f"--html {html}: the folder {Path(html).parent} does not exist; create it or choose another "
                        "path")
    if is_classifier:
        from chargen.classifier import load_classifier
        from chargen.classify_inspect import decision_report

        classifier = load_classifier(checkpoint=run_dir)
        normalize = classifier.vocab.normalize
    else:
        normalize = char_run(run_dir)[0].normalize  # read the text as the model was trained to see it
    text = read_text(Path(file), encoding=encoding, normalize=normalize).text
    if is_classifier:  # the file is one text: its final line ending is the file's, not the text's
        text = text.removesuffix("\n")
    full = len(text)
    text = text[:max_chars]
    if is_classifier:
        report = decision_report(classifier, text, Path(file).name)
    else:
        report = inspect_text(run_dir, text, name=Path(file).name, neuron=neuron, find=find, top=top,
                              predictions=html is not None)
    if full > max_chars:
        shown = ("classifying and showing only the first {:,}: the decision on the whole text may differ" if
                 is_classifier else "showing the first {:,}").format(max_chars)
        report.notices.insert(0, f"{file} has {full:,} characters: {shown} (raise --max-chars to see more)")
    for notice in report.notices:
        info(notice)
    if html is not None:
        from chargen.inspect_html import write_page

        write_page(report, Path(html))
        info(f"wrote {html}")
    else:
        render_terminal(report, make_console(out))
    return report
