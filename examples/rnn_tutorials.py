"""The three RNN tutorials the time-series head grew from, reproduced with chargen's Python API.

    python examples/rnn_tutorials.py sine         # 1. many-to-many sine, RNN vs LSTM: table + sine_tutorial.png
    python examples/rnn_tutorials.py next-value   # 2. many-to-one: predict the 51st value of a window
    python examples/rnn_tutorials.py toy          # 3. trained on 1,2,3,4 -> 5, asked 2,3,4
    python examples/rnn_tutorials.py all

Tables go to stdout, training progress to stderr. Runs are written to a temporary folder unless
--runs DIR is given (then `chargen series forecast --checkpoint DIR/<name>` works on them afterwards).

The tutorials train with plain Adam at a constant learning rate and no warm-up; chargen's one loop
uses AdamW with warm-up and a cosine schedule, so each tutorial sets --weight-decay 0, --warmup-steps 0
and --lr-floor 1 to match. Every window starts from a zero hidden state, as in the tutorials.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from chargen.config import ModelConfig, TrainConfig  # noqa: E402
from chargen.series_data import SeriesConfig, synthetic  # noqa: E402

SINE_LENGTH = 1000      # sin(0.1 t): 800 values train (750 windows of 50), the last 200 validate
SINE_REPORTED = {"rnn": 6e-4, "lstm": 1e-3}   # the tutorial's reported MSE
ADAM = dict(warmup_steps=0, lr_floor=1.0, weight_decay=0.0)
# The tutorials' own recipe: values standardised once, the MSE loss, the model validation chose kept as it is
# (chargen's forecasting defaults normalise each window, predict quantiles and refit on the whole series).
AS_TAUGHT = dict(normalise="global", loss="mse", refit=False)


def sine_many_to_many(cell: str, runs: Path) -> dict:
    """Tutorial 1: 50-point windows of sin(x) on every start, target sin(x + 0.1) at each point,
    hidden 32, Adam lr 0.01, 100 full-batch epochs. Returns the run's best metrics and directory."""
    from chargen.series import train_series

    result = train_series(synthetic="sine", length=SINE_LENGTH, checkpoint=runs / f"sine-{cell}",
                          settings=SeriesConfig(window=50, horizon=1, target="every", **AS_TAUGHT),
                          model=ModelConfig(cell=cell, hidden=32, layers=1, embedding=16),
                          config=TrainConfig(batch_size=SINE_LENGTH, epochs=100, lr=0.01, **ADAM))
    return {**result.metrics, "steps": result.step, "run_dir": result.run_dir}


def next_value(runs: Path) -> dict:
    """Tutorial 2: windows of 50 values of sin(x) (x step 0.1, every phase), predict the 51st;
    LSTM hidden 64, Adam lr 1e-3, batch 64, 30 epochs."""
    from chargen.series import train_series

    result = train_series(synthetic="sine", length=SINE_LENGTH, checkpoint=runs / "next-value",
                          settings=SeriesConfig(window=50, horizon=1, target="last", **AS_TAUGHT),
                          model=ModelConfig(cell="lstm", hidden=64, layers=1, embedding=16),
                          config=TrainConfig(batch_size=64, epochs=30, lr=1e-3, **ADAM))
    return {**result.metrics, "steps": result.step, "run_dir": result.run_dir}


def toy(runs: Path) -> dict:
    """Tutorial 3: one training window 1,2,3,4 with target 5 (no validation part); ask for 2,3,4."""
    from chargen.series import forecast, train_series

    result = train_series([1, 2, 3, 4, 5], checkpoint=runs / "toy",
                          settings=SeriesConfig(window=4, horizon=1, target="last", val_fraction=0.0, **AS_TAUGHT),
                          model=ModelConfig(cell="lstm", hidden=16, layers=1, embedding=8),
                          config=TrainConfig(max_steps=200, lr=0.01, **ADAM))
    asked = {tuple(h): float(forecast(result.run_dir, 1, history=h).values[0])
             for h in ([1, 2, 3, 4], [2, 3, 4], [5, 6, 7])}
    return {"train_mse": result.metrics["train_mse"], "answers": asked, "run_dir": result.run_dir}


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for k, name in enumerate(columns):
        table.add_column(name, justify="left" if k == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(file=sys.stdout, highlight=False).print(table)


def run_sine(runs: Path, plot: Path | None) -> None:
    from chargen.plot import COLORS, Figure, Line, write_figure
    from chargen.series import forecast
    from chargen.series_data import split_point

    results = {cell: sine_many_to_many(cell, runs) for cell in ("rnn", "lstm")}
    _table("1. sine, many-to-many",
           ["cell", "train MSE", "validation MSE", "tutorial's MSE"],
           [[cell.upper(), f"{m['train_mse']:.2e}", f"{m['val_mse']:.2e}", f"~{SINE_REPORTED[cell]:.0e}"]
            for cell, m in results.items()])
    if plot is None:
        return
    # The plot: each model forecasts the whole validation part from the training part alone.
    values = synthetic("sine", SINE_LENGTH).values
    n = split_point(len(values), SeriesConfig().val_fraction)
    x = list(range(n - 100, n))
    lines = [Line(x, values[n - 100:n], "history", COLORS["history"]),
             Line(range(n - 1, len(values)), values[n - 1:], "truth", COLORS["truth"])]
    for cell, color in (("rnn", "#c83c3c"), ("lstm", COLORS["forecast"])):
        predicted = forecast(results[cell]["run_dir"], len(values) - n, history=values[:n]).values
        lines.append(Line(range(n - 1, len(values)), [values[n - 1], *predicted], f"{cell} forecast", color))
    figure = Figure(lines, title="sine: 200 values forecast from the training part")
    print(f"plot written to {write_figure(plot, figure)}", file=sys.stderr)


def run_next_value(runs: Path) -> None:
    m = next_value(runs)
    _table("2. next value, many-to-one",
           ["", "train MSE", "validation MSE"], [["LSTM", f"{m['train_mse']:.2e}", f"{m['val_mse']:.2e}"]])


def run_toy(runs: Path) -> None:
    m = toy(runs)
    _table("3. trained on 1,2,3,4 -> 5", ["asked", "answer"],
           [[",".join(str(v) for v in asked), f"{answer:.3f}"] for asked, answer in m["answers"].items()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tutorial", choices=("sine", "next-value", "toy", "all"))
    parser.add_argument("--runs", type=Path, help="keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--plot", type=Path, default=Path("sine_tutorial.png"),
                        help="where the sine tutorial draws its forecasts: .png, .svg or .pdf (default: "
                        "sine_tutorial.png; needs matplotlib)")
    parser.add_argument("--no-plot", action="store_true", help="print the tables only")
    args = parser.parse_args()
    plot = None if args.no_plot or args.tutorial not in ("sine", "all") else args.plot
    if plot is not None:
        from chargen.errors import UserError
        from chargen.plot import figure_path

        try:
            figure_path(plot)  # before minutes of training, not after
        except UserError as e:
            parser.error(f"{e} (or --no-plot)")
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        if args.tutorial in ("sine", "all"):
            run_sine(runs, plot)
        if args.tutorial in ("next-value", "all"):
            run_next_value(runs)
        if args.tutorial in ("toy", "all"):
            run_toy(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
