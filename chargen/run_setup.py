"""Starting a training run, the same for every head: what a new run and a resumed run have in common.

    with start_run(run_dir, "series", resume=..., model=..., config=...) as run:
        ... read the head's data (run.saved holds the resumed run's config.json) ...
        run.announce("1x64 LSTM on sales: ...")
        return run.train(net, task, run_info)

In order: a resumed run's settings are read back (its kind checked, its files complete) and the
options given again override its training settings; every setting is validated before any work; the
device, the precision and the process group under torchrun are set up; rank 0 locks the run
directory (a second `train` into it is refused, see run_lock.py) and only then reads the trainer
state; at the end every rank leaves the process group together.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from chargen.checkpoint import CONFIG, STATE, check_complete, make_run_dir, read_config, read_state
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import UserError
from chargen.heads import require_head
from chargen.log import info
from chargen import loop
from chargen.loop import Task, TrainingStopped, TrainResult, autocast_dtype
from chargen.run_lock import RunLock
from chargen.runtime import Distributed, close_distributed, init_distributed, pick_device, tune_allocator

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}


@dataclass
class StartedRun:
    """A run ready to train: its settings (resumed ones read back), device, precision and process group."""

    run_dir: Path
    model: ModelConfig
    config: TrainConfig
    saved: dict | None          # config.json of the run being resumed (None for a new run)
    state: dict | None          # its trainer_state.pt
    device: torch.device
    amp_dtype: torch.dtype | None
    dist: Distributed

    @property
    def resuming(self) -> bool:
        return self.saved is not None

    def announce(self, what: str) -> None:
        """The one line that says what is trained, where, how and for how long (rank 0 only)."""
        if self.dist.is_main:
            info(f"{'resuming' if self.resuming else 'training'} {self.run_dir}: {what}, on {self.device}"
                 + (f" x {self.dist.world} processes" if self.dist.enabled else "")
                 + f", {PRECISION_NAMES[self.amp_dtype]}; budget {self.config.describe_budget()}")

    def train(self, net: nn.Module, task: Task, run_info: dict,
              should_stop: Callable[[int], bool] | None = None) -> TrainResult:
        """The one training loop on this run (see loop.py)."""
        return loop.train_loop(net, task, self.config, self.run_dir, run_info, resume=self.state, dist=self.dist,
                          should_stop=should_stop)


@contextmanager
def start_run(run_dir: Path, head: str, *, resume: bool, model: ModelConfig, config: TrainConfig,
              overrides: dict | None = None, default_budget: dict | None = None) -> Iterator[StartedRun]:
    """Set up a new or resumed run of `head` in `run_dir`; leave it cleanly however training ends.

    resume: continue the run (its model and training settings, with `overrides` applied); otherwise a
    run already in `run_dir` is an error. default_budget: the head's budget (TrainConfig fields, e.g.
    {"max_time": 300.0}) for a new run given no step, epoch or time limit.
    """
    run_dir = Path(run_dir)
    saved = None
    if resume:
        saved = read_config(run_dir)
        require_head(run_dir, saved["model"], head)
        check_complete(run_dir, (STATE,))
        model = ModelConfig.from_dict(saved["model"])
        config = dataclasses.replace(TrainConfig.from_dict(saved["train"]), **(overrides or {}))
    elif default_budget and not config.has_budget():
        config = dataclasses.replace(config, **default_budget)
    config.validate()
    model.validate()  # before any data is read or cached: a mistake costs nothing

    tune_allocator()
    device = pick_device(config.device)
    amp_dtype = autocast_dtype(config, device, model.cell)  # refuses a precision the device cannot run
    dist = init_distributed(device)
    lock = RunLock(run_dir)
    created = not run_dir.exists()
    finished = False
    try:
        if dist.is_main:
            make_run_dir(run_dir)
            lock.acquire()
        if not resume:  # checked after the lock: a run being trained here is named as such
            _refuse_existing(run_dir)
        state = read_state(run_dir) if resume else None
        yield StartedRun(run_dir, model, config, saved, state, device, amp_dtype, dist)
        finished = True
    except TrainingStopped:
        finished = True  # every rank stopped at the same step: leave together
        raise
    finally:
        if created and not finished and dist.is_main:
            lock.remove_if_alone()  # a run that failed to start leaves no empty folder behind
        lock.release()
        close_distributed(dist, together=finished)


def _refuse_existing(run_dir: Path) -> None:
    if (run_dir / CONFIG).exists():
        raise UserError(f"run {run_dir} already exists; continue it with --resume, or choose another --run")

