"""The sizing grid (issue #15): automatic sizing against today's fixed defaults and other configurations.

    python bench/sizing.py run --corpora shakespeare --minutes 1,5 --arms "auto;defaults"
    python bench/sizing.py run --corpora small --minutes 1 --arms "defaults;--hidden 128 --lr 7e-3"
    python bench/sizing.py table bench/results/sizing.jsonl          # the Markdown table of every cell so far
    python bench/sizing.py fit                  # chargen/sizing.py's loss model, fitted to the cells so far

Corpora (nothing is committed; the fortune texts come from `apt-get install fortunes fortunes-ru`, built by
bench/finetune.py's `prepare`):
  shakespeare  ../shared/corpora/tinyshakespeare.txt (1.1M characters)
  small        English quotations, the fortune files `humorists` + `literature` (96k characters)
  ru           the Russian fortune files less `knowledge` (1.9M characters, Cyrillic)
  man          the roff source of the English manual pages of sections 2 and 4-8 installed under /usr/share/man,
               in path order (21.5M characters on the Debian 12 machine of BENCHMARKS.md: system calls, file formats,
               conventions, administration); written into bench/results/man.txt. Every arm validates on its
               last 1% (--val-fraction 0.01, 215k characters: twice tinyshakespeare's 10%), else its five
               full validations would take most of a short budget
  FILE         any other text file, named by its stem

An arm is `auto` (no sizing option: chargen chooses), `defaults` (the fixed defaults before automatic
sizing, given explicitly: 2x256 GRU, 32 x 64, lr 5e-3, no dropout, weight decay 0.01), or `chargen train`
options that change those defaults (e.g. "--hidden 128 --lr 7e-3": every other setting stays fixed).
Each cell is one complete `cli.py train CORPUS --max-time Xm` run, the arms of a budget
alternating so that the machine's drift falls on all of them; its figures are the run's best validation
loss (last 10%, scored in full) and the copied share of 2,000 characters it generates against the
training text (chargen.copying). Every cell is appended to a JSON-lines file as soon as it ends, so a
long grid can be stopped and continued, and spread over sessions.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from finetune import prepare, sample_copied_share, train_run, training_threads  # noqa: E402

RESULTS = BENCH / "results" / "sizing.jsonl"
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
MAN_PAGES = Path("/usr/share/man")
MAN_SECTIONS = ("man2", "man4", "man5", "man6", "man7", "man8")
CORPUS_OPTIONS = {"man": ["--val-fraction", "0.01"]}   # given to every arm of that corpus
RUNS = BENCH / "results" / "sizing-runs"
DEFAULTS = "--cell gru --hidden 256 --layers 2 --embedding 64 --batch-size 32 --seq-len 64 --lr 5e-3 " \
           "--dropout 0 --weight-decay 0.01"


def man_corpus() -> Path:
    """The large corpus: every English manual page of MAN_SECTIONS, its roff source, in path order (pages that
    are not UTF-8 left out), written once into bench/results/man.txt."""
    path = BENCH / "results" / "man.txt"
    if path.is_file():
        return path
    pages = sorted(p for section in MAN_SECTIONS for p in (MAN_PAGES / section).glob("*.gz"))
    if not pages:
        raise SystemExit(f"no manual pages under {MAN_PAGES}: install some (apt-get install manpages manpages-dev)")
    texts = []
    for page in pages:
        try:
            texts.append(gzip.decompress(page.read_bytes()).decode("utf-8"))
        except (UnicodeDecodeError, OSError, EOFError):
            continue
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(texts), encoding="utf-8")
    tmp.replace(path)
    return path


def corpus_path(name: str) -> Path:
    """A corpus name of the grid (or a file path) -> the text file."""
    if name == "shakespeare":
        return SHAKESPEARE
    if name == "man":
        return man_corpus()
    if name in ("small", "ru"):
        texts = prepare()
        return texts["en"]["small"] if name == "small" else texts["ru"]["base"]
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"{name}: not a corpus of the grid (shakespeare, small, ru, man) nor a file")
    return path


def arm_options(arm: str) -> list[str]:
    """The `chargen train` options of an arm: nothing for auto, else the fixed defaults with the arm's changes."""
    if arm == "auto":
        return []
    return shlex.split(DEFAULTS) + ([] if arm == "defaults" else shlex.split(arm))


def run_cell(corpus: str, minutes: float, arm: str, results: Path) -> dict:
    """Train one cell, measure its copied share, append it to `results`."""
    path = corpus_path(corpus)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # the process id keeps apart two cells started in the same second (two runners side by side)
    run_dir = RUNS / f"{stamp}-{Path(corpus).stem}-{minutes:g}m-{os.getpid()}"
    t0 = time.perf_counter()
    config = train_run(path, run_dir, minutes * 60, CORPUS_OPTIONS.get(corpus, []) + arm_options(arm))
    m, model, train = config["metrics"], config["model"], config["train"]
    cell = {"date": stamp, "corpus": Path(corpus).stem, "corpus_chars": config["corpus"]["chars"], "minutes": minutes,
            "arm": arm, "val_nats": m["val_loss"], "best_step": m["step"], "steps": m["steps"],
            "chars_seen": m["items_seen"], "elapsed_s": m["elapsed_s"], "wall_s": round(time.perf_counter() - t0, 1),
            "model": f"{model['layers']}x{model['hidden']} {model['cell']}", "dropout": model["dropout"],
            "batch": f"{train['batch_size']}x{train['seq_len']}", "lr": train["lr"],
            "weight_decay": train["weight_decay"], "optimizer": train.get("optimizer", "adamw"),
            "parameters": parameters(config), "sizing": config.get("sizing"),
            "copied_share": sample_copied_share(run_dir, path.read_text(encoding="utf-8")),
            "load_average": os.getloadavg()[0], "threads": training_threads()}
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as f:
        f.write(json.dumps(cell) + "\n")
    print(f"{cell['corpus']} {minutes:g} min [{arm}]: {cell['val_nats']:.4f} nats/char, {cell['model']} "
          f"{cell['batch']} lr {cell['lr']:g} dropout {cell['dropout']:g}, step {cell['best_step']} of "
          f"{cell['steps']}, copied {cell['copied_share']:.1%}", flush=True)
    return cell


def parameters(config: dict) -> int:
    """Trainable parameters of a run's model."""
    sys.path.insert(0, str(REPO))
    from chargen.config import ModelConfig
    from chargen.sizing import parameters_of

    return parameters_of(ModelConfig.from_dict(config["model"]))


def read_cells(results: Path) -> list[dict]:
    """The cells so far (a cell recorded before the parameter count was kept gets it from its run directory)."""
    cells = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    for c in cells:
        if "parameters" not in c:
            run = next(RUNS.glob(f"{c['date']}-{c['corpus']}-{c['minutes']:g}m"))
            c["parameters"] = parameters(json.loads((run / "config.json").read_text(encoding="utf-8")))
    return cells


def fit(results: Path) -> None:
    """Least-squares fit of chargen/sizing.py's loss model, L(N, D) = E + A / N**alpha + B / D**beta
    (validation nats/char of N parameters after D effective characters seen), to the tinyshakespeare cells
    trained without dropout with AdamW and a fixed width (a cell marked "overlapped", whose machine was
    shared, left out); prints LOSS_FIT and each cell's residual."""
    import numpy as np
    from scipy.optimize import least_squares

    sys.path.insert(0, str(REPO))
    from chargen.sizing import effective_chars

    cells = [c for c in read_cells(results) if not c["arm"].startswith("auto") and c["dropout"] == 0
             and "muon" not in c["arm"] and "overlapped" not in c["arm"] and c["corpus"] == "shakespeare"]
    n = np.array([c["parameters"] for c in cells], dtype=float)
    d = np.array([effective_chars(c["chars_seen"], int(c["corpus_chars"] * 0.9)) for c in cells])
    loss = np.array([c["val_nats"] for c in cells])

    def model(p):  # p: E, log A, alpha, log B, beta
        return p[0] + np.exp(p[1]) * n ** -p[2] + np.exp(p[3]) * d ** -p[4]

    p = least_squares(lambda p: model(p) - loss, np.array([1.0, 3.0, 0.3, 3.0, 0.3]),
                      bounds=([0, -20, 0.05, -20, 0.05], [3, 40, 2, 40, 2])).x
    print(f'LOSS_FIT = {{"E": {p[0]:.4g}, "A": {np.exp(p[1]):.4g}, "alpha": {p[2]:.3g}, "B": {np.exp(p[3]):.4g}, '
          f'"beta": {p[4]:.3g}}}')
    print(f"{len(cells)} cells, RMS residual {np.sqrt(np.mean((model(p) - loss) ** 2)):.4f} nats/char")
    for c, predicted in sorted(zip(cells, model(p)), key=lambda t: (t[0]["minutes"], t[0]["parameters"])):
        print(f"  {c['minutes']:g} min {c['model']}: measured {c['val_nats']:.4f}, fitted {predicted:.4f}")


def table(results: Path) -> None:
    """Every cell so far as a Markdown table, grouped by corpus and budget, best first."""
    cells = read_cells(results)
    print("| corpus | budget | arm | model | streams x chunk | lr | dropout | val nats/char | steps (best at) | "
          "chars seen per parameter | copied |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted(cells, key=lambda c: (c["corpus"], c["minutes"], c["val_nats"])):
        per_param = f"{c['chars_seen'] / c['parameters']:.1f}"
        print(f"| {c['corpus']} | {c['minutes']:g} min | {c['arm']} | {c['model']} | {c['batch']} | {c['lr']:g} | "
              f"{c['dropout']:g} | {c['val_nats']:.4f} | {c['steps']} ({c['best_step']}) | {per_param} | "
              f"{c['copied_share']:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("run", "table", "fit"))
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS,
                        help=f"the JSON-lines file of cells (default: {RESULTS.relative_to(BENCH.parent)})")
    parser.add_argument("--corpora", default="shakespeare", help="comma-separated corpora (default: shakespeare)")
    parser.add_argument("--minutes", default="1,5", help="comma-separated budgets in minutes (default: 1,5)")
    parser.add_argument("--arms", default="auto;defaults", help="';'-separated arms (default: 'auto;defaults')")
    parser.add_argument("--repeats", type=int, default=1, help="run every cell this many times (default: 1)")
    args = parser.parse_args()
    if args.step in ("table", "fit"):
        (table if args.step == "table" else fit)(args.results)
        return
    for _ in range(args.repeats):
        for minutes in (float(m) for m in args.minutes.split(",")):
            for corpus in args.corpora.split(","):
                for arm in args.arms.split(";"):
                    run_cell(corpus, minutes, arm.strip(), args.results)


if __name__ == "__main__":
    main()
