"""`chargen inspect`: per-character bits, the property detectors, the unit ranking on a model whose
answer is known by construction, the terminal rendering, and the page in a real headless Chromium."""
from __future__ import annotations

import io
import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from chargen.errors import UserError
from chargen.inspect import (correlations, digits, excerpt_window, inside_brackets, inside_quotes, line_position,
                             parse_unit, rank_units, render_terminal, surprising_spans, unit_name, upper_case,
                             word_start)
from chargen.report import SURPRISE_STOPS, Heading, Legend, PlainLine, Recording, Report, Shaded, colours, visible

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def passage(shakespeare, tmp_path_factory) -> Path:
    """700 characters of tinyshakespeare (longer than 512, so `eval` would split it into streams)."""
    path = tmp_path_factory.mktemp("text") / "passage.txt"
    path.write_text(shakespeare.read_text(encoding="utf-8")[200_000:200_700], encoding="utf-8")
    return path


# -- the property detectors on hand-made strings -------------------------------------------------
def as_list(a: np.ndarray) -> list[int]:
    return [int(v) for v in a]


def test_inside_quotes_straight_and_typographic():
    #                               a   _  "  b  c  "  _  d
    assert as_list(inside_quotes('a "bc" d')) == [0, 0, 1, 1, 1, 0, 0, 0]
    assert as_list(inside_quotes("x \u201cab\u201d y")) == [0, 0, 1, 1, 1, 0, 0, 0]
    # an unclosed quote ends at a blank line; the next paragraph's quote opens afresh
    assert as_list(inside_quotes('"a\n\nb "c"')) == [1, 1, 1, 0, 0, 0, 1, 1, 0]


def test_inside_brackets_nesting_and_strays():
    assert as_list(inside_brackets("f(a[b]) c")) == [0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert as_list(inside_brackets("1) x")) == [0, 0, 0, 0]  # a stray closing bracket opens nothing


def test_line_position_counts_characters_read_on_the_line():
    assert as_list(line_position("ab\ncd\n\ne")) == [1, 2, 0, 1, 2, 0, 0, 1]


def test_word_start_upper_case_and_digits():
    assert as_list(word_start("don't go 2day")) == [1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert as_list(upper_case("aB1 É")) == [0, 1, 0, 0, 1]
    assert as_list(digits("aB1 9")) == [0, 0, 1, 0, 1]


# -- the pure pieces -----------------------------------------------------------------------------
def test_surprising_spans_take_the_hard_stretches_best_first():
    bits = np.array([np.nan] + [1.0] * 10 + [9, 8, 1, 9] + [1.0] * 10 + [12] + [1.0] * 10)
    spans = surprising_spans(bits, count=5)
    # mean ~1.8 bits, threshold ~3.6: the 9 8 1 9 stretch (one easy char inside) and the lone 12
    assert [(s.start, s.end) for s in spans] == [(11, 15), (25, 26)]
    assert spans[0].bits == pytest.approx(27.0)


def test_rank_units_finds_the_unit_that_tracks_a_property():
    rng = np.random.default_rng(0)
    prop = (rng.random(500) < 0.3).astype(np.float32)
    states = rng.normal(size=(500, 20)).astype(np.float32)
    states[:, 7] = -2 * prop + 0.1 * rng.normal(size=500)
    states[:, 3] = 1.0  # a constant unit has no correlation, not NaN
    ranked = rank_units(states, {"p": prop, "flat": np.zeros(500, np.float32)}, top=2)
    assert "flat" not in ranked  # a property constant over the text is skipped
    (best, r), _ = ranked["p"]
    assert best == 7 and r < -0.95
    assert correlations(states, prop)[3] == 0.0


def test_unit_names_round_trip_and_bad_names_are_user_errors():
    rec = Recording("ab", np.zeros(2, np.int64), np.zeros(2), "lstm", layers=2, hidden=8)
    for spec in ("1:0", "1:c7", "2:3", "2:c0"):
        assert unit_name(parse_unit(spec, "lstm", 2, 8), rec) == spec
    for spec, message in (("3:0", "layers 1 to 2"), ("1:8", "units 0 to 7"), ("x", "LAYER:UNIT"),
                          ("0:1", "layers 1 to 2")):
        with pytest.raises(UserError, match=message):
            parse_unit(spec, "lstm", 2, 8)
    with pytest.raises(UserError, match="no cell state; use --neuron 1:2"):
        parse_unit("1:c2", "gru", 2, 8)


def test_excerpt_window_covers_the_change_and_starts_a_line():
    text = "".join(f"line {i}: plain words here\n" for i in range(20)) + 'now "a quote" ends\n' + "tail\n" * 40
    lo, hi = excerpt_window(inside_quotes(text), text, width=80)
    assert lo <= text.index('"') and text.index('quote"') < hi
    assert lo == 0 or text[lo - 1] == "\n"


def test_visible_escapes_control_and_reordering_characters():
    assert visible("\x1b") == "\\x1b"
    assert visible("\u202e") == "\\u202e"
    assert visible("\t") == "\\t"
    assert visible("é") == "é" and visible("[") == "["
    assert visible("\n") == " \n" and visible("\n", inline=True) == "\u21b5"


# -- the terminal rendering ----------------------------------------------------------------------
def tiny_report(text: str, bits: list[float]) -> Report:
    rec = Recording(text, np.ones(len(text), np.int64), np.array(bits, dtype=np.float64), "lstm", 1, 4)
    report = Report("title", rec, ["?", *text])
    report.add(Heading("heading [bold]"))
    report.add(Shaded(0, len(text), rec.bits, SURPRISE_STOPS, "bits", 4.0))
    report.add(Legend("legend", SURPRISE_STOPS, [(0, "0"), (8, "8+")], "underlined: 4 bits or more"))
    report.add(PlainLine("a line"))
    return report


def render(report: Report, **console_options) -> str:
    from rich.console import Console

    out = io.StringIO()
    render_terminal(report, Console(file=out, markup=False, highlight=False, emoji=False, soft_wrap=True,
                                    **console_options))
    return out.getvalue()


def test_terminal_colours_each_character_and_prints_model_text_verbatim():
    text = "[red]x[/red]\x1b[2J\nz"
    bits = [math.nan] + [8.0] * (len(text) - 1)
    out = render(tiny_report(text, bits), force_terminal=True, color_system="truecolor")
    r, g, b = colours(np.array([8.0]), SURPRISE_STOPS)[0]
    assert f"48;2;{r};{g};{b}" in out  # the surprise colour as a background
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "[red]x[/red]\\x1b[2J" in plain  # markup not interpreted, the escape shown, not sent
    assert "\x1b[2J" not in out
    assert "heading [bold]" in plain


def test_bidirectional_marks_are_escaped_as_interactive_escapes_them():
    """ALM, LRM and RLM (U+061C, U+200E, U+200F) reorder displayed text like the overrides do: the terminal
    and the page show them escaped, as `interactive` always has."""
    from chargen.inspect_html import page

    marks = "\u061c\u200e\u200f"
    text = "a\u061cb\u200ec\u200fd"
    report = tiny_report(text, [math.nan] + [1.0] * (len(text) - 1))
    out = render(report, force_terminal=True, color_system="truecolor")
    assert "a\\u061cb\\u200ec\\u200fd" in re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert not set(marks) & set(out)
    assert not set(marks) & set(page(report))


def test_no_color_underlines_surprising_characters_instead():
    text = "abcd"
    out = render(tiny_report(text, [math.nan, 0.5, 9.0, 0.5]), force_terminal=True, no_color=True)
    assert "48;2" not in out and "38;2" not in out
    assert re.search(r"\x1b\[4mc\x1b\[0m", out)  # only the 9-bit character is underlined
    assert "underlined: 4 bits or more" in out


def test_make_console_honours_no_color(monkeypatch):
    from chargen.display import make_console

    monkeypatch.setenv("NO_COLOR", "1")
    assert make_console(io.StringIO()).no_color


def test_page_escapes_model_text():
    from chargen.inspect_html import page

    source = page(tiny_report("<b>x</b></script>&", [math.nan] + [1.0] * 18))
    assert ">&lt;</span>" in source and "<b>" not in source  # one span per character, escaped
    assert source.count("</script>") == 2  # the data's and the code's; the text's own is escaped


# -- the per-character bits add up to the eval figure --------------------------------------------
def test_per_char_bits_sum_to_the_eval_figure(tiny_run, passage):
    from chargen import api
    from chargen.inspect import run_inspect

    report = run_inspect(tiny_run, passage, out=io.StringIO())
    rec = report.recording
    n = len(passage.read_text(encoding="utf-8"))
    assert len(rec.bits) == n and math.isnan(rec.bits[0]) and np.isfinite(rec.bits[1:]).all()
    result = api.evaluate(tiny_run, passage, streams=1)
    assert result["chars"] == n - 1
    assert rec.total_bits() * math.log(2) == pytest.approx(result["nats_per_char"] * result["chars"], rel=1e-9)
    assert rec.bits_per_char() == pytest.approx(result["bits_per_char"], rel=1e-9)
    # a text of at most 512 characters is one stream for `eval` at its defaults too
    short = passage.with_name("short.txt")
    short.write_text(passage.read_text(encoding="utf-8")[:400], encoding="utf-8")
    assert run_inspect(tiny_run, short, out=io.StringIO()).recording.bits_per_char() == \
        pytest.approx(api.evaluate(tiny_run, short)["bits_per_char"], rel=1e-9)


def test_cli_inspect_shows_the_same_figure_as_eval(cli, tiny_run, passage):
    shown = cli("inspect", "--checkpoint", str(tiny_run), str(passage))
    assert shown.returncode == 0, shown.stderr
    scored = cli("eval", "--checkpoint", str(tiny_run), str(passage), "--streams", "1")
    eval_bpc = re.search(r"([\d.]+) bits/char", scored.stdout)[1]
    assert f"= {eval_bpc} bits/char" in shown.stdout
    assert "most surprising spans" in shown.stdout
    assert passage.read_text(encoding="utf-8")[:40] in shown.stdout  # the text itself, verbatim


def test_long_text_is_cut_with_a_notice(tiny_run, passage, capsys):
    from chargen.inspect import run_inspect

    out = io.StringIO()
    report = run_inspect(tiny_run, passage, max_chars=100, out=out)
    assert report.recording.text == passage.read_text(encoding="utf-8")[:100]
    assert "has 700 characters: showing the first 100 (raise --max-chars" in capsys.readouterr().err
    assert "on passage.txt: 100 characters" in out.getvalue()


def test_bad_unit_is_one_line_user_error(cli, tiny_run, passage):
    bad = cli("inspect", "--checkpoint", str(tiny_run), str(passage), "--neuron", "3:0")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["chargen: error: --neuron 3:0: this 2x64 LSTM has layers 1 to 2"]
    both = cli("inspect", "--checkpoint", str(tiny_run), str(passage), "--neuron", "1:0", "--neurons", "find")
    assert both.returncode == 2 and "not allowed with" in both.stderr


# -- the ranking on a model whose units are known by construction ---------------------------------
QUOTE_UNIT, LINE_UNIT, HIDDEN = 3, 6, 8


def synthetic_text(seed: int = 0) -> str:
    """Lines of random length with “typographic quotes” here and there."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "off"]
    lines = []
    for _ in range(60):
        line = []
        for _ in range(rng.randint(2, 10)):
            phrase = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
            line.append(f"\u201c{phrase}\u201d" if rng.random() < 0.25 else phrase)
        lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


def planted_run(directory: Path, text: str) -> Path:
    """A 1x8 LSTM run whose cell QUOTE_UNIT is 1 inside “...” and 0 outside, and whose cell
    LINE_UNIT counts up by 0.1 per character and resets at each newline; other units are random."""
    import torch

    from chargen.checkpoint import TOKENIZER, write_config, write_weights
    from chargen.config import ModelConfig
    from chargen.model import CharLM
    from chargen.vocab import Vocab

    vocab = Vocab(sorted(set(text)))
    V, H = len(vocab), HIDDEN
    config = ModelConfig(cell="lstm", hidden=H, layers=1, embedding=V, vocab_size=V)
    torch.manual_seed(0)
    model = CharLM(config)
    open_q, close_q, newline = (int(vocab.encode(c)[0]) for c in "\u201c\u201d\n")
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(V))  # one-hot: W_ih column j is character j's input
        w_ih, w_hh = model.core.rnn.weight_ih_l0, model.core.rnn.weight_hh_l0
        b_ih, b_hh = model.core.rnn.bias_ih_l0, model.core.rnn.bias_hh_l0
        i, f, g, o = (k * H for k in range(4))  # PyTorch's gate order
        for unit in (QUOTE_UNIT, LINE_UNIT):
            w_hh[[i + unit, f + unit, g + unit, o + unit]] = 0
            b_ih[[i + unit, f + unit, g + unit, o + unit]] = 0
            b_hh[[i + unit, f + unit, g + unit, o + unit]] = 0
            b_ih[o + unit] = 10  # output gate open
        q = QUOTE_UNIT  # write 1 at “ (forget the old value), erase at ”, hold otherwise
        w_ih[i + q] = -10
        w_ih[i + q, open_q] = 10
        w_ih[f + q] = 10
        w_ih[f + q, [open_q, close_q]] = -10
        w_ih[g + q] = 0
        w_ih[g + q, open_q] = 10
        n = LINE_UNIT  # add 0.1 at every character, forget at a newline
        w_ih[i + n] = 10
        w_ih[f + n] = 10
        w_ih[f + n, newline] = -10
        w_ih[g + n] = math.atanh(0.1)
    run = directory / "planted"
    run.mkdir()
    write_weights(run, model.state_dict())
    vocab.save(run / TOKENIZER)
    write_config(run, {"model": config.to_dict(), "corpus": {"name": "planted"}, "vocab_size": V})
    return run


def test_neurons_find_ranks_the_planted_units_first(cli, tmp_path, monkeypatch):
    text = synthetic_text()
    run = planted_run(tmp_path, text)
    page = tmp_path / "text.txt"
    page.write_text(text, encoding="utf-8")
    found = cli("inspect", "--checkpoint", str(run), str(page), "--neurons", "find", "--top", "2")
    assert found.returncode == 0, found.stderr
    rows = {m[1]: (m[2], float(m[3])) for m in re.finditer(r"^  ([a-z ]+?)\s+(1:c?\d+) ([+-][\d.]+)",
                                                         found.stdout, re.M)}
    unit, r = rows["inside quotes"]
    assert unit in (f"1:{QUOTE_UNIT}", f"1:c{QUOTE_UNIT}") and r > 0.99
    unit, r = rows["position in line"]
    assert unit == f"1:c{LINE_UNIT}" and r > 0.9
    assert "digit" in found.stdout and "constant in this text" in found.stdout
    # --neuron colours by that unit: on a terminal with NO_COLOR, exactly the quoted text is underlined
    from chargen.inspect import run_inspect

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm")
    out = io.StringIO()
    run_inspect(run, page, neuron=f"1:c{QUOTE_UNIT}", out=out)
    underlined = "".join(re.findall(r"\x1b\[4m(.*?)\x1b\[0m", out.getvalue(), re.S))
    quoted = "".join(re.findall("(\u201c[^\u201d]*)\u201d", text))
    assert underlined.replace("\n", "") == quoted.replace("\n", "")
    assert "inside quotes +1.00" in re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())


# -- the page, in a real headless browser --------------------------------------------------------
def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", f"--user-data-dir={user_data}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_html_page_renders_coloured_text_in_chromium(cli, tiny_run, passage, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="needs pillow (the test extra)")

    page = tmp_path / "page.html"
    made = cli("inspect", "--checkpoint", str(tiny_run), str(passage), "--html", str(page))
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""
    source = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=|https?://|@import|url\(", source)  # nothing fetched from anywhere

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1000,800", page.as_uri(), user_data=tmp_path / "profile1")
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    saturated = (image.max(axis=2) - image.min(axis=2)) > 60  # warm heat-map backgrounds, not grey
    assert saturated.mean() > 0.05, f"only {saturated.mean():.1%} coloured pixels"
    # text drawn on the coloured backgrounds: dark glyph pixels right next to coloured ones
    dark = image.sum(axis=2) < 200
    assert (dark[:, 1:] & saturated[:, :-1]).sum() > 500

    # the hover box, filled by the page's script: on opening it shows the most surprising character
    dom = chromium("--dump-dom", page.as_uri(), user_data=tmp_path / "profile2").stdout
    box = re.search(r'<div id="info">(.*?)</div>\s*<script', dom, re.S)[1]
    lines = [re.sub(r"<[^>]+>", "", part) for part in re.findall(r"<div[^>]*>(.*?)</div>", box)]
    assert lines[0].startswith("character ")
    assert re.fullmatch(r"probability [\d.e-]+ \([\d.]+ bits\)", lines[1])
    assert lines[2] == "the model's top 5 here:" and len(lines) == 8
