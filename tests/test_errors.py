"""Bad input: every mistake is one line on stderr that says what to do (exit 1; 2 for usage errors),
or a recovery that is announced. Nothing on stdout, never a traceback.

Most cases drive `cli.main` in-process (the same code as the command, without paying a torch
import per case); a few run the real command in a subprocess to check the process itself.
"""
from __future__ import annotations

import io
import re
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chargen import cli, loop
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import UserError
from conftest import REPO

SMALL_MODEL = ["--hidden", "8", "--layers", "1", "--embedding", "8"]


def chargen(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `chargen ARGV` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def option_ids(value) -> str:
    """A parametrized case's id: the options it passes."""
    return " ".join(value) if isinstance(value, list) else ""


def one_line_error(result: tuple[int, str, str], *words: str, code: int = 1, after_progress: bool = False) -> str:
    """Assert the house style of a refusal and that the line names `words`; returns the line.

    after_progress: the mistake shows only once the corpus has been read, so progress notices
    (the corpus encoded and cached) may come first; the error is still one line, the last.
    """
    rc, out, err = result
    assert rc == code, err
    assert out == "", "a refusal prints nothing on stdout"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and (after_progress or len(lines) == 1), f"expected one line, got: {err!r}"
    assert sum("error" in line for line in lines) == 1, err
    line = lines[-1]
    assert line.startswith("chargen: error: " if code == 1 else "chargen ")
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


@pytest.fixture
def text_file(tmp_path):
    """A writer of corpus files: text_file("name", b"bytes" or "text") -> path."""
    def write(name: str, content: bytes | str):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return write


@pytest.fixture
def mine(tiny_run, isolated_checkpoints):
    """A copy of the tiny run under the checkpoints root, as `--run mine`."""
    dest = isolated_checkpoints / "mine"
    shutil.copytree(tiny_run, dest)
    return dest


# -- corpus ---------------------------------------------------------------------------------------
CORPUS_CASES = {
    # name: (file contents or None for no file, extra options, words the error must contain)
    "missing": (None, [], ["does not exist", "pass a text file"]),
    "empty": (b"", [], ["is empty"]),
    "whitespace only": (b"  \n\t\r\n  ", [], ["only whitespace"]),
    "invalid UTF-8": (b"caf\xe9 au lait\n" * 3, [], ["invalid utf-8 at byte offset 3", "0xe9", "--encoding"]),
    "NUL bytes": (b"text\x00\x01\x02 more text\n" * 20, [], ["looks binary", "NUL byte at offset 4", "--allow-binary"]),
    "mostly control characters": (bytes(range(1, 9)) * 300 + b"some text\n", [], ["looks binary", "--allow-binary"]),
    "unknown encoding": (b"plain text\n" * 20, ["--encoding", "klingon"], ["unknown --encoding 'klingon'"]),
    "lone surrogate": (b"ab\\ud800cd and more text\n" * 5, ["--encoding", "unicode_escape"],
                       ["lone surrogate", "U+D800", "--encoding"]),
    "far too short": (b"abc", ["--val-file", "VAL"], ["has 3 characters", "at least 4 are needed"]),
    "validation fraction 0": (b"plain text\n" * 20, ["--val-fraction", "0"],
                              ["--val-fraction must be between 0 and 1"]),
    "validation fraction > 1": (b"plain text\n" * 20, ["--val-fraction", "1.5"],
                                ["--val-fraction must be between 0 and 1"]),
}


@pytest.mark.parametrize("case", CORPUS_CASES)
def test_bad_corpus_is_one_line_naming_the_file(case, tmp_path, text_file, capsys):
    content, options, words = CORPUS_CASES[case]
    path = tmp_path / "corpus.txt" if content is None else text_file("corpus.txt", content)
    options = [str(text_file("val.txt", b"abc")) if o == "VAL" else o for o in options]
    found_late = case == "far too short" or case.startswith("validation")
    line = one_line_error(chargen(capsys, "train", path, *SMALL_MODEL, "--max-steps", "1", *options), *words,
                          after_progress=found_late)
    if not found_late and case != "unknown encoding":
        assert "corpus.txt" in line


def test_folder_without_text_files(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.md").write_text("not a .txt file")
    one_line_error(chargen(capsys, "train", tmp_path / "data"), "data is a folder with no .txt files")


def test_binary_file_trains_with_allow_binary(tmp_path, text_file, capsys):
    path = text_file("codes.txt", bytes(range(1, 9)) * 300 + b"some text\n")
    rc, out, err = chargen(capsys, "train", path, "--allow-binary", *SMALL_MODEL, "--max-steps", "1",
                           "--checkpoint", tmp_path / "run")
    assert rc == 0 and out == "", err
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_latin1_file_trains_with_its_encoding(tmp_path, text_file, capsys):
    path = text_file("latin.txt", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 40)
    rc, _, err = chargen(capsys, "train", path, "--encoding", "latin-1", *SMALL_MODEL, "--max-steps", "1",
                         "--checkpoint", tmp_path / "run")
    assert rc == 0, err
    vocab = json.loads((tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert {"\u00e9", "\u00e8", "\u00fb"} <= vocab.keys()


def test_short_text_shrinks_the_layout_and_says_so(tmp_path, text_file, capsys):
    path = text_file("short.txt", "the quick brown fox jumps over the lazy dog\n" * 4)  # 176 characters
    rc, _, err = chargen(capsys, "train", path, *SMALL_MODEL, "--batch-size", "64", "--seq-len", "128",
                         "--max-steps", "2", "--checkpoint", tmp_path / "run")
    assert rc == 0, err
    assert "using --batch-size 1 --seq-len 64 instead of 64 x 128" in err
    # The 18 validation characters are fewer than one chunk: said, not refused.
    assert "the validation text has 18 characters, fewer than one chunk (64)" in err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["train"]["batch_size"], config["train"]["seq_len"]) == (1, 64)


def test_line_endings_are_normalised_and_announced(tmp_path, text_file, capsys):
    path = text_file("mixed.txt", b"one\rtwo\r\nthree\n" * 30)
    rc, _, err = chargen(capsys, "train", path, *SMALL_MODEL, "--max-steps", "1", "--checkpoint", tmp_path / "run")
    assert rc == 0, err
    assert "mixed.txt: converted 30 CRLF and 30 CR line endings to LF" in err
    vocab = json.loads((tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert "\r" not in vocab and "\n" in vocab


def test_enormous_alphabet_warns_and_shows_the_rarest(tmp_path, text_file, capsys):
    common = "".join(chr(0x4E00 + i) for i in range(3500)) * 3
    path = text_file("han.txt", common + "\u9fa5\n")  # U+9FA5 occurs once: among the rarest
    rc, _, err = chargen(capsys, "train", path, *SMALL_MODEL, "--max-steps", "1", "--checkpoint", tmp_path / "run")
    assert rc == 0, err
    warning = next(line for line in err.splitlines() if "distinct characters" in line)
    assert "3502 distinct characters (more than 3000)" in warning and "Rarest:" in warning and "\u9fa5" in warning


# -- options --------------------------------------------------------------------------------------
TRAIN_OPTIONS = [
    (["--batch-size", "0"], "--batch-size must be a positive integer, not 0", 1),
    (["--seq-len", "-5"], "--seq-len must be a positive integer, not -5", 1),
    (["--hidden", "0"], "--hidden must be a positive integer, not 0", 1),
    (["--layers", "-1"], "--layers must be a positive integer, not -1", 1),
    (["--embedding", "0"], "--embedding must be a positive integer, not 0", 1),
    (["--lr", "0"], "--lr must be > 0", 1),
    (["--clip", "-1"], "--clip must be > 0", 1),
    (["--dropout", "1"], "--dropout must be in [0, 1)", 1),
    (["--max-steps", "-1"], "--max-steps must be >= 0", 1),
    (["--max-time", "soon"], "--max-time 'soon' is not a duration", 1),
    (["--max-time", "0"], "--max-time must be positive", 1),
    (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'", 2),
    (["--cell", "transformer"], "argument --cell: invalid choice: 'transformer'", 2),
    (["--optimizer", "sgd"], "argument --optimizer: invalid choice: 'sgd'", 2),
    (["--sizing", "large"], "argument --sizing: invalid choice: 'large'", 2),
    (["--batch-size", "many"], "argument --batch-size: invalid int value: 'many'", 2),
]


@pytest.mark.parametrize("options, words, code", TRAIN_OPTIONS, ids=option_ids)
def test_bad_training_option_is_refused_with_its_name(options, words, code, shakespeare_slice, capsys):
    one_line_error(chargen(capsys, "train", shakespeare_slice, *SMALL_MODEL, *options), words, code=code)


def test_device_cuda_without_cuda(monkeypatch, shakespeare_slice, tiny_run, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(chargen(capsys, "train", shakespeare_slice, "--device", "cuda", "--checkpoint", tmp_path / "r"),
                   "--device cuda", "CUDA is not available", "--device cpu")
    one_line_error(chargen(capsys, "eval", "--checkpoint", tiny_run, shakespeare_slice, "--device", "cuda"),
                   "--device cuda", "CUDA is not available")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [["train", "CORPUS"], ["series", "train", "--synthetic", "sine"]])
def test_a_precision_the_cpu_cannot_run_is_refused_before_any_work(command, monkeypatch, shakespeare_slice,
                                                                   tmp_path, capsys):
    monkeypatch.setattr(loop, "cpu_runs_bf16_recurrence", lambda: False)  # as on an AVX2-only CPU
    argv = [shakespeare_slice if a == "CORPUS" else a for a in command]
    one_line_error(chargen(capsys, *argv, "--precision", "bf16", "--device", "cpu", "--checkpoint", tmp_path / "r"),
                   "--precision bf16", "--precision fp32")
    assert not (tmp_path / "r").exists()  # nothing read, cached or created


GENERATE_OPTIONS = [
    (["--temperature", "-0.5"], "--temperature must be a number >= 0", 1),
    (["--temperature", "inf"], "--temperature must be a number >= 0", 1),
    (["--temperature", "nan"], "--temperature must be a number >= 0", 1),
    (["--top-p", "0"], "--top-p must be in (0, 1]", 1),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]", 1),
    (["--top-k", "-1"], "argument --top-k: must be >= 0", 2),
    (["--length", "-1"], "argument --length: must be >= 0", 2),
    (["--num-samples", "0"], "argument --num-samples: must be >= 1", 2),
    (["--seed", ""], "--seed is empty", 1),
    (["--unknown", "guess"], "argument --unknown: invalid choice", 2),
]


@pytest.mark.parametrize("options, words, code", GENERATE_OPTIONS, ids=option_ids)
def test_bad_generation_option_is_refused_with_its_name(options, words, code, tiny_run, capsys):
    one_line_error(chargen(capsys, "generate", "--checkpoint", tiny_run, *options), words, code=code)


# -- runs -----------------------------------------------------------------------------------------
def test_missing_run_lists_the_runs_there_are(mine, shakespeare_slice, capsys):
    line = one_line_error(chargen(capsys, "generate", "--run", "mien"), "mien' does not exist", "runs in")
    assert line.endswith(": mine")
    one_line_error(chargen(capsys, "train", shakespeare_slice, "--run", "mien", "--resume"), "does not exist", "mine")


def damage(run, name: str, how: str) -> None:
    path = run / name
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(how.encode())


RUN_CASES = [
    ("model.safetensors", "delete", ["is incomplete: missing model.safetensors"]),
    ("model.safetensors", "truncate", ["model.safetensors is damaged or truncated", "retrain"]),
    ("tokenizer.json", "delete", ["is incomplete: missing tokenizer.json"]),
    ("tokenizer.json", "truncate", ["tokenizer.json is not a valid chargen tokenizer file", "retrain"]),
    ("tokenizer.json", '{"model": {"vocab": {"a": 0, "b": 1}}}', ["tokenizer.json does not hold a chargen"]),
    ("config.json", "delete", ["is incomplete: missing config.json"]),
    ("config.json", "truncate", ["config.json is malformed", "retrain"]),
    ("config.json", "[1, 2, 3]", ["config.json is not a chargen run config"]),
    ("config.json", '{"format": 1, "model": {"cell": "lstm", "hidden": "big", "layers": 2, "head": "char"}}',
     ["model.hidden is 'big', not an integer"]),
]


@pytest.mark.parametrize("name, how, words", RUN_CASES, ids=lambda v: v[:20] if isinstance(v, str) else "")
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_damaged_run_is_one_line_naming_the_file(command, name, how, words, run_copy, shakespeare_slice, capsys):
    damage(run_copy, name, how)
    args = ["--length", "5"] if command == "generate" else [shakespeare_slice]
    one_line_error(chargen(capsys, command, "--checkpoint", run_copy, *args), *words)


def test_run_from_an_incompatible_version(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config.update(format=2, chargen_version="9.0.0")
    (run_copy / "config.json").write_text(json.dumps(config))
    one_line_error(chargen(capsys, "generate", "--checkpoint", run_copy),
                   "has format 2 (written by chargen 9.0.0)", "this chargen reads format 1")


def test_resume_with_another_corpus_is_refused(mine, text_file, capsys):
    other = text_file("other.txt", "a different text altogether\n" * 100)
    one_line_error(chargen(capsys, "train", other, "--run", "mine", "--resume", "--max-steps", "70"),
                   "other.txt is not the corpus this run was trained on", "start a new --run")


def test_resume_of_a_damaged_trainer_state(mine, shakespeare_slice, capsys):
    damage(mine, "trainer_state.pt", "truncate")
    one_line_error(chargen(capsys, "train", shakespeare_slice, "--run", "mine", "--resume", "--max-steps", "70"),
                   "trainer_state.pt is damaged", "cannot be resumed", "start a new --run")


class Planted:
    """A pickle that creates a marker file when it is unpickled (a stand-in for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


PLANTED_LAYOUTS = {
    # how the file is written: the words of the refusal
    "torch.save": "trainer_state.pt holds Python objects",
    "pickle protocol 2": "trainer_state.pt holds Python objects",   # reaches the forbidden GLOBAL
    "pickle protocol 5": "trainer_state.pt is damaged",            # refused earlier: not a checkpoint
}


@pytest.mark.parametrize("layout", PLANTED_LAYOUTS)
def test_planted_pickle_in_trainer_state_is_refused_and_never_run(layout, mine, shakespeare_slice, tmp_path, capsys):
    def payload(marker) -> bytes:
        state = {"step": 60, "model": {}, "optimizer": Planted(marker)}
        if layout.startswith("pickle"):
            return pickle.dumps(state, protocol=int(layout[-1]))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    # Control: the payload is live — an unsafe load of it does create its marker.
    control = tmp_path / "control.pt"
    control.write_bytes(payload(tmp_path / "control-marker"))
    if layout.startswith("pickle"):
        pickle.loads(control.read_bytes())
    else:
        torch.load(control, weights_only=False)
    assert (tmp_path / "control-marker").exists()

    marker = tmp_path / "pwned"
    (mine / "trainer_state.pt").write_bytes(payload(marker))
    one_line_error(chargen(capsys, "train", shakespeare_slice, "--run", "mine", "--resume", "--max-steps", "70"),
                   PLANTED_LAYOUTS[layout], "start a new --run")
    assert not marker.exists()


def test_no_unsafe_loading_anywhere_in_chargen():
    """Checkpoints are data: no pickle.load and no torch.load(weights_only=False) in the package."""
    for path in sorted((REPO / "chargen").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert "weights_only=False" not in source, path
        assert "pickle.load" not in source, path
        for line in source.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"


def test_resume_reads_the_corpus_as_the_run_did(text_file, tmp_path):
    """Options that would decode the same bytes into other characters (outside the run's vocabulary)
    cannot change what a resumed run sees: it continues exactly as with the run's own options."""
    from chargen import ModelConfig, TrainConfig, api

    corpus = text_file("accents.txt", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve se\u00f1or\n" * 60)
    first = tmp_path / "first"
    api.train(corpus, checkpoint=first, model=ModelConfig(hidden=8, layers=1, embedding=8),
              config=TrainConfig(batch_size=4, seq_len=16, max_steps=3, rng_seed=5))
    finals = []
    for options in ({}, {"encoding": "latin-1", "normalize": False}):
        run = tmp_path / f"resumed{len(finals)}"
        shutil.copytree(first, run)
        api.train(corpus, checkpoint=run, resume=True, overrides={"max_steps": 6}, **options)
        finals.append(torch.load(run / "trainer_state.pt", weights_only=True))
    assert finals[1]["step"] == 6
    for name, tensor in finals[0]["model"].items():
        assert torch.equal(tensor, finals[1]["model"][name]), name


def test_run_folder_that_cannot_be_created(shakespeare_slice, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    one_line_error(chargen(capsys, "train", shakespeare_slice, "--checkpoint", blocker / "run"),
                   "cannot create the run folder", "Not a directory", "--checkpoint")


# -- generation -----------------------------------------------------------------------------------
def test_seed_with_unknown_characters_names_them(tiny_run, capsys):
    one_line_error(chargen(capsys, "generate", "--checkpoint", tiny_run, "--seed", "To be \u00eb \u2603"),
                   "never saw: '\u00eb' '\u2603'", "--unknown skip")
    rc, out, _ = chargen(capsys, "generate", "--checkpoint", tiny_run, "--seed", "To be \u00eb \u2603", "--unknown",
                         "skip", "--length", "10", "--no-seed", "--rng-seed", "1")
    assert rc == 0 and len(out) == 11


def test_seed_with_undecodable_bytes_is_a_user_error(tiny_run, capsys):
    # A byte that is not UTF-8 in argv reaches Python as a lone surrogate (surrogateescape).
    seed = b"to be \xff".decode("utf-8", "surrogateescape")
    one_line_error(chargen(capsys, "generate", "--checkpoint", tiny_run, "--seed", seed), "never saw: '\\udcff'")


def test_stop_string_never_reached(tiny_run, capsys):
    rc, out, err = chargen(capsys, "generate", "--checkpoint", tiny_run, "--stop", "@@@", "--length", "40",
                           "--no-seed", "--rng-seed", "3")
    assert rc == 0 and len(out) == 41  # the full length, then a newline
    assert "--stop '@@@' did not occur in 40 characters" in err


# -- the real command -----------------------------------------------------------------------------
def test_real_command_exit_status_and_one_line(run_copy, text_file, cli):
    (run_copy / "model.safetensors").write_bytes(b"\x00" * 5)
    done = cli("generate", "--checkpoint", str(run_copy))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("chargen: error: ")
    bad = text_file("bad.txt", b"\xff\xfe\xfd")
    done = cli("train", str(bad))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"chargen: error: {bad}: invalid utf-8 at byte offset 0 (byte 0xff); convert the file "
                           "to UTF-8 or pass --encoding (e.g. --encoding latin-1)\n")


def test_output_to_a_closed_pipe_exits_quietly(tiny_run):
    """`chargen generate | head -c 10`: the reader leaves early; no traceback, no complaint."""
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "generate", "--checkpoint", str(tiny_run),
                             "--length", "200000", "--rng-seed", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(10)
    proc.stdout.close()  # what `head -c 10` does after its 10 bytes
    _, err = proc.communicate(timeout=120)
    assert len(first) == 10
    assert proc.returncode == 0, err
    assert err == b""


# -- poisoned weights ----------------------------------------------------------------------------
def poison(run: Path, name: str) -> None:
    """Put a NaN into one tensor of model.safetensors (as a damaged disk or a hand edit would)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(run / "model.safetensors"))
    tensors[name].view(-1)[3] = float("nan")
    save_file(tensors, str(run / "model.safetensors"))


@pytest.mark.parametrize("command", ["generate", "eval", "interactive", "inspect"])
def test_non_finite_weights_are_refused_by_every_text_command(command, run_copy, shakespeare_slice, capsys,
                                                             monkeypatch):
    poison(run_copy, "core.rnn.weight_hh_l1")
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\n"))
    args = {"generate": ["--length", "20"], "eval": [shakespeare_slice], "interactive": [],
            "inspect": [shakespeare_slice, "--max-chars", "100"]}[command]
    one_line_error(chargen(capsys, command, "--checkpoint", run_copy, *args),
                   f"{run_copy / 'model.safetensors'}", "'core.rnn.weight_hh_l1'", "non-finite", "retrain")


@pytest.mark.parametrize("command", [["forecast", "--steps", "5"], ["eval"]])
def test_non_finite_weights_are_refused_by_the_series_commands(command, tmp_path, capsys):
    from chargen.config import ModelConfig, TrainConfig
    from chargen.series import train_series
    from chargen.series_data import SeriesConfig

    run = tmp_path / "sine"
    train_series(synthetic="sine", length=200, checkpoint=run, settings=SeriesConfig(window=10),
                 model=ModelConfig(hidden=8, layers=1, embedding=4), config=TrainConfig(max_steps=2))
    poison(run, "head.weight")
    capsys.readouterr()  # the training's progress lines
    one_line_error(chargen(capsys, "series", *command, "--checkpoint", run), "'head.weight'", "non-finite")


def test_non_finite_trainer_state_is_not_resumed(mine, shakespeare_slice, capsys):
    state = torch.load(mine / "trainer_state.pt", weights_only=True)
    state["model"]["head.bias"][0] = float("inf")
    torch.save(state, mine / "trainer_state.pt")
    one_line_error(chargen(capsys, "train", shakespeare_slice, "--run", "mine", "--resume", "--max-steps", "70"),
                   "trainer_state.pt", "'head.bias'", "non-finite", "cannot be resumed")


@pytest.mark.parametrize("damage", ["no series section", "std 0", "std NaN", "history of words", "window 0"])
def test_a_damaged_series_config_is_refused(damage, tmp_path, capsys):
    from chargen.config import ModelConfig, TrainConfig
    from chargen.series import train_series
    from chargen.series_data import SeriesConfig

    run = tmp_path / "sine"
    train_series(synthetic="sine", length=200, checkpoint=run, settings=SeriesConfig(window=10),
                 model=ModelConfig(hidden=8, layers=1, embedding=4), config=TrainConfig(max_steps=2))
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    if damage == "no series section":
        del config["series"]
    elif damage.startswith("std"):
        config["series"]["members"][0]["scaler"]["std"] = 0.0 if damage == "std 0" else float("nan")
    elif damage == "history of words":
        config["series"]["members"][0]["history"] = ["ten", "eleven"]
    else:
        config["series"]["settings"]["window"] = 0
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    capsys.readouterr()
    one_line_error(chargen(capsys, "series", "forecast", "--checkpoint", run, "--steps", "3"),
                   f"{run / 'config.json'}: the series section", "retrain it")


@pytest.mark.parametrize("settings, words", [
    (lambda: ModelConfig(cell="transformer"), "--cell 'transformer' is not a cell type; choose one of rnn, lstm, gru"),
    (lambda: TrainConfig(precision="fp8"), "--precision 'fp8': choose one of auto, fp32, bf16, fp16"),
    (lambda: TrainConfig(optimizer="sgd"), "--optimizer 'sgd': choose one of adamw, muon"),
    (lambda: TrainConfig(sizing="large"), "--sizing 'large': choose one of auto, fixed"),
], ids=["cell", "precision", "optimizer", "sizing"])
def test_a_choice_the_command_line_would_refuse_is_refused_through_the_api(settings, words):
    with pytest.raises(UserError, match=re.escape(words)):
        settings().validate()
