"""Sampling: the next-character rule and streaming generation from a run.

Flow: load the run's weights into the numpy `NumpyStepper` (no torch import: `generate`
starts in a fraction of a second), feed the seed once to build the hidden state, then one step
per character carrying the state. The context is never fed again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from chargen.errors import UserError
from chargen.stepper import NumpyStepper
from chargen.vocab import UNK_ID, Vocab


@dataclass(frozen=True)
class SamplingSettings:
    """How the next character is chosen."""

    temperature: float = 0.8
    top_k: int = 0      # 0 = no limit
    top_p: float = 1.0  # 1 = no nucleus cut

    def validate(self) -> "SamplingSettings":
        """Refuse impossible values, naming the option."""
        if not 0 <= self.temperature < float("inf"):
            raise UserError(f"--temperature must be a number >= 0 (0 = always the likeliest character), "
                            f"not {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0 = no limit), not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], not {self.top_p}")
        return self


def _weights(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """Unnormalised probabilities (B, V) float64 of the next character under `settings` (temperature > 0).

    Temperature divides the logits; top-k keeps the k likeliest; top-p keeps the smallest set whose
    mass reaches p. The `<unk>` id always gets weight 0. Left unnormalised: drawing needs only the
    running sum, so normalising would be one more pass per character for nothing.
    """
    w = logits.astype(np.float64)  # float64: exact enough for tiny temperatures
    w[:, UNK_ID] = -np.inf
    # Shift the largest logit to 0 before dividing: a tiny temperature then sends the others to -inf
    # (weight 0) instead of overflowing to inf - inf = nan.
    w -= w.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        w /= settings.temperature
    V = w.shape[1]
    if 0 < settings.top_k < V:
        kth = np.partition(w, V - settings.top_k, axis=1)[:, V - settings.top_k][:, None]
        w[w < kth] = -np.inf
    np.exp(w, out=w)
    if settings.top_p < 1:
        order = np.argsort(-w, axis=1)
        sorted_w = np.take_along_axis(w, order, axis=1)
        # keep a character while the mass before it is below p (the likeliest is always kept)
        before = np.cumsum(sorted_w, axis=1) - sorted_w
        drop_sorted = before >= settings.top_p * w.sum(axis=1, keepdims=True)
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=1)
        w[drop] = 0
    return w


def _argmax_without_unk(logits: np.ndarray) -> np.ndarray:
    """The likeliest id of each row of (B, V) logits other than `<unk>`."""
    logits = logits.copy()
    logits[:, UNK_ID] = -np.inf
    return logits.argmax(axis=1)


def next_char_probs(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """The distribution the next character is drawn from: (B, V) logits -> (B, V) probabilities.

    Temperature divides the logits (0 puts all mass on the argmax); top-k keeps the k likeliest;
    top-p keeps the smallest set whose mass reaches p. The `<unk>` id is never produced.
    """
    if settings.temperature == 0:
        probs = np.zeros(logits.shape)
        probs[np.arange(len(logits)), _argmax_without_unk(logits)] = 1.0
        return probs
    w = _weights(logits, settings)
    return w / w.sum(axis=1, keepdims=True)


def sample_next(logits: np.ndarray, settings: SamplingSettings,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one id per row of (B, V) logits; returns the ids (B,) and the probability each was given."""
    if settings.temperature == 0:
        return _argmax_without_unk(logits), np.ones(len(logits))
    w = _weights(logits, settings)
    cdf = np.cumsum(w, axis=1)
    total = cdf[:, -1]
    # The first id whose running mass exceeds u ~ U(0, total); the min guards u == total.
    u = rng.random(len(w)) * total
    ids = np.minimum((cdf <= u[:, None]).sum(axis=1), w.shape[1] - 1)
    return ids, w[np.arange(len(ids)), ids] / total


class Sampler:
    """A model's hidden state plus the vocabulary: feed text, then draw characters one by one."""

    def __init__(self, stepper: NumpyStepper, vocab: Vocab, streams: int = 1):
        self.stepper = stepper
        self.vocab = vocab
        self.streams = streams
        self.reset()

    def reset(self) -> None:
        """Forget all context."""
        self.state = self.stepper.zero_state(self.streams)
        self.logits: np.ndarray | None = None  # (B, V) after the last character fed

    def snapshot(self) -> tuple:
        """A copy of the current state, to return to later with `restore` (stepping updates it in place)."""
        return tuple(a.copy() for a in self.state), self.logits

    def restore(self, snapshot: tuple) -> None:
        """Go back to a `snapshot` (which stays valid: it is copied again)."""
        state, self.logits = snapshot
        self.state = tuple(a.copy() for a in state)

    def encode_seed(self, text: str, unknown: str = "error") -> np.ndarray:
        """Ids of seed text; unknown characters are an error naming them, skipped, or fed as <unk>."""
        text = self.vocab.prepare(text)
        ids = self.vocab.encode_normalized(text)
        if (ids == UNK_ID).any():
            if unknown == "error":
                shown = " ".join(repr(c) for c in self.vocab.unknown(text)[:10])
                raise UserError(f"the seed has characters the model never saw: {shown}; "
                                "change the seed, or pass --unknown skip (drop them) or --unknown unk")
            if unknown == "skip":
                ids = ids[ids != UNK_ID]
        return ids

    def feed(self, ids: np.ndarray) -> None:
        """Advance every stream over the same ids (priming), keeping the logits after the last."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        # Streams in one state (after reset, or primed together) stay identical under the same ids:
        # step one of them and copy it (a 64-stream seed costs one stream's time, not 64).
        # States are tuples of batch-first arrays (see NumpyStepper).
        rows = 1 if all((s == s[:1]).all() for s in self.state) else self.streams
        state = tuple(s[:rows].copy() for s in self.state)
        column = np.empty(rows, dtype=np.int64)
        for i in ids:
            column.fill(i)
            logits = self.stepper.advance(column, state)
        copies = self.streams // rows
        self.logits = np.repeat(logits, copies, axis=0)
        self.state = tuple(np.repeat(s, copies, axis=0) for s in state)

    def stream(self, length: int, settings: SamplingSettings, rng: np.random.Generator,
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield `length` steps of (ids (B,), their probabilities (B,)), each fed back into the state."""
        if self.logits is None:  # nothing fed yet: start from a newline, the most neutral context
            self.feed(self.encode_seed("\n", unknown="unk"))
        for _ in range(length):
            ids, p = sample_next(self.logits, settings, rng)
            self.logits = self.stepper.advance(ids, self.state)
            yield ids, p


def load_sampler(run_dir: Path, streams: int = 1) -> tuple[Sampler, dict]:
    """A `Sampler` for a char run directory, and the run's config (reads weights without torch)."""
    from chargen.checkpoint import TOKENIZER, WEIGHTS, check_complete, read_config, read_weights
    from chargen.heads import require_head

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    require_head(run_dir, config["model"], "char")
    check_complete(run_dir, (WEIGHTS, TOKENIZER))
    vocab = Vocab.load(run_dir / TOKENIZER)
    weights = read_weights(run_dir, framework="np")
    try:
        stepper = NumpyStepper(weights, config["model"])
    except (KeyError, ValueError) as e:
        raise UserError(f"{run_dir / WEIGHTS} does not match config.json ({e}); retrain the run") from None
    if stepper.vocab_size != len(vocab):
        raise UserError(f"{run_dir}: the model has {stepper.vocab_size} outputs but tokenizer.json "
                        f"{len(vocab)} ids; the run is inconsistent — retrain it")
    return Sampler(stepper, vocab, streams), config


def generate_streams(run_dir: Path, seed: str = "\n", length: int = 500,
                     settings: SamplingSettings = SamplingSettings(),
             num_samples: int = 1, rng_seed: int | None = None, stop: str | None = None,
             unknown: str = "error", include_seed: bool = False) -> Iterator[list[str]]:
    """Stream generated text: yields, per step, one new character for each of `num_samples` samples.

    Samples are drawn together as one batch. A sample that has produced `stop` yields "" from then on;
    generation ends when every sample has stopped or after `length` characters.
    """
    settings.validate()
    if length < 0:
        raise UserError(f"--length must be >= 0, not {length}")
    if num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, not {num_samples}")
    if not seed:
        raise UserError("--seed is empty; give at least one character (the default is a newline)")
    sampler, _ = load_sampler(run_dir, streams=num_samples)
    ids = sampler.encode_seed(seed, unknown)
    if len(ids) == 0:
        raise UserError("nothing is left of the seed after dropping unknown characters; change the seed")
    sampler.feed(ids)
    rng = np.random.default_rng(rng_seed)
    tails = [""] * num_samples
    done = [False] * num_samples
    if include_seed:
        yield [sampler.vocab.decode(ids)] * num_samples
    for step_ids, _ in sampler.stream(length, settings, rng):
        out = []
        for b, i in enumerate(step_ids):
            if done[b]:
                out.append("")
                continue
            ch = sampler.vocab.id_to_char(int(i))
            out.append(ch)
            if stop:
                tails[b] = (tails[b] + ch)[-len(stop):]
                done[b] = tails[b] == stop
        yield out
        if all(done):
            return
    if stop:
        from chargen.log import info

        info(f"--stop {stop!r} did not occur in {length} characters" +
             ("" if num_samples == 1 else f" ({num_samples - sum(done)} of {num_samples} samples)"))
