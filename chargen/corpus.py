"""Reading training text: files or folders, strict decoding, normalisation, sanity checks, the split.

Everything a user can get wrong about a corpus is caught here with a one-line `UserError`
that says what to do; recoveries (line endings, a large alphabet) are announced on stderr.
"""
from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from chargen.errors import UserError
from chargen.log import info

# Above this many distinct characters a corpus is probably not what the user meant to train on.
LARGE_ALPHABET = 3000
# Fraction of control characters (other than tab, newline, form feed) that marks a file as binary.
BINARY_CONTROL_FRACTION = 0.05
# Characters counted or encoded per slice of a long text: bounds the temporary code-point and index
# buffers (np.bincount widens its input to int64: 32 MB per slice) whatever the corpus size.
ENCODE_SLICE = 1 << 22


@dataclass
class Text:
    """A corpus read into memory: its text, where it came from and a digest of its bytes."""

    name: str
    text: str
    sha256: str
    files: list[Path] = field(default_factory=list)


def corpus_files(path: Path) -> list[Path]:
    """The file itself, or every `*.txt` directly in a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise UserError(f"{path} is a folder with no .txt files; put the training text in *.txt files or pass "
                            "a file")
        return files
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a text file or a folder of .txt files")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file (a device or a pipe?); pass a text file or a folder of .txt "
                        "files")
    return [path]


def _decode(path: Path, data: bytes, encoding: str, allow_binary: bool) -> str:
    nul = data.find(b"\x00")
    if not allow_binary and nul >= 0:
        raise UserError(f"{path} looks binary (it has a NUL byte at offset {nul}); "
                        "pass a text file, or --allow-binary to train on it anyway")
    try:
        text = data.decode(encoding)
    except LookupError:
        raise UserError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8, latin-1, "
                        "cp1252") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: invalid {e.encoding} at byte offset {e.start} (byte 0x{data[e.start]:02x}); "
                        "convert the file to UTF-8 or pass --encoding (e.g. --encoding latin-1)") from None
    # Strict UTF-8 never yields a lone surrogate, but escape codecs (unicode_escape...) can, and a
    # surrogate is no character: it cannot be written to tokenizer.json or printed.
    lone = None if codecs.lookup(encoding).name == "utf-8" else re.search("[\ud800-\udfff]", text)
    if lone:
        raise UserError(f"{path} read as {encoding} gives a lone surrogate code point (U+{ord(lone.group()):04X} at "
                        f"character {lone.start()}), which is not text; pass another --encoding")
    if text.startswith("\ufeff"):  # a byte-order mark is file metadata, not text
        text = text[1:]
    if not allow_binary and text:
        sample = text[: 1 << 16]
        controls = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f")
        if controls > BINARY_CONTROL_FRACTION * len(sample):
            raise UserError(f"{path} looks binary ({controls} control characters in its first {len(sample)}); "
                            "pass a text file, or --allow-binary to train on it anyway")
    return text


def normalize_newlines(text: str, name: str) -> str:
    """Turn CRLF and lone CR line endings into LF, saying so."""
    if "\r" not in text:
        return text
    crlf = text.count("\r\n")
    cr = text.count("\r") - crlf
    info(f"{name}: converted {crlf} CRLF and {cr} CR line endings to LF")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path, encoding: str = "utf-8", normalize: bool = True,
              allow_binary: bool = False) -> Text:
    """Read a text file (or a folder of .txt files) strictly, as the model will see it.

    Files in a folder are joined with a newline between them when one does not end in one.
    NFC normalisation (on by default) makes composed and decomposed accents the same characters.
    """
    path = Path(path)
    digest = hashlib.sha256()
    parts = []
    files = corpus_files(path)
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {file}: {e.strerror}") from None
        digest.update(data)
        part = _decode(file, data, encoding, allow_binary)
        del data  # the bytes and the text would otherwise both stay in memory until the end
        if parts and parts[-1] and not parts[-1].endswith(("\n", "\r")):
            parts.append("\n")
        parts.append(part)
    text = "".join(parts)
    if not text:
        raise UserError(f"{path} is empty; give a text file with some text in it")
    if text.isspace():  # (not text.strip(): that copies the whole text)
        raise UserError(f"{path} holds only whitespace; give a text file with some text in it")
    text = normalize_newlines(text, path.name)  # after the checks: no notice about a refused file
    if normalize:
        text = unicodedata.normalize("NFC", text)
    return Text(name=path.stem if path.is_file() else path.name, text=text,
                sha256=digest.hexdigest(), files=files)


def char_counts(text: str) -> dict[str, int]:
    """How often each character occurs (numpy bincount over code points, fast on large texts)."""
    from chargen.vocab import codepoints

    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, len(text), ENCODE_SLICE):
        c = np.bincount(codepoints(text[start:start + ENCODE_SLICE]))
        if len(c) > len(counts):
            c[: len(counts)] += counts
            counts = c
        else:
            counts[: len(c)] += c
    return {chr(int(cp)): int(counts[cp]) for cp in np.flatnonzero(counts)}


def warn_large_alphabet(counts: dict[str, int], name: str) -> None:
    """Warn when a corpus has thousands of distinct characters, naming the rarest."""
    if len(counts) <= LARGE_ALPHABET:
        return
    rarest = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))[:10]
    shown = ", ".join(f"{c!r}x{n}" for c, n in rarest)
    info(f"{name} has {len(counts)} distinct characters (more than {LARGE_ALPHABET}): the output layer will be "
         f"large and rare characters poorly learned. Rarest: {shown}")


def encoded_slices(vocab, text: str) -> Iterator[np.ndarray]:
    """The ids of a long text, ENCODE_SLICE characters at a time, so the code-point buffers never hold
    the whole text. Slices of an NFC text are NFC already: they are encoded without normalising again."""
    for start in range(0, len(text), ENCODE_SLICE):
        yield vocab.encode_normalized(text[start:start + ENCODE_SLICE])


def encode_chunked(vocab, text: str) -> np.ndarray:
    """The ids of a long text as one array, filled slice by slice (see `encoded_slices`)."""
    out = np.empty(len(text), dtype=vocab.dtype)
    start = 0
    for ids in encoded_slices(vocab, text):
        out[start:start + len(ids)] = ids
        start += len(ids)
    return out


def split_train_val(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 - val_fraction) of the stream for training, the last part for validation."""
    if not 0 < val_fraction < 1:  # also refuses NaN
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), not {val_fraction}; "
                        "or validate on another file with --val-file")
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and n_val < 2:
        raise UserError(f"--val-fraction {val_fraction} leaves {n_val} validation characters of {len(ids)}; "
                        "use a larger fraction, a longer text, or --val-file")
    if len(ids) - n_val < 2:
        raise UserError(f"--val-fraction {val_fraction} leaves no training text; use a smaller fraction")
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]
