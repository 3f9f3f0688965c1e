"""What `chargen classify eval` and `predict` print: the figures table, and predictions on stdout.

    predict TEXT...      one line per text: LABEL<TAB>PROBABILITY (the label's, 4 decimals)
    predict --file F     the file again, in its own format, each row with `predicted` and `probability`
                         added (CSV / TSV: two columns; JSON lines: two keys)
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from chargen.classify_data import read_examples

PREDICTED, PROBABILITY = "predicted", "probability"


def write_predictions(labels: list[str], probs: np.ndarray, out: TextIO | None = None) -> None:
    """LABEL<TAB>PROBABILITY, one line per text, in the order given."""
    out = out or sys.stdout  # the standard output of the moment, not of import time
    for label, p in zip(labels, probs.max(1)):
        out.write(f"{label}\t{p:.4f}\n")


def predict_file(run, path: str | Path, text: str | None, out: TextIO | None = None) -> None:
    """Classify every row of a CSV / TSV / JSON-lines file; write it back to `out` with the prediction added."""
    out = out or sys.stdout  # the standard output of the moment, not of import time
    examples = read_examples(path, text or run.settings.text, None, normalize=run.vocab.normalize)
    labels, probs = run.predict(examples.texts)
    confidence = probs.max(1)
    if examples.fmt == "jsonl":
        for row, label, p in zip(examples.rows, labels, confidence):
            out.write(json.dumps({**row, PREDICTED: label, PROBABILITY: round(float(p), 4)}, ensure_ascii=False) + "\n")
        return
    writer = csv.writer(out, delimiter="\t" if examples.fmt == "tsv" else ",", lineterminator="\n")
    if examples.header is not None:
        writer.writerow([*examples.header, PREDICTED, PROBABILITY])
    for row, label, p in zip(examples.rows, labels, confidence):
        writer.writerow([*row, label, f"{p:.4f}"])


def print_evaluation(result: dict, out: TextIO | None = None) -> None:
    """Accuracy and macro-F1, per-class precision / recall / F1 / support, and the confusion matrix."""
    out = out or sys.stdout  # the standard output of the moment, not of import time
    from rich.console import Console
    from rich.table import Table

    labels = result["labels"]
    console = Console(file=out, highlight=False)
    console.print(f"{result['file']}: {result['texts']:,} texts, accuracy {result['accuracy']:.4f}, "
                  f"macro-F1 {result['macro_f1']:.4f}", markup=False)
    table = Table(title="per class")
    for name, justify in (("class", "left"), ("precision", "right"), ("recall", "right"), ("F1", "right"),
                          ("texts", "right")):
        table.add_column(name, justify=justify)
    for i, name in enumerate(labels):
        table.add_row(_plain(name), f"{result['precision'][i]:.3f}", f"{result['recall'][i]:.3f}",
                      f"{result['f1'][i]:.3f}", str(result["support"][i]))
    console.print(table)
    console.print("confusion matrix (rows: true class, columns: predicted)")
    matrix = Table()
    matrix.add_column("")
    for name in labels:
        matrix.add_column(_plain(name), justify="right")
    for name, row in zip(labels, result["confusion"]):
        matrix.add_row(_plain(name), *[str(n) for n in row])
    console.print(matrix)


def _plain(text: str):
    """A label as literal text in a rich table (no markup, whatever brackets it holds)."""
    from rich.text import Text

    return Text(text)
