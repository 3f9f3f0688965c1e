"""Where a training run stands: the counters --resume restores, besides weights, optimiser and random state."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields


@dataclass
class Progress:
    """The training loop's running record; saved in trainer_state.pt, its evaluations also in config.json."""

    step: int = 0
    elapsed: float = 0.0                # seconds of training so far, over every resumed part
    best: float = math.inf              # the best evaluation's first selection figure (Task.selects_on)
    best_metrics: dict = field(default_factory=dict)    # that evaluation's figures, with its step
    evals: list = field(default_factory=list)           # every evaluation: step, elapsed and figures
    lr_scale: float = 1.0               # halved at each non-finite step
    bad_total: int = 0                  # non-finite steps skipped so far
    stale: int = 0                      # evaluations since the last improvement (for --patience)

    def record(self, metrics: dict, elapsed: float, selects_on: tuple[str, ...]) -> bool:
        """Add an evaluation; returns whether it is the best so far: the lowest figures named by
        `selects_on`, compared in order (the first decides; on a tie, the next; a non-finite one never wins)."""
        self.evals.append({"step": self.step, "elapsed": round(elapsed, 2), **metrics})
        figures = tuple(metrics[name] for name in selects_on)
        best = (self.best, *(self.best_metrics.get(name, math.inf) for name in selects_on[1:]))
        improved = all(math.isfinite(f) for f in figures) and figures < best
        if improved:
            self.best, self.best_metrics, self.stale = figures[0], {**metrics, "step": self.step}, 0
        else:
            self.stale += 1
        return improved

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, state[f.name])


PROGRESS_KEYS = frozenset(f.name for f in fields(Progress))
