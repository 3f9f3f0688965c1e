"""The command line end to end, in subprocesses, as a user runs it: train, generate, eval, runs, errors."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chargen.config import ModelConfig, TrainConfig

from conftest import REPO, run_cli

# A tiny model: the command line must accept the sizes a user would pass.
TINY = ["--hidden", "32", "--layers", "1", "--embedding", "16", "--batch-size", "8", "--seq-len", "32",
        "--max-steps", "20", "--eval-every", "20", "--rng-seed", "1"]


def one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """Assert the house style of a user error: exit code, one line on stderr, no traceback, empty stdout."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def trained(shakespeare_slice, tmp_path_factory) -> dict:
    """`chargen train` run once in a subprocess: its checkpoints root, run name and output."""
    root = tmp_path_factory.mktemp("cli_checkpoints")
    env = {"CHARGEN_CHECKPOINTS": str(root)}
    result = run_cli("train", str(shakespeare_slice), "--run", "tiny", *TINY, env=env)
    return {"root": root, "env": env, "result": result, "run": root / "tiny"}


def test_train_writes_a_complete_run_and_nothing_on_stdout(trained):
    result = trained["result"]
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # progress and summary are diagnostics: stderr
    assert "bits/char" in result.stderr and "Traceback" not in result.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"} <= {
        p.name for p in trained["run"].iterdir()}
    config = json.loads((trained["run"] / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["hidden"] == 32 and config["model"]["layers"] == 1 and config["model"]["cell"] == "gru"
    assert config["train"]["max_steps"] == 20 and config["metrics"]["steps"] == 20


def test_generate_prints_only_the_text(trained):
    from chargen import generate

    result = run_cli("generate", "--run", "tiny", "--seed", "ROMEO:", "--length", "80", "--rng-seed", "3",
                     env=trained["env"])
    assert result.returncode == 0, result.stderr
    expected = "".join(generate(trained["run"], seed="ROMEO:", length=80, rng_seed=3))
    assert result.stdout == "ROMEO:" + expected + "\n"
    again = run_cli("generate", "--run", "tiny", "--seed", "ROMEO:", "--length", "80", "--rng-seed", "3",
                    env=trained["env"])
    assert again.stdout == result.stdout  # same --rng-seed, same text
    other = run_cli("generate", "--run", "tiny", "--seed", "ROMEO:", "--length", "80", "--rng-seed", "4",
                    env=trained["env"])
    assert other.stdout != result.stdout


def test_generate_defaults_to_a_newline_seed(trained):
    result = run_cli("generate", "--run", "tiny", "--length", "20", "--temperature", "0", env=trained["env"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("\n") and len(result.stdout) == 1 + 20 + 1
    no_seed = run_cli("generate", "--checkpoint", str(trained["run"]), "--length", "20", "--temperature", "0",
                      "--no-seed")
    assert no_seed.stdout == result.stdout[1:]


def test_without_run_the_most_recent_run_is_used(trained, tmp_path):
    root = tmp_path / "runs"
    for name in ("good", "broken"):
        shutil.copytree(trained["run"], root / name)
    (root / "broken" / "model.safetensors").unlink()
    env = {"CHARGEN_CHECKPOINTS": str(root)}
    os.utime(root / "broken" / "config.json", (1e9, 1e9))  # broken is older: good is used
    assert run_cli("generate", "--length", "5", env=env).returncode == 0
    os.utime(root / "good" / "config.json", (1e8, 1e8))  # now broken is the most recent
    assert "broken" in one_line_error(run_cli("generate", "--length", "5", env=env))


def samples_of(stdout: str) -> list[str]:
    """The texts of `generate --num-samples N` output, in order."""
    blocks = stdout.split("=== sample ")[1:]
    assert [b.split(" ===\n", 1)[0] for b in blocks] == [str(k) for k in range(1, len(blocks) + 1)]
    return [b.split(" ===\n", 1)[1][:-1] for b in blocks]  # each sample ends with a newline


def test_generate_stop_cuts_each_sample_of_a_batch(trained):
    args = ["generate", "--run", "tiny", "--seed", "A", "--length", "200", "--num-samples", "3", "--rng-seed", "2"]
    whole = samples_of(run_cli(*args, env=trained["env"]).stdout)
    assert len(whole) == 3 and all(len(w) == 201 for w in whole)
    stop = whole[0][40:42]  # a string that sample 1 produces; the others may or may not
    result = run_cli(*args, "--stop", stop, env=trained["env"])
    assert result.returncode == 0, result.stderr
    for cut, full in zip(samples_of(result.stdout), whole):
        at = full.find(stop, 1)  # the seed does not count
        assert cut == (full[:at + len(stop)] if at > 0 else full)


def test_eval_reports_bits_per_char_and_perplexity(trained, shakespeare_slice, tmp_path):
    result = run_cli("eval", "--run", "tiny", str(shakespeare_slice), env=trained["env"])
    assert result.returncode == 0, result.stderr
    assert "bits/char" in result.stdout and "perplexity" in result.stdout
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("Thou art a villain, sir. \u00e9\u00e9\n", encoding="utf-8")
    as_json = run_cli("eval", "--run", "tiny", str(held_out), "--json", env=trained["env"])
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    assert figures["chars"] == len("Thou art a villain, sir. \u00e9\u00e9\n") - 1
    assert figures["bits_per_char"] == pytest.approx(figures["nats_per_char"] / math.log(2))
    assert figures["perplexity"] == pytest.approx(math.exp(figures["nats_per_char"]))
    assert figures["unknown_chars"] == 2 and figures["unknown_distinct"] == ["\u00e9"]


def test_runs_lists_the_run(trained):
    result = run_cli("runs", env=trained["env"])
    assert result.returncode == 0 and result.stdout.split()[0] == "tiny"


def console_script() -> str:
    found = shutil.which("chargen", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.skip("the `chargen` console script is not installed (pip install -e .)")
    return found


@pytest.mark.parametrize("launcher", ["module", "console"])
def test_python_m_chargen_and_the_console_script_do_the_same(trained, launcher):
    args = ["generate", "--run", "tiny", "--seed", "KING", "--length", "40", "--rng-seed", "5"]
    command = [sys.executable, "-m", "chargen"] if launcher == "module" else [console_script()]
    # From another folder: the installed command must not depend on the current directory.
    result = subprocess.run(command + args, cwd=trained["root"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **trained["env"]})
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_cli(*args, env=trained["env"]).stdout


@pytest.mark.parametrize("command, defaults", [
    # The sized settings say how they are chosen, and their fixed defaults (--sizing fixed).
    ("train", [f"{ModelConfig().hidden} with --sizing fixed", f"(default: {ModelConfig().cell})",
               f"(default: {TrainConfig().clip})", "(default: 0.1)", f"(default: {TrainConfig().rng_seed})",
               f"{TrainConfig().lr} with --sizing fixed", f"{TrainConfig().batch_size} with --sizing fixed",
               "(default: auto)"]),
    ("generate", ["(default: 500)", "(default: 0.8)", "(default: a newline)", "(default: 1)"]),
    ("eval", ["(default: utf-8)", "(default: cpu)"]),
])
def test_help_of_each_command_shows_defaults(command, defaults):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for default in defaults:
        assert default in text, default


def test_top_level_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert all(name in result.stdout for name in ("train", "generate", "eval", "runs"))


# -- bad inputs: one line on stderr, exit 1 (2 for usage), no traceback ----------------------------
def test_missing_corpus_file(tmp_path):
    line = one_line_error(run_cli("train", str(tmp_path / "no_such.txt")))
    assert "no_such.txt" in line and "does not exist" in line


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 au lait\n".encode("utf-8") + b"na\xefve\n")
    line = one_line_error(run_cli("train", str(bad), *TINY))
    assert "latin1.txt" in line and "byte offset 16" in line and "--encoding" in line


def test_unknown_seed_character_is_named(trained):
    line = one_line_error(run_cli("generate", "--run", "tiny", "--seed", "\u00c9t\u00e9", env=trained["env"]))
    assert "'\u00c9'" in line and "'\u00e9'" in line and "--unknown" in line
    skipped = run_cli("generate", "--run", "tiny", "--seed", "\u00c9t\u00e9", "--unknown", "skip", "--length", "5",
                      env=trained["env"])
    assert skipped.returncode == 0 and skipped.stdout.startswith("t")


def test_run_that_does_not_exist_lists_the_runs(trained):
    line = one_line_error(run_cli("generate", "--run", "nope", env=trained["env"]))
    assert "nope" in line and "does not exist" in line and "tiny" in line


def test_no_runs_at_all(tmp_path):
    line = one_line_error(run_cli("generate", env={"CHARGEN_CHECKPOINTS": str(tmp_path / "empty")}))
    assert "no runs" in line and "chargen train" in line


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "config.json"])
def test_incomplete_run_names_the_missing_file(trained, tmp_path, missing):
    root = tmp_path / "runs"
    shutil.copytree(trained["run"], root / "broken")
    (root / "broken" / missing).unlink()
    env = {"CHARGEN_CHECKPOINTS": str(root)}
    commands = [["generate", "--run", "broken"]]
    if missing == "model.safetensors":  # eval reads the run the same way (and imports torch: slower)
        commands.append(["eval", "--run", "broken", str(REPO / "pyproject.toml")])
    for command in commands:
        line = one_line_error(run_cli(*command, env=env))
        assert "incomplete" in line and missing in line and "broken" in line


@pytest.mark.parametrize("args", [
    ["generate", "--length", "-3"],
    ["generate", "--num-samples", "0"],
    ["train", "--cell", "transformer"],
    ["eval"],
    ["frobnicate"],
])
def test_usage_errors_exit_2_with_one_line(args):
    line = one_line_error(run_cli(*args), code=2)
    assert "error" in line and "--help" in line


@pytest.mark.parametrize("args, words", [
    (["generate", "--temperature", "-1"], "--temperature"),
    (["generate", "--top-p", "0"], "--top-p"),
    (["train", "--max-time", "5 minutes"], "--max-time"),
])
def test_bad_values_name_the_option(trained, args, words):
    line = one_line_error(run_cli(*args, env=trained["env"]))
    assert words in line


def test_bad_model_options_name_the_option(shakespeare_slice, tmp_path):
    line = one_line_error(run_cli("train", str(shakespeare_slice), "--tie-weights", "--hidden", "32",
                                  "--embedding", "16", "--max-steps", "1"))
    assert "--tie-weights" in line and "--embedding" in line
