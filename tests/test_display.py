"""The one display module: which characters are escaped (the same for every command), when there is
colour (rich's decision), and the SGR codes the streamed text is painted with (rich's own)."""
from __future__ import annotations

import io

import pytest

from chargen.display import BIDI_CONTROLS, RESET, escape, paint, sgr, terminal_has_colour
from chargen.report import visible


# Every character that can drive a terminal or reorder what it shows: C0, DEL, C1, the line and paragraph
# separators, and each bidirectional control.
ESCAPED = [chr(c) for c in [*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029]] + sorted(BIDI_CONTROLS)


@pytest.mark.parametrize("ch", ESCAPED, ids=lambda ch: f"U+{ord(ch):04X}")
def test_every_command_escapes_the_same_characters(ch):
    shown = ch.encode("unicode_escape").decode("ascii")
    assert shown.startswith("\\")
    # interactive (newlines and tabs are its layout) and the inspector (each character one cell)
    assert escape(f"a{ch}b") == ("a" + (ch if ch in "\n\t" else shown) + "b")
    assert visible(ch) == (" \n" if ch == "\n" else shown)


def test_text_is_left_as_it_is():
    text = "ROMEO: [bold]Wherefore\u00a0art thou? é ß \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 😀"
    assert escape(text) == text and "".join(visible(ch) for ch in text) == text
    assert escape("a\tb\nc", keep="") == "a\\tb\\nc"


def test_sgr_codes_are_richs():
    assert (sgr("cyan"), sgr("red"), sgr("green"), sgr("bold")) == ("36", "31", "32", "1")
    assert paint("x", sgr("cyan")) == f"\x1b[36mx{RESET}" and paint("x", None) == "x"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("env, stream, expected", [
    ({"TERM": "xterm-256color"}, FakeTerminal, True),
    ({"TERM": "xterm-256color"}, io.StringIO, False),                   # a pipe or a file
    ({"TERM": "xterm-256color", "NO_COLOR": "1"}, FakeTerminal, False),
    ({"TERM": "dumb"}, FakeTerminal, False),
])
def test_colour_is_decided_by_rich(env, stream, expected, monkeypatch):
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "JUPYTER_COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert terminal_has_colour(stream()) is expected
