"""The interactive session: command parsing, probability colouring, verbatim display, Ctrl-C, and the
real `cli.py interactive` driven through a pseudo-terminal."""
from __future__ import annotations

import io
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from chargen.display import PROB_BANDS, escape, prob_colour, prob_legend
from chargen.interactive import (Command, CommandError, Session, SessionSettings, apply_setting, is_command,
                                 parse_command)
from chargen.sample import Sampler, SamplingSettings, generate_streams, load_sampler
from chargen.stepper import NumpyStepper
from chargen.vocab import Vocab

REPO = Path(__file__).resolve().parent.parent
SETTINGS = SessionSettings(SamplingSettings(0.8, 0, 1.0), length=50)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = "\x1b[1m> \x1b[0m"  # the prompt in colour (readline's \001 \002 markers are not printed)
GREEN, CYAN, YELLOW, MAGENTA, RED = (colour for _, colour, _ in PROB_BANDS)


# -- command parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    ("/temp 0.5", Command("temp", 0.5)),
    ("/temp 0", Command("temp", 0.0)),
    ("/TEMP  1.5 ", Command("temp", 1.5)),
    ("/topk 5", Command("topk", 5)),
    ("/topp 0.9", Command("topp", 0.9)),
    ("/topp 1", Command("topp", 1.0)),
    ("/len 300", Command("len", 300)),
    ("/seed 0", Command("seed", 0)),
    ("/stop \\n\\n", Command("stop", "\n\n")),
    ("/stop  the end", Command("stop", " the end")),  # the argument is kept exactly: spaces count
    ("/stop", Command("stop", "")),                   # no argument: never stop early
    ("/probs on", Command("probs", True)),
    ("/probs OFF", Command("probs", False)),
    ("/save story.txt", Command("save", Path("story.txt"))),
    ("/undo", Command("undo")),
    ("/reset", Command("reset")),
    ("/exit", Command("quit")),
])
def test_parse_command_reads_each_command_and_value(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize("line, message", [
    ("/temp", "/temp needs a value"),
    ("/temp abc", "/temp needs a number, not 'abc'"),
    ("/temp -1", "/temp must be >= 0"),
    ("/temp nan", "/temp needs a finite number"),
    ("/temp inf", "/temp needs a finite number"),
    ("/topk 2.5", "/topk needs an integer"),
    ("/topk -3", "/topk must be >= 0"),
    ("/topp 0", "/topp must be > 0 and <= 1"),
    ("/topp 1.5", "/topp must be > 0 and <= 1"),
    ("/len 0", "/len must be >= 1"),
    ("/seed x", "/seed needs an integer"),
    ("/probs maybe", "/probs takes on or off"),
    ("/save", "/save needs a file name"),
    ("/undo 3", "/undo takes no argument"),
    ("/tmep 1", "unknown command /tmep (did you mean /temp?)"),
    ("/frobnicate", "unknown command /frobnicate"),
])
def test_parse_command_says_what_is_wrong(line, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        parse_command(line)


def test_lines_that_are_text_not_commands():
    assert is_command("/temp 1") and not is_command("//etc/passwd") and not is_command("ROMEO: /temp")


def test_apply_setting_changes_only_its_setting():
    s = apply_setting(SETTINGS, parse_command("/temp 0.3"))
    assert s == SessionSettings(SamplingSettings(0.3, 0, 1.0), 50)
    s = apply_setting(s, parse_command("/topk 4"))
    s = apply_setting(s, parse_command("/len 7"))
    s = apply_setting(s, parse_command("/stop \\n"))
    assert s == SessionSettings(SamplingSettings(0.3, 4, 1.0), 7, stop="\n")
    for action in ("/seed 3", "/undo", "/show", "/save x"):  # not settings: nothing changes
        assert apply_setting(s, parse_command(action)) == s


# -- display: probability colouring and verbatim model text ---------------------------------------
@pytest.mark.parametrize("p, colour", [
    (1.0, GREEN), (0.8, GREEN), (0.79, CYAN), (0.5, CYAN), (0.3, YELLOW), (0.2, YELLOW),
    (0.1, MAGENTA), (0.05, MAGENTA), (0.049, RED), (0.0, RED),
])
def test_prob_colour_bands(p, colour):
    assert prob_colour(p) == colour


def test_legend_shows_every_band_in_its_colour():
    legend = prob_legend()
    for _, colour, label in PROB_BANDS:
        assert f"\x1b[{colour}m{label}\x1b[0m" in legend


def test_escape_escapes_control_characters_only():
    assert escape("[bold]x[/bold]\x1b[31m\r\x07\x7f\x9b\u202e") == "[bold]x[/bold]\\x1b[31m\\r\\x07\\x7f\\x9b\\u202e"
    assert escape("a\tb\nc é\u00a0ß") == "a\tb\nc é\u00a0ß"  # text stays as it is


CYCLE = "[bold]\x1b"  # a model that writes this over and over, markup and an escape character
CONFIDENCE = [0.95, 0.6, 0.3, 0.1, 0.01, 0.9, 0.6]  # the model's probability for each next character


def cycling_sampler() -> Sampler:
    """A hand-built one-layer RNN over CYCLE: the hidden state is the one-hot of the current
    character, and the head gives the next character of the cycle the probability in CONFIDENCE.
    200 never-predicted filler characters share the rest, so even a 1% character is the likeliest
    and temperature 0 follows the cycle."""
    vocab = Vocab(list(CYCLE) + [chr(0x100 + k) for k in range(200)], normalize=False)
    V = len(vocab)  # with <unk> at 0
    eye = np.eye(V, dtype=np.float32)
    head = np.zeros((V, V), dtype=np.float32)
    for k, ch in enumerate(CYCLE):
        here, after = vocab.encode(ch)[0], vocab.encode(CYCLE[(k + 1) % len(CYCLE)])[0]
        p = CONFIDENCE[k]
        # softmax over the V-1 characters (<unk> is never drawn): p = e^a / (e^a + V - 2)
        head[after, here] = np.log(p * (V - 2) / (1 - p)) / np.tanh(10)
    weights = {"embed.weight": 10 * eye, "core.rnn.weight_ih_l0": eye, "core.rnn.weight_hh_l0": 0 * eye,
               "core.rnn.bias_ih_l0": np.zeros(V, np.float32), "core.rnn.bias_hh_l0": np.zeros(V, np.float32),
               "head.weight": head, "head.bias": np.zeros(V, np.float32)}
    return Sampler(NumpyStepper(weights, {"cell": "rnn", "layers": 1, "hidden": V}), vocab)


def test_probs_colour_each_character_by_the_models_probability():
    out, err = io.StringIO(), io.StringIO()
    settings = SessionSettings(SamplingSettings(temperature=0), length=7, probs=True)
    session = Session(cycling_sampler(), settings, 0, out, err, colour=True)
    session.handle("[")
    expected_colours = [prob_colour(p) for p in CONFIDENCE]
    assert expected_colours == [GREEN, CYAN, YELLOW, MAGENTA, RED, GREEN, CYAN]
    shown = "bold]\x1b["
    assert out.getvalue() == "".join(f"\x1b[{c}m{escape(ch)}" for c, ch in zip(expected_colours, shown)) + \
        "\x1b[0m\n"


@pytest.mark.parametrize("colour", [True, False])
def test_model_text_is_shown_verbatim_never_interpreted(colour, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    session = Session(cycling_sampler(), SessionSettings(SamplingSettings(0), length=14), 0, out, err, colour=colour)
    session.handle("[")
    text = ANSI.sub("", out.getvalue()) if colour else out.getvalue()
    assert text == "bold]\\x1b[bold]\\x1b[\n"  # markup kept as text, ESC shown as \x1b
    assert "\x1b" not in text
    if colour:  # the only escape sequences are the session's own colour codes
        assert set(re.findall(r"\x1b\[[0-9;]*m", out.getvalue())) == {"\x1b[36m", "\x1b[0m"}
    session.handle(f"/save {tmp_path / 'story.txt'}")
    assert (tmp_path / "story.txt").read_text(encoding="utf-8") == "[" + "bold]\x1b[" * 2  # raw text saved


# -- session behaviour without a terminal ---------------------------------------------------------
def displayed(generated: str) -> str:
    """How a turn's text appears: a newline is added when it does not end with one (for the prompt)."""
    return generated if generated.endswith("\n") else generated + "\n"


def expected_text(tiny_run, seed: str, length: int, temperature: float, rng_seed: int) -> str:
    """What `chargen generate` draws from a fresh state: the reference for a session's turn."""
    pieces = generate_streams(tiny_run, seed, length, SamplingSettings(temperature), rng_seed=rng_seed)
    return "".join(p[0] for p in pieces)


def test_ctrl_c_keeps_state_up_to_the_last_character_shown(tiny_run):
    """SIGINT arrives while the 20th character is written: the story and the hidden state hold exactly
    the characters shown, as if the story had been fed from scratch."""

    class InterruptingOut(io.StringIO):
        writes = 0

        def write(self, s):
            self.writes += 1
            if self.writes == 20:
                os.kill(os.getpid(), signal.SIGINT)
            return super().write(s)

    sampler, _ = load_sampler(tiny_run)
    out, err = InterruptingOut(), io.StringIO()
    session = Session(sampler, SessionSettings(SamplingSettings(), 100_000), 3, out, err)
    session.handle("ROMEO:")
    count = int(re.search(r"stopped after (\d+) characters", err.getvalue()).group(1))
    assert 20 <= count <= 21  # stopped at once
    shown = out.getvalue()
    assert shown == displayed(shown[:count])  # then the prompt's line starts
    assert session.story == "ROMEO:" + shown[:count]
    fresh, _ = load_sampler(tiny_run)
    fresh.feed(fresh.encode_seed(session.story))
    np.testing.assert_allclose(session.sampler.logits, fresh.logits, rtol=1e-5, atol=1e-5)


def test_reset_and_undo_restore_story_and_state(tiny_run):
    sampler, _ = load_sampler(tiny_run)
    out, err = io.StringIO(), io.StringIO()
    session = Session(sampler, SessionSettings(SamplingSettings(), 30), 1, out, err)
    session.handle("ROMEO:")
    first = session.story
    state = session.sampler.logits
    session.handle("/reset")
    session.handle("JULIET:")
    assert session.story.startswith(first + "\n\nJULIET:")  # a new story after a blank line
    session.handle("/undo")
    session.handle("/undo")
    assert session.story == first and session.sampler.logits is state
    with pytest.raises(CommandError, match="the model never saw 'Z'"):  # not in the slice's vocabulary
        session.handle("Zounds")
    assert session.story == first and session.sampler.logits is state  # nothing was read


def test_script_mode_each_line_is_a_turn_plain_output(tiny_run, cli, tmp_path):
    saved = tmp_path / "story.txt"
    r = cli("interactive", "--checkpoint", str(tiny_run), "--length", "30", "--rng-seed", "1",
            input=f"ROMEO:\n/temp 0.5\n/seed 5\n/reset\nROMEO:\n/save {saved}\n")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "run tiny" in r.stderr  # plain; the banner is not the product
    first = saved.read_text(encoding="utf-8").partition("ROMEO:")[2][:30]
    second = expected_text(tiny_run, "ROMEO:", 30, 0.5, 5)
    assert r.stdout == displayed(first) + displayed(second)  # each turn's continuation, nothing else
    bad = cli("interactive", "--checkpoint", str(tiny_run), input="ROMEO:\n/temp hot\nJULIET:\n")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == \
        "chargen: error: line 2: /temp needs a number, not 'hot' (0 = always the likeliest character)"


# -- the real command in a pseudo-terminal --------------------------------------------------------
pexpect = pytest.importorskip("pexpect")


def spawn(tiny_run: Path, home: Path, *args: str, preexec_fn=None, **env: str):
    """`python cli.py interactive` on a pseudo-terminal, with HOME (and so the history file) in `home`;
    preexec_fn runs in the child before it starts (pexpect's)."""
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environment.update(HOME=str(home), TERM="xterm", **env)
    child = pexpect.spawn(sys.executable, [str(REPO / "cli.py"), "interactive", "--checkpoint", str(tiny_run),
                                           *args], env=environment, encoding="utf-8", timeout=60,
                          dimensions=(50, 250), cwd=str(home), preexec_fn=preexec_fn)
    return child


def send(child, line: str, prompt: str = PROMPT) -> str:
    """Type a line, wait for the next prompt; what the session printed in between, without the echo,
    colour codes and carriage returns."""
    child.sendline(line)
    child.expect_exact(prompt)
    printed = ANSI.sub("", child.before).replace("\r\n", "\n")
    echo, _, rest = printed.partition("\n")
    assert echo.endswith(line)
    return rest


def test_pty_session_transcript(tiny_run, tmp_path):
    child = spawn(tiny_run, tmp_path, "--rng-seed", "1", "--length", "40")
    child.expect_exact(PROMPT)
    banner = ANSI.sub("", child.before)
    for part in ("run tiny", "LSTM 2x64", "bpc", "temperature 0.8", "length 40", "rng seed 1", "/help"):
        assert part in banner

    # A turn: the continuation comes out in the model's colour, 40 characters.
    child.sendline("ROMEO:")
    child.expect_exact(PROMPT)
    turn = child.before
    assert "\x1b[36m" in turn  # model text coloured apart from what was typed
    send(child, "/save first.txt")
    first = (tmp_path / "first.txt").read_text(encoding="utf-8")
    assert first.startswith("ROMEO:") and len(first) == 6 + 40
    assert ANSI.sub("", turn).replace("\r\n", "\n").endswith("ROMEO:\n" + displayed(first[6:]))

    # /temp takes effect: after /reset, the same seed at 0.5 gives what `generate` gives at 0.5.
    assert "temperature 0.5" in send(child, "/temp 0.5")
    send(child, "/seed 5")
    assert "fresh state" in send(child, "/reset")
    at_half = expected_text(tiny_run, "ROMEO:", 40, 0.5, 5)
    assert at_half != expected_text(tiny_run, "ROMEO:", 40, 0.8, 5)  # the test can tell them apart
    assert send(child, "ROMEO:") == displayed(at_half)

    # /undo: back to the state before the turn; the same seed then gives the same continuation.
    send(child, "/seed 9")
    again = send(child, "")  # Enter alone: the story goes on
    assert "undid the last turn" in send(child, "/undo")
    send(child, "/seed 9")
    assert send(child, "") == again
    send(child, "/save story.txt")
    story = (tmp_path / "story.txt").read_text(encoding="utf-8")
    assert story == first + ("\n" if first.endswith("\n") else "\n\n") + "ROMEO:" + at_half + again[:40]

    # A bad command or value says what is wrong and changes nothing.
    assert "error: /temp needs a number, not 'hot'" in send(child, "/temp hot")
    assert "unknown command /tmep (did you mean /temp?)" in send(child, "/tmep 2")
    assert "temperature 0.5" in send(child, "/show")
    assert "/undo" in send(child, "/help")

    # Ctrl-D leaves with exit code 0; the typed lines are in the history file under HOME.
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    history = (tmp_path / ".chargen_history").read_text(encoding="utf-8")
    assert "ROMEO:" in history and "/temp 0.5" in history


def test_pty_ctrl_c_stops_generation_then_exits_at_prompt(tiny_run, tmp_path):
    child = spawn(tiny_run, tmp_path, "--rng-seed", "2", "--length", "1000000")
    child.expect_exact(PROMPT)
    child.sendline("KING")
    child.expect(r"[a-z]{2}")  # generation is streaming
    seen = child.before + child.after
    child.sendintr()
    child.expect(r"stopped after (\d+) characters")
    count = int(child.match.group(1))
    seen += child.before
    child.expect_exact(PROMPT)
    send(child, "/save story.txt")
    story = (tmp_path / "story.txt").read_text(encoding="utf-8")
    assert 0 < count < 1_000_000 and story.startswith("KING") and len(story) == 4 + count
    # Everything displayed before the terminal echoed ^C is in the story. (The terminal drops output
    # still queued when Ctrl-C is pressed, perhaps half a colour code: the message then says where
    # the story ends.)
    before_ctrl_c = seen.replace("\r\n", "\n").partition("KING\n")[2].split("^C")[0]
    shown = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]?)?", "", before_ctrl_c)
    assert len(shown) > 0 and story[4:].startswith(shown)
    # The session goes on from there; then Ctrl-C at the prompt leaves cleanly.
    send(child, "/len 5")
    assert len(send(child, "")) >= 5
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_pty_ctrl_c_at_the_prompt_leaves_even_when_started_with_sigint_ignored(tiny_run, tmp_path):
    """A shell starts a background job with SIGINT ignored, and Python then raises no KeyboardInterrupt:
    the cause of this test's old failures in full-suite runs started in the background. The session sets
    Ctrl-C's meaning at its prompt itself."""
    child = spawn(tiny_run, tmp_path, "--length", "5", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    child.expect_exact(PROMPT)
    ignored = open(f"/proc/{child.pid}/status").read().split("SigIgn:")[1].split()[0]
    assert int(ignored, 16) & 1 << (signal.SIGINT - 1) == 0  # the session no longer ignores it ...
    child.sendintr()
    child.expect(pexpect.EOF, timeout=10)  # ... and leaves
    child.close()
    assert child.exitstatus == 0


def test_pty_no_color_gives_plain_text(tiny_run, tmp_path):
    child = spawn(tiny_run, tmp_path, "--rng-seed", "1", "--length", "20", NO_COLOR="1")
    child.expect_exact("> ")
    out = send(child, "ROMEO:", prompt="> ")
    assert len(out.rstrip("\n")) >= 19
    child.sendline("/probs on")
    child.expect_exact("> ")
    assert "needs a colour terminal" in child.before
    assert not re.search(r"\x1b\[[0-9;]*m", child.before)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
