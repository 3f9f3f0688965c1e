"""Completions: an OpenAI-style completion request, checked, then carried out by the numpy sampler.

No HTTP here (`chargen/server.py` speaks that) and no torch. The flow of one request:

    parse_request(body, runs, limits) -> CompletionRequest   (or RequestError: the status and message)
    completion_steps(run, request, cancelled)                 yields, per character drawn, the Deltas
                                                              of the choices that have new text
    merge(deltas)                                             several Deltas of a choice as one

The characters come from `chargen.sample.Sampler`, exactly as `chargen generate` draws them: the
prompt is fed once, the n choices are drawn together as one batch from `default_rng(seed)`, so a
request with `seed` S gives the text of `chargen generate --rng-seed S --num-samples n --no-seed`.
Two differences, both the API's convention: a stop string ends a choice and is not part of its text,
and the text of a choice is held back while it might be the start of a stop string.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from chargen.checkpoint import CONFIG
from chargen.config import option
from chargen.errors import UserError
from chargen.sample import Sampler, SamplingSettings, load_sampler, next_char_probs
from chargen.stepper import NumpyStepper
from chargen.vocab import UNK_ID

MAX_STOPS = 4        # stop strings per request, as in the OpenAI API
MAX_LOGPROBS = 5     # alternatives per character with `logprobs`, as in the OpenAI API
# Parameters of the OpenAI API this server does not implement: refused when given a value other than
# the one that means "off", so a client never silently gets something else than it asked for.
UNSUPPORTED = {"echo": (False, None), "best_of": (1, None), "suffix": (None, ""), "logit_bias": (None, {}),
               "presence_penalty": (0, 0.0, None), "frequency_penalty": (0, 0.0, None)}
LOGPROB_FLOOR = -100.0


class RequestError(Exception):
    """A request the server refuses: the HTTP status, one line saying what to change, the parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many completions run at once (`chargen serve` options)."""

    max_prompt_chars: int = option(8000, "longest prompt in characters: 413 over it", minimum=1, metavar="N")
    max_tokens: int = option(4096, "largest max_tokens (characters per choice): 400 over it", minimum=1, metavar="N")
    max_n: int = option(8, "most choices per request (n): 400 over it", minimum=1, metavar="N")
    max_streams: int = option(64, "completions generated at once, streamed or not: 429 for one more", minimum=1,
                              metavar="N")

    def body_bytes(self) -> int:
        """The largest request body read: the prompt at 4 UTF-8 bytes a character (JSON escapes of
        control characters aside) plus room for the other parameters."""
        return 4 * self.max_prompt_chars + 16_384


class ServedRun:
    """One run the server offers: read once at start-up; a stepper per completion running at once.

    The steppers are clones sharing the weights (`NumpyStepper.clone`): each has the scratch
    buffers its thread writes into.
    """

    def __init__(self, name: str, run_dir: Path):
        sampler, config = load_sampler(run_dir)
        self.name, self.run_dir, self.config = name, Path(run_dir), config
        self.vocab = sampler.vocab
        self.created = int((self.run_dir / CONFIG).stat().st_mtime)
        self._template = sampler.stepper       # only ever cloned, never stepped
        self._free: list[NumpyStepper] = []    # clones not in use
        self._lock = threading.Lock()

    @contextmanager
    def stepper(self) -> Iterator[NumpyStepper]:
        """A stepper no other thread is using, returned to the pool afterwards."""
        with self._lock:
            stepper = self._free.pop() if self._free else self._template.clone()
        try:
            yield stepper
        finally:
            with self._lock:
                self._free.append(stepper)

    def describe(self) -> dict:
        """What a client may want to know about the run: cell, size, vocabulary, validation bits/char."""
        model, metrics = self.config["model"], self.config.get("metrics", {})
        return {"cell": model["cell"], "layers": model["layers"], "hidden": model["hidden"],
                "vocab_size": len(self.vocab), "val_bpc": metrics.get("val_bpc"), "steps": metrics.get("steps"),
                "corpus": self.config.get("corpus", {}).get("name")}


def load_runs(run_dirs: list[Path]) -> dict[str, ServedRun]:
    """The runs to serve by name (their folder's name); two runs of the same name are a user error."""
    runs: dict[str, ServedRun] = {}
    for run_dir in run_dirs:
        name = Path(run_dir).name
        if name in runs:
            raise UserError(f"two runs are called {name!r} ({runs[name].run_dir} and {run_dir}); the API names "
                            "a run by its folder's name: serve only one of them, or copy one to another name")
        runs[name] = ServedRun(name, run_dir)
    return runs


@dataclass(frozen=True)
class CompletionRequest:
    """A checked request: everything `completion_steps` needs."""

    model: str
    prompt: str
    prompt_ids: np.ndarray          # (P,) the prompt's ids; P may be 0 (start from a newline)
    max_tokens: int
    settings: SamplingSettings
    n: int
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool             # stream_options.include_usage: a last chunk with the usage
    logprobs: int | None            # None: no probabilities; k: each character's and the k likeliest


def _bad(message: str, param: str) -> RequestError:
    return RequestError(400, message, param, "invalid_value")


def _number(body: Mapping, name: str, default, kind: type, low: float, high: float | None = None,
            low_open: bool = False, limit_hint: str = ""):
    """body[name] as an int (kind int) or a finite number in [low, high] ((low, high] with low_open)."""
    value = body.get(name)
    if value is None:
        return default
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind is int and not is_int or kind is float and not (is_int or isinstance(value, float)):
        raise _bad(f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}", name)
    too_low = value <= low if low_open else value < low
    if not (is_int or math.isfinite(value)) or too_low or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise _bad(f"{name} must be {bounds}, not {value}{limit_hint}", name)
    return kind(value)


def parse_request(body: object, runs: Mapping[str, ServedRun], limits: Limits) -> CompletionRequest:
    """Check a decoded JSON body; a bad one raises `RequestError` (400, 404 unknown model, 413 too long)."""
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    name = body.get("model")
    if name is None and len(runs) == 1:
        name = next(iter(runs))
    if not isinstance(name, str):
        raise _bad(f"model must be the name of a run this server offers ({', '.join(runs)}), not {name!r}", "model")
    if name not in runs:
        raise RequestError(404, f"the model {name!r} does not exist here; this server offers: {', '.join(runs)}",
                           "model", "model_not_found")
    run = runs[name]
    for param, off in UNSUPPORTED.items():
        if param in body and body[param] not in off:
            raise _bad(f"{param} is not supported by chargen serve; leave it out", param)

    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string (or a list of one string); a character model takes text, not "
                   "token ids or several prompts", "prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(413, f"the prompt has {len(prompt)} characters; this server takes at most "
                           f"{limits.max_prompt_chars} (chargen serve --max-prompt-chars)", "prompt", "prompt_too_long")
    text = run.vocab.prepare(prompt)
    ids = run.vocab.encode_normalized(text)
    if (ids == UNK_ID).any():
        shown = " ".join(repr(c) for c in run.vocab.unknown(text)[:10])
        raise _bad(f"the prompt has characters the model {name!r} never saw: {shown}; leave them out", "prompt")

    max_tokens = _number(body, "max_tokens", 16, int, 0, limits.max_tokens,
                         limit_hint=f" (this server's limit: chargen serve --max-tokens {limits.max_tokens})")
    n = _number(body, "n", 1, int, 1, limits.max_n, limit_hint=" (this server's limit: chargen serve --max-n)")
    defaults = SamplingSettings()
    settings = SamplingSettings(_number(body, "temperature", defaults.temperature, float, 0),
                                _number(body, "top_k", defaults.top_k, int, 0),
                                _number(body, "top_p", defaults.top_p, float, 0, 1, low_open=True))
    seed = _number(body, "seed", None, int, 0, 2 ** 63 - 1)
    logprobs = _number(body, "logprobs", None, int, 0, MAX_LOGPROBS)

    stop = body.get("stop")
    stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not (isinstance(stops, (list, tuple)) and len(stops) <= MAX_STOPS
            and all(isinstance(s, str) and s for s in stops)):
        raise _bad(f"stop must be a non-empty string or a list of up to {MAX_STOPS} of them, not {stop!r}", "stop")

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad(f"stream must be true or false, not {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise _bad("stream_options must be an object such as {\"include_usage\": true}", "stream_options")
    return CompletionRequest(name, prompt, ids, max_tokens, settings, n, tuple(dict.fromkeys(stops)), seed,
                             stream, options.get("include_usage", False), logprobs)


@dataclass
class Delta:
    """New text of one choice: its characters, each one's log-probability entry, and whether it ended."""

    index: int
    text: str = ""
    logprobs: list[tuple[str, float, dict[str, float]]] = field(default_factory=list)  # per character
    finish_reason: str | None = None  # "stop" (a stop string, not included) or "length"


class StopScanner:
    """One choice's text so far; releases only what cannot be the start of a stop string."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.text = ""
        self.sent = 0            # characters released so far
        self.stopped = False

    def push(self, ch: str) -> tuple[int, int]:
        """Add a character; returns the range [start, end) of the text that may now be sent."""
        self.text += ch
        start = self.sent
        for s in self.stops:
            if self.text.endswith(s):
                self.stopped = True
                self.sent = len(self.text) - len(s)
                return start, self.sent
        # Hold back the longest end of the text that a stop string starts with.
        held = max((k for s in self.stops for k in range(min(len(s) - 1, len(self.text)), 0, -1)
                    if self.text.endswith(s[:k])), default=0)
        self.sent = len(self.text) - held
        return start, self.sent

    def flush(self) -> tuple[int, int]:
        """Release whatever was held back (the choice ended without a stop string)."""
        start, self.sent = self.sent, len(self.text)
        return start, self.sent


def _logprob_entries(logits: np.ndarray, ids: np.ndarray, top: int, vocab) -> list[tuple[str, float, dict]]:
    """Per row of (B, V) logits: the drawn character, its log-probability under the model's own
    distribution (temperature 1, the probability `interactive --probs` colours by), and the `top`
    likeliest characters with theirs."""
    probs = next_char_probs(logits, SamplingSettings(temperature=1.0))
    # JSON has no -infinity: a probability that underflowed to 0 is reported at a floor (p = e^-100).
    logp = np.log(np.maximum(probs, np.exp(LOGPROB_FLOOR)))
    entries = []
    for row, i in enumerate(ids):
        best = np.argsort(-probs[row])[:top] if top else ()
        entries.append((vocab.id_to_char(int(i)), float(logp[row, i]),
                        {vocab.id_to_char(int(j)): float(logp[row, j]) for j in best}))
    return entries


def completion_steps(run: ServedRun, request: CompletionRequest, cancelled: threading.Event) -> Iterator[list[Delta]]:
    """Draw the request's characters; yields, per step, the Deltas of the choices with something new.

    Stops early when every choice has met a stop string, or when `cancelled` is set (the client
    went away). Runs in a worker thread: it never touches the event loop.
    """
    with run.stepper() as stepper:
        sampler = Sampler(stepper, run.vocab, streams=request.n)
        # An empty prompt starts from a newline, the most neutral context (as Sampler.stream does).
        sampler.feed(request.prompt_ids if len(request.prompt_ids) else sampler.encode_seed("\n", unknown="unk"))
        rng = np.random.default_rng(request.seed)
        scanners = [StopScanner(request.stop) for _ in range(request.n)]
        entries: list[list] = [[] for _ in range(request.n)]
        before = sampler.logits  # (n, V): what the next characters are drawn from
        for ids, _ in sampler.stream(request.max_tokens, request.settings, rng):
            if cancelled.is_set():
                return
            if request.logprobs is not None:
                for k, entry in enumerate(_logprob_entries(before, ids, request.logprobs, run.vocab)):
                    entries[k].append(entry)
            before = sampler.logits
            deltas = []
            for k, i in enumerate(ids):
                if scanners[k].stopped:
                    continue  # drawn on with the others (the same random stream as generate), not sent
                start, end = scanners[k].push(run.vocab.id_to_char(int(i)))
                if end > start or scanners[k].stopped:
                    deltas.append(Delta(k, scanners[k].text[start:end], entries[k][start:end],
                                        "stop" if scanners[k].stopped else None))
            if deltas:
                yield deltas
            if all(s.stopped for s in scanners):
                return
        last = []
        for k, scanner in enumerate(scanners):
            if not scanner.stopped:
                start, end = scanner.flush()
                last.append(Delta(k, scanner.text[start:end], entries[k][start:end], "length"))
        if last:
            yield last


def merge(deltas: list[Delta]) -> list[Delta]:
    """Several steps' Deltas as one per choice (in index order): text and entries joined, the last finish."""
    by_choice: dict[int, Delta] = {}
    for d in deltas:
        into = by_choice.setdefault(d.index, Delta(d.index))
        into.text += d.text
        into.logprobs.extend(d.logprobs)
        into.finish_reason = d.finish_reason or into.finish_reason
    return [by_choice[k] for k in sorted(by_choice)]


def logprobs_json(entries: list[tuple[str, float, dict]], offset: int) -> dict:
    """The OpenAI completions `logprobs` object; `text_offset` counts from the start of the choice's text."""
    offsets = list(range(offset, offset + len(entries)))
    return {"tokens": [e[0] for e in entries], "token_logprobs": [e[1] for e in entries],
            "top_logprobs": [e[2] for e in entries], "text_offset": offsets}
