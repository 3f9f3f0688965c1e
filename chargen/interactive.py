"""The interactive session: type a beginning, watch the model continue it, steer, rewind.

    chargen interactive --run novel

The run is loaded once into a `Sampler` (numpy, no torch). Typed text is fed to the model, then
`length` characters stream out, each fed back; the hidden state carries across turns, so the story
continues. Every turn first pushes a snapshot of the sampler (a copy of its state: a few KB) and the
story length, which is all `/undo` needs.

Lines that start with "/" are commands; `parse_command` and `apply_setting` are pure functions, and so
is the probability colouring (`display.prob_colour`), so all three are unit-tested without a terminal.

Model text is printed verbatim, never through a markup engine: control characters (an ESC the model
learned from a log file, a carriage return) and bidirectional controls are shown escaped, as `\\x1b`,
by `display.escape`, so they cannot drive the terminal; `/save` writes the raw text. Whether there is
colour is decided by rich, as for every command (`display.terminal_has_colour`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, TextIO

import numpy as np

from chargen.checkpoint import atomic_write_bytes
from chargen.display import RESET, escape, paint, prob_colour, prob_legend, sgr, switch, terminal_has_colour
from chargen.errors import UserError
from chargen.sample import Sampler, SamplingSettings, load_sampler, next_char_probs

HISTORY_FILE = ".chargen_history"  # under the user's home
HISTORY_LENGTH = 1000
PROMPT = "> "
MODEL_COLOUR = sgr("cyan")  # generated text, told apart from what the user typed
ERROR_COLOUR = sgr("red")
PROMPT_STYLE = sgr("bold")


class CommandError(ValueError):
    """A bad command or value: the message says what is wrong; nothing has changed."""


@dataclass(frozen=True)
class SessionSettings:
    """What a turn does: how characters are drawn, how many, when to stop early, how they are shown."""

    sampling: SamplingSettings
    length: int                # characters generated per turn
    stop: str = ""             # end a turn once it has written this ("" = never)
    probs: bool = False        # colour each generated character by the model's probability for it


@dataclass(frozen=True)
class Command:
    """A parsed command line: the command's name and its checked argument (None when it takes none)."""

    name: str
    value: object = None


# -- argument parsers: text -> value, or CommandError naming the command --------------------------
def _number(kind: type, low: float, high: float | None = None, low_open: bool = False,
            meaning: str = "") -> Callable[[str, str], object]:
    """A parser of a `kind` number in [low, high] ((low, high] with low_open); `meaning` ends its errors."""
    def parse(name: str, text: str) -> object:
        if not text:
            raise CommandError(f"/{name} needs a value: {COMMANDS[name].usage} ({meaning})")
        try:
            value = kind(text)
        except ValueError:
            raise CommandError(f"/{name} needs {'an integer' if kind is int else 'a number'}, "
                               f"not {text!r} ({meaning})") from None
        if not math.isfinite(value):
            raise CommandError(f"/{name} needs a finite number, not {text} ({meaning})")
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise CommandError(f"/{name} must be {bounds}, not {text} ({meaning})")
        return value
    return parse


def _stop(name: str, text: str) -> str:
    """The argument exactly, with `\\n`, `\\t` and `\\\\` read as the characters they stand for (a
    newline cannot be typed at the prompt)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _on_off(name: str, text: str) -> bool:
    if text.strip().lower() not in ("on", "off"):
        raise CommandError(f"/{name} takes on or off, not {text.strip()!r}" if text.strip()
                           else f"/{name} needs on or off")
    return text.strip().lower() == "on"


def _path(name: str, text: str) -> Path:
    if not text.strip():
        raise CommandError(f"/{name} needs a file name: /{name} FILE")
    return Path(text.strip()).expanduser()


class CommandSpec(NamedTuple):
    usage: str
    help: str
    parse: Callable[[str, str], object] | None  # (name, argument) -> value; None: takes no argument
    field: str | None                            # the setting it changes (SessionSettings or SamplingSettings)


COMMANDS: dict[str, CommandSpec] = {name: CommandSpec(*spec) for name, spec in {
    "temp": ("/temp X", "temperature: 0 = always the likeliest character, 1 = the model's own odds",
             _number(float, 0, meaning="0 = always the likeliest character"), "temperature"),
    "topk": ("/topk N", "sample among the N likeliest characters only (0 = all)",
             _number(int, 0, meaning="0 = all characters"), "top_k"),
    "topp": ("/topp P", "sample among the smallest set of characters holding probability P (1 = all)",
             _number(float, 0, 1, low_open=True, meaning="1 = all characters"), "top_p"),
    "len": ("/len N", "characters generated per turn",
            _number(int, 1, meaning="characters per turn"), "length"),
    "seed": ("/seed N", "restart the random generator from seed N: same seed, same text",
             _number(int, 0, meaning="a random seed"), None),
    "stop": ("/stop STRING", "end a turn once it has written STRING (\\n = newline); /stop alone: never",
             _stop, "stop"),
    "reset": ("/reset", "forget the story: start again from a fresh state", None, None),
    "undo": ("/undo", "go back to before the last turn (or /reset); repeat to go further back", None, None),
    "show": ("/show", "the current settings", None, None),
    "probs": ("/probs on|off", "colour each generated character by the probability the model gave it",
              _on_off, "probs"),
    "save": ("/save FILE", "write the whole story text (everything the model read) to FILE", _path, None),
    "help": ("/help", "this list", None, None),
    "quit": ("/quit", "leave the session (also Ctrl-D, or Ctrl-C at the prompt)", None, None),
}.items()}
_ALIASES = {"exit": "quit", "q": "quit", "?": "help", "temperature": "temp"}


def is_command(line: str) -> bool:
    """Whether a typed line is a command ("/name ..."); "//text" is text that starts with a slash."""
    return line.startswith("/") and not line.startswith("//")


def parse_command(line: str) -> Command:
    """Parse "/name [argument]" into a `Command` with a checked value; a bad one raises `CommandError`."""
    name, _, arg = line[1:].partition(" ")
    name = name.lower()
    name = _ALIASES.get(name, name)
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean /{close[0]}?)" if close else ""
        raise CommandError(f"unknown command /{name}{hint}; /help lists the commands, and //text sends "
                           "text that starts with a slash")
    spec = COMMANDS[name]
    if spec.parse is None:
        if arg.strip():
            raise CommandError(f"/{name} takes no argument (usage: {spec.usage})")
        return Command(name)
    # /stop keeps its argument exactly (spaces count); the others ignore surrounding spaces.
    return Command(name, spec.parse(name, arg if name == "stop" else arg.strip()))


def apply_setting(settings: SessionSettings, command: Command) -> SessionSettings:
    """The settings after a setting command (/temp /topk /topp /len /stop /probs); others leave them alone."""
    field = COMMANDS[command.name].field
    if field is None:
        return settings
    if field in ("temperature", "top_k", "top_p"):
        return dataclasses.replace(settings, sampling=dataclasses.replace(settings.sampling, **{field: command.value}))
    return dataclasses.replace(settings, **{field: command.value})


def help_text() -> str:
    """One line per command, then how text is treated."""
    width = max(len(spec.usage) for spec in COMMANDS.values()) + 2
    lines = [f"{spec.usage:<{width}}{spec.help}" for spec in COMMANDS.values()]
    lines.append("Any other line is text: the model reads it and continues the story (//text for text "
                 "that starts with a slash). Enter alone keeps going; Ctrl-C stops a generation.")
    return "\n".join(lines)


def describe(settings: SessionSettings, rng_seed: int) -> str:
    """The settings on one line, as /show prints them."""
    s = settings.sampling
    return (f"temperature {s.temperature:g} · top-k {s.top_k or 'all'} · top-p {s.top_p:g} · "
            f"length {settings.length} · rng seed {rng_seed} · stop {repr(settings.stop) if settings.stop else 'none'}"
            f" · probs {'on' if settings.probs else 'off'}")


class _CatchInterrupt:
    """While active, Ctrl-C (SIGINT) sets `hit` instead of raising, so a generation stops between
    characters: the state then holds exactly the characters shown."""

    def __enter__(self) -> "_CatchInterrupt":
        self.hit = False
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C cannot be caught here
            self._previous = None
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# -- the session ----------------------------------------------------------------------------------
class Session:
    """A story in progress: the sampler's state, the story text, the undo stack and the settings.

    `handle(line)` runs one typed line (text or command); generated text goes to `out`, everything
    else (replies, errors, notes) to `err`.
    """

    def __init__(self, sampler: Sampler, settings: SessionSettings, rng_seed: int, out: TextIO, err: TextIO,
                 colour: bool = False, live: bool = False, unknown: str = "error"):
        self.sampler = sampler
        self.settings = settings
        self.rng_seed = rng_seed
        self.rng = np.random.default_rng(rng_seed)
        self.out, self.err = out, err
        self.colour = colour
        self.live = live            # flush after every character (a person is watching)
        self.unknown = unknown      # typed characters the model never saw: error, skip or unk
        self.pieces: list[str] = []  # the story: typed and generated text, as the model read it
        self.undo_stack: list[tuple[tuple, int, str]] = []  # (sampler snapshot, len(pieces), what)
        self.interrupted = False    # the last turn was stopped by Ctrl-C

    @property
    def story(self) -> str:
        """Everything the model has read this session, stories separated by a blank line."""
        return "".join(self.pieces)

    def say(self, message: str, colour: str | None = None) -> None:
        """A reply or note on `err`, after any generated text still buffered on `out`."""
        self.out.flush()
        self.err.write(paint(message, colour if self.colour else None) + "\n")
        self.err.flush()

    def handle(self, line: str) -> bool:
        """Run one typed line; False when the session should end. A bad line raises `CommandError`."""
        if not is_command(line):
            self.turn(line[1:] if line.startswith("//") else line)
            return True
        command = parse_command(line)
        name = command.name
        if name == "quit":
            return False
        if name == "probs" and command.value and not self.colour:
            raise CommandError("/probs on needs a colour terminal (output is plain: not a terminal, "
                               "NO_COLOR set or TERM=dumb)")
        new = apply_setting(self.settings, command)
        if new != self.settings:
            self.settings = new
            self.say(describe(new, self.rng_seed))
            if name == "probs" and new.probs:
                self.say(prob_legend())
        elif COMMANDS[name].field is not None:
            self.say(f"unchanged: {describe(new, self.rng_seed)}")
        elif name == "seed":
            self.rng_seed = command.value
            self.rng = np.random.default_rng(self.rng_seed)
            self.say(f"rng seed {self.rng_seed}: the next turn draws from a fresh generator")
        elif name == "reset":
            self._push("reset")
            self.sampler.reset()
            if self.pieces and not self.story.endswith("\n\n"):
                self.pieces.append("\n" if self.story.endswith("\n") else "\n\n")
            self.say("fresh state: the next text starts a new story (/undo brings the old one back)")
        elif name == "undo":
            if not self.undo_stack:
                raise CommandError("nothing to undo: no turn yet (or all undone)")
            snapshot, size, what = self.undo_stack.pop()
            self.sampler.restore(snapshot)
            del self.pieces[size:]
            self.say(f"undid the last {what}; {self._story_end()}")
        elif name == "show":
            self.say(describe(self.settings, self.rng_seed))
            if self.settings.probs:
                self.say(prob_legend())
        elif name == "save":
            self._save(command.value)
        elif name == "help":
            self.say(help_text())
        return True

    def _story_end(self, chars: int = 60) -> str:
        """Where the story stands, on one line (repr escapes newlines and control characters)."""
        story = self.story
        if not story:
            return "the story is empty"
        return f"the story now ends with: {'…' if len(story) > chars else ''}{story[-chars:]!r}"

    def _push(self, what: str) -> None:
        self.undo_stack.append((self.sampler.snapshot(), len(self.pieces), what))

    def _save(self, path: Path) -> None:
        text = self.story
        try:
            atomic_write_bytes(path, text.encode("utf-8"))
        except UserError as e:  # a full disk, a read-only folder, a missing folder: the session goes on
            raise CommandError(f"{e}; the story is still here — /save to another file") from None
        self.say(f"saved {len(text):,} characters to {path}")

    def _feed_ids(self, text: str) -> np.ndarray:
        vocab = self.sampler.vocab
        if self.unknown == "error":
            missing = vocab.unknown(text)
            if missing:
                shown = " ".join(repr(c) for c in missing[:10])
                raise CommandError(f"the model never saw {shown}; nothing was read — retype without "
                                   "them (or start the session with --unknown skip or --unknown unk)")
        ids = self.sampler.encode_seed(text, self.unknown)
        if text and len(ids) == 0:
            raise CommandError("nothing is left of that text after dropping unknown characters")
        return ids

    def turn(self, text: str) -> None:
        """Feed `text` (may be empty: keep going), then stream up to `length` characters to `out`.

        Ctrl-C ends the generation after the character being shown; the story and the state keep
        everything shown so far.
        """
        ids = self._feed_ids(text)
        self._push("turn")
        settings = self.settings
        with _CatchInterrupt() as interrupt:
            if len(ids):
                self.sampler.feed(ids)
                self.pieces.append(self.sampler.vocab.decode(ids))
            if self.sampler.logits is None:
                # Nothing read yet: start from a newline, the most neutral context (not part of the story).
                self.sampler.feed(self.sampler.encode_seed("\n", unknown="unk"))
            generated: list[str] = []
            tail = ""
            painted = None  # the colour the terminal is in: a code is written only when it changes
            shown = self.sampler.snapshot()  # the state after the last character shown
            before = self.sampler.logits     # (1, V): the logits the next character is drawn from
            for drawn, _ in self.sampler.stream(settings.length, settings.sampling, self.rng):
                if interrupt.hit:
                    break  # this character was drawn after Ctrl-C and is not shown: `shown` leaves it out
                i = int(drawn[0])
                ch = self.sampler.vocab.id_to_char(i)
                colour = self._colour_of(before, i)
                self.out.write((switch(colour) if colour != painted else "") + escape(ch))
                painted = colour
                if self.live:
                    self.out.flush()
                generated.append(ch)
                shown, before = self.sampler.snapshot(), self.sampler.logits
                if settings.stop:
                    tail = (tail + ch)[-len(settings.stop):]
                    if tail == settings.stop:
                        break
            self.sampler.restore(shown)
        if generated:
            self.pieces.append("".join(generated))
        if self.colour and (painted or interrupt.hit):
            # Ctrl-C makes the terminal drop output not yet displayed, possibly half a colour code.
            self.out.write(RESET)
        if not generated or generated[-1] != "\n":
            self.out.write("\n")  # display only: the prompt starts on its own line
        self.out.flush()
        self.interrupted = interrupt.hit
        if interrupt.hit:
            # The terminal may have dropped the last characters written: say where the story stands.
            self.say(f"stopped after {len(generated)} characters; {self._story_end()}")

    def _colour_of(self, logits: np.ndarray, i: int) -> str | None:
        """The colour of generated character `i` drawn from `logits` (1, V): by the model's own
        probability for it with /probs on, else the one colour of model text; None when plain."""
        if not self.colour:
            return None
        if self.settings.probs:
            return prob_colour(float(next_char_probs(logits, SamplingSettings(temperature=1.0))[0, i]))
        return MODEL_COLOUR

    def banner(self, run_dir: Path, config: dict) -> str:
        """Run name, cell, size, validation bpc, settings and where to get help."""
        model, metrics = config["model"], config.get("metrics", {})
        bpc = f"validation {metrics['val_bpc']:.3f} bpc" if "val_bpc" in metrics else "no validation figure"
        corpus = config.get("corpus", {}).get("name", "?")
        return (f"run {run_dir.name} · {model['cell'].upper()} {model['layers']}x{model['hidden']} · "
                f"vocabulary {len(self.sampler.vocab)} · {metrics.get('steps', '?')} steps on {corpus} · {bpc}\n"
                f"{describe(self.settings, self.rng_seed)}\n"
                "Type text and the model continues it; Enter alone keeps going; /help for commands; "
                "Ctrl-D to leave.")


def _setup_readline(history: Path):
    """Line editing, history from `history`, and Tab completion of command names; None without readline."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: plain input() still works
        return None
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(history)
    except FileNotFoundError:
        pass
    except OSError as e:
        print(f"note: cannot read the history file {history} ({e.strerror}); starting without it", file=sys.stderr)

    def complete(text: str, state: int) -> str | None:
        matches = [f"/{name} " for name in COMMANDS if f"/{name}".startswith(text)] if text.startswith("/") else []
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t\n")
    if "libedit" in (readline.__doc__ or ""):  # macOS's readline is libedit, with its own syntax
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    return readline


def run_session(run_dir: Path, settings: SessionSettings, rng_seed: int | None = None, unknown: str = "error") -> int:
    """The `chargen interactive` command: returns the exit code.

    With stdin a terminal: banner, a prompt with line editing and history (~/.chargen_history), colour
    when the output is a terminal. Otherwise every input line is one turn, output is plain, and a bad
    line is a `UserError` naming its line number (a script should not carry on after a typo).
    """
    stdin, stdout, stderr = sys.stdin, sys.stdout, sys.stderr  # input() reads and prompts through these
    settings.sampling.validate()
    if settings.length < 1:
        raise UserError(f"--length must be >= 1, not {settings.length}")
    sampler, config = load_sampler(run_dir)
    if rng_seed is None:  # draw one, and show it, so a good session can be replayed with /seed or --rng-seed
        rng_seed = int(np.random.SeedSequence().generate_state(1)[0] % 1_000_000)
    interactive = stdin.isatty()
    colour = interactive and terminal_has_colour(stdout)
    session = Session(sampler, settings, rng_seed, stdout, stderr, colour=colour, live=stdout.isatty(),
                      unknown=unknown)
    session.say(session.banner(run_dir, config))
    if not interactive:
        for number, line in enumerate(stdin, 1):
            try:
                if not session.handle(line.rstrip("\r\n")):
                    break
            except CommandError as e:
                raise UserError(f"line {number}: {e}") from None
            if session.interrupted:  # Ctrl-C ends a script, not just its current turn
                raise KeyboardInterrupt
        return 0

    # Ctrl-C at the prompt leaves. Python turns SIGINT into KeyboardInterrupt only when whoever started it
    # did not ignore SIGINT, and a shell starts background jobs with it ignored: at a terminal the session
    # decides this itself.
    try:
        inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: signals are not ours to set
        inherited = None
    history = Path.home() / HISTORY_FILE
    readline = _setup_readline(history)
    # input() edits with readline only when stdout is the terminal too; otherwise show the prompt on stderr.
    prompt_on_stdout = stdout.isatty()
    # readline counts the prompt's width: \001 and \002 tell it where the invisible escape codes are.
    prompt = f"\001{switch(PROMPT_STYLE)}\002{PROMPT}\001{RESET}\002" if colour and readline else PROMPT
    try:
        while True:
            try:
                if not prompt_on_stdout:
                    stderr.write(PROMPT)
                    stderr.flush()
                line = input(prompt if prompt_on_stdout else "")
            except (EOFError, KeyboardInterrupt):
                stderr.write("\n")
                return 0
            try:
                if not session.handle(line):
                    return 0
            except CommandError as e:
                session.say(f"error: {e}", ERROR_COLOUR)
    finally:
        if inherited is not None:
            signal.signal(signal.SIGINT, inherited)
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError as e:
                print(f"note: cannot write the history file {history} ({e.strerror})", file=stderr)
