"""Automatic sizing of a classifier: the widest core that still makes enough training steps in the budget.

A classifier trained for a fixed time learns most when its core is as wide as it can be while still
making enough updates, and how many steps a width makes depends on the texts and on the machine. On a
2-core AVX2 machine in 5 minutes (two runs side by side, one thread each; test accuracy, steps in
brackets; BENCHMARKS.md, "Text classification"):

    width        64             128                          192           256
    langid       0.955 (1408)   0.963 (686)                  0.966 (627)   0.948 (298)
    section      0.669 (1302)   0.693 (1041), 0.701 (798)    0.673 (694)   0.618 (372)

Both tasks peak at a width that makes about 700-1,000 steps, although language identification passes
over its texts half as often as the section task there: a width must afford the steps, not the passes.
On an AVX-512 machine with bf16, where a 1x256 made 1,300-1,800 steps in 5 minutes, it beat a 1x128.

So with a time budget a probe times a few real training steps (a real batch of the training texts, of
the median size; the run's device and precision) of each width of the ladder, small to large, and the
widest width that would make MIN_STEPS steps in the budget is chosen (the narrowest when none would). A
step or epoch budget, --from-run (the base's core) or an explicit --hidden keeps the width as it is.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from chargen.classify_data import SIZING_MIN_STEPS as MIN_STEPS
from chargen.config import ModelConfig, TrainConfig
from chargen.sizing import PROBE_SHARE, PROBE_TIMED_STEPS, time_steps

LADDER = (64, 96, 128, 192, 256, 384, 512)   # widths tried, steps of ~1.3-1.5x
PROBE_FLOOR = 5.0          # seconds the probe may take at least (at most a tenth of the budget)
# Of a time budget, the share left for training steps: the rest goes to the validations, the checkpoints and
# the batches' preparation (measured: 5-minute runs made 0.80-0.85 of the steps the probe's speed predicts).
STEP_SHARE = 0.8


@dataclass
class ClassifySizing:
    """What sizing chose and why: printed in one line, kept in config.json."""

    hidden: int
    layers: int
    step_s: float            # seconds of a typical training step at this width, measured
    steps: float             # steps expected in the budget
    passes: float            # passes over the training texts they make
    budget: str
    probe_s: float

    def line(self) -> str:
        """The one line said at the start of training."""
        return (f"sizing: {self.layers}x{self.hidden}, a step measured at {self.step_s * 1000:.0f} ms: ~"
                f"{self.steps:,.0f} steps ({self.passes:.1f} passes over the training texts) in {self.budget}, "
                f"the widest width with at least {MIN_STEPS} (--hidden N fixes it)")

    def record(self) -> dict:
        """The config.json entry."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def typical_batch(task) -> tuple:
    """The real training batch of the first epoch with the median padded size (B x the longest text)."""
    batches = sorted(task.epoch_batches(0), key=task.padded_chars)
    return task.batch_of(batches[len(batches) // 2])


def choose_width(model: ModelConfig, train: TrainConfig, task, device: torch.device,
                 amp_dtype: torch.dtype | None, measure=None) -> ClassifySizing:
    """The width for a time budget (train.max_time): see the module's docstring.

    task: the run's ClassifyTask; measure(model, batches) -> seconds of each step but the first (a parameter
    so that tests can give the machine's speed; by default real steps here). The fastest step of the median
    batch, scaled to the average step's characters, is a step's time.
    """
    batch = typical_batch(task)
    batches = [batch] * (1 + PROBE_TIMED_STEPS)  # one shape: the first step's set-up is not timed again
    epoch = task.epoch_batches(0)
    step_chars = sum(task.padded_chars(b) for b in epoch) / len(epoch)  # an average step's characters
    if measure is None:
        def measure(config: ModelConfig, batches: list) -> list[float]:
            return time_steps(config, lambda: batches, task.loss, train, device, amp_dtype)

    allowance = max(PROBE_SHARE * train.max_time, min(PROBE_FLOOR, 0.1 * train.max_time))
    start = time.perf_counter()
    chosen = None
    for hidden in LADDER:
        config = dataclasses.replace(model, hidden=hidden)
        step_s = step_chars * min(measure(config, batches)) / batch[0][0].numel()
        steps = train.max_time * STEP_SHARE / step_s
        if chosen is not None and steps < MIN_STEPS:
            break  # wider ones make fewer steps still
        chosen = ClassifySizing(hidden, model.layers, step_s, steps, steps / task.steps_per_epoch,
                                train.describe_budget(), 0.0)
        if steps < MIN_STEPS or time.perf_counter() - start > allowance:
            break  # the narrowest already makes too few, or the probe has had its share of the budget
    chosen.probe_s = round(time.perf_counter() - start, 2)
    return chosen
