"""Faults: nothing that was saved is ever lost.

A kill in the middle of a save, Ctrl-C / SIGTERM, an exact resume, non-finite steps, a full disk
and CUDA running out of memory — each with the run on disk checked afterwards.
"""
from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from chargen import api, cli, loop
from chargen.checkpoint import STATE, TMP_MARK, read_state, read_weights
from chargen.config import ModelConfig, TrainConfig
from chargen.model import build_model
from chargen.textlm import TextTask
from chargen.vocab import Vocab
from conftest import REPO


def chargen(capsys, *argv) -> tuple[int, str, str]:
    """`chargen ARGV` in-process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- a kill in the middle of a save ---------------------------------------------------------------
# The child writes the run's file again and again with ~100 MB of extra tensor data (so each save
# takes a while), through the same atomic writers the training loop uses.
WRITER = """
import sys, torch
from chargen.checkpoint import read_state, read_weights, write_state, write_weights
run, which = sys.argv[1], sys.argv[2]
state, weights = read_state(run), read_weights(run)
for k in range(1, 1000):
    ballast = torch.full((25_000_000,), float(k))
    if which == "trainer_state.pt":
        write_state(run, {**state, "step": 1000 + k, "ballast": ballast})
    else:
        write_weights(run, {**weights, "ballast": ballast})
"""


@pytest.mark.parametrize("which", ["trainer_state.pt", "model.safetensors"])
def test_sigkill_while_saving_leaves_the_previous_checkpoint(which, run_copy, shakespeare_slice):
    before_state, before_weights = read_state(run_copy), read_weights(run_copy)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(run_copy), which], cwd=REPO)
        deadline = time.monotonic() + 120
        while not list(run_copy.glob(f".{which}{TMP_MARK}*")) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
        if list(run_copy.glob(f".{which}{TMP_MARK}*")):
            break  # killed with a temporary half written
    else:
        pytest.fail("never caught the writer in the middle of a save")

    # Both files still load, each a version that was written whole: the original or one of the child's.
    state, weights = read_state(run_copy), read_weights(run_copy)
    for saved in (state, weights):
        ballast = saved.pop("ballast", None)
        assert ballast is None or (ballast[0] >= 1 and bool((ballast == ballast[0]).all()))
        if saved is state:
            assert state["step"] == (before_state["step"] if ballast is None else 1000 + int(ballast[0]))
    assert same_tensors(state["model"], before_state["model"])
    assert same_tensors(weights, before_weights)

    # The next training in the run removes the leftover and carries on.
    api.train(shakespeare_slice, checkpoint=run_copy, resume=True, overrides={"max_steps": state["step"] + 1})
    assert not list(run_copy.glob(f".*{TMP_MARK}*"))
    assert read_state(run_copy)["step"] == state["step"] + 1


# -- signals to a real training process -----------------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_and_says_how_to_resume(sig, code, shakespeare_slice, tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), "train", str(shakespeare_slice), "--checkpoint", str(run),
         "--hidden", "16", "--layers", "1", "--embedding", "8", "--batch-size", "4", "--seq-len", "16",
         "--max-steps", "1000000", "--eval-every", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # config.json appears at the first evaluation: the loop is running
    child.send_signal(sig)
    out, err = child.communicate(timeout=120)
    assert child.returncode == code, err
    assert out == ""
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(rf"chargen: interrupted at step (\d+); the run is saved in {re.escape(str(run))}\. "
                         rf"Resume with: chargen train --resume --checkpoint {re.escape(str(run))}", last)
    assert found, last
    step = int(found.group(1))
    assert step >= 3 and read_state(run)["step"] == step  # the step in the message is the step saved
    result = api.train(shakespeare_slice, checkpoint=run, resume=True, overrides={"max_steps": step + 2})
    assert result.step == step + 2


# -- exact resume ---------------------------------------------------------------------------------
# Dropout (the RNG), two layers, an epoch boundary on each side of the stop (16 steps an epoch:
# the data phase and the hidden-state reset), AdamW moments and a cosine schedule to step 40.
RESUME_MODEL = dict(cell="lstm", hidden=16, layers=2, embedding=8, dropout=0.3)
RESUME_TRAIN = dict(batch_size=8, seq_len=16, max_steps=40, lr=3e-3, warmup_steps=5, rng_seed=11)


@pytest.fixture(scope="module")
def resume_runs(shakespeare, tmp_path_factory):
    """Runs of the same training: 40 steps in one go, and stopped at step 20 (not yet resumed)."""
    root = tmp_path_factory.mktemp("resume")
    corpus = root / "corpus.txt"
    corpus.write_text(shakespeare.read_text(encoding="utf-8")[:2400], encoding="utf-8")
    whole, stopped = root / "whole", root / "stopped"
    api.train(corpus, checkpoint=whole, model=ModelConfig(**RESUME_MODEL), config=TrainConfig(**RESUME_TRAIN))
    with pytest.raises(loop.TrainingStopped):
        api.train(corpus, checkpoint=stopped, model=ModelConfig(**RESUME_MODEL), config=TrainConfig(**RESUME_TRAIN),
                  should_stop=lambda step: step == 20)
    return corpus, read_state(whole), stopped


def resumed_state(resume_runs, tmp_path, change=None) -> dict:
    """Resume a copy of the stopped run to step 40, after `change(state)` edits its trainer_state.pt."""
    corpus, _, stopped = resume_runs
    run = tmp_path / "resumed"
    shutil.copytree(stopped, run)
    if change is not None:
        state = torch.load(run / STATE, weights_only=True)
        change(state)
        torch.save(state, run / STATE)
    api.train(corpus, checkpoint=run, resume=True)
    return read_state(run)


def test_resume_is_bit_identical_to_one_go(resume_runs, tmp_path):
    corpus, whole, stopped = resume_runs
    assert read_state(stopped)["step"] == 20 and whole["step"] == 40
    assert whole["model"]["embed.weight"].shape[0] > 30  # a real vocabulary, trained
    resumed = resumed_state(resume_runs, tmp_path)
    assert resumed["step"] == 40
    assert same_tensors(resumed["model"], whole["model"])
    moments = lambda s: {f"{i}.{k}": v for i, st in s["optimizer"]["state"].items() for k, v in st.items()}
    assert same_tensors(moments(resumed), moments(whole))
    assert [torch.equal(a, b) for a, b in zip(resumed["hidden"], whole["hidden"])] == [True, True]


def test_muon_resumes_exactly_with_both_optimisers(shakespeare, tmp_path):
    """--optimizer muon: Muon's momentum and AdamW's moments both come back; the resumed run is the same."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare.read_text(encoding="utf-8")[:2400], encoding="utf-8")
    model = {**RESUME_MODEL, "cell": "gru"}
    train = {**RESUME_TRAIN, "optimizer": "muon"}
    api.train(corpus, checkpoint=tmp_path / "whole", model=ModelConfig(**model), config=TrainConfig(**train))
    with pytest.raises(loop.TrainingStopped):
        api.train(corpus, checkpoint=tmp_path / "stopped", model=ModelConfig(**model), config=TrainConfig(**train),
                  should_stop=lambda step: step == 20)
    api.train(corpus, checkpoint=tmp_path / "stopped", resume=True)
    whole, resumed = read_state(tmp_path / "whole"), read_state(tmp_path / "stopped")
    muon, adamw = whole["optimizer"]["optimizers"]
    assert {"momentum_buffer"} <= set(next(iter(muon["state"].values())))
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(adamw["state"].values())))
    assert resumed["step"] == 40 and same_tensors(resumed["model"], whole["model"])


def _no_hidden(state):
    state["hidden"] = []


def _other_rng(state):
    state["rng"] = [torch.Generator().manual_seed(0).get_state()]


def _fresh_optimizer(state):
    state["optimizer"]["state"] = {}


@pytest.mark.parametrize("change", [_no_hidden, _other_rng, _fresh_optimizer], ids=["hidden", "rng", "optimizer"])
def test_the_comparison_catches_a_missing_piece(change, resume_runs, tmp_path):
    """Without one piece of the saved state the resumed parameters differ: the test above would see it."""
    _, whole, _ = resume_runs
    resumed = resumed_state(resume_runs, tmp_path, change)
    assert resumed["step"] == 40
    assert not same_tensors(resumed["model"], whole["model"])


# -- non-finite steps -----------------------------------------------------------------------------
def direct_training(shakespeare, tmp_path, monkeypatch, bad_steps, **train):
    """Train a tiny model with the loop itself; the loss is NaN at `bad_steps`.

    Returns (result or the TrainingStopped raised, parameters at the start of each step, run dir).
    """
    text = shakespeare.read_text(encoding="utf-8")[:6000]
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    task = TextTask(ids[:5400], ids[5400:], vocab, 4, 16, 0, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, layers=1, embedding=8, vocab_size=len(vocab)))
    calls = []
    real_loss = TextTask.loss

    def loss(output, target):  # called once per training step (evaluation has its own)
        calls.append(None)
        value = real_loss(output, target)
        return value * math.nan if len(calls) - 1 in bad_steps else value

    monkeypatch.setattr(TextTask, "loss", staticmethod(loss))
    params = {}

    def record(step: int) -> bool:
        params[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False

    config = TrainConfig(lr=1e-2, warmup_steps=0, **train)
    try:
        outcome = loop.train_loop(model, task, config, tmp_path / "run", {"corpus": {"name": "test"}},
                                  should_stop=record)
    except loop.TrainingStopped as stopped:
        outcome = stopped
    return outcome, params, tmp_path / "run", config


def test_non_finite_steps_are_skipped_counted_and_lower_the_rate(shakespeare, tmp_path, monkeypatch, capsys):
    result, params, run, config = direct_training(shakespeare, tmp_path, monkeypatch, {3, 7}, max_steps=12)
    assert result.status == "finished" and result.step == 12
    assert same_tensors(params[4], params[3]) and same_tensors(params[8], params[7])  # no update
    assert not same_tensors(params[3], params[2]) and not same_tensors(params[5], params[4])  # others update
    state = read_state(run)
    assert state["bad_total"] == 2 and state["lr_scale"] == 0.25
    # The learning rate of the last step is the schedule's, halved once per bad step.
    lr = state["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(config.lr * 0.25 * loop.lr_factor(11, 11 / 12, config))
    assert all(t.isfinite().all() for t in state["model"].values())
    assert json.loads((run / "config.json").read_text())["metrics"]["skipped_steps"] == 2
    err = capsys.readouterr().err
    assert "step 3: non-finite loss (loss nan, norm nan); step skipped, learning rate halved (1 skipped so far)" in err
    assert "step 7: non-finite loss" in err and "(2 skipped so far)" in err


def test_many_non_finite_steps_in_a_row_stop_with_the_good_checkpoint(shakespeare, tmp_path, monkeypatch):
    stopped, params, run, _ = direct_training(shakespeare, tmp_path, monkeypatch, set(range(6, 100)),
                                              max_steps=50, eval_every=4, max_bad_steps=5)
    assert isinstance(stopped, loop.TrainingStopped) and stopped.result.status == "diverged"
    assert str(stopped) == (f"training diverged: 5 non-finite steps in a row, the last at step 10; the last good "
                            f"checkpoint is kept in {run}. Lower --lr (or --clip) and --resume")
    state = read_state(run)
    assert state["step"] == 8  # the last save, during the bad run, still holds good weights
    assert same_tensors(state["model"], params[8]) and same_tensors(params[8], params[6])
    assert all(t.isfinite().all() for t in state["model"].values())


def test_weights_that_overflow_are_never_saved(shakespeare_slice, tmp_path, capsys):
    """A huge learning rate ruins the weights with finite gradients; the run keeps its last finite save."""
    run = tmp_path / "run"
    code, _, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", run, "--hidden", "8", "--layers", "1",
                           "--embedding", "8", "--batch-size", "8", "--seq-len", "16", "--lr", "1e30",
                           "--warmup-steps", "0", "--eval-every", "1", "--max-steps", "40")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"chargen: training diverged: 5 non-finite steps in a row, the last at step \d+; the last "
                        rf"good checkpoint is kept in {re.escape(str(run))}\. Lower --lr \(or --clip\) and --resume",
                        last)
    assert "the weights are no longer finite; not saving them" in err
    assert "(no sample: the model's outputs are not finite)" in err and "RuntimeWarning" not in err
    state = read_state(run)
    assert all(t.isfinite().all() for t in state["model"].values())


# -- disk full, unwritable folder -----------------------------------------------------------------
WRITE_FAULT_WORDS = {errno.ENOSPC: "the disk is full (free some space)",
                     errno.EDQUOT: "the disk quota is exceeded (free some space)",
                     errno.EROFS: "the file system is read-only (write to another folder)",
                     errno.EACCES: "permission denied (make the folder writable or write to another folder)"}


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_failed_save_is_one_line_and_keeps_the_previous_checkpoint(error, run_copy, shakespeare_slice,
                                                                   monkeypatch, capsys):
    corpus_before = shakespeare_slice.read_bytes()
    before = file_bytes(run_copy)

    def fsync(fd):  # where a full disk or a refused write shows up: flushing the new file
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "fsync", fsync)
    code, out, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", run_copy, "--resume",
                             "--max-steps", "62")
    monkeypatch.undo()
    assert (code, out) == (1, "")
    assert err.strip().splitlines()[-1] == (
        f"chargen: error: cannot write {run_copy / STATE}: {WRITE_FAULT_WORDS[error]}; the last good checkpoint "
        "is kept: continue with --resume once it can be written")
    assert file_bytes(run_copy) == before  # nothing replaced, no temporary left behind
    assert shakespeare_slice.read_bytes() == corpus_before
    api.load(str(run_copy))
    assert read_state(run_copy)["step"] == 60


def test_save_failing_after_the_first_file_still_leaves_a_loadable_run(run_copy, shakespeare_slice, monkeypatch,
                                                                        capsys):
    """trainer_state.pt replaced, then the disk fills: a mix of new and old files, each whole, still works."""
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 2:  # the trainer state and its folder went through; model.safetensors does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", run_copy, "--resume", "--max-steps",
                           "62")
    monkeypatch.undo()
    assert code == 1 and "the disk is full" in err
    assert read_state(run_copy)["step"] == 62
    assert not list(run_copy.glob(f".*{TMP_MARK}*"))
    api.load(str(run_copy))
    result = api.train(shakespeare_slice, checkpoint=run_copy, resume=True, overrides={"max_steps": 63})
    assert result.step == 63


# -- CUDA out of memory ---------------------------------------------------------------------------
def test_out_of_memory_names_the_sizes_to_lower(shakespeare_slice, tmp_path, monkeypatch, capsys):
    real_loss, calls = TextTask.loss, []

    def loss(output, target):
        calls.append(None)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)")
        return real_loss(output, target)

    monkeypatch.setattr(TextTask, "loss", staticmethod(loss))
    code, out, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", tmp_path / "run", "--hidden", "8",
                             "--layers", "1", "--embedding", "8", "--batch-size", "16", "--seq-len", "32",
                             "--max-steps", "10")
    assert (code, out) == (1, "")
    # Step 2 came after the first evaluation (a fifth of the budget), which saved the run.
    assert err.strip().splitlines()[-1] == (
        "chargen: error: out of memory on cpu at step 2 with --batch-size 16 x --seq-len 32; lower --batch-size "
        f"(e.g. 8) or --seq-len, or train a smaller model (--hidden, --layers) (the last checkpoint in "
        f"{tmp_path / 'run'} is kept)")
    assert read_state(tmp_path / "run")["step"] == 2


# -- a full disk, a read-only or unwritable folder, on every path chargen writes -----------------------
class FailingFile(io.FileIO):
    """A file that takes `room` bytes, then fails every write with `error` (ENOSPC: the disk is full)."""

    def __init__(self, path, mode, room: int, error: int):
        super().__init__(path, mode.replace("b", ""))
        self.room, self.error = room, error

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(self.error, os.strerror(self.error))
        return super().write(data)


@pytest.fixture
def full_disk(monkeypatch):
    """fail(error, room=0, only=None): every atomic write (to a file named `only`, if given) fails after
    `room` bytes with that errno; no root or small file system needed."""
    from chargen import checkpoint

    def fail(error: int = errno.ENOSPC, room: int = 0, only: str | None = None) -> None:
        def fake_open(path, mode="r", *args, **kwargs):
            if "w" in mode and (only is None or only in Path(path).name):
                return FailingFile(path, mode, room, error)
            return open(path, mode, *args, **kwargs)

        monkeypatch.setattr(checkpoint, "open", fake_open, raising=False)

    return fail


@pytest.mark.parametrize("error", list(WRITE_FAULT_WORDS))
def test_disk_full_inside_torch_save_is_one_line_and_keeps_the_last_good_checkpoint(error, run_copy,
                                                                                    shakespeare_slice, full_disk,
                                                                                    capsys):
    """torch.save reports a failed write as a RuntimeError ("unexpected pos"); the user sees the errno's meaning."""
    before = file_bytes(run_copy)
    full_disk(error, room=4096, only=STATE)  # the trainer state fills the disk part-way through
    code, out, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", run_copy, "--resume",
                             "--max-steps", "62")
    assert (code, out) == (1, "")
    assert "Traceback" not in err and "unexpected pos" not in err
    assert err.strip().splitlines()[-1] == (
        f"chargen: error: cannot write {run_copy / STATE}: {WRITE_FAULT_WORDS[error]}; the last good checkpoint "
        "is kept: continue with --resume once it can be written")
    assert file_bytes(run_copy) == before  # nothing replaced, no temporary left behind
    assert read_state(run_copy)["step"] == 60


def test_a_new_run_on_a_full_disk_says_nothing_was_saved(shakespeare_slice, tmp_path, full_disk, capsys):
    full_disk(errno.ENOSPC, only=STATE)
    code, _, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", tmp_path / "run", "--hidden", "8",
                           "--layers", "1", "--embedding", "8", "--max-steps", "2")
    assert code == 1
    assert err.strip().splitlines()[-1].endswith(": the disk is full (free some space); nothing of this run was saved")
    assert not list((tmp_path / "run").glob(f".*{TMP_MARK}*"))


@pytest.mark.parametrize("what", ["corpus cache", "tokenizer"])
def test_disk_full_while_starting_a_run(what, shakespeare_slice, tmp_path, full_disk, capsys):
    full_disk(errno.ENOSPC, room=1000, only="corpus-" if what == "corpus cache" else "tokenizer.json")
    code, out, err = chargen(capsys, "train", shakespeare_slice, "--checkpoint", tmp_path / "run", "--max-steps", "2")
    assert (code, out) == (1, "") and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"chargen: error: cannot write {tmp_path / 'run'}/") and "the disk is full" in line
    assert not list((tmp_path / "run").glob(f".*{TMP_MARK}*"))


def test_disk_full_for_the_products_plot_page_and_saved_story(tiny_run, shakespeare_slice, tmp_path, full_disk,
                                                             capsys):
    from chargen.series import train_series
    from chargen.series_data import SeriesConfig

    series = tmp_path / "sine"
    train_series(synthetic="sine", length=200, checkpoint=series, settings=SeriesConfig(window=10),
                 model=ModelConfig(hidden=8, layers=1, embedding=4), config=TrainConfig(max_steps=2))
    full_disk(errno.ENOSPC)
    for argv, target in [(["series", "forecast", "--checkpoint", series, "--steps", "5", "--plot", tmp_path / "f.png"],
                          tmp_path / "f.png"),
                         (["series", "eval", "--checkpoint", series, "--plot", tmp_path / "e.png"], tmp_path / "e.png"),
                         (["inspect", "--checkpoint", tiny_run, shakespeare_slice, "--max-chars", "200", "--html",
                           tmp_path / "p.html"], tmp_path / "p.html")]:
        code, _, err = chargen(capsys, *argv)
        assert code == 1 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == (f"chargen: error: cannot write {target}: the disk is full "
                                                "(free some space)")
        assert not target.exists() and not list(tmp_path.glob(f".*{TMP_MARK}*"))


def test_saving_the_story_to_a_full_disk_keeps_the_session(tiny_run, tmp_path, full_disk):
    from chargen.interactive import CommandError, Session, SessionSettings
    from chargen.sample import SamplingSettings, load_sampler

    full_disk(errno.ENOSPC, only="full.txt")
    full, elsewhere = tmp_path / "full.txt", tmp_path / "elsewhere.txt"
    sampler, _ = load_sampler(tiny_run)
    session = Session(sampler, SessionSettings(SamplingSettings(), 20), 1, io.StringIO(), io.StringIO())
    session.handle("ROMEO:")
    with pytest.raises(CommandError, match=f"cannot write {re.escape(str(full))}: the disk is full .*the story is "
                                           "still here"):
        session.handle(f"/save {full}")
    assert not full.exists() and not list(tmp_path.glob(f".*{TMP_MARK}*"))
    session.handle("JULIET:")  # the session goes on
    session.handle(f"/save {elsewhere}")
    assert elsewhere.read_text(encoding="utf-8") == session.story  # nothing of the story was lost
    assert session.story.startswith("ROMEO:") and "JULIET:" in session.story


@pytest.mark.parametrize("argv", [["generate", "--length", "2000"], ["series", "forecast", "--steps", "5"]])
def test_standard_output_to_a_full_disk(argv, tiny_run, tmp_path, cli):
    """`chargen generate > file` on a full disk: /dev/full fails every write with ENOSPC."""
    if argv[0] == "series":
        cli("series", "train", "--synthetic", "sine", "--length", "200", "--checkpoint", str(tmp_path / "s"),
            "--window", "10", "--hidden", "8", "--layers", "1", "--max-steps", "2")
    run = str(tmp_path / "s") if argv[0] == "series" else str(tiny_run)
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, str(REPO / "cli.py"), *argv, "--checkpoint", run], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "chargen: error: cannot write the standard output: the disk is full (free some space)")


# -- one training process per run directory ---------------------------------------------------------
LOCK_HOLDER = ("import sys, time\nfrom chargen.run_lock import RunLock\nRunLock(sys.argv[1]).acquire()\n"
               "print('locked', flush=True)\ntime.sleep(300)\n")


@pytest.fixture
def hold_lock():
    """hold(run_dir) -> a process that holds the run's training lock until it is killed."""
    holders = []

    def hold(run_dir: Path) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run_dir)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline().strip() == "locked"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def locked_message(run: Path, holder: subprocess.Popen) -> str:
    import socket

    return (f"chargen: error: run {run} is being trained by another process (pid {holder.pid} on "
            f"{socket.gethostname()}); wait for it to finish or stop it, or train into another --run")


@pytest.mark.slow
def test_a_second_training_into_a_run_being_trained_is_refused_and_readers_keep_working(shakespeare_slice,
                                                                                        tmp_path, cli):
    run = tmp_path / "run"
    trainer = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "train", str(shakespeare_slice),
                                "--checkpoint", str(run), "--hidden", "16", "--layers", "1", "--embedding", "8",
                                "--batch-size", "8", "--seq-len", "16", "--eval-every", "5", "--max-time", "300",
                                "--sizing", "fixed"],  # the whole 300 s (sizing would stop it after 10 passes)
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "config.json").exists() and trainer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert trainer.poll() is None, trainer.communicate()[1]
        for again in ([], ["--resume"]):
            second = cli("train", str(shakespeare_slice), "--checkpoint", str(run), *again)
            assert (second.returncode, second.stdout) == (1, ""), second.stderr
            assert second.stderr.strip().splitlines() == [locked_message(run, trainer)]
        # Reading commands go on while it trains: every file is replaced whole.
        for argv in (["generate", "--length", "50", "--rng-seed", "1"], ["eval", str(shakespeare_slice)],
                     ["inspect", str(shakespeare_slice), "--max-chars", "300"]):
            reader = cli(*argv, "--checkpoint", str(run))
            assert reader.returncode == 0 and reader.stdout, reader.stderr
        scripted = cli("interactive", "--checkpoint", str(run), "--length", "20", input="ROMEO:\n")
        assert scripted.returncode == 0 and scripted.stdout, scripted.stderr
        assert trainer.poll() is None  # the readers did not disturb it
    finally:
        trainer.send_signal(signal.SIGTERM)
        _, err = trainer.communicate(timeout=120)
    assert trainer.returncode == 143, err
    step = read_state(run)["step"]
    resumed = cli("train", "--checkpoint", str(run), "--resume", "--max-steps", str(step + 2), str(shakespeare_slice))
    assert resumed.returncode == 0, resumed.stderr  # the lock went with the process
    assert read_state(run)["step"] == step + 2


def test_the_lock_goes_with_its_process_even_when_killed(tmp_path, hold_lock, capsys):
    from chargen.series import train_series
    from chargen.series_data import SeriesConfig

    run = tmp_path / "sine"
    train_series(synthetic="sine", length=200, checkpoint=run, settings=SeriesConfig(window=10),
                 model=ModelConfig(hidden=8, layers=1, embedding=4), config=TrainConfig(max_steps=2))
    holder = hold_lock(run)
    capsys.readouterr()
    code, out, err = chargen(capsys, "series", "train", "--checkpoint", run, "--resume", "--max-steps", "4")
    assert (code, out) == (1, "") and err.strip().splitlines() == [locked_message(run, holder)]
    code, out, _ = chargen(capsys, "series", "forecast", "--checkpoint", run, "--steps", "3")
    assert code == 0 and out.startswith("step,value,")  # reading is never locked
    holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
    holder.wait()
    code, _, err = chargen(capsys, "series", "train", "--checkpoint", run, "--resume", "--max-steps", "4")
    assert code == 0, err
    assert read_state(run)["step"] == 4


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    code, _, err = chargen(capsys, "train", empty, "--checkpoint", tmp_path / "run")
    assert code == 1 and "is empty" in err
    assert not (tmp_path / "run").exists()
