"""`chargen inspect` on a classifier run: where in the text its decision was made, and which way.

The classifier's head is linear in the pooled states, so its logits split exactly over the states after
each character (`TextClassifier.contributions`). The report colours each character by what the state
after it (the model's memory of the text up to there) added to the margin of the predicted class over the
runner-up: red toward the prediction, blue toward the runner-up. The colours are relative (the strongest
push of the text either way is the end of the scale); the sum of all of them and the head's bias is the
margin itself, which the report prints. With max pooling only the positions where some unit peaked add
anything, so most of a text stays white.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from chargen.report import ACTIVE_VALUE, UNIT_STOPS, Legend, PlainLine, Recording, Report, Shaded, unknown_notice

if TYPE_CHECKING:
    from chargen.classifier import ClassifierRun

STRONGEST_WORDS = 5  # the words that pushed hardest each way, listed under the text


def word_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each run of letters and digits (a word), in order."""
    spans, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isalnum() and start is None:
            start = i
        elif not ch.isalnum() and start is not None:
            spans.append((start, i))
            start = None
    return spans


def strongest_words(text: str, values: np.ndarray, sign: float, k: int = STRONGEST_WORDS) -> list[str]:
    """The k distinct words whose characters add the most to the margin in the direction of `sign` (+1 or
    -1), each with that sum: ["word +0.42", ...], strongest first; words that push the other way are left out."""
    totals: dict[str, float] = {}
    for start, end in word_spans(text):
        w = text[start:end]
        totals[w] = totals.get(w, 0.0) + float(values[start:end].sum())
    chosen = sorted((w for w, v in totals.items() if v * sign > 0), key=lambda w: -totals[w] * sign)[:k]
    return [f"{w} {totals[w]:+.2f}" for w in chosen]


def decision_report(run: ClassifierRun, text: str, name: str = "text") -> Report:
    """The report on one text (already read and cut) of a classifier run: its probabilities and every
    character's push."""
    model, config, run_dir = run.model, run.model.config, run.run_dir
    ids = run.vocab.encode_normalized(text)
    per_class = model.contributions(ids).double().cpu().numpy()    # (classes, T)
    biases = model.head.bias.detach().double().cpu().numpy()       # (classes,)
    logits = per_class.sum(1) + biases                             # one pass of the core gives both
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    ranked = np.argsort(-probs, kind="stable")
    best, second = int(ranked[0]), int(ranked[1])
    values = per_class[best] - per_class[second]                   # (T,) the margin, split over the text
    bias = float(biases[best] - biases[second])
    label, other = run.labels[best], run.labels[second]
    no_bits = np.full(len(ids), np.nan)  # a classifier predicts no characters: the report's bits are empty
    report = Report(f"{run_dir.name} ({config.layers}x{config.hidden} {config.cell.upper()}, {config.pooling} "
                    f"pooling) on {name}: {len(text):,} characters -> {label} ({probs[best]:.1%})",
                    Recording(text, ids, no_bits, config.cell, config.layers, config.hidden),
                    [run.vocab.id_to_char(i) for i in range(len(run.vocab))])
    report.add(PlainLine("   ".join(f"{run.labels[i]} {probs[i]:.3f}" for i in ranked)))
    report.add(Legend(f"what the state after each character adds to {label} over {other}", UNIT_STOPS,
                      [(-1, f"toward {other}"), (0, "neither"), (1, f"toward {label}")],
                      f"underlined: toward {label}, at least {ACTIVE_VALUE:g} of the text's strongest push"))
    scale = float(np.abs(values).max()) or 1.0
    report.add(Shaded(0, len(text), values, UNIT_STOPS, f"{label} over {other}", ACTIVE_VALUE, scale))
    report.add(PlainLine(f"the margin of {label} over {other}: {values.sum() + bias:+.3f} (logits) = "
                         f"{values.sum():+.3f} (characters) {bias:+.3f} (head's bias)"))
    for sign, side in ((1.0, label), (-1.0, other)):
        found = strongest_words(text, values, sign)
        report.add(PlainLine(f"words toward {side}: {', '.join(found) if found else 'none'}"))
    notice = unknown_notice(run.vocab, text, ids)
    if notice:
        report.notices.append(notice)
    return report
