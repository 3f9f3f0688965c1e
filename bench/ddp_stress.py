"""Stress the data-parallel exit path: launch a 2-rank CPU training and its resume N times, count failures.

A run that trains and saves correctly must also exit 0 on every rank, every time: a scheduler retries a
job whose launcher exits 1. This launches `torchrun --standalone --nproc_per_node=2 -m chargen train` (gloo)
and then the same run with `--resume`, N times, and prints how many launches failed and how (exit status,
the last lines of stderr). Not part of the test suite (50 iterations take ~15 minutes on 2 cores).

    python bench/ddp_stress.py --iterations 50 --corpus ../shared/corpora/tinyshakespeare.txt
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = ["--cell=lstm", "--layers=2", "--embedding=16"]
TRAIN = ["--batch-size=8", "--seq-len=32", "--lr=1e-2", "--warmup-steps=5", "--eval-every=10", "--precision=fp32"]


def launch(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "chargen", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt")
    parser.add_argument("--chars", type=int, default=60_000, help="characters of the corpus to train on")
    parser.add_argument("--hidden", type=int, default=48,
                        help="units per layer: a larger model makes rank 0's last save (after the last collective) "
                             "longer, so the other rank reaches the exit sooner before it")
    parser.add_argument("--log", type=Path, help="append the whole stderr of every failed launch to this file")
    args = parser.parse_args()

    failures: collections.Counter[str] = collections.Counter()
    launches = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "slice.txt"
        corpus.write_text(args.corpus.read_text(encoding="utf-8")[:args.chars], encoding="utf-8")
        for i in range(args.iterations):
            run = Path(tmp) / f"run{i}"
            for extra in (["--max-steps=20", f"--hidden={args.hidden}", *MODEL, *TRAIN], ["--resume",
                                                                                          "--max-steps=40"]):
                result = launch(["train", str(corpus), "--checkpoint", str(run), *extra])
                launches += 1
                if result.returncode != 0:
                    tail = " | ".join(result.stderr.strip().splitlines()[-4:])
                    failures[f"exit {result.returncode}"] += 1
                    if args.log:
                        with args.log.open("a", encoding="utf-8") as log:
                            log.write(f"=== iteration {i} {extra[0]}: exit {result.returncode}\n{result.stderr}\n")
                    print(f"iteration {i} ({'resume' if '--resume' in extra else 'train'}): exit "
                          f"{result.returncode}: {tail[-600:]}", flush=True)
            print(f"{i + 1}/{args.iterations} iterations, {sum(failures.values())} failed launches "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"{sum(failures.values())} of {launches} launches failed"
          + (f": {dict(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
