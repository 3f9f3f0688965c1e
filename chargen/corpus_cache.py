"""The encoded corpus, cached next to the run and memory-mapped by every process.

    checkpoints/<run>/
      corpus-<key>.npy    the whole corpus as character ids (uint8 up to 256 ids, else uint16/uint32)
      corpus-<key>.json   what it was made from: corpus SHA-256, encoding, normalisation, vocabulary

<key> digests the corpus bytes (SHA-256) and the reading options (encoding, NFC normalisation,
--allow-binary). The first run reads and encodes the text once and writes both files atomically
(the .npy first, the .json last, so a .json always describes a complete .npy). Later runs, and
--resume, find the entry by hashing the corpus bytes only: no decoding, normalising or encoding,
so they start at once. A new run looks in the sibling runs of the same checkpoints folder too and
hard-links their entry (no copy, no re-encoding).

Under torchrun rank 0 prepares the entry while the other ranks wait in a broadcast; then every
rank maps the same file read-only, so the corpus lives once in the page cache, not once per rank.
Across nodes the run directory must be on a filesystem that every node sees.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chargen.checkpoint import atomic_write, atomic_write_bytes, make_run_dir
from chargen.corpus import corpus_files, encoded_slices, read_text
from chargen.errors import UserError
from chargen.log import info
from chargen.runtime import Distributed
from chargen.vocab import Vocab

FORMAT = 1
PREFIX = "corpus-"


@dataclass
class EncodedCorpus:
    """A corpus as the training loop needs it: ids (a read-only memory map), vocabulary, identity."""

    name: str           # the corpus name: the file's stem, or the folder's name
    sha256: str         # SHA-256 of the corpus bytes (files concatenated in name order)
    ids: np.ndarray     # (N,) ids of the whole corpus, memory-mapped from `path`
    vocab: Vocab
    path: Path          # the .npy file
    cached: bool        # True when an existing entry was used (the text was not read)


def corpus_digest(source: Path) -> str:
    """SHA-256 of a corpus's bytes, streamed (the same digest read_text reports)."""
    digest = hashlib.sha256()
    block = bytearray(1 << 20)
    view = memoryview(block)
    for file in corpus_files(Path(source)):
        try:
            with open(file, "rb", buffering=0) as f:
                while n := f.readinto(block):
                    digest.update(view[:n])
        except OSError as e:
            raise UserError(f"cannot read {file}: {e.strerror}") from None
    return digest.hexdigest()


def corpus_identity(sha256: str, encoding: str, normalize: bool, allow_binary: bool) -> dict:
    """What an entry is made from: the corpus digest and every option that changes the text read from it."""
    return {"format": FORMAT, "corpus_sha256": sha256, "encoding": encoding.lower(), "normalize": normalize,
            "allow_binary": allow_binary}


def cache_key(identity: dict) -> str:
    """The entry's file name part: a digest of its identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def corpus_name(source: Path) -> str:
    """A corpus's name without reading it: the file's stem, or the folder's name (as read_text names it)."""
    source = Path(source)
    return source.stem if source.is_file() else source.name


def open_corpus(source: Path, run_dir: Path, *, encoding: str = "utf-8", normalize: bool = True,
                allow_binary: bool = False, vocab: Vocab | None = None, trained_on: dict | None = None,
                dist: Distributed = Distributed()) -> EncodedCorpus:
    """The encoded corpus from the cache in `run_dir` (built there on first use), memory-mapped.

    vocab: the run's vocabulary (--resume); None derives it from the text (a new run).
    trained_on: the run's saved corpus record ({"name", "sha256"}); a different corpus is refused.
    Under torchrun rank 0 does the work while the others wait, then every rank maps the file.
    """
    if not dist.enabled:
        return _prepare(Path(source), Path(run_dir), encoding, normalize, allow_binary, vocab, trained_on)
    import torch.distributed as tdist

    corpus, error, message = None, None, None
    if dist.is_main:
        try:
            corpus = _prepare(Path(source), Path(run_dir), encoding, normalize, allow_binary, vocab, trained_on)
            message = {"name": corpus.name, "sha256": corpus.sha256, "path": str(corpus.path),
                       "chars": corpus.vocab.chars, "normalize": corpus.vocab.normalize}
        except UserError as e:  # tell the waiting ranks, so that every rank stops, not only this one
            error, message = e, {"error": str(e)}
    box = [message]
    tdist.broadcast_object_list(box, src=0)  # the other ranks wait here while rank 0 encodes
    message = box[0]
    if error is not None:
        raise error
    if "error" in message:
        raise SystemExit(1)  # rank 0 reports the mistake: one line, not one per process
    if dist.is_main:
        return corpus
    path = Path(message["path"])
    try:
        ids = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise UserError(f"{path}, written by rank 0, is not visible to rank {dist.rank}: put the run on a "
                        "filesystem every node shares (--checkpoint /shared/path)") from None
    return EncodedCorpus(message["name"], message["sha256"], ids, Vocab(message["chars"], message["normalize"]),
                         path, cached=True)


def _prepare(source: Path, run_dir: Path, encoding: str, normalize: bool, allow_binary: bool,
             vocab: Vocab | None, trained_on: dict | None) -> EncodedCorpus:
    """Find a valid entry (this run's, else a sibling run's) or encode the text into a new one."""
    from chargen.corpus import char_counts, warn_large_alphabet

    sha256 = corpus_digest(source)
    if trained_on is not None and trained_on["sha256"] != sha256:
        raise UserError(f"--resume: {source} is not the corpus this run was trained on ({trained_on['name']}, "
                        f"SHA-256 {trained_on['sha256'][:12]}...); pass the same corpus or start a new --run")
    expected = corpus_identity(sha256, encoding, normalize, allow_binary)
    key = cache_key(expected)
    name = corpus_name(source)
    entry = _load_entry(run_dir, key, expected, vocab)
    if entry is None and _link_sibling(run_dir, key, expected, vocab):
        entry = _load_entry(run_dir, key, expected, vocab)
    if entry is not None:
        ids, entry_vocab, counts = entry
        info(f"{name}: using the encoded corpus cached in {run_dir / (PREFIX + key)}.npy ({len(ids):,} characters)")
        if vocab is None:
            warn_large_alphabet(counts, name)
        return EncodedCorpus(name, sha256, ids, entry_vocab, run_dir / f"{PREFIX}{key}.npy", cached=True)

    text = read_text(source, encoding=encoding, normalize=normalize, allow_binary=allow_binary)
    if text.sha256 != sha256:
        raise UserError(f"{source} changed while it was being read; run again once it is complete")
    counts = char_counts(text.text)
    if vocab is None:
        warn_large_alphabet(counts, text.name)
        vocab = Vocab(sorted(counts), normalize=normalize)
    make_run_dir(run_dir)
    path = run_dir / f"{PREFIX}{key}.npy"
    dtype = vocab.dtype

    def write(f) -> None:
        # A .npy header, then the ids slice by slice: the whole id array is never in memory.
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (len(text.text),)}
        np.lib.format.write_array_header_1_0(f, header)
        for ids in encoded_slices(vocab, text.text):
            f.write(ids.data)

    atomic_write(path, write)
    record = {**expected, "length": len(text.text), "dtype": dtype.name, "chars": vocab.chars,
              "counts": [counts.get(c, 0) for c in vocab.chars]}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(record, ensure_ascii=True).encode())
    info(f"{text.name}: encoded {len(text.text):,} characters into {path} (reused by later runs and --resume)")
    return EncodedCorpus(text.name, sha256, np.load(path, mmap_mode="r"), vocab, path, cached=False)


def _load_entry(run_dir: Path, key: str, expected: dict, vocab: Vocab | None):
    """(ids, vocab, counts) of a complete entry made from the same corpus and options, else None."""
    path = run_dir / f"{PREFIX}{key}.npy"
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if {k: record.get(k) for k in expected} != expected:
            return None
        entry_vocab = Vocab(record["chars"], normalize=record["normalize"])
        if vocab is None:  # a new run: the entry's vocabulary must be the one the text gives
            if record["chars"] != sorted(record["chars"]) or not all(record["counts"]):
                return None
        elif vocab.chars != entry_vocab.chars or vocab.normalize != entry_vocab.normalize:
            return None  # encoded with another vocabulary: encode again with the run's
        ids = np.load(path, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):  # missing, truncated or not ours: encode afresh
        return None
    if ids.shape != (record["length"],) or ids.dtype != np.dtype(record["dtype"]):
        return None
    return ids, entry_vocab, dict(zip(record["chars"], record["counts"]))


def _link_sibling(run_dir: Path, key: str, expected: dict, vocab: Vocab | None) -> bool:
    """Hard-link a valid entry of another run in the same checkpoints folder into `run_dir`."""
    name = f"{PREFIX}{key}.npy"
    for other in sorted(run_dir.parent.glob(f"*/{name}")):
        if other.parent == run_dir or _load_entry(other.parent, key, expected, vocab) is None:
            continue
        make_run_dir(run_dir)
        try:
            for source in (other, other.with_suffix(".json")):  # the .json last: it marks the entry complete
                target = run_dir / source.name
                target.unlink(missing_ok=True)
                os.link(source, target)
        except OSError:  # a filesystem without hard links: encode instead
            continue
        return True
    return False
