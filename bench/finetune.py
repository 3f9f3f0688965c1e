"""Fine-tuning vs training from scratch on small texts (issue #18).

    python bench/finetune.py prepare                      # the texts, from Debian's fortune packages (below)
    python bench/finetune.py bases --minutes 20           # a base run per language, both at once (~20 min)
    python bench/finetune.py compare --langs en --budgets 0.5,2,5     # ~12 min a language
    python bench/finetune.py compare --arms "finetune --epochs 2 --lr 1e-3;finetune --epochs 4 --lr 5e-4" --budgets 5

Texts (apt-get install fortunes fortunes-ru; written into bench/results/finetune/, never committed):
  en: small = the fortune files `humorists` + `literature` (English quotations, 96k characters); base =
      every other English fortune file (2.4M characters), less any fortune that also appears in the small text.
  ru: small = the Russian fortune file `knowledge` (87k characters, Cyrillic); base = every other Russian
      fortune file (1.9M characters), less any fortune that also appears in the small text.
  A base is a larger text of the same language and kind as its small text, as the issue asks; each is
  trained with chargen's defaults (automatic sizing) for --minutes.
The bases are cached in bench/results/finetune/base-<lang>; delete one to train it again.

Each cell of `compare` is one complete `cli.py train` run of the small text with a `--max-time` budget,
from scratch (the defaults) and with `--from-run` the language's base, alternating; its figures are the
run's best validation loss (last 10% of the small text) and the copied share (chargen.copying) of 2,000
characters it generates (temperature 0.8, fixed seed) against the small text. Every run uses one
intra-op thread (OMP_NUM_THREADS=1, see train_run). Prints a table, writes bench/results/finetune-<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FORTUNES = Path("/usr/share/games/fortunes")
WORK = BENCH / "results" / "finetune"


def fortunes_of(path: Path) -> list[str]:
    """The fortunes of one fortune file (entries separated by a line holding only '%')."""
    entries = path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n%\n")
    return [e.strip("\n") for e in entries if e.strip()]


def prepare() -> dict[str, dict[str, Path]]:
    """Write the small texts and the Russian base text into WORK; returns {language: {"base", "small"}}."""
    if not (FORTUNES / "humorists").is_file() or not (FORTUNES / "ru" / "knowledge").is_file():
        raise SystemExit("the fortune texts are missing: apt-get install fortunes fortunes-ru")
    WORK.mkdir(parents=True, exist_ok=True)
    small_files = {"en": (FORTUNES, ("humorists", "literature")), "ru": (FORTUNES / "ru", ("knowledge",))}
    texts = {}
    for lang, (folder, names) in small_files.items():
        small = [f for name in names for f in fortunes_of(folder / name)]
        held_out = set(small)
        texts[f"{lang}-small.txt"] = small
        texts[f"{lang}-base.txt"] = [f for path in sorted(folder.iterdir())
                                     if path.is_file() and not path.is_symlink() and path.suffix != ".dat"
                                     and path.name not in names
                                     for f in fortunes_of(path) if f not in held_out]
    for name, entries in texts.items():
        text = "\n%\n".join(entries) + "\n"
        path = WORK / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:  # a base may be reading it
            path.write_text(text, encoding="utf-8")
    return {lang: {"base": WORK / f"{lang}-base.txt", "small": WORK / f"{lang}-small.txt"} for lang in small_files}


def training_threads() -> str:
    """Intra-op threads of every benchmark run: OMP_NUM_THREADS if set, else one. On a loaded machine
    (others' jobs on the same 2 cores) torch's two OpenMP threads wait for each other at every parallel
    region, which made a step 11x slower here."""
    return os.environ.get("OMP_NUM_THREADS", "1")


def train_run(corpus: Path, run_dir: Path, seconds: float, extra: list[str]) -> dict:
    """One complete `cli.py train` run; its config.json (the figures are in "metrics")."""
    cmd = [sys.executable, "cli.py", "train", str(corpus), "--checkpoint", str(run_dir), "--max-time", f"{seconds:g}s",
           *extra]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": training_threads()}
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))


def sample_copied_share(run_dir: Path, training_text: str, length: int = 2000) -> float:
    """Copied share (chargen.copying) of `length` characters generated by the run (temperature 0.8, fixed seed)."""
    sys.path.insert(0, str(REPO))
    from chargen.api import generate
    from chargen.copying import copied_share

    sample = "".join(generate(run_dir, seed="\n", length=length, temperature=0.8, rng_seed=0))
    return copied_share(sample, training_text)


def bases(minutes: float) -> None:
    """Train one base run per language (WORK/base-<lang>), both at once, one thread each (kept if there)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = {lang: texts for lang, texts in prepare().items() if not (WORK / f"base-{lang}" / "config.json").is_file()}
    with ThreadPoolExecutor(len(todo) or 1) as pool:
        list(pool.map(lambda lang: train_run(todo[lang]["base"], WORK / f"base-{lang}", minutes * 60, []), todo))


def compare(budgets: list[float], langs: list[str], arms: list[str], out: Path) -> None:
    """Every (budget, language, arm) cell, the arms alternating. An arm is "scratch", or "finetune"
    followed by any extra `chargen train` options (e.g. "finetune --lr 5e-3")."""
    texts = prepare()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    cells = []
    for minutes in budgets:
        for lang in langs:
            base = WORK / f"base-{lang}"
            small = texts[lang]["small"]
            for arm in arms:
                kind, *options = arm.split()
                if kind == "finetune" and not (base / "config.json").is_file():
                    raise SystemExit(f"{base} is missing: run `python bench/finetune.py bases` first")
                run_dir = WORK / "cells" / stamp / f"{lang}-{minutes:g}m-{'_'.join(arm.replace('-', '').split())}"
                extra = ["--from-run", str(base), *options] if kind == "finetune" else options
                t0 = time.perf_counter()
                config = train_run(small, run_dir, minutes * 60, extra)
                m = config["metrics"]
                cell = {"lang": lang, "arm": arm, "minutes": minutes, "val_nats": m["val_loss"], "best_step": m["step"],
                        "steps": m["steps"], "wall_s": round(time.perf_counter() - t0, 1),
                        "copied_share": sample_copied_share(run_dir, small.read_text(encoding="utf-8")),
                        "train": config["train"], "finetune": config.get("finetune")}
                cells.append(cell)
                print(f"{lang} {minutes:g} min {arm}: val {cell['val_nats']:.4f} nats/char (best at step "
                      f"{cell['best_step']} of {cell['steps']}), copied {cell['copied_share']:.1%}", flush=True)
    print("\n| text | budget | arm | val nats/char | vs scratch | copied share | steps (best at) |")
    print("|---|---|---|---|---|---|---|")
    by = {(c["lang"], c["minutes"], c["arm"]): c for c in cells}
    for minutes in budgets:
        for lang in langs:
            scratch = by.get((lang, minutes, "scratch"))
            for arm in arms:
                c = by[(lang, minutes, arm)]
                delta = f"{c['val_nats'] - scratch['val_nats']:+.4f}" if scratch and arm != "scratch" else ""
                print(f"| {lang} | {minutes:g} min | {arm} | {c['val_nats']:.4f} | {delta} | {c['copied_share']:.1%} | "
                      f"{c['steps']} ({c['best_step']}) |")
    out.parent.mkdir(parents=True, exist_ok=True)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    out.write_text(json.dumps({"cells": cells, "load_average": load}, indent=2))
    print(f"\nwritten {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "bases", "compare"))
    parser.add_argument("--minutes", type=float, default=20.0, help="bases: training time of each base (default: 20)")
    parser.add_argument("--budgets", default="0.5,2,5", help="compare: budgets in minutes (default: 0.5,2,5)")
    parser.add_argument("--langs", default="en,ru", help="compare: texts (default: en,ru)")
    parser.add_argument("--arms", default="scratch;finetune",
                        help="compare: ';'-separated arms: scratch, finetune, or finetune with options "
                             "(default: 'scratch;finetune')")
    parser.add_argument("--out", type=Path, help="compare: JSON file (default: bench/results/finetune-<time>.json)")
    args = parser.parse_args()
    if args.step == "prepare":
        for lang, texts in prepare().items():
            print(f"{lang}: base {texts['base']}, small {texts['small']}")
    elif args.step == "bases":
        bases(args.minutes)
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        compare([float(b) for b in args.budgets.split(",")], args.langs.split(","), args.arms.split(";"),
                args.out or BENCH / "results" / f"finetune-{stamp}.json")


if __name__ == "__main__":
    main()
