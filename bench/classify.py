"""The classifier benchmark: chargen classify against the majority class and character n-gram TF-IDF +
logistic regression, on the sets bench/classify_sets.py builds from the installed manual pages.

    pip install -e ".[bench]"                     # scikit-learn, the baseline's library (benchmark only)
    python bench/classify_sets.py --out /tmp/classify-bench
    python bench/classify.py --data /tmp/classify-bench

For each task (langid, section), in one run:
  1. all training texts: the two baselines, then `chargen classify train` with each of --arms (default:
     the sized defaults and --sizing fixed) at --budget, each scored by `chargen classify eval` on the
     held-out pages;
  2. few labels (--few per class, drawn with a fixed seed): the baselines, a classifier from scratch,
     and one `--from-run` a character model (the classifier's fixed size, 1x256) trained for --text-minutes on the
     unlabelled text of the training pages, fine-tuned and with its core frozen, each at --few-budget,
     each with --seeds training seeds (the seed moves the starting weights, the batch order and the
     validation split; with 100 labels a class it moved accuracy by up to 0.03): their mean, and each
     seed's accuracy in the row's name.
Every chargen step runs the real command line; figures are test-set accuracy and macro-F1.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TEXT_MODEL = ["--hidden", "256", "--layers", "1", "--embedding", "32"]  # chargen.classify_data.CLASSIFY_MODEL_DEFAULTS


def chargen(*args: str, env: dict) -> str:
    """Run `python cli.py ARGS`; its stdout (stderr passes through to the terminal)."""
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"chargen {' '.join(args)} failed ({done.returncode})")
    return done.stdout


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def write(path: Path, texts: list[str], labels: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))


def few(texts: list[str], labels: list[str], per_class: int, seed: int) -> tuple[list[str], list[str]]:
    """`per_class` examples of every class, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name in sorted(set(labels)):
        members = [i for i, x in enumerate(labels) if x == name]
        chosen.extend(rng.choice(members, size=min(per_class, len(members)), replace=False).tolist())
    chosen.sort()
    return [texts[i] for i in chosen], [labels[i] for i in chosen]


def baselines(train: tuple[list[str], list[str]], test: tuple[list[str], list[str]]) -> list[dict]:
    """The majority class, and char 1-4-gram TF-IDF (word-bounded) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    names, counts = np.unique(train[1], return_counts=True)
    majority = [names[np.argmax(counts)]] * len(test[1])
    rows = [{"method": "majority class", "accuracy": accuracy_score(test[1], majority),
             "macro_f1": f1_score(test[1], majority, average="macro"), "seconds": 0.0}]
    t0 = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2),
                          LogisticRegression(C=10.0, max_iter=2000))
    model.fit(*train)
    predicted = model.predict(test[0])
    rows.append({"method": "char 1-4-gram TF-IDF + logistic regression", "accuracy": accuracy_score(test[1], predicted),
                 "macro_f1": f1_score(test[1], predicted, average="macro"), "seconds": time.perf_counter() - t0})
    return rows


def method_name(extra: list[str]) -> str:
    """A table row's name: the chargen command's options."""
    return f"chargen classify {' '.join(extra)}".strip()


def classifier(name: str, train_csv: Path, test_csv: Path, env: dict, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    chargen("classify", "train", str(train_csv), "--run", name, *extra, env=env)
    seconds = time.perf_counter() - t0
    figures = json.loads(chargen("classify", "eval", "--run", name, str(test_csv), "--json", env=env))
    config = json.loads((Path(env["CHARGEN_CHECKPOINTS"]) / name / "config.json").read_text())
    steps, model = config["metrics"]["steps"], config["model"]
    return {"method": f"{method_name(extra)} ({model['layers']}x{model['hidden']})", "accuracy": figures["accuracy"],
            "macro_f1": figures["macro_f1"], "seconds": seconds, "steps": steps}


def seeded(name: str, train_csv: Path, test_csv: Path, env: dict, extra: list[str], seeds: int) -> dict:
    """`classifier` with --rng-seed 1337 (chargen's default), 1, 2, ...: the mean figures, and each
    seed's accuracy in the method's name."""
    runs = [classifier(f"{name}-s{seed}", train_csv, test_csv, env, [*extra, "--rng-seed", str(seed)])
            for seed in [1337, *range(1, seeds)]]
    each = ", ".join(f"{r['accuracy']:.3f}" for r in runs)
    return {"method": method_name(extra) + (f" (seeds: {each})" if seeds > 1 else ""),
            **{k: float(np.mean([r[k] for r in runs])) for k in ("accuracy", "macro_f1", "seconds")},
            "steps": round(np.mean([r["steps"] for r in runs]))}


def table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n\n| method | test accuracy | test macro-F1 | seconds (train) | steps |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['seconds']:.0f} | "
              f"{r.get('steps', '')} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the folder classify_sets.py wrote")
    parser.add_argument("--tasks", nargs="+", default=["langid", "section"])
    parser.add_argument("--arms", nargs="+", default=["", "--sizing fixed"],
                        help="chargen option sets of the full part, a classifier each (default: '' and '--sizing "
                        "fixed', the sized defaults and the fixed 1x256 they replace)")
    parser.add_argument("--few", type=int, default=100, help="labelled texts per class in the few-label part")
    parser.add_argument("--budget", default="", help="budget options of each classifier training, e.g. "
                        "'--max-steps 150' (default: chargen's own time limit)")
    parser.add_argument("--few-budget", help="budget options of the few-label classifiers (default: --budget)")
    parser.add_argument("--text-minutes", type=float, default=5.0,
                        help="training time of the character model --from-run starts from (default: 5)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of each few-label classifier: the "
                        "table gives their mean (default: 3)")
    parser.add_argument("--skip-full", action="store_true", help="only the few-label part")
    parser.add_argument("--skip-few", action="store_true", help="only the part with all training texts")
    parser.add_argument("--threads", default="1", help="torch threads of each chargen process (OMP_NUM_THREADS); "
                        "1 on a shared machine, where two threads waiting on each other ran 10x slower")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, not {args.seeds}")
    budget = args.budget.split()
    few_budget = budget if args.few_budget is None else args.few_budget.split()
    work = Path(tempfile.mkdtemp(prefix="classify-bench-"))
    env = {**os.environ, "CHARGEN_CHECKPOINTS": str(work / "runs"), "OMP_NUM_THREADS": args.threads}
    print(f"runs in {work}; budget per training: {args.budget or 'the default'}; {args.threads} torch thread(s)",
          flush=True)
    for task in args.tasks:
        train_csv, test_csv = args.data / f"{task}_train.csv", args.data / f"{task}_test.csv"
        train, test = read(train_csv), read(test_csv)
        if not args.skip_full:
            rows = baselines(train, test)
            rows += [classifier(f"{task}-arm{i}", train_csv, test_csv, env, [*arm.split(), *budget])
                     for i, arm in enumerate(args.arms)]
            table(f"{task}: {len(train[0])} training texts, {len(test[0])} test texts, "
                  f"{len(set(train[1]))} classes", rows)
        if args.skip_few:
            continue
        small = few(*train, args.few, seed=0)
        small_csv = work / f"{task}_few.csv"
        write(small_csv, *small)
        rows = baselines(small, test)
        # --sizing fixed: the 1x256 of the text model, so that the arms differ only in their start whatever
        # the budget (under a time budget the scratch arm would otherwise be sized).
        rows.append(seeded(f"{task}-few-scratch", small_csv, test_csv, env, ["--sizing", "fixed", *few_budget],
                           args.seeds))
        t0 = time.perf_counter()
        # The text model has the classifier's fixed size (1x256): the arms differ only in their start.
        chargen("train", str(args.data / f"{task}_unlabelled.txt"), "--run", f"{task}-text", "--max-time",
                f"{args.text_minutes:g}m",
                *TEXT_MODEL, env=env)
        text_seconds = time.perf_counter() - t0
        rows.append(seeded(f"{task}-few-transfer", small_csv, test_csv, env, ["--from-run", f"{task}-text",
                                                                              *few_budget], args.seeds))
        rows.append(seeded(f"{task}-few-frozen", small_csv, test_csv, env,
                           ["--from-run", f"{task}-text", "--freeze-core", *few_budget], args.seeds))
        table(f"{task}, {args.few} labelled texts per class ({len(small[0])} in all; the text model took "
              f"{text_seconds:.0f} s more on {os.path.getsize(args.data / f'{task}_unlabelled.txt'):,} bytes "
              "of unlabelled training-page text)", rows)


if __name__ == "__main__":
    main()
