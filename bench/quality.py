"""Quality per minute: validation loss of `chargen train` with its defaults after 1, 2, 3 and 5 minutes.

    python bench/quality.py                        # 1, 2, 3, 5 minutes: ~11 minutes in all
    python bench/quality.py --minutes 0.25,0.5     # a quick check of the script itself
    python bench/quality.py -- --precision fp32    # arguments after -- go to every `cli.py train`

Each budget is a separate, complete run of `python cli.py train CORPUS --max-time Xm` (the learning-rate
schedule ends exactly at its own budget, so a 2-minute run is not the first 2 minutes of a 5-minute
one) on tinyshakespeare with the default 90/10 split: the last 10% is the validation text, scored in
full, statefully. Prints a table and writes bench/results/quality-<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def run_budget(minutes: float, corpus: Path, extra: list[str], root: Path) -> dict:
    """One `cli.py train --max-time` run; its figures from the run's config.json."""
    run_dir = root / f"quality-{minutes:g}m"
    cmd = [sys.executable, "cli.py", "train", str(corpus), "--checkpoint", str(run_dir),
           "--max-time", f"{minutes * 60:g}s", *extra]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    m = config["metrics"]
    return {"minutes": minutes, "val_nats": m["val_loss"], "val_bpc": m["val_bpc"], "best_step": m["step"],
            "steps": m["steps"], "train_chars_per_s": m["items_seen"] / max(m["elapsed_s"], 1e-9),
            "wall_s": wall, "evals": config.get("evals", []), "model": config["model"], "train": config["train"],
            "log_tail": proc.stderr.strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,2,3,5", help="comma-separated budgets in minutes (default: 1,2,3,5)")
    parser.add_argument("--corpus", type=Path, default=SHAKESPEARE, help="training text (default: tinyshakespeare)")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/quality-<time>.json)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the run directories in DIR")
    parser.add_argument("extra", nargs="*", help="after --: options for every `cli.py train`")
    args = parser.parse_args()
    if not args.corpus.is_file():
        parser.error(f"{args.corpus} is not there; pass --corpus FILE")
    try:
        budgets = [float(x) for x in args.minutes.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--minutes {args.minutes!r}: give numbers such as 1,2,3,5")
    root = args.keep or Path(tempfile.mkdtemp(prefix="chargen-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    rows = []
    try:
        for minutes in budgets:
            row = run_budget(minutes, args.corpus, args.extra, root)
            rows.append(row)
            print(f"  {minutes:g} min: {row['val_nats']:.4f} nats/char after {row['steps']} steps", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    results = {"date": started, "cpus": os.cpu_count(), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
               "corpus": str(args.corpus), "extra_args": args.extra, "runs": rows}
    out = args.out or BENCH / "results" / f"quality-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    first = rows[0]
    m, t = first["model"], first["train"]
    command = " ".join(["cli.py train --max-time Xm", *args.extra])
    print(f"{args.corpus.name}: validation on the last 10%, `{command}`")
    print(f"model {m['layers']}x{m['hidden']} {m['cell']}, embedding {m['embedding']}, dropout {m['dropout']}; "
          f"{t['batch_size']} streams x {t['seq_len']}, lr {t['lr']}, precision {t['precision']}")
    print("| budget | val nats/char | val bpc | steps | train chars/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['val_nats']:.4f} | {r['val_bpc']:.4f} | {r['steps']} | "
              f"{r['train_chars_per_s']:,.0f} |")
    print(f"load average {load_start[0]:.1f} at start, {results['load_avg_end'][0]:.1f} at end; JSON: {out}")


if __name__ == "__main__":
    main()
