"""Automatic sizing: the model and training settings for this text, this budget and this machine.

A character model trained for a fixed time learns most when its size matches the characters it will
see: too large and it makes too few updates, too small and it runs out of capacity (BENCHMARKS.md,
"Sizing"). The rule, fitted there on a grid of runs:

1. A loss model, L(N, D) = E + A / N**alpha + B / D**beta for N parameters after D characters seen,
   fitted by least squares to the grid's runs (`python bench/sizing.py fit`).
2. Text that a run sees again is worth less than new text, and parameters beyond what a text can use are
   worth less than the first ones (Muennighoff et al., 2023, "Scaling data-constrained language models":
   the k-th repetition is worth about exp(-k / 15) of a new character; parameters beyond one per
   character of the text decay likewise, with 5.3): N and D are taken at their worth, which the corpus
   size caps.
3. A time budget: a probe times a few real training steps (random characters; the run's device,
   precision and batch) of each width of the ladder, small to large, which gives the characters each
   width would see (the timings smoothed across widths: `smoothed_rates`); the width the model puts
   lowest wins, and the probe stops once the prediction rises.
   A step or epoch budget fixes the characters seen instead: then the width that makes the most of
   them per unit of compute (where the model's two terms fall equally fast) wins.
4. How long: a time budget that would pass over the text more than USEFUL_PASSES times ends after that
   many (an epoch limit), its learning rate annealed by then: on a small text a larger model with dropout,
   trained that long, beats any model trained for the whole budget, which memorises the text.
5. The learning rate scales as 1/sqrt(width) around the measured 5e-3 at 256; dropout grows with the
   passes over the text times the parameters per character of it (how far the model can memorise it).

Every setting the user gave explicitly is kept; only the others are chosen. Rank 0 decides under
torchrun and every rank takes its choice.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from chargen.config import ModelConfig, TrainConfig
from chargen.runtime import Distributed

# Widths tried, two layers each. Steps of ~1.25-1.5x: finer than the loss can tell apart in one run.
LADDER = (64, 96, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1536, 2048)
# Validation nats/char of a two-layer GRU of N parameters after D effective characters seen, fitted to
# tinyshakespeare's cells of the grid (BENCHMARKS.md, "Sizing"). Where its minimum over the widths lies is
# what is used, not its level, which is that corpus's.
LOSS_FIT = {"E": 1.201, "A": 11.41, "alpha": 0.311, "B": 3699.0, "beta": 0.707}
REPEAT_HALF_LIFE = 15.0       # R*_D of the data-constrained scaling law: value of repeated passes
EXCESS_HALF_LIFE = 5.3        # R*_N of the same law: value of parameters beyond what the text can use
# At most this many parameters per training character (the smallest width is always allowed): the
# largest measured to win. On an 86k-character text, 10 passes, dropout 0.3: 16.7 a character (2x384)
# 1.784 nats/char, 7.7 (2x256) 1.807, 4.5 (2x192) 1.836 (BENCHMARKS.md, "Sizing").
PARAMETERS_PER_CHAR = 20.0
# A time budget that would pass over the text more often ends after this many passes. On the same text,
# 2x256 with dropout 0.3 reached 1.890 after 6 passes, 1.807 after 10, 1.813 (best at 12.8) after 16;
# trained for 5 minutes (62 passes) its best was 1.876, at a fifth of the run.
USEFUL_PASSES = 10.0
# Dropout grows with the memorising pressure: passes over the text x parameters per character of it.
# None up to DROPOUT_FREE_PRESSURE (0.1 cost 0.01-0.03 at pressures of 3-5 on tinyshakespeare), then
# DROPOUT_PER_DOUBLING per doubling: 0.3 beat 0 by 0.07 at 62 (2x128, 28 passes); at 77 (2x256, 10
# passes) 0.2 reached 1.792, 0.3 1.807.
DROPOUT_FREE_PRESSURE = 16.0
DROPOUT_PER_DOUBLING = 0.1
MAX_DROPOUT = 0.3
REFERENCE_LR, REFERENCE_WIDTH = 5e-3, 256   # measured best for 2x256 (BENCHMARKS.md, defaults)
LR_RANGE = (1.5e-3, 1e-2)
PROBE_SHARE = 0.03            # the probe's share of a time budget...
PROBE_FLOOR = 3.0             # ...but at least this many seconds (at most a tenth of the budget): a 1-minute
                              # budget needs the widths up to 256 measured, ~2 s here
PROBE_TIMED_STEPS = 2         # timed steps per width, after one untimed (allocation, kernel choice)
EVAL_SHARE = 0.08             # share of a time budget the validations take (measured 4-20%; loop.MAX_EVAL_SHARE)
SIZED_MODEL = ("hidden", "dropout")
SIZED_TRAIN = ("batch_size", "lr")


@dataclass
class Sizing:
    """What automatic sizing chose, and why: printed in one line, kept in config.json."""

    hidden: int
    layers: int
    streams: int
    seq_len: int
    lr: float
    dropout: float
    parameters: int
    train_chars: int
    budget: str
    chars_seen: float            # expected over the budget
    chars_per_s: float | None    # measured by the probe (None without a time budget)
    epochs: float
    chars_per_parameter: float   # effective characters per parameter
    passes_limit: float          # the run stops after this many passes over the text (0: at its budget)
    chosen: list[str]            # the settings sizing chose (the others were given)
    probe_s: float

    def line(self) -> str:
        """The one line said at the start of training."""
        speed = f", measured {self.chars_per_s:,.0f} characters/s at this size" if self.chars_per_s else ""
        stop = ", then it stops: more passes would memorise the text" if self.passes_limit else ""
        return (f"sizing: {self.layers}x{self.hidden} ({self.parameters / 1e6:.2f}M parameters), {self.streams} "
                f"streams x {self.seq_len}, lr {self.lr:.2g}, dropout {self.dropout:g} for {self.train_chars:,} "
                f"training characters and a budget of {self.budget}{speed}: ~{self.chars_seen / 1e6:.1f}M "
                f"characters seen, {self.epochs:.1f} passes over the text{stop} "
                f"(chosen: {', '.join('--' + name.replace('_', '-') for name in self.chosen)}; give one to fix it)")

    def record(self) -> dict:
        """The config.json entry."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def effective_chars(seen: float, unique: int) -> float:
    """Characters seen, counting repeated passes over a text of `unique` characters at their worth."""
    if seen <= unique:
        return seen
    repeats = seen / unique - 1
    return unique * (1 + REPEAT_HALF_LIFE * (1 - math.exp(-repeats / REPEAT_HALF_LIFE)))


def effective_parameters(parameters: float, unique: int) -> float:
    """Parameters beyond one per character of the text, at their worth: the same law's other half (excess
    parameters decay with R*_N = 5.3, faster than repeated characters), so that a smaller text never asks
    for a larger model."""
    if parameters <= unique:
        return parameters
    return unique * (1 + EXCESS_HALF_LIFE * (1 - math.exp(-(parameters / unique - 1) / EXCESS_HALF_LIFE)))


def predicted_loss(parameters: float, effective: float) -> float:
    """The fitted loss model at N (effective) parameters and D effective characters seen."""
    fit = LOSS_FIT
    return fit["E"] + fit["A"] / parameters ** fit["alpha"] + fit["B"] / max(effective, 1.0) ** fit["beta"]


def compute_optimal_parameters(effective: float) -> float:
    """The N at which, for D effective characters, the loss model's two terms fall equally fast with
    compute (N x D): alpha A / N**alpha = beta B / D**beta."""
    fit = LOSS_FIT
    capacity_term = fit["beta"] * fit["B"] / max(effective, 1.0) ** fit["beta"]
    return (fit["alpha"] * fit["A"] / capacity_term) ** (1 / fit["alpha"])


def dropout_for(epochs: float, parameters: int, train_chars: int) -> float:
    """Dropout for a model of `parameters` that passes over its text of `train_chars` `epochs` times."""
    pressure = epochs * parameters / train_chars
    if pressure <= DROPOUT_FREE_PRESSURE:
        return 0.0
    return round(min(MAX_DROPOUT, DROPOUT_PER_DOUBLING * math.log2(pressure / DROPOUT_FREE_PRESSURE)), 2)


def lr_for(hidden: int) -> float:
    """Peak learning rate for a width: 1/sqrt(width) scaling around the measured best at 256."""
    lr = REFERENCE_LR * math.sqrt(REFERENCE_WIDTH / hidden)
    return float(f"{min(max(lr, LR_RANGE[0]), LR_RANGE[1]):.2g}")


def default_streams(device: torch.device) -> int:
    """Streams per step: 32 on a CPU (measured best there); an accelerator needs a wider batch to be busy."""
    return 32 if device.type == "cpu" else 128


def parameters_of(model: ModelConfig) -> int:
    """Trainable parameters of a model, counted on the meta device (no memory, no time)."""
    from chargen.model import build_model, count_parameters

    with torch.device("meta"):
        return count_parameters(build_model(dataclasses.replace(model)))


def time_steps(model: ModelConfig, batches: Callable[[], list], loss_of: Callable, train: TrainConfig,
               device: torch.device, amp_dtype: torch.dtype | None) -> list[float]:
    """Seconds of real training steps (forward, loss, backward, clipping, optimizer step) of a new model of
    this config on each of `batches()` (inputs, target) but the first, which is untimed (allocation, kernel
    choice). loss_of(output, target) -> the loss. The random state is left as it was."""
    from chargen.loop import make_optimizer
    from chargen.model import build_model

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        net = build_model(dataclasses.replace(model)).to(device).train()
        optimizer = make_optimizer(net, train, device)
        times = []
        for step, (inputs, target) in enumerate(batches()):
            _synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                output, _ = net(inputs)
                loss = loss_of(output, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), train.clip)
            optimizer.step()
            _synchronize(device)
            if step:
                times.append(time.perf_counter() - start)
    return times


def measure_chars_per_s(model: ModelConfig, streams: int, seq_len: int, train: TrainConfig, device: torch.device,
                        amp_dtype: torch.dtype | None) -> float:
    """Training characters per second of this model on this device: a few real steps on random characters."""
    def batches() -> list:
        ids = torch.randint(0, model.vocab_size, (streams, seq_len + 1), device=device)
        return [(ids[:, :-1], ids[:, 1:])] * (1 + PROBE_TIMED_STEPS)

    def loss_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), target.flatten())

    return streams * seq_len / min(time_steps(model, batches, loss_of, train, device, amp_dtype))


def choose(model: ModelConfig, train: TrainConfig, train_chars: int, device: torch.device,
           amp_dtype: torch.dtype | None, explicit: set[str], world: int = 1,
           measure=measure_chars_per_s) -> Sizing | None:
    """The sized settings of a new run, or None when every sized setting was given explicitly.

    model: its vocab_size set, the given settings in place; explicit: the ModelConfig and TrainConfig
    field names the user chose; world: processes training together (each probes its share of the
    batch; the rates add up). measure(model, streams, seq_len, train, device, amp_dtype) -> characters/s
    of one process (a parameter so that tests can give the machine's speed).
    """
    sized = [name for name in (*SIZED_MODEL, *SIZED_TRAIN) if name not in explicit]
    if not sized:
        return None
    streams = train.batch_size if "batch_size" in explicit else default_streams(device)
    seq_len = train.seq_len
    widths = [model.hidden] if "hidden" in explicit else list(LADDER)
    # Only a time budget is cut short: a step or epoch limit the user gave is what they asked for.
    may_stop_early = bool(train.max_time) and not (train.max_steps or train.epochs or "epochs" in explicit)

    def candidate(hidden: int, parameters: int, rate: float | None) -> tuple[float, Sizing]:
        """(score: lower is better, the settings) of one width at `rate` characters/s (None: no time budget)."""
        seen = []
        if train.max_steps:
            seen.append(train.max_steps * streams * seq_len)
        if train.epochs:
            seen.append(train.epochs * train_chars)
        if rate is not None:
            seen.append(rate * train.max_time * (1 - EVAL_SHARE))
        chars_seen = min(seen)
        passes_limit = USEFUL_PASSES if may_stop_early and chars_seen > USEFUL_PASSES * train_chars else 0.0
        if passes_limit:
            chars_seen = passes_limit * train_chars
        effective = effective_chars(chars_seen, train_chars)
        epochs = chars_seen / train_chars
        choice = Sizing(hidden=hidden, layers=model.layers, streams=streams, seq_len=seq_len,
                        lr=train.lr if "lr" in explicit else lr_for(hidden),
                        dropout=model.dropout if "dropout" in explicit else dropout_for(epochs, parameters,
                                                                                         train_chars),
                        parameters=parameters, train_chars=train_chars, budget=train.describe_budget(),
                        chars_seen=chars_seen, chars_per_s=rate, epochs=epochs,
                        chars_per_parameter=effective / parameters, passes_limit=passes_limit,
                        chosen=sized + (["epochs"] if passes_limit else []), probe_s=0.0)
        if rate is not None:  # a time budget: the width the loss model puts lowest
            return predicted_loss(effective_parameters(parameters, train_chars), effective), choice
        # the characters are fixed: the width nearest the compute-optimal size for them
        return abs(math.log(parameters / compute_optimal_parameters(effective))), choice

    allowance = probe_allowance(train.max_time)
    parameters_of(model)  # the first call imports the model code: not the probe's time
    probe_start = time.perf_counter()
    probed: list[tuple[int, int, float | None]] = []  # (hidden, parameters, measured characters/s)
    scored: list[tuple[float, Sizing]] = []
    for hidden in widths:
        parameters = parameters_of(dataclasses.replace(model, hidden=hidden))
        if probed and parameters > PARAMETERS_PER_CHAR * train_chars:
            break  # a model this large for this text would memorise it
        rate = None
        if train.max_time:
            if probed and time.perf_counter() - probe_start > allowance:
                break  # the probe has had its share of the budget: keep the best width measured
            rate = if_it_fits(partial(measure, dataclasses.replace(model, hidden=hidden), max(1, streams // world),
                                      seq_len, train, device, amp_dtype), device, first=not probed)
            if rate is None:
                break  # the accelerator cannot hold this width: the largest that fits is the limit
            rate *= world
        probed.append((hidden, parameters, rate))
        rates = smoothed_rates([(n, r) for _, n, r in probed]) if train.max_time else [None] * len(probed)
        scored = [candidate(h, n, r) for (h, n, _), r in zip(probed, rates)]
        if len(scored) > 1 and scored[-1][0] > min(score for score, _ in scored[:-1]):
            break  # past the best width: the score only rises from here (fewer characters, or farther)
    choice = min(scored, key=lambda pair: pair[0])[1]
    choice.probe_s = round(time.perf_counter() - probe_start, 2)
    return choice


def smoothed_rates(timings: list[tuple[int, float]]) -> list[float]:
    """Characters/s of each probed width from a line of time per character against parameters, fitted to
    all of them: two timed steps of one width vary by up to 40% on a busy 2-core machine, and a choice
    between widths that the loss model puts within 0.01 of each other must not follow that noise. The
    line is the least-absolute-relative-error one (it passes through two of the points), so that one
    width timed far off does not pull it. timings: (parameters, measured characters/s); fewer than three,
    or no rising line through two of them, are taken as measured."""
    measured = [rate for _, rate in timings]
    if len(timings) < 3:
        return measured
    points = [(parameters, 1.0 / rate) for parameters, rate in timings]  # (N, seconds per character)
    best = None  # (summed relative error, seconds per character at N = 0, seconds per character per parameter)
    for (n1, t1), (n2, t2) in itertools.combinations(points, 2):
        slope = (t2 - t1) / (n2 - n1) if n2 != n1 else 0.0
        overhead = t1 - slope * n1
        if slope <= 0 or overhead < 0:
            continue  # time must rise with the parameters, from a fixed cost that is not negative
        error = sum(abs(overhead + slope * n - t) / t for n, t in points)
        if best is None or error < best[0]:
            best = (error, overhead, slope)
    if best is None:
        return measured
    return [1.0 / (best[1] + best[2] * parameters) for parameters, _ in timings]


def apply(sizing: Sizing, model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The configs with the sized settings in place."""
    model = dataclasses.replace(model, hidden=sizing.hidden, dropout=sizing.dropout)
    train = dataclasses.replace(train, batch_size=sizing.streams, seq_len=sizing.seq_len, lr=sizing.lr,
                                epochs=sizing.passes_limit or train.epochs)
    return model, train


def probe_allowance(max_time: float) -> float:
    """Seconds a width probe may take: its share of a time budget, but at least PROBE_FLOOR (at most a tenth
    of the budget)."""
    return max(PROBE_SHARE * max_time, min(PROBE_FLOOR, 0.1 * max_time))


def if_it_fits(measure: Callable[[], Any], device: torch.device, first: bool) -> Any | None:
    """measure(), or None when the accelerator ran out of memory on a width after the first (the widest that
    fits is then the limit; on the first width the error stands). The cache is emptied either way, so that
    the next width or the run starts from free memory."""
    try:
        return measure()
    except torch.cuda.OutOfMemoryError:
        if first:
            raise
        return None
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _synchronize(device: torch.device) -> None:
    """Wait for the accelerator's queued work, so that a timing measures it (CPU work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def size_new_run(model: ModelConfig, train: TrainConfig, train_chars: int, device: torch.device,
                 amp_dtype: torch.dtype | None, explicit: set[str],
                 dist: Distributed | None = None) -> tuple[ModelConfig, TrainConfig, Sizing | None]:
    """Choose (see `choose`) and apply the sized settings of a new run; under torchrun, rank 0's choice.

    Every rank probes at the same time (on a shared machine their speeds depend on each other), then
    takes rank 0's choice, so that every process builds the same model.
    """
    world = dist.world if dist is not None and dist.enabled else 1
    sizing = choose(model, train, train_chars, device, amp_dtype, explicit, world=world)
    if world > 1:
        import torch.distributed as tdist

        box = [sizing]
        tdist.broadcast_object_list(box, src=0)
        sizing = box[0]
    if sizing is None:
        return model, train, None
    model, train = apply(sizing, model, train)
    return model, train, sizing
