"""Build the classifier benchmark's labelled sets from the manual pages installed on this machine.

    apt-get update && apt-get install -y manpages manpages-de manpages-fr manpages-es manpages-it \
        manpages-nl manpages-pl manpages-pt-br manpages-sv      # (Debian 12: the pages the figures used)
    python bench/classify_sets.py --out /tmp/classify-bench

writes, for each task, TASK_train.csv and TASK_test.csv (columns text,label) and TASK_unlabelled.txt
(the text of the training pages, for a character model that `--from-run` starts from):

    langid    a paragraph of a manual page -> its language (de en es fr it nl pl pt_BR sv; en: the
              English originals of the translated pages, so an untranslated paragraph is dropped)
    section   a paragraph of an English manual page -> its section: 1 commands, 2 system calls,
              3 library functions, 5 file formats, 8 administration

A paragraph is the running text between two paragraph macros (.PP, .TP, .SH, ...) of the roff source,
with the font escapes and macro lines removed. Pages, not paragraphs, are split between training and
test (by a hash of the page's name), so no page has paragraphs on both sides. A text that occurs under
two labels (a paragraph left untranslated, say) is dropped. Nothing is downloaded; no file is written
into the repository.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import random
import re
from collections import defaultdict
from pathlib import Path

MAN = Path("/usr/share/man")
LANGUAGES = ("de", "es", "fr", "it", "nl", "pl", "pt_BR", "sv")  # and "en"
UNLABELLED_CHARS = 4_000_000  # of training-page text for the character model: more than 2 minutes reads
SECTIONS = ("1", "2", "3", "5", "8")
BREAKS = re.compile(r"^[.'](PP|P|LP|TP|IP|SH|SS|HP|RS|RE|TQ|EX|EE|nf|fi|sp|br|in|Sh|Ss|Pp|It|Bl|El|Bd|Ed)\b")
FONT_MACRO = re.compile(r"^[.'](B|I|R|SM|SB|BI|BR|IB|IR|RB|RI|Nm|Ar|Fl|Cm|Pa|Xr|Em|Sy|Li|Va|Fn|Fa)\s+(.*)$")
ESCAPES = [
    (re.compile(r"\\f(\[[^]]*\]|\(..|.)"), ""),
    (re.compile(r"\\[-e]"), lambda m: "-" if m.group() == "\\-" else "\\"),
    (re.compile(r"\\\((em|en)"), "—"),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\(bu"), "•"),
    (re.compile(r"\\[&/,:|^ ~0]"), lambda m: " " if m.group() in ("\\ ", "\\~", "\\0") else ""),
    (re.compile(r"\\\*\(..|\\\*\[[^]]*\]|\\\*."), ""),
    (re.compile(r"\\\(.."), ""),
    (re.compile(r"\\s[-+]?\d"), ""),
    (re.compile(r"\\\[[^]]*\]"), ""),
    (re.compile(r"\\(.)"), r"\1"),
]


def paragraphs(path: Path) -> list[str]:
    """The running-text paragraphs of one roff page (at least 80 characters, no macro leftovers)."""
    try:
        source = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return []
    found, current = [], []
    for line in source.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')):
            continue
        if BREAKS.match(line) or line.startswith((".TH", ".so", ".Dt", ".Dd", ".Os")):
            found.append(" ".join(current))
            current = []
            continue
        macro = FONT_MACRO.match(line)
        if macro:
            line = macro.group(2).replace('"', "")
        elif line.startswith((".", "'")):
            continue
        for pattern, replacement in ESCAPES:
            line = pattern.sub(replacement, line)
        current.append(line.strip())
    found.append(" ".join(current))
    return [re.sub(r"\s+", " ", p).strip() for p in found if len(p) >= 80 and "\\" not in p]


def pages(label_dirs: dict[str, list[Path]], only: set[str] | None = None) -> dict[str, list[Path]]:
    """The .gz pages of each label's folders (with `only`: the pages of those names)."""
    return {label: sorted(p for d in dirs if d.is_dir() for p in d.glob("*.gz")
                          if p.is_file() and (only is None or p.name in only))
            for label, dirs in label_dirs.items()}


def is_test(page: Path) -> bool:
    """A quarter of the page names (the same names in every language) hold out for testing."""
    return hashlib.sha256(page.name.encode()).digest()[0] < 64


def build(task: str, label_dirs: dict[str, list[Path]], out: Path, per_class: tuple[int, int], seed: int,
          only: set[str] | None = None) -> None:
    by_side = {"train": defaultdict(list), "test": defaultdict(list)}
    unlabelled = []
    for label, files in pages(label_dirs, only).items():
        for page in files:
            side = "test" if is_test(page) else "train"
            texts = paragraphs(page)
            by_side[side][label].extend(texts)
            if side == "train":
                unlabelled.extend(texts)
    labels_of = defaultdict(set)
    for side in by_side.values():
        for label, texts in side.items():
            for t in texts:
                labels_of[t].add(label)
    rng = random.Random(seed)
    for (side, side_texts), cap in zip(by_side.items(), per_class):
        rows = []
        for label in sorted(side_texts):
            texts = sorted({t for t in side_texts[label] if len(labels_of[t]) == 1})
            rng.shuffle(texts)
            rows.extend((t, label) for t in texts[:cap])
            print(f"{task} {side} {label}: {min(cap, len(texts))} of {len(texts)} paragraphs")
        rng.shuffle(rows)
        with open(out / f"{task}_{side}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    random.Random(seed).shuffle(unlabelled)
    text = "\n".join(unlabelled)[:UNLABELLED_CHARS]
    (out / f"{task}_unlabelled.txt").write_text(text + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files (outside the repository)")
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    caps = (args.train_per_class, args.test_per_class)
    translated = {lang: [MAN / lang / f"man{s}" for s in "12345678"] for lang in LANGUAGES}
    names = {p.name for files in pages(translated).values() for p in files}
    build("langid", {**translated, "en": [MAN / f"man{s}" for s in "12345678"]}, args.out, caps, args.seed, names)
    build("section", {s: [MAN / f"man{s}"] for s in SECTIONS}, args.out, caps, args.seed)


if __name__ == "__main__":
    main()
