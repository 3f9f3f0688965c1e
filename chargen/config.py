"""The configuration dataclasses: the one source of every default, help text and choice.

A field made with `option(...)` is a command-line option: chargen/cli.py builds `--name` from the
field's name, type, default and metadata (help, choices, metavar, a parser for the text), so an option
is described in exactly one place. Kept free of torch so that building the command line costs nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from chargen.errors import UserError

CELL_TYPES = ("rnn", "lstm", "gru")
HEADS = ("char", "series", "classify")
POOLINGS = ("last", "mean", "max", "mean-max")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SIZINGS = ("auto", "fixed")
OPTIMIZERS = ("adamw", "muon")
# `chargen train`'s defaults for the settings that automatic sizing chooses (chargen/sizing.py), as --help
# says them; the values in the dataclasses below are the fixed defaults (--sizing fixed).
SIZED_OPTION_DEFAULTS = {
    "hidden": "sized to the text, the budget and this machine's speed; 256 with --sizing fixed",
    "dropout": "sized to the passes over the text and the parameters per character of it; 0.0 with --sizing "
               "fixed",
    "batch_size": "32 on a CPU, 128 on an accelerator; 32 with --sizing fixed",
    "lr": "sized to the width; 0.005 with --sizing fixed",
    "epochs": "no limit; sizing sets 10 when a time budget would pass over the text more often",
}


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1.5h' -> seconds."""
    text = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise UserError(f"--max-time {text!r} is not a duration; use e.g. 90, 90s, 5m or 1h") from None
    if not seconds > 0 or math.isinf(seconds):
        raise UserError(f"--max-time must be positive, not {text!r}")
    return seconds


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, shown: str | None = None, minimum: int | None = None) -> Any:
    """A dataclass field that is also a command-line option (see chargen/cli.py's add_config_options).

    parse: turns the option's text into the field's value (e.g. a duration into seconds; by default
    the field's own type). shown: the default as --help states it, where the value itself would mislead.
    minimum: an integer option below it is a usage error.
    """
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar, "parse": parse,
                                            "shown": shown, "minimum": minimum})


@dataclass
class ModelConfig:
    """Architecture of a run; saved in config.json, enough to rebuild the model."""

    # The GRU learns more per step than the LSTM: 1.45 vs 1.47-1.48 nats/char in 5 minutes, and
    # 2x256 beat 2x384 and 2x512 in 5 minutes on a 2-core CPU (BENCHMARKS.md).
    cell: str = option("gru", f"recurrent cell: {', '.join(CELL_TYPES)}", choices=CELL_TYPES)
    hidden: int = option(256, "units per recurrent layer")
    layers: int = option(2, "recurrent layers")
    embedding: int = option(64, "character embedding size")
    dropout: float = option(0.0, "dropout between layers and before the output")
    tie_weights: bool = option(False, "share the embedding and output matrices (needs --embedding = --hidden)")
    head: str = "char"        # "char": ids -> logits; "series": values -> values; "classify": ids -> class logits
    vocab_size: int = 0       # char and classify heads: number of ids, <unk> included
    inputs: int = 1           # series head: values per time step
    outputs: int = 1          # series head: values predicted per step (the horizon); classify head: classes
    # Classify head: the states over a text -> one vector; mean measured best (BENCHMARKS.md, classifier).
    pooling: str = option("mean", "classifier: how the states over a text become one vector (mean-max: both, side "
                          "by side)", choices=POOLINGS)
    # Series head: networks trained side by side from different starting weights, their median the forecast.
    ensemble: int = option(1, "series: networks trained side by side from different starting weights; the "
                           "forecast is their median", minimum=1)

    def validate(self) -> None:
        """Refuse impossible settings with the option's name."""
        if self.cell not in CELL_TYPES:
            raise UserError(f"--cell {self.cell!r} is not a cell type; choose one of {', '.join(CELL_TYPES)}")
        for name in ("hidden", "layers", "embedding"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be a positive integer, not {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), not {self.dropout}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}")
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise UserError(f"--ensemble must be a positive integer, not {self.ensemble}")
        if self.pooling not in POOLINGS:
            raise UserError(f"--pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        if self.tie_weights and self.head == "char" and self.embedding != self.hidden:
            raise UserError(f"--tie-weights needs --embedding equal to --hidden ({self.embedding} != {self.hidden})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainConfig:
    """How to train; every option field is an option of `chargen train` with this default."""

    # Chosen by measurement (BENCHMARKS.md, quality per minute): in a fixed time, many small steps
    # beat few large ones; 32 x 64 at lr 5e-3 reached 1.474 nats/char in 5 minutes where 64 x 128 at
    # 2e-3 stayed above 1.54 with the same model.
    batch_size: int = option(32, "parallel streams per step (all processes together)")
    seq_len: int = option(64, "characters per chunk: how far back gradients flow (truncated BPTT)")
    lr: float = option(5e-3, "peak learning rate (AdamW)")
    optimizer: str = option("adamw", "adamw, or muon: Muon for the recurrent weight matrices, AdamW for the rest",
                            choices=OPTIMIZERS)
    lr_floor: float = option(0.05, "final learning rate as a fraction of --lr (cosine decay to the end of the budget)")
    weight_decay: float = option(0.01, "AdamW weight decay on weight matrices")
    warmup_steps: int = option(50, "steps of linear learning-rate warm-up")
    clip: float = option(1.0, "clip the global gradient norm to this")
    max_steps: int = option(0, "stop after this many steps (0 = no limit)")
    epochs: float = option(0.0, "stop after this many passes over the training text (0 = no limit)")
    max_time: float = option(0.0, "stop after this long, e.g. 90, 90s, 5m, 1h", metavar="DURATION",
                             parse=parse_duration, shown="5m when no other limit is given")
    eval_every: int = option(0, "evaluate every N steps (0 = at each fifth of the budget, less often when a "
                                "validation would take over a tenth of a time budget)")
    save_every: float = option(600.0, "also save the trainer state every this many seconds")
    patience: int = option(0, "stop after this many evaluations without improvement (0 = never)")
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    precision: str = option("auto", f"{', '.join(PRECISIONS)}; auto = mixed precision on CUDA, bf16 autocast on "
                            "CPUs with native bf16 (AVX512-BF16/AMX: ~1.6x faster, same loss), fp32 elsewhere",
                            choices=PRECISIONS)
    rng_seed: int = option(1337, "random seed: same seed, same run (on the same machine: sizing measures its speed)")
    sizing: str = option("auto", "auto: choose the width, dropout, streams and learning rate for the text, the budget "
                         "and this machine's measured speed (options given explicitly are kept); fixed: the fixed "
                         "defaults", choices=SIZINGS)
    max_bad_steps: int = option(5, "give up after this many non-finite steps in a row")

    def validate(self) -> "TrainConfig":
        """Refuse impossible settings with the option's name."""
        for name in ("batch_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, not {getattr(self, name)}")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name} must be > 0, not {getattr(self, name)}")
        for name in ("max_steps", "epochs", "max_time", "eval_every", "patience", "warmup_steps",
                     "weight_decay", "save_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, not {getattr(self, name)}")
        if not 0 <= self.lr_floor <= 1:
            raise UserError(f"--lr-floor must be in [0, 1], not {self.lr_floor}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.sizing not in SIZINGS:
            raise UserError(f"--sizing {self.sizing!r}: choose one of {', '.join(SIZINGS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        return self

    def describe_budget(self) -> str:
        """The limits in force, e.g. "300 steps, 120s"."""
        return ", ".join(part for part in (
            f"{self.max_steps} steps" if self.max_steps else "",
            f"{self.epochs:g} epochs" if self.epochs else "",
            f"{self.max_time:g}s" if self.max_time else "") if part)

    def has_budget(self) -> bool:
        """Whether a step, epoch or time limit is given."""
        return bool(self.max_steps or self.epochs or self.max_time)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
