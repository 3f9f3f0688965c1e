"""The copied share: how much generated text is a verbatim copy of the training text."""
from __future__ import annotations

import re

import pytest

from chargen.copying import copied_share, copied_windows

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # no 32-character window occurs twice


def test_copied_windows_count_every_overlapping_window_found_verbatim():
    generated = ALPHABET[2:36] + "ZZZZ"  # 38 characters: 7 windows, the first 3 inside the training text
    assert copied_windows(generated, ALPHABET) == (3, 7)
    assert copied_share(generated, ALPHABET) == pytest.approx(3 / 7)
    assert copied_share(ALPHABET[:32], ALPHABET) == 1.0                      # one window, copied
    assert copied_share(ALPHABET[::-1], ALPHABET) == 0.0                     # the same letters, nothing copied
    assert copied_windows("short", ALPHABET) == (0, 0)
    with pytest.raises(ValueError, match="fewer than one window"):
        copied_share("short", ALPHABET)


def test_generate_says_how_much_it_copied_and_prints_the_same_text(cli, tmp_path):
    """A model that has memorised its one repeated sentence copies it; measured against another text, nothing
    it wrote is found there; the text on stdout is the same with or without the measure."""
    sentence = "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire.\n"
    (tmp_path / "rep.txt").write_text(sentence * 60)
    (tmp_path / "other.txt").write_text("Rivers, mountains and distant valleys under winter skies. " * 30)
    r = cli("train", "rep.txt", "--run", "rep", "--max-steps", "300", "--hidden", "64", "--layers", "1",
            "--batch-size", "8", "--seq-len", "64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    base = ["generate", "--run", "rep", "--length", "300", "--num-samples", "3", "--temperature", "0.5",
            "--rng-seed", "2"]
    measured = cli(*base, "--copied", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    assert measured.stdout == cli(*base, cwd=tmp_path).stdout
    line = measured.stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"copied: ([\d.]+)% of the 807 windows of 32 characters generated are found verbatim "
                         r"in the training text \(rep\)", line)
    assert found and float(found.group(1)) > 50, line  # 3 samples x (300 - 31) windows, the seed left out
    other = cli(*base, "--copied", "other.txt", cwd=tmp_path)
    assert other.stderr.strip().splitlines()[-1].startswith("copied: 0.0% of the 807 windows")


def test_copied_needs_the_training_text_as_it_was(cli, tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 40)
    assert cli("train", "text.txt", "--run", "t", "--max-steps", "2", "--hidden", "16", "--layers", "1",
               cwd=tmp_path).returncode == 0
    corpus.write_text("Something else entirely. " * 40)
    r = cli("generate", "--run", "t", "--copied", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and r.stderr == (
        f"chargen: error: {corpus.name} has changed since the run trained on it; give the text it was trained on: "
        "--copied FILE\n")
    corpus.unlink()
    r = cli("generate", "--run", "t", "--copied", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and r.stderr == (
        f"chargen: error: the run's training text ({corpus.name}) is not there; give it: --copied FILE\n")
