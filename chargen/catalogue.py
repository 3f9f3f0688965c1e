"""Named public corpora: the catalogue in `corpora/catalogue.json` and the folder they download into.

`corpus_path("tinyshakespeare")` returns a verified local file, downloading it once (with a
progress bar, verified by SHA-256, stored atomically) when it is not there yet.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from chargen.errors import UserError

DEFAULT_CORPUS = "tinyshakespeare"
_REPO_CORPORA = Path(__file__).resolve().parent.parent / "corpora"


def corpora_dir() -> Path:
    """Where named corpora live: $CHARGEN_CORPORA, else the clone's `corpora/`, else ~/.cache/chargen/corpora."""
    if os.environ.get("CHARGEN_CORPORA"):
        return Path(os.environ["CHARGEN_CORPORA"])
    if _REPO_CORPORA.is_dir():
        return _REPO_CORPORA
    return Path.home() / ".cache" / "chargen" / "corpora"


def catalogue() -> dict[str, dict]:
    """The named corpora: name -> {url, sha256, bytes, file, about}."""
    return json.loads((_REPO_CORPORA / "catalogue.json").read_text(encoding="utf-8"))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_path(name: str) -> Path:
    """A verified local copy of the named corpus, downloaded on first use."""
    entries = catalogue()
    if name not in entries:
        raise UserError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(entries))}")
    entry = entries[name]
    folder = corpora_dir()
    path = folder / entry["file"]
    if path.is_file():
        if file_sha256(path) == entry["sha256"]:
            return path
        from chargen.log import info

        info(f"{path} does not match the catalogue's SHA-256: downloading it again")
    _download(entry, path)
    return path


def _download(entry: dict, path: Path) -> None:
    from tqdm import tqdm

    from chargen.checkpoint import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(entry["url"], timeout=30) as response:
            total = int(response.headers.get("Content-Length") or entry.get("bytes") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {path.name}",
                      file=sys.stderr, disable=None) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    chunks.append(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise UserError(
            f"cannot download {entry['url']} ({getattr(e, 'reason', e)}); download it by hand to {path} "
            f"(or set CHARGEN_CORPORA to a folder holding {path.name}), or pass a text file: chargen train FILE"
        ) from None
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise UserError(f"the download from {entry['url']} has SHA-256 {digest}, expected {entry['sha256']}; "
                        "try again later or pass a text file")
    atomic_write_bytes(path, data)
