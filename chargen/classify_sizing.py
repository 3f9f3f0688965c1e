"""Automatic sizing of a classifier: the widest core that still makes enough training steps in the budget.

A classifier trained for a fixed time learns most when its core is as wide as it can be while still
making enough updates, and how many steps a width makes depends on the texts and on the machine. On a
2-core AVX2 machine in 5 minutes (two runs side by side, one thread each; test accuracy, steps in
brackets; BENCHMARKS.md, "Text classification"):

    width        64             128                          192           256
    langid       0.955 (1408)   0.963 (686)                  0.966 (627)   0.948 (298)
    section      0.669 (1302)   0.693 (1041), 0.701 (798)    0.673 (694)   0.618 (372)

Both tasks peak at a width that makes about 600-1,000 steps, although language identification
passes over its texts half as often as the section task there: a width must afford the steps, not the
passes. MIN_STEPS (700) sits in that range; the probe's prediction of the steps is itself within 10-40%.
On an AVX-512 machine with bf16, where a 1x256 made 1,300-1,800 steps in 5 minutes, it beat a 1x128.

So with a time budget a probe times a few real training steps (a real batch of the training texts, of
the median size; the run's device and precision) of each width of the ladder, small to large, and the
widest width that would make MIN_STEPS steps in the budget is chosen (the narrowest when none would; no
wider than PARAMETERS_PER_CHAR parameters per training character, nor than the accelerator holds). A
step or epoch budget, --from-run (the base's core) or an explicit --hidden keeps the width as it is.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial

import torch

from chargen.classify_data import SIZING_MIN_STEPS as MIN_STEPS
from chargen.config import ModelConfig, TrainConfig
from chargen.sizing import (PARAMETERS_PER_CHAR, PROBE_TIMED_STEPS, if_it_fits, parameters_of, probe_allowance,
                            time_steps)

LADDER = (64, 96, 128, 192, 256, 384, 512)   # widths tried, steps of ~1.3-1.5x
# Of a time budget, the share the training steps take: the rest goes to the validations, the checkpoints and
# the batches' preparation. With it, 5-minute runs made 1.0-1.4x the steps predicted (the median batch's
# step, scaled, overstates a set with a long tail of short texts) and a 1-minute run 0.9x.
STEP_SHARE = 0.8


@dataclass
class ClassifySizing:
    """What sizing chose and why: printed in one line, kept in config.json."""

    hidden: int
    layers: int
    step_s: float            # seconds of an average training step at this width, measured
    steps: float             # steps expected in the budget
    passes: float            # passes over the training texts they make
    budget: str
    why: str                 # why this width: the rule, or the limit that stopped the probe
    probe_s: float

    def line(self) -> str:
        """The one line said at the start of training."""
        return (f"sizing: {self.layers}x{self.hidden}, a step measured at {self.step_s * 1000:.3g} ms: ~"
                f"{self.steps:,.0f} steps ({self.passes:.1f} passes over the training texts) in {self.budget}; "
                f"{self.why} (--hidden N fixes it)")

    def record(self) -> dict:
        """The config.json entry (four significant digits: a GPU's step is under a millisecond)."""
        return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


def choose_width(model: ModelConfig, train: TrainConfig, task, device: torch.device,
                 amp_dtype: torch.dtype | None, measure=None) -> ClassifySizing:
    """The width for a time budget (train.max_time): see the module's docstring.

    task: the run's ClassifyTask; measure(model, batches) -> seconds of each step but the first (a parameter
    so that tests can give the machine's speed; by default real steps here). The fastest step of the batch
    of median size, scaled to the average step's characters, is a step's time. Widths of more parameters
    than PARAMETERS_PER_CHAR per training character (the text model's limit) are not tried: on a small set
    every width would make its steps, and the widest would memorise it.
    """
    epoch = task.epoch_batches(0)
    median = sorted(epoch, key=task.padded_chars)[len(epoch) // 2]
    batches = [task.batch_of(median)] * (1 + PROBE_TIMED_STEPS)  # one shape: its set-up is not timed again
    step_chars = sum(task.padded_chars(b) for b in epoch) / len(epoch)  # an average step's characters
    train_chars = sum(len(x) for x in task.train_ids)
    if measure is None:
        def measure(config: ModelConfig, batches: list) -> list[float]:
            return time_steps(config, lambda: batches, task.loss, train, device, amp_dtype)

    def sized(hidden: int, step_s: float, why: str) -> ClassifySizing:
        steps = train.max_time * STEP_SHARE / step_s
        return ClassifySizing(hidden, model.layers, step_s, steps, steps / task.steps_per_epoch,
                              train.describe_budget(), why, 0.0)

    allowance = probe_allowance(train.max_time)
    start = time.perf_counter()
    chosen = None
    for hidden in LADDER:
        config = dataclasses.replace(model, hidden=hidden)
        if chosen is not None:
            if parameters_of(config) > PARAMETERS_PER_CHAR * train_chars:
                chosen.why = (f"the widest with at most {PARAMETERS_PER_CHAR:g} parameters per training character "
                              f"({train_chars:,} characters)")
                break
            if time.perf_counter() - start > allowance:
                chosen.why = "the widest the probe timed in its share of the budget"
                break
        times = if_it_fits(partial(measure, config, batches), device, first=chosen is None)
        if times is None:
            chosen.why = "the widest that fits in the accelerator's memory"
            break
        candidate = sized(hidden, step_chars * min(times) / task.padded_chars(median),
                          f"the widest width that makes {MIN_STEPS} steps")
        if candidate.steps < MIN_STEPS:
            if chosen is None:
                chosen = candidate
                chosen.why = f"the narrowest width: none makes {MIN_STEPS} steps"
            break  # wider ones make fewer steps still
        chosen = candidate
    chosen.probe_s = round(time.perf_counter() - start, 2)
    return chosen
