"""Data-parallel training under torchrun (gloo on the CPU) and the encoded-corpus cache.

The torchrun tests start real process groups: `python -m torch.distributed.run` is the `torchrun`
command, run with this interpreter. They are slow (each launch imports torch in three processes).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chargen import corpus_cache
from chargen.checkpoint import read_state
from chargen.corpus import encode_chunked, read_text
from chargen.corpus_cache import cache_key, corpus_digest, corpus_identity, corpus_name, open_corpus
from chargen.errors import UserError
from chargen.vocab import Vocab

REPO = Path(__file__).resolve().parent.parent
# A small model that still learns visibly in 40 steps; lr_floor 1 makes the schedule independent
# of the budget, so a run resumed with a larger --max-steps follows an uninterrupted one exactly.
# fp32: bf16 rounding depends on how the batch is split, and this compares 1 process with 2.
MODEL = {"cell": "lstm", "hidden": 48, "layers": 2, "embedding": 16}
TRAIN = {"batch_size": 8, "seq_len": 32, "lr": 1e-2, "lr_floor": 1.0, "warmup_steps": 5, "eval_every": 10,
         "rng_seed": 5, "precision": "fp32"}


def options(settings: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


def launch(args: list[str], nproc: int = 2, timeout: float = 300, stop_when=None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=N -m chargen ARGS`, in its own process group.

    stop_when(): polled while it runs; once true, torchrun gets SIGTERM (it forwards it to the ranks).
    On a timeout the whole group is killed, so no rank outlives the test.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "chargen", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        if stop_when is not None:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not stop_when() and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def evals(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["val_loss"] for e in json.loads((run_dir / "config.json").read_text())["evals"]}


# -- torchrun ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_follow_one_process_resume_and_generate(shakespeare_slice, tmp_path, cli):
    """2 ranks x 4 streams = 1 process x 8 streams: same validation losses, same weights, exact resume."""
    import torch

    from chargen import ModelConfig, TrainConfig, load, train
    from chargen.checkpoint import read_weights

    single = tmp_path / "single"
    train(shakespeare_slice, checkpoint=single, model=ModelConfig(**MODEL), config=TrainConfig(**TRAIN, max_steps=20))
    single_20 = read_weights(single)
    train(shakespeare_slice, checkpoint=single, resume=True, overrides={"max_steps": 40})

    ddp = tmp_path / "ddp"
    first = launch(["train", str(shakespeare_slice), "--checkpoint", str(ddp), *options(MODEL),
                    *options(TRAIN), "--max-steps=20"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count("done: 20 steps") == 1  # only rank 0 reports
    assert "x 2 processes" in first.stderr
    assert evals(ddp) == pytest.approx({10: evals(single)[10], 20: evals(single)[20]}, abs=2e-4)
    saved = json.loads((ddp / "config.json").read_text())
    assert saved["train"]["batch_size"] == 8  # the global batch: 4 streams on each of 2 ranks
    ddp_20 = read_weights(ddp)
    for name, tensor in single_20.items():
        torch.testing.assert_close(ddp_20[name], tensor, atol=1e-4, rtol=1e-4)
    assert len(list(ddp.glob("corpus-*.npy"))) == 1  # rank 0 wrote the corpus once; both ranks mapped it

    # The 2-rank run directory is an ordinary run: it loads and generates.
    model, vocab, config = load(ddp)
    assert config["model"]["hidden"] == MODEL["hidden"]
    sample = cli("generate", "--checkpoint", str(ddp), "--seed", "ROMEO:", "--length", "40", "--rng-seed", "1",
                 "--no-seed")
    assert sample.returncode == 0, sample.stderr
    assert len(sample.stdout) == 41 and set(sample.stdout[:-1]) <= set(vocab.chars)

    # --resume with the same world size continues exactly where the uninterrupted run went.
    second = launch(["train", str(shakespeare_slice), "--checkpoint", str(ddp), "--resume", "--max-steps=40"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "using the encoded corpus cached" in second.stderr
    assert evals(ddp) == pytest.approx(evals(single), abs=2e-4)
    assert read_state(ddp)["world"] == 2


@pytest.mark.slow
def test_sigterm_saves_once_and_resumes_on_another_world_size(shakespeare_slice, tmp_path, cli):
    """torchrun forwards SIGTERM: all ranks stop at the same step, rank 0 saves once, the run resumes."""
    run = tmp_path / "sig"
    result = launch(["train", str(shakespeare_slice), "--checkpoint", str(run), *options(MODEL), *options(TRAIN),
                     "--max-steps=1000000", "--eval-every=5"],
                    stop_when=lambda: (run / "config.json").exists())
    messages = re.findall(r"interrupted at step (\d+); the run is saved", result.stderr)
    assert len(messages) == 1, result.stderr[-3000:]
    step = int(messages[0])
    state = read_state(run)
    assert state["step"] == step >= 5 and state["world"] == 2
    assert len(state["rng"]) == 2  # each rank's dropout stream
    assert state["hidden"][0].shape[1] == TRAIN["batch_size"]  # both ranks' streams, gathered

    resumed = cli("train", str(shakespeare_slice), "--checkpoint", str(run), "--resume",
                  f"--max-steps={step + 3}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "saved with 2" in resumed.stderr and "data position and hidden state carry over" in resumed.stderr
    assert read_state(run)["step"] == step + 3


def test_the_readme_launch_lines_reach_chargen_intact():
    """torchrun parses its own options first and accepts abbreviations of them: a chargen option that
    abbreviates one of torchrun's (--run -> --run-path) stops the launch. The README's lines must pass
    torchrun's parser with every chargen argument left for chargen, and chargen's parser must take them."""
    import shlex

    from chargen import cli
    from torch.distributed.run import get_args_parser

    lines = [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("torchrun ")]
    assert len(lines) >= 2
    for line in lines:
        launch = get_args_parser().parse_args(shlex.split(line)[1:])
        assert launch.module and launch.training_script == "chargen"
        args = cli.build_parser().parse_args(launch.training_script_args)
        assert args.command == "train" and args.checkpoint == "checkpoints/big"
    with pytest.raises(SystemExit):  # why the README does not use --run there
        get_args_parser().parse_args(["--standalone", "-m", "chargen", "train", "big.txt", "--run", "big"])


# -- the encoded-corpus cache --------------------------------------------------------------------
def test_digest_and_name_agree_with_read_text(shakespeare_slice, tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("first book, no newline at the end", encoding="utf-8")
    (folder / "b.txt").write_text("second book\n", encoding="utf-8")
    for source in (shakespeare_slice, folder):
        text = read_text(source)
        assert corpus_digest(source) == text.sha256
        assert corpus_name(source) == text.name


def test_first_run_encodes_once_later_runs_map_the_cache(shakespeare_slice, tmp_path, monkeypatch):
    run = tmp_path / "a"
    first = open_corpus(shakespeare_slice, run)
    text = read_text(shakespeare_slice)
    assert not first.cached
    assert isinstance(first.ids, np.memmap) and first.ids.dtype == np.uint8  # 1 byte a character
    assert np.array_equal(first.ids, encode_chunked(first.vocab, text.text))
    assert first.vocab.chars == sorted(set(text.text))
    assert (first.name, first.sha256) == (text.name, text.sha256)

    def no_reading(*args, **kwargs):
        raise AssertionError("the text was read although the cache is valid")

    monkeypatch.setattr(corpus_cache, "read_text", no_reading)
    again = open_corpus(shakespeare_slice, run)
    assert again.cached and again.path == first.path
    assert np.array_equal(again.ids, first.ids) and again.vocab.chars == first.vocab.chars

    # Another run in the same checkpoints folder links the entry: no copy, no encoding.
    other = open_corpus(shakespeare_slice, tmp_path / "b")
    assert other.cached
    assert other.path.stat().st_ino == first.path.stat().st_ino
    assert np.array_equal(other.ids, first.ids)


def test_another_corpus_or_reading_option_gets_its_own_entry(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("Cafe\u0301 au lait.\n" * 50, encoding="utf-8")  # decomposed accent: NFC changes it
    run = tmp_path / "run"
    nfc = open_corpus(source, run)
    raw = open_corpus(source, run, normalize=False)
    assert not raw.cached and raw.path != nfc.path
    assert "\u0301" in raw.vocab.chars and "\u0301" not in nfc.vocab.chars
    assert len(raw.ids) == len(nfc.ids) + 50

    source.write_text("Something else entirely.\n" * 50, encoding="utf-8")
    changed = open_corpus(source, run)
    assert not changed.cached and changed.sha256 != nfc.sha256
    assert changed.path.name == f"corpus-{cache_key(corpus_identity(changed.sha256, 'utf-8', True, False))}.npy"


def test_resume_refuses_another_corpus(shakespeare_slice, tmp_path):
    with pytest.raises(UserError, match="not the corpus this run was trained on"):
        open_corpus(shakespeare_slice, tmp_path / "run", trained_on={"name": "other", "sha256": "0" * 64})


def test_damaged_or_foreign_entries_are_rebuilt(shakespeare_slice, tmp_path):
    run = tmp_path / "run"
    good = open_corpus(shakespeare_slice, run)
    expected = np.array(good.ids)
    del good
    path = next(run.glob("corpus-*.npy"))
    path.write_bytes(path.read_bytes()[:1000])  # truncated by a full disk, say
    rebuilt = open_corpus(shakespeare_slice, run)
    assert not rebuilt.cached and np.array_equal(rebuilt.ids, expected)

    path.with_suffix(".json").write_text("{not json", encoding="utf-8")
    assert not open_corpus(shakespeare_slice, run).cached

    # A run whose vocabulary differs from the entry's (one more character) gets ids in its own vocabulary.
    text = read_text(shakespeare_slice).text
    vocab = Vocab(sorted(set(text) | {"\u00e9"}))
    own = open_corpus(shakespeare_slice, run, vocab=vocab)
    assert not own.cached and own.vocab.chars == vocab.chars
    assert np.array_equal(own.ids, vocab.encode(text))


def test_large_alphabets_use_two_bytes(tmp_path):
    source = tmp_path / "wide.txt"
    source.write_text("".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)) * 3, encoding="utf-8")
    corpus = open_corpus(source, tmp_path / "run")
    assert corpus.ids.dtype == np.uint16
    assert corpus.vocab.decode(corpus.ids) == source.read_text(encoding="utf-8")


def test_resume_starts_from_the_cache_without_reading_the_text(shakespeare_slice, tmp_path, monkeypatch):
    from chargen import ModelConfig, TrainConfig, train

    run = tmp_path / "run"
    train(shakespeare_slice, checkpoint=run, model=ModelConfig(hidden=16, layers=1, embedding=8),
          config=TrainConfig(batch_size=4, seq_len=16, max_steps=3, eval_every=3))
    monkeypatch.setattr(corpus_cache, "read_text", lambda *a, **k: pytest.fail("the corpus text was read again"))
    result = train(shakespeare_slice, checkpoint=run, resume=True, overrides={"max_steps": 5})
    assert result.step == 5
    assert json.loads((run / "config.json").read_text())["corpus"]["sha256"] == read_text(shakespeare_slice).sha256


def test_only_rank_zero_speaks(monkeypatch, capsys):
    from chargen.log import info

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    info("from rank 1")
    monkeypatch.setenv("RANK", "0")
    info("from rank 0")
    assert capsys.readouterr().err == "from rank 0\n"
