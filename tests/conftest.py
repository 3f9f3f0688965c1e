"""Shared fixtures: real data from ../shared, a tiny trained run, and the command line in a subprocess."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """The tinyshakespeare text from ../shared (never copied into the project)."""
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} is not there (the shared corpora sit beside the clone)")
    return SHAKESPEARE


@pytest.fixture(scope="session")
def shakespeare_slice(shakespeare, tmp_path_factory) -> Path:
    """The first 60,000 characters of tinyshakespeare, for quick runs."""
    path = tmp_path_factory.mktemp("corpus") / "shakespeare_slice.txt"
    path.write_text(shakespeare.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def isolated_checkpoints(tmp_path, monkeypatch) -> Path:
    """Every test writes runs under its own temporary checkpoints/ folder."""
    root = tmp_path / "checkpoints"
    monkeypatch.setenv("CHARGEN_CHECKPOINTS", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_run(shakespeare_slice, tmp_path_factory) -> Path:
    """A small LSTM trained for 60 steps on the slice (a few seconds); shared, treat as read-only."""
    from chargen import ModelConfig, TrainConfig, train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(shakespeare_slice, checkpoint=run_dir,
          model=ModelConfig(cell="lstm", hidden=64, layers=2, embedding=32),
          config=TrainConfig(batch_size=16, seq_len=32, max_steps=60, eval_every=30, lr=5e-3, rng_seed=1))
    return run_dir


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """`python cli.py ARGS` in a subprocess, as a user would run it; text output captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=cwd, env=full_env, input=input,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    """The `run_cli` helper as a fixture."""
    return run_cli


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run that a test may modify or damage."""
    dest = tmp_path / "run_copy"
    shutil.copytree(tiny_run, dest)
    return dest
