"""Named corpora: `train` with no file uses tinyshakespeare, verified by SHA-256, downloaded once."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.request

import pytest

from chargen import catalogue
from chargen.errors import UserError
from conftest import run_cli

ENTRY = catalogue.catalogue()["tinyshakespeare"]
# Any HTTPS request fails at once (connection refused), even on a machine with internet.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
TINY = ["--hidden", "16", "--layers", "1", "--embedding", "8", "--batch-size", "64", "--seq-len", "64",
        "--max-steps", "1"]


def test_the_catalogue_entry_is_the_char_rnn_file():
    assert ENTRY["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert ENTRY["bytes"] == 1_115_394 and ENTRY["file"] == "tinyshakespeare.txt"
    assert ENTRY["url"] == "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def test_the_shared_copy_matches_the_catalogue(shakespeare):
    assert catalogue.file_sha256(shakespeare) == ENTRY["sha256"]


def test_train_without_a_file_uses_the_local_tinyshakespeare(shakespeare, tmp_path, isolated_checkpoints):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    shutil.copy(shakespeare, corpora / "tinyshakespeare.txt")
    result = run_cli("train", *TINY, env={"CHARGEN_CORPORA": str(corpora), **OFFLINE})
    assert result.returncode == 0, result.stderr
    config = json.loads((isolated_checkpoints / "tinyshakespeare" / "config.json").read_text(encoding="utf-8"))
    assert config["corpus"]["sha256"] == ENTRY["sha256"]
    assert config["corpus"]["name"] == "tinyshakespeare" and config["corpus"]["chars"] == 1_115_394
    assert "download" not in result.stderr


def test_offline_with_no_local_copy_says_how_to_get_it(tmp_path, isolated_checkpoints):
    empty = tmp_path / "corpora"
    empty.mkdir()
    result = run_cli("train", *TINY, env={"CHARGEN_CORPORA": str(empty), **OFFLINE})
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert ENTRY["url"] in lines[0] and str(empty / "tinyshakespeare.txt") in lines[0]
    assert "chargen train FILE" in lines[0]  # or pass a file
    assert list(empty.iterdir()) == [] and not isolated_checkpoints.exists()


def corrupted_copy(shakespeare, folder) -> bytes:
    """A copy of tinyshakespeare with one letter's case flipped: still valid text, but not the corpus."""
    folder.mkdir(parents=True)
    damaged = bytearray(shakespeare.read_bytes())
    damaged[1000] ^= 0x20
    (folder / "tinyshakespeare.txt").write_bytes(bytes(damaged))
    return bytes(damaged)


def test_a_corrupted_local_copy_is_not_trained_on(shakespeare, tmp_path, isolated_checkpoints):
    corpora = tmp_path / "corpora"
    damaged = corrupted_copy(shakespeare, corpora)
    result = run_cli("train", *TINY, env={"CHARGEN_CORPORA": str(corpora), **OFFLINE})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not match the catalogue's SHA-256" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("chargen: error: cannot download")
    assert not isolated_checkpoints.exists()
    assert (corpora / "tinyshakespeare.txt").read_bytes() == damaged  # left for the user to inspect


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def serve(monkeypatch, data: bytes) -> list[str]:
    """Make urlopen serve `data` and record the URLs asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        return FakeResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def test_download_happens_once_and_is_verified(shakespeare, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_CORPORA", str(tmp_path / "new" / "corpora"))
    asked = serve(monkeypatch, shakespeare.read_bytes())
    path = catalogue.corpus_path("tinyshakespeare")
    assert asked == [ENTRY["url"]]
    assert path == tmp_path / "new" / "corpora" / "tinyshakespeare.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ENTRY["sha256"]
    assert [p.name for p in path.parent.iterdir()] == ["tinyshakespeare.txt"]  # no temporary left behind
    assert catalogue.corpus_path("tinyshakespeare") == path and len(asked) == 1  # cached


def test_a_corrupted_local_copy_is_replaced_by_a_verified_download(shakespeare, tmp_path, monkeypatch, capsys):
    corpora = tmp_path / "corpora"
    corrupted_copy(shakespeare, corpora)
    monkeypatch.setenv("CHARGEN_CORPORA", str(corpora))
    asked = serve(monkeypatch, shakespeare.read_bytes())
    path = catalogue.corpus_path("tinyshakespeare")
    assert "does not match the catalogue's SHA-256" in capsys.readouterr().err and len(asked) == 1
    assert catalogue.file_sha256(path) == ENTRY["sha256"]


def test_a_download_with_the_wrong_content_is_refused_and_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_CORPORA", str(tmp_path))
    serve(monkeypatch, b"<html>rate limited</html>")
    with pytest.raises(UserError, match="SHA-256") as err:
        catalogue.corpus_path("tinyshakespeare")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "tinyshakespeare.txt").exists()


def test_unknown_corpus_name_lists_the_known_ones():
    with pytest.raises(UserError, match="tinyshakespeare"):
        catalogue.corpus_path("war_and_peace")
