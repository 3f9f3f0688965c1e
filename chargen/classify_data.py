"""Labelled text for the classifier: reading CSV / JSON-lines files, the stratified split, class counts.

Torch-free, so the command line builds its options without loading torch.

    reviews.csv                          reviews.jsonl
    review,sentiment                     {"review": "Loved it", "sentiment": "pos"}
    "Loved it, really",pos               {"review": "Dull.", "sentiment": "neg"}
    Dull.,neg

A CSV's columns are named by header or by 0-based index; the first row is a header when the columns
asked for are names, or when csv.Sniffer judges so for indices (said on stderr either way). Quoted
fields may hold commas, quotes and newlines. Labels are kept as strings, whatever they look like.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from chargen.errors import UserError
from chargen.log import info

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
# A classifier reads every character of every text each epoch: one layer reads them faster than the text
# model's two, so it sees more texts in the budget. A 1x256 GRU with dropout 0.3 was at least level with
# 1x128, with or without dropout, and with a wider embedding on both benchmark tasks in 2 minutes, and still
# improving at the end (BENCHMARKS.md, "Text classification"; the AVX-512 machine, where it made 1,300-1,800
# steps in 5 minutes). These replace ModelConfig's defaults for a classifier trained from scratch (options
# still override; --from-run takes the text run's model); with a time budget, sizing replaces the width.
CLASSIFY_MODEL_DEFAULTS = {"hidden": 256, "layers": 1, "embedding": 32, "dropout": 0.3}
# Automatic sizing (chargen/classify_sizing.py): with a time budget, the widest core that makes this many
# steps in it; --hidden's default as --help says it.
SIZING_MIN_STEPS = 700
CLASSIFY_SIZED_HIDDEN = (f"sized to the texts, the budget and this machine's speed; "
                         f"{CLASSIFY_MODEL_DEFAULTS['hidden']} with --sizing fixed or a step or epoch limit; the "
                         "base's with --from-run")
IMBALANCE_RATIO = 3.0   # largest / smallest class above which the imbalance is pointed out


@dataclass
class ClassifyConfig:
    """How labelled text becomes training batches; saved in config.json and the source of CLI defaults."""

    text: str = "text"          # the text field: a CSV column name or 0-based index, or a JSON key
    label: str = "label"        # the label field, the same way
    val_fraction: float = 0.1   # of every class, held out for validation (unless --val-file)
    balance: bool = False       # weight the loss by inverse class frequency
    train_chars: int = 1000     # characters of a text read while training (prediction reads them all)
    freeze_core: bool = False   # with --from-run: train only the head (and not the embedding or core)
    # With --from-run: the trained embedding and core learn at this fraction of --lr (the new head at --lr).
    # With 100 labels a class, 0.1 was ahead of 1 (the whole model at one rate) by 0.02 on both benchmark
    # tasks, one seed each: about the spread of three seeds (0.01-0.03), so a lean, not a proof. At the full
    # rate the core unlearns its text model (BENCHMARKS.md, "Text classification").
    core_lr_scale: float = 0.1

    def validate(self) -> "ClassifyConfig":
        """Refuse impossible settings with the option's name."""
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), not {self.val_fraction}; "
                            "or validate on another file with --val-file")
        if self.train_chars < 1:
            raise UserError(f"--train-chars must be a positive integer, not {self.train_chars}")
        if not 0.0 < self.core_lr_scale <= 1.0:
            raise UserError(f"--core-lr-scale must be in (0, 1], not {self.core_lr_scale}; --freeze-core keeps the "
                            "core as it is")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifyConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Examples:
    """Texts with their labels (None when the file has no label field) and where they came from."""

    texts: list[str]
    labels: list[str] | None
    name: str
    sha256: str
    lines: list[int] = field(default_factory=list)    # the line each example starts on (for messages)
    rows: list = field(default_factory=list)          # the parsed rows (lists or dicts), for `predict --file`
    header: list[str] | None = None                   # a CSV's header row, when it has one
    fmt: str = "csv"                                  # csv | tsv | jsonl


def file_format(path: Path, data: str) -> str:
    """jsonl by suffix or when the first non-blank character opens an object; tsv by suffix; else csv."""
    if path.suffix.lower() in JSON_SUFFIXES or data.lstrip()[:1] == "{":
        return "jsonl"
    return "tsv" if path.suffix.lower() == ".tsv" else "csv"


def read_examples(path: str | Path, text: str = "text", label: str | None = "label",
                  normalize: bool = True) -> Examples:
    """Read a CSV / TSV / JSON-lines file of labelled texts (label=None: texts only, for predict).

    Every mistake is a one-line UserError naming the file, the line and what to do: a missing column or
    key (the ones there are listed), an empty text or label, a line that is not JSON, bytes that are not
    UTF-8. Texts are NFC-normalised (as the character model reads them) and CR/CRLF become LF.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file; pass a CSV or JSON-lines file of labelled texts")
    raw = path.read_bytes()
    try:
        data = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None
    fmt = file_format(path, data)
    if fmt == "jsonl":
        numbered, header = _json_rows(path, data), None
        lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
        text_of = _json_getter(path, rows, lines, text)
        label_of = _json_getter(path, rows, lines, label) if label is not None else None
    else:
        rows, lines = _csv_rows(path, data, "\t" if fmt == "tsv" else ",")
        header = _csv_header(path, rows, text, label)
        if header is not None:
            rows, lines = rows[1:], lines[1:]
        text_of = _csv_getter(path, rows, lines, header, text)
        label_of = _csv_getter(path, rows, lines, header, label) if label is not None else None
    if not rows:
        raise UserError(f"{path} has no examples; it needs rows with a text{' and a label' if label else ''}")
    texts = [_clean(text_of(i), normalize) for i in range(len(rows))]
    for i, t in enumerate(texts):
        if not t.strip():
            raise UserError(f"{path}, line {lines[i]}: the text ({text}) is empty; fill it in or remove the row")
    labels = None
    if label_of is not None:
        labels = [label_of(i).strip() for i in range(len(rows))]
        for i, lab in enumerate(labels):
            if not lab:
                raise UserError(f"{path}, line {lines[i]}: the label ({label}) is empty; fill it in or remove the row")
    return Examples(texts, labels, path.stem, hashlib.sha256(raw).hexdigest(), lines, rows, header, fmt)


def _clean(text: str, normalize: bool) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text) if normalize else text


def _csv_rows(path: Path, data: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """Non-blank records and the line each starts on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(data, newline=""), delimiter=delimiter, strict=True)
    rows, lines = [], []
    start = 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}, line {start}: not valid CSV ({e}); check the quoting of that row") from None
    return rows, lines


def _csv_header(path: Path, rows: list[list[str]], text: str, label: str | None) -> list[str] | None:
    """The header row, if the file has one: when a field is asked by name, the first row must name it."""
    if not rows:
        return None
    asked = [f for f in (text, label) if f is not None]
    first = [cell.strip() for cell in rows[0]]
    if any(not str(f).strip().isdigit() for f in asked):
        return first
    try:
        sample = "\n".join(",".join(f'"{c}"' for c in row) for row in rows[:50])
        has_header = csv.Sniffer().has_header(sample)
    except csv.Error:
        has_header = False
    if has_header:
        info(f"{path}: the first row looks like a header ({', '.join(repr(c) for c in first[:6])}); it is skipped")
    return first if has_header else None


def _columns(header: list[str] | None, width: int) -> str:
    return ", ".join(f"{i}: {n!r}" for i, n in enumerate(header)) if header else f"{width} unnamed columns"


def _csv_getter(path: Path, rows: list[list[str]], lines: list[int], header: list[str] | None, name: str):
    """A function row index -> cell of the column `name` (header name or 0-based index)."""
    width = max((len(r) for r in rows[:100]), default=len(header or []))
    key = str(name).strip()
    if header is not None and key in header:
        index = header.index(key)
    elif key.isdigit() and int(key) < max(width, len(header or [])):
        index = int(key)
    else:
        raise UserError(f"{path} has no column {key!r}; its columns are {_columns(header, width)} "
                        "(choose with --text and --label: a name or a 0-based index)")

    def cell(i: int) -> str:
        row = rows[i]
        if index >= len(row):
            raise UserError(f"{path}, line {lines[i]}: the row has {len(row)} fields, no column {key!r}; "
                            "fix that row")
        return row[index]
    return cell


def _json_rows(path: Path, data: str) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {n}: not a JSON object ({e.msg}); JSON lines holds one object per "
                            "line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {n}: a JSON {type(row).__name__}, not an object; "
                            "JSON lines holds one object per line")
        rows.append((n, row))
    return rows


def _json_getter(path: Path, rows: list[dict], lines: list[int], name: str):
    key = str(name)

    def value(i: int) -> str:
        row = rows[i]
        if key not in row:
            raise UserError(f"{path}, line {lines[i]}: no key {key!r} (keys: {', '.join(map(repr, list(row)[:8]))}); "
                            "choose the fields with --text and --label")
        v = row[key]
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float, bool)):
            return json.dumps(v)  # a number or true/false label: kept as its JSON text
        if v is None:
            return ""
        raise UserError(f"{path}, line {lines[i]}: {key!r} is a JSON {type(v).__name__}, not text")
    return value


# -- classes and the split -----------------------------------------------------------------------------
def class_names(labels: list[str]) -> list[str]:
    """The distinct labels in sorted order: class i is names[i]."""
    return sorted(set(labels))


def describe_classes(labels: list[str], balance: bool) -> str:
    """One line: how many of each class, and a word on imbalance (and --balance) when it is marked."""
    counts = Counter(labels)
    shown = ", ".join(f"{name!r} {n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:12])
    more = f" and {len(counts) - 12} more" if len(counts) > 12 else ""
    line = f"{len(counts)} classes: {shown}{more}"
    ratio = max(counts.values()) / min(counts.values())
    if ratio > IMBALANCE_RATIO:
        line += (f"; imbalanced (largest / smallest = {ratio:.1f}): " +
                 ("the loss weights classes by inverse frequency (--balance)" if balance else
                  "pass --balance to weight the loss by inverse class frequency"))
    return line


def stratified_split(labels: list[str], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): of each class, round(n * val_fraction) examples validate,
    at least one, and at least one trains. A class of one example cannot be in both: a UserError."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for name in sorted(by_class):
        members = np.array(by_class[name])
        if len(members) < 2:
            raise UserError(f"class {name!r} has only 1 example; the validation split needs 2 of every class "
                            "(one to train, one to check): add examples, remove the class, or pass --val-file")
        members = members[rng.permutation(len(members))]
        n_val = min(max(1, int(round(len(members) * val_fraction))), len(members) - 1)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


# -- figures ---------------------------------------------------------------------------------------------
def scores(truth: np.ndarray, predicted: np.ndarray, classes: int) -> dict:
    """Accuracy, macro-F1 (the mean of the per-class F1, each class counting the same), per-class
    precision / recall / F1 / support, and the confusion matrix (row: true class, column: predicted)."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
    hits = np.diag(confusion).astype(np.float64)
    predicted_n, support = confusion.sum(0), confusion.sum(1)
    precision = np.divide(hits, predicted_n, out=np.zeros(classes), where=predicted_n > 0)
    recall = np.divide(hits, support, out=np.zeros(classes), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(classes), where=precision + recall > 0)
    present = support > 0  # a class absent from the file has no F1 to average
    return {"accuracy": float(hits.sum() / max(len(truth), 1)),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": support.tolist(), "confusion": confusion.tolist()}
