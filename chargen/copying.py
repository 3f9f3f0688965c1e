"""How much of a generated text is copied from the training text.

A model that has memorised its (small) training text writes it back: the measure is the share of
the generated text's windows of `window` characters (32 by default, every position, overlapping)
that occur verbatim somewhere in the training text. 0 means nothing longer than the window was
copied; 1 means every window was. `chargen generate --copied` reports it for what it generated;
bench/finetune.py for its samples.
"""
from __future__ import annotations

from pathlib import Path

from chargen.errors import UserError

WINDOW = 32  # long enough that a verbatim match is copying, not a common phrase


def copied_windows(generated: str, training: str, window: int = WINDOW) -> tuple[int, int]:
    """(windows found verbatim in `training`, windows of `generated`): the parts of `copied_share`."""
    if window < 1:
        raise ValueError(f"window must be >= 1, not {window}")
    total = len(generated) - window + 1
    if total < 1:
        return 0, 0
    # Python's substring search (a two-way / Boyer-Moore-Horspool mix in C) over the training text
    # per window: no index to build, fast enough for thousands of windows over megabytes.
    found = sum(generated[i:i + window] in training for i in range(total))
    return found, total


def copied_share(generated: str, training: str, window: int = WINDOW) -> float:
    """Share (0..1) of the `window`-character windows of `generated` found verbatim in `training`.

    Raises ValueError when `generated` is shorter than one window (no window to judge).
    """
    found, total = copied_windows(generated, training, window)
    if total == 0:
        raise ValueError(f"the generated text has {len(generated)} characters, fewer than one window ({window})")
    return found / total


def training_text(config: dict, given: str | Path | None = None) -> tuple[str, str]:
    """(the text a character run was trained on, its name), read as training read it: the file given, or
    the run's own corpus file when it is still there and unchanged (its SHA-256 as config.json records)."""
    from chargen.corpus import read_text

    corpus = config.get("corpus") or {}
    encoding, normalize = corpus.get("encoding", "utf-8"), corpus.get("normalize", True)
    if given:
        text = read_text(Path(given), encoding, normalize)
        return text.text, text.name
    path = Path(corpus.get("path", ""))
    if not corpus.get("path") or not path.exists():
        raise UserError(f"the run's training text ({corpus.get('path') or 'not recorded'}) is not there; give it: "
                        "--copied FILE")
    text = read_text(path, encoding, normalize)
    if text.sha256 != corpus.get("sha256"):
        raise UserError(f"{path} has changed since the run trained on it; give the text it was trained on: "
                        "--copied FILE")
    return text.text, text.name
