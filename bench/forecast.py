"""The forecasting benchmark: chargen's series head against naive, seasonal naive and statsforecast's
AutoETS, AutoTheta and AutoARIMA, on real series shipped inside pmdarima (no download).

    pip install -e ".[bench]"          # statsforecast and pmdarima (benchmark only)
    python bench/forecast.py            # --series NAME ... for a subset, --json FILE for the figures

M4's protocol: each series' last h values are held back (h by frequency: yearly 6, quarterly 8, monthly
18, half-hourly 48), every method sees the rest and forecasts h values. chargen runs its real command
line with its defaults (`series train FILE --season m --horizon h`, then `series forecast --steps h`);
the baselines get the same season m. Figures: MASE (the MAE over the seasonal-naive in-sample MAE of
the training part, lag m; lag 1 without a season), sMAPE (%), and the share of held-back values
inside the 80% and 95% intervals; chargen's training time per series (wall clock, this machine).
Then, for each frequency with several series, one chargen model trained across them (a long CSV with
`--id-column`) against the models trained one per series.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# name, frequency, season m, horizon h
SERIES = [("airpassengers", "monthly", 12, 18), ("wineind", "monthly", 12, 18), ("sunspots", "monthly", 12, 18),
          ("woolyrnq", "quarterly", 4, 8), ("austres", "quarterly", 4, 8), ("ausbeer", "quarterly", 4, 8),
          ("lynx", "yearly", 1, 6), ("taylor", "half-hourly", 48, 48)]
TAYLOR_KEPT = 1008  # the last 3 weeks of taylor's 12: statsforecast's AutoARIMA takes hours on all of them
BASELINES = ("Naive", "SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA")


def load(name: str) -> np.ndarray:
    from pmdarima import datasets

    values = np.asarray(getattr(datasets, f"load_{name}")(), dtype=float)
    values = values[~np.isnan(values)]  # ausbeer ends with a missing quarter
    return values[-TAYLOR_KEPT:] if name == "taylor" else values


def mase(train: np.ndarray, truth: np.ndarray, forecast: np.ndarray, m: int) -> float:
    return float(np.mean(np.abs(truth - forecast)) / np.mean(np.abs(train[m:] - train[:-m])))


def smape(truth: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.mean(200 * np.abs(truth - forecast) / (np.abs(truth) + np.abs(forecast))))


def scores(train, truth, point, m, bounds=None) -> dict:
    row = {"mase": mase(train, truth, point, m), "smape": smape(truth, point)}
    for level, (low, high) in (bounds or {}).items():
        row[f"in{level}"] = float(np.mean((truth >= low) & (truth <= high)))
    return row


def baselines(train: np.ndarray, m: int, h: int) -> dict:
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta, Naive, SeasonalNaive

    frame = pd.DataFrame({"unique_id": "s", "ds": np.arange(len(train)), "y": train})
    models = [Naive(), SeasonalNaive(season_length=m), AutoETS(season_length=m), AutoTheta(season_length=m),
              AutoARIMA(season_length=m)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = StatsForecast(models=models, freq=1).forecast(df=frame, h=h, level=[80, 95])
    return {name: (out[name].to_numpy(), {level: (out[f"{name}-lo-{level}"].to_numpy(),
                                                  out[f"{name}-hi-{level}"].to_numpy()) for level in (80, 95)})
            for name in BASELINES}


def chargen_forecasts(trains: dict[str, np.ndarray], m: int, h: int, work: Path, extra: list[str]) -> tuple:
    """Train with the command line's defaults (one series: a one-column CSV; several: one model across
    them, a long CSV with `--id-column`), then forecast h values of each: ({name: (point, bounds)}, seconds)."""
    data = work / "series.csv"
    if len(trains) == 1:
        (train,) = trains.values()
        data.write_text("value\n" + "".join(f"{float(v)!r}\n" for v in train))
        layout = ["--column", "value"]
    else:
        data.write_text("id,value\n" + "".join(f"{name},{float(v)!r}\n" for name, train in trains.items()
                                               for v in train))
        layout = ["--id-column", "id", "--column", "value"]
    cli = [sys.executable, str(REPO / "cli.py"), "series"]
    started = time.perf_counter()
    subprocess.run(cli + ["train", str(data), *layout, "--checkpoint", str(work / "run"), "--season", str(m),
                          "--horizon", str(h), *extra], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    out = subprocess.run(cli + ["forecast", "--checkpoint", str(work / "run"), "--steps", str(h)],
                         check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    results = {}
    for name in trains:
        mine = [r for r in rows if r.get("id", name) == name]  # one series: no id column
        column = lambda key, mine=mine: np.array([float(r[key]) for r in mine])  # noqa: E731
        results[name] = (column("value"), {80: (column("low_80"), column("high_80")),
                                           95: (column("low_95"), column("high_95"))})
    return results, seconds


# One model across several series of a frequency. Sunspots is monthly data without a monthly season (its
# cycle is about 11 years) and 16 times longer than the others: the group is shown with it and without it.
MANY = [("monthly", ("airpassengers", "wineind", "sunspots"), 12, 18),
        ("monthly", ("airpassengers", "wineind"), 12, 18),
        ("quarterly", ("woolyrnq", "austres", "ausbeer"), 4, 8)]


def many_series(results: dict, args: argparse.Namespace) -> None:
    """Per group of MANY: one model across its series against one model per series."""
    print("\n| frequency | series | chargen, one model per series (mean MASE) | chargen, one model across them "
          "| per series | seconds, one per series (sum) | seconds, across |")
    print("|---|---|---|---|---|---|---|")
    for frequency, names, m, h in MANY:
        if not all(name in results for name in names):
            continue
        trains = {name: load(name)[:-h] for name in names}
        with tempfile.TemporaryDirectory() as work:
            forecasts, seconds = chargen_forecasts(trains, m, h, Path(work), args.chargen_args.split())
        across = {name: scores(trains[name], load(name)[-h:], point, max(m, 1), bounds)
                  for name, (point, bounds) in forecasts.items()}
        results.setdefault("many", {})[" + ".join(names)] = {**across, "seconds": seconds}
        one = np.mean([results[n]["chargen"]["mase"] for n in names])
        many = np.mean([across[n]["mase"] for n in names])
        alone = sum(results[n]["chargen"]["seconds"] for n in names)
        each = ", ".join(f"{n} {results[n]['chargen']['mase']:.3f} -> {across[n]['mase']:.3f}" for n in names)
        print(f"| {frequency} | {', '.join(names)} | {one:.3f} | {many:.3f} | {each} | {alone:.0f} | {seconds:.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", nargs="+", default=[s[0] for s in SERIES], help="a subset, by name")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument("--chargen-args", default="", help="extra options for `chargen series train`")
    parser.add_argument("--baselines-from", metavar="FILE", help="the baselines' figures from an earlier --json "
                        "FILE (same series): compares chargen settings without refitting AutoARIMA")
    parser.add_argument("--no-many", dest="many", action="store_false",
                        help="leave out the many-series comparison (one model across the series of a frequency)")
    args = parser.parse_args()

    earlier = json.loads(Path(args.baselines_from).read_text()) if args.baselines_from else {}
    results = {}
    for name, frequency, m, h in [s for s in SERIES if s[0] in args.series]:
        values = load(name)
        train, truth = values[:-h], values[-h:]
        row = {"frequency": frequency, "values": len(values), "m": m, "h": h}
        if args.baselines_from:
            row.update({method: earlier[name][method] for method in BASELINES})
        else:
            for method, (point, bounds) in baselines(train, m, h).items():
                row[method] = scores(train, truth, point, max(m, 1), bounds)
        with tempfile.TemporaryDirectory() as work:
            forecasts, seconds = chargen_forecasts({name: train}, m, h, Path(work), args.chargen_args.split())
        point, bounds = forecasts[name]
        row["chargen"] = {**scores(train, truth, point, max(m, 1), bounds), "seconds": seconds}
        results[name] = row
        print(f"{name:14} " + "  ".join(f"{k} {row[k]['mase']:.3f}" for k in ("chargen",) + BASELINES)
              + f"  ({seconds:.0f} s)", file=sys.stderr, flush=True)

    methods = ("chargen",) + BASELINES
    print("| series | freq | n | h | " + " | ".join(methods) + " | chargen sMAPE | best sMAPE | chargen s |")
    print("|---" * (len(methods) + 7) + "|")
    for name, row in results.items():
        best = min(row[k]["smape"] for k in BASELINES[2:])
        print(f"| {name} | {row['frequency']} | {row['values']} | {row['h']} | "
              + " | ".join(f"{row[k]['mase']:.3f}" for k in methods)
              + f" | {row['chargen']['smape']:.2f} | {best:.2f} | {row['chargen']['seconds']:.0f} |")
    means = {k: float(np.mean([row[k]["mase"] for row in results.values()])) for k in methods}
    print("| **mean MASE** | | | | " + " | ".join(f"**{means[k]:.3f}**" for k in methods) + " | | | |")
    for level in (80, 95):
        print(f"\n{level}% interval coverage over the set: "
              + ", ".join(f"{k} {np.mean([row[k][f'in{level}'] for row in results.values()]):.0%}"
                          for k in ("chargen", "AutoETS", "AutoTheta", "AutoARIMA")))
    worse = [n for n, row in results.items() if row["chargen"]["mase"] > row["SeasonalNaive"]["mase"]]
    print(f"series where chargen is worse than seasonal naive: {', '.join(worse) or 'none'}")
    if args.many:
        many_series(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
