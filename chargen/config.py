"""The configuration dataclasses: the one source of every default (the command line reads them).

Kept free of torch so that building the command line costs nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from chargen.errors import UserError

CELL_TYPES = ("rnn", "lstm", "gru")
HEADS = ("char", "series", "classify")
POOLINGS = ("last", "mean", "max")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ModelConfig:
    """Architecture of a run; saved in config.json, enough to rebuild the model."""

    cell: str = "gru"         # learns more per step than the LSTM: 1.45 vs 1.47-1.48 in 5 minutes (BENCHMARKS.md)
    hidden: int = 256         # 2x256 beat 2x384 and 2x512 in 5 minutes on a 2-core CPU (BENCHMARKS.md)
    layers: int = 2
    embedding: int = 64
    dropout: float = 0.0
    tie_weights: bool = False
    head: str = "char"        # "char": ids -> logits; "series": values -> values; "classify": ids -> class logits
    vocab_size: int = 0       # char and classify heads: number of ids, <unk> included
    inputs: int = 1           # series head: values per time step
    outputs: int = 1          # series head: values predicted per step (the horizon); classify head: classes
    pooling: str = "mean"     # classify head: the states over a text -> one vector (last, mean, max); mean measured best

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
    """How to train; every field is a command-line option of `chargen train` with this default."""

    # Chosen by measurement (BENCHMARKS.md, quality per minute): in a fixed time, many small steps
    # beat few large ones; 32 x 64 at lr 5e-3 reached 1.474 nats/char in 5 minutes where 64 x 128 at
    # 2e-3 stayed above 1.54 with the same model.
    batch_size: int = 32        # parallel streams (all processes together)
    seq_len: int = 64           # characters per chunk: how far back gradients flow
    lr: float = 5e-3
    lr_floor: float = 0.05      # the cosine decays to lr * lr_floor at the end of the budget
    weight_decay: float = 0.01
    warmup_steps: int = 50
    clip: float = 1.0           # global gradient-norm clip
    max_steps: int = 0          # 0 = no step limit
    epochs: float = 0.0         # 0 = no epoch limit
    max_time: float = 0.0       # seconds; 0 = no time limit (5 minutes when no limit is given)
    eval_every: int = 0         # steps between evaluations; 0 = five times over the budget
    save_every: float = 600.0   # seconds between checkpoints even without evaluation
    patience: int = 0           # evaluations without improvement before stopping; 0 = never
    device: str = "auto"
    precision: str = "auto"     # auto = bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32
    rng_seed: int = 1337
    max_bad_steps: int = 5      # non-finite steps in a row before giving up

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
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        return self

    def describe_budget(self) -> str:
        """The limits in force, e.g. "300 steps, 120s"."""
        return ", ".join(part for part in (
            f"{self.max_steps} steps" if self.max_steps else "",
            f"{self.epochs:g} epochs" if self.epochs else "",
            f"{self.max_time:g}s" if self.max_time else "") if part)

    def with_default_budget(self) -> "TrainConfig":
        """Five minutes when no step, epoch or time limit is given."""
        if not (self.max_steps or self.epochs or self.max_time):
            self.max_time = 300.0
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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


