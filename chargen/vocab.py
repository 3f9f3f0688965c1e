"""`Vocab`: characters <-> integer ids.

Id 0 is `<unk>`; ids 1.. are the characters of the training text in code-point order (a fine-tuned
run's vocabulary is its base's, then the characters the base lacked: chargen.finetune).
Encoding and decoding are numpy lookups over UTF-32 code points (a 2 MB text encodes in
milliseconds); the `tokenizers` library is used only to write a standard `tokenizer.json`
that other tools can load and that gives the same ids.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Iterable

import numpy as np

from chargen.errors import UserError, first_line

UNK = "<unk>"
UNK_ID = 0
# What `<unk>` decodes to: the Unicode replacement character, so text stays one char per id.
UNK_CHAR = "\ufffd"


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of `text` in the narrowest type that holds them: uint8, uint16 or uint32.

    A view of the text's ASCII, UTF-16 or UTF-32 bytes. ASCII text (str.isascii is O(1)) encodes at
    memory speed; UTF-16 is 2-3x faster than UTF-32 and half the memory, and is exact when no character
    needs a surrogate pair (checked by the length).
    """
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    # surrogatepass: a lone surrogate (e.g. an undecodable byte in argv, kept by surrogateescape)
    # is a code point like any other, so it becomes <unk> instead of raising.
    data = text.encode("utf-16-le", "surrogatepass")
    if len(data) == 2 * len(text):
        return np.frombuffer(data, dtype=np.uint16)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def min_id_dtype(size: int) -> type:
    """The narrowest unsigned integer type for ids 0 .. size - 1."""
    return np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.uint32


class Vocab:
    """A character vocabulary with `<unk>` at id 0."""

    def __init__(self, chars: Iterable[str], normalize: bool = True):
        chars = list(chars)
        if any(len(c) != 1 for c in chars):
            raise ValueError("a character vocabulary holds single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in vocabulary")
        self.chars: list[str] = chars
        self.normalize = normalize
        points = np.array([ord(c) for c in chars], dtype=np.int64)
        # Dense lookup table code point -> id, sized to the largest known code point plus one
        # <unk> entry at the end (at most 1.1M entries): absent code points map to <unk>, and
        # larger ones are clipped to the last entry, <unk> too.
        size = int(points.max()) + 2 if len(points) else 1
        self._dtype = min_id_dtype(len(chars) + 1)
        self._to_id = np.zeros(size, dtype=self._dtype)
        self._to_id[points] = np.arange(1, len(chars) + 1, dtype=self._dtype)
        self._to_cp = np.array([ord(UNK_CHAR)] + [ord(c) for c in chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str, normalize: bool = True) -> "Vocab":
        """The vocabulary of every distinct character of `text` (already normalised)."""
        return cls(sorted(set(text)), normalize=normalize)

    def __len__(self) -> int:
        return len(self.chars) + 1

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id (one byte per character for most texts)."""
        return np.dtype(self._dtype)

    def prepare(self, text: str) -> str:
        """The text as the vocabulary sees it: NFC-normalised when the vocabulary normalises."""
        return unicodedata.normalize("NFC", text) if self.normalize else text

    def encode(self, text: str) -> np.ndarray:
        """Ids of the (normalised) text; characters not in the vocabulary become `<unk>` (0)."""
        return self.encode_normalized(self.prepare(text))

    def encode_normalized(self, text: str) -> np.ndarray:
        """Ids of a text that is already normalised (skips the NFC pass)."""
        return np.take(self._to_id, codepoints(text), mode="clip")

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that the vocabulary does not have, in order of appearance."""
        text = self.prepare(text)
        ids = self.encode(text)
        missing = np.flatnonzero(ids == UNK_ID)
        return list(dict.fromkeys(text[i] for i in missing))

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of `ids`; `<unk>` becomes U+FFFD."""
        ids = np.asarray(ids, dtype=np.int64)
        return self._to_cp[ids].tobytes().decode("utf-32-le", "surrogatepass")

    def id_to_char(self, i: int) -> str:
        """One id's character (U+FFFD for `<unk>`)."""
        return UNK_CHAR if i == UNK_ID else self.chars[i - 1]

    # -- tokenizer.json -------------------------------------------------------------
    def to_tokenizer_json(self) -> str:
        """A standard `tokenizers` file: WordLevel over single characters, split per character."""
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

        table = {UNK: UNK_ID, **{c: i for i, c in enumerate(self.chars, start=1)}}
        tok = Tokenizer(models.WordLevel(table, unk_token=UNK))
        if self.normalize:
            tok.normalizer = normalizers.NFC()
        # An empty pattern, isolated, yields one piece per character; Fuse joins them back
        # on decode (without it decode would put spaces between characters).
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(""), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return tok.to_str(pretty=True)

    @classmethod
    def from_tokenizer_json(cls, text: str, source: str = "tokenizer.json") -> "Vocab":
        """Read a `tokenizer.json` written by `to_tokenizer_json` (parsed directly: no tokenizers import)."""
        try:
            data = json.loads(text)
            table = data["model"]["vocab"]
            normalize = (data.get("normalizer") or {}).get("type") == "NFC"
            by_id = sorted((int(i), c) for c, i in table.items())
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as e:
            raise UserError(f"{source} is not a valid chargen tokenizer file ({type(e).__name__}: {first_line(e)}); "
                            "retrain the run") from None
        if not by_id or by_id[0] != (UNK_ID, UNK) or [i for i, _ in by_id] != list(range(len(by_id))):
            raise UserError(f"{source} does not hold a chargen character vocabulary (<unk> at 0, ids 1..n); "
                            "retrain the run")
        chars = [c for _, c in by_id[1:]]
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise UserError(f"{source} holds tokens that are not single characters; it was not written by chargen")
        return cls(chars, normalize=normalize)

    def save(self, path: Path) -> None:
        """Write `tokenizer.json` atomically."""
        from chargen.checkpoint import atomic_write_bytes

        atomic_write_bytes(Path(path), self.to_tokenizer_json().encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        """Read a `tokenizer.json`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read {path} ({first_line(e)}); the run's vocabulary is damaged — retrain the "
                            "run") from None
        return cls.from_tokenizer_json(text, source=str(path))
