"""Which kind of run a run directory holds, and the one-line refusal when a command gets the wrong kind.

Every command that reads a run checks its head (config.json's model.head) here, so the message is the
same everywhere and names the commands that do take that run.
"""
from __future__ import annotations

from pathlib import Path

from chargen.errors import UserError

KINDS = {"char": "a character-model run", "series": "a time-series run", "classify": "a text-classifier run"}
COMMANDS = {"char": "chargen generate / eval / interactive / inspect", "series": "chargen series forecast / eval",
            "classify": "chargen classify predict / eval, or chargen inspect (what moved its decision)"}


def require_head(run_dir: Path, model: dict, wanted: str) -> None:
    """Raise a one-line UserError unless the run's model section (config.json) is of the `wanted` head."""
    head = model.get("head")
    if head == wanted:
        return
    kind = KINDS.get(head, f"a run of unknown kind {head!r}")
    use = f"; use it with: {COMMANDS[head]}" if head in COMMANDS else ""
    raise UserError(f"{run_dir} is {kind}, not {KINDS[wanted]}{use}")
