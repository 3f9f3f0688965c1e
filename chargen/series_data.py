"""Time-series data: a column of numbers or a synthetic wave, the time split, standardisation, windows.

Torch-free, so that the command line builds its options from `SeriesConfig` without loading torch.

    values:  v0 v1 ............................ v(n_train-1) | v(n_train) ........ v(N-1)
             <------------ training part ------------------> <---- validation ---->
             the scaler is fitted here, and every training     each validation window has all
             window (inputs and targets) lies here             its targets here (its inputs may
                                                               reach back into the training part)

A window starting at s has inputs v[s .. s+W-1]. Its targets, with horizon H:
    target "every" (many-to-many): at input step t, the H values v[s+t+1 .. s+t+H]   -> (W, H)
    target "last"  (many-to-one):  after the window, the H values v[s+W .. s+W+H-1]  -> (H,)
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from chargen.config import option
from chargen.errors import UserError
from chargen.log import info

SYNTHETIC = ("sine", "noisy-sine", "sum-of-sines")
SYNTHETIC_STEP = 0.1          # x advances 0.1 per value: one sine period is 2*pi/0.1 ~ 62.8 values
SYNTHETIC_LENGTH = 1000
TARGETS = ("every", "last")
LOSSES = ("quantile", "mse", "mae", "huber")
NORMALISATIONS = ("auto", "window", "global")
TRANSFORMS = ("auto", "log", "none")
AUTO_HORIZON = (6, 48)   # 2 seasons, within these bounds (M4's horizons: yearly 6 ... hourly 48)
FILLS = ("error", "interpolate")
MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-"}


# A series model is small: a character model's 2x256 default would only overfit a few hundred values and
# take minutes. These replace ModelConfig's and TrainConfig's defaults for the series head (options still
# override); measured on the real series of bench/forecast.py. A constant learning rate after warm-up, so
# that the refit on the whole series (as many steps as validation chose) follows the same path.
SERIES_MODEL_DEFAULTS = {"cell": "gru", "hidden": 32, "layers": 1, "embedding": 16}
SERIES_TRAIN_DEFAULTS = {"lr": 3e-3, "lr_floor": 1.0, "weight_decay": 0.0, "batch_size": 64, "patience": 8}
# The model and training options that mean something else for a series, and those it has no use for.
SERIES_OPTION_HELP = {
    "embedding": "size of the input projection (values -> the recurrent core)",
    "batch_size": "windows per step (all processes together); more than there are = full batch",
    "epochs": "stop after this many passes over the training windows (0 = no limit)",
    "max_steps": "stop after this many steps (default, when no budget is given: 8 per training window, "
                 "400 to 2000, and at most 30 seconds)",
    "max_time": "stop after this long, e.g. 90, 90s, 5m, 1h (0 = no limit)",
}
SERIES_OPTION_DEFAULTS = {**SERIES_MODEL_DEFAULTS, **SERIES_TRAIN_DEFAULTS, "max_steps": "sized to the series",
                          "eval_every": "sized to the series", "max_time": "30s when no budget is given, else none"}
SERIES_UNUSED_OPTIONS = ("tie_weights", "seq_len", "pooling")


@dataclass
class SeriesConfig:
    """How a series becomes training windows; saved in config.json, each field an option of `series train`."""

    window: int = option(0, "input values per window: how far back the model looks (0 = auto: two seasons "
                         "or two horizons, at least 8)", minimum=0)
    horizon: int = option(0, "values predicted at once (0 = auto: two seasons, 6 to 48)", minimum=0)
    season: int = option(0, "the season's length in values, e.g. 12 for monthly data (0 = detected by "
                         "autocorrelation; 1 = none)", minimum=0)
    target: str = option("last", "last = the value(s) after the window (many-to-one); every = the next value(s) "
                         "after each input step (many-to-many)", choices=TARGETS)
    normalise: str = option("auto", "window = each window relative to its own level and season (follows a "
                            "trend out of the training range; needs --target last); global = standardised "
                            "once; auto = window for --target last", choices=NORMALISATIONS)
    transform: str = option("auto", "log = model the logarithm (a trend or season that grows with the level; "
                            "positive series only); auto = log when every value is positive and the "
                            "windows are normalised (for many series: each its own)", choices=TRANSFORMS)
    loss: str = option("quantile", "quantile = the pinball loss of the median and the 80%% and 95%% interval "
                       "bounds (forecasts with intervals); or mse, mae, huber (a point forecast)", choices=LOSSES)
    val_fraction: float = option(0.2, "last part of the series held out to choose the training length; 0 = none")
    refit: bool = option(True, "after validation chose the training length, train again on the whole series "
                         "for that many steps (the forecast then knows the latest values)")

    def validate(self) -> "SeriesConfig":
        """Refuse impossible settings with the option's name."""
        for name in ("window", "horizon", "season"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UserError(f"--{name} must be a positive integer (or 0 = auto), not {getattr(self, name)}")
        for name, choices in (("target", TARGETS), ("loss", LOSSES), ("normalise", NORMALISATIONS),
                              ("transform", TRANSFORMS)):
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} {getattr(self, name)!r}: choose one of {', '.join(choices)}")
        if self.normalise == "window" and self.target == "every":
            raise UserError("--normalise window needs --target last (a window's level is known only at its end); "
                            "use --normalise global with --target every")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SeriesConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Series:
    """A univariate series in time order, its name, and how to read it again (`source`)."""

    values: np.ndarray          # (N,) float64
    name: str
    source: dict = field(default_factory=dict)


# -- reading -----------------------------------------------------------------------------------
def values_digest(values: np.ndarray) -> str:
    """SHA-256 of the values as float64: identifies the data a run was trained on."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()


def synthetic(kind: str, length: int = SYNTHETIC_LENGTH, seed: int = 0, noise: float = 0.1) -> Series:
    """A built-in wave sampled every 0.1 in x: sine, noisy-sine (Gaussian noise of std `noise`, seeded) or
    sum-of-sines (three incommensurate periods, so no window repeats exactly)."""
    if kind not in SYNTHETIC:
        raise UserError(f"--synthetic {kind!r}: choose one of {', '.join(SYNTHETIC)}")
    if length < 2:
        raise UserError(f"--length must be at least 2, not {length}")
    x = np.arange(length) * SYNTHETIC_STEP
    if kind == "sum-of-sines":
        values = np.sin(x) + 0.5 * np.sin(2.7 * x + 1.0) + 0.3 * np.sin(0.31 * x)
    else:
        values = np.sin(x)
    if kind == "noisy-sine":
        values = values + np.random.default_rng(seed).normal(0.0, noise, length)
    source = {"kind": "synthetic", "name": kind, "length": length, "seed": seed,
              "noise": noise if kind == "noisy-sine" else 0.0}
    return Series(values, kind, source)


def from_values(values: Sequence[float], name: str = "values") -> Series:
    """A series from numbers in memory (the Python API); they must all be finite."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        raise UserError(f"value {bad[0]} of the series is {array[bad[0]]}; give finite numbers only")
    return Series(array, name, {"kind": "values", "sha256": values_digest(array)})


def _parse_cell(cell: str) -> float | None:
    """The cell as a finite float, or None when it is missing or not a number."""
    text = cell.strip()
    if text.lower() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_series(path: str | Path, column: str | int | None = None, fill: str = "error") -> Series:
    """One column of a CSV file (or one number per line) as a series.

    column: a header name, or a 0-based index; by default the only column, else the only numeric one.
    The first row is a header when none of its cells is a number. A missing or non-numeric value is a
    one-line error naming its line, unless fill="interpolate" (linear between the neighbours).
    """
    path, digest, header, body, first = _read_table(path, fill)
    index, label = _pick_column(path, column, header, body)
    values = _column_values(path, [row[index] if index < len(row) else "" for row in body],
                            [first + i for i in range(len(body))], label, fill)
    name = path.stem if header is None or len(header) == 1 else f"{path.stem}:{header[index].strip()}"
    return Series(values, name, {"kind": "file", "path": str(path), "sha256": digest, "column": column, "fill": fill})


def read_collection(path: str | Path, columns: str | None = None, id_column: str | int | None = None,
                    column: str | int | None = None, fill: str = "error") -> list[Series]:
    """Many series from one CSV file, each named by its id: the columns of a wide file, or the groups of
    a long one.

    columns: "all" (every numeric column) or a comma-separated list of names or 0-based indices; each
    column is one series, and blank cells before its first value or after its last are not part of it
    (series of different lengths side by side). id_column: the column naming each row's series (long
    format: time runs down the file within each id), with `column` the values (default: the only other
    numeric column). Missing values inside a series follow `fill`, as in read_series.
    """
    if (columns is None) == (id_column is None):
        raise UserError("give one of --columns (a wide CSV: a series per column) and --id-column (a long CSV)")
    path, digest, header, body, first = _read_table(path, fill)
    names = [h.strip() for h in header] if header else []
    lines = np.arange(first, first + len(body))
    collection = []
    if columns is not None:
        if columns.strip().lower() == "all":
            picked = [_pick_column(path, i, header, body) for i in _series_columns(path, body, names)]
            if len(picked) < 1:
                raise UserError(f"{path}: no column holds a series of numbers; name the series with --columns")
        else:
            picked = [_pick_column(path, part.strip(), header, body, "--columns") for part in columns.split(",")]
        for index, label in picked:
            cells = [row[index] if index < len(row) else "" for row in body]
            known = [i for i, cell in enumerate(cells) if _parse_cell(cell) is not None]
            if not known:
                raise UserError(f"{path}: column {label} has no numbers at all; leave it out of --columns")
            keep = slice(known[0], known[-1] + 1)
            values = _column_values(path, cells[keep], list(lines[keep]), label, fill)
            collection.append(Series(values, names[index] if index < len(names) else str(index)))
    else:
        id_index, id_label = _pick_column(path, id_column, header, body, "--id-column")
        others = [i for i in _numeric_columns(body) if i != id_index]
        if column is None and len(others) != 1:
            raise UserError(f"{path}: choose the values with --column (name or 0-based index); the numeric "
                            f"columns besides the ids are {others or 'none'}")
        index, label = _pick_column(path, others[0] if column is None else column, header, body)
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(body):
            key = row[id_index].strip() if id_index < len(row) else ""
            if not key:
                raise UserError(f"{path}, line {lines[i]}: the id column {id_label} is empty; every row needs "
                                "the id of its series")
            groups.setdefault(key, []).append(i)
        for key, rows in groups.items():
            cells = [body[i][index] if index < len(body[i]) else "" for i in rows]
            collection.append(Series(_column_values(path, cells, [int(lines[i]) for i in rows], label, fill), key))
    if len({series.name for series in collection}) < len(collection):
        raise UserError(f"{path}: --columns names a column twice; give each series once")
    source = {"kind": "file", "path": str(path), "sha256": digest, "columns": columns, "id_column": id_column,
              "column": column, "fill": fill}
    for series in collection:
        series.source = source
    return collection


def _series_columns(path: Path, body: list[list[str]], names: list[str]) -> list[int]:
    """The columns of a wide file that hold series: most of their non-blank cells are numbers (a series may
    start late or end early), and they are not a time index (whole numbers rising by a constant step, such
    as years or 0, 1, 2...), which is left out with a line saying so."""
    chosen = []
    for i in range(max(len(r) for r in body)):
        cells = [r[i].strip() for r in body if i < len(r) and r[i].strip()]
        numbers = [_parse_cell(cell) for cell in cells]
        known = np.array([v for v in numbers if v is not None])
        if not cells or 2 * len(known) <= len(cells):
            continue
        steps = np.diff(known)
        if len(known) == len(body) > 2 and np.all(known == np.round(known)) and steps[0] > 0 \
                and np.all(steps == steps[0]):
            info(f"{path}: column {names[i] if i < len(names) else i!r} counts time (a constant step), so it is "
                 "not a series; name the series with --columns to choose otherwise")
            continue
        chosen.append(i)
    return chosen


def _read_table(path: str | Path, fill: str) -> tuple[Path, str, list[str] | None, list[list[str]], int]:
    """(path, SHA-256 of its bytes, header or None, body rows, line number of the first body row)."""
    if fill not in FILLS:
        raise UserError(f"--fill {fill!r}: choose one of {', '.join(FILLS)}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file; pass a CSV file or a file with one number per line")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8 CSV") from None
    rows = list(csv.reader(io.StringIO(text), _dialect(text)))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()  # trailing blank lines are not missing values
    if not rows:
        raise UserError(f"{path} is empty; it needs a column of numbers")
    header = rows[0] if all(_parse_cell(cell) is None for cell in rows[0]) else None
    body, first = (rows[1:], 2) if header else (rows, 1)
    if not body:
        raise UserError(f"{path} has a header but no rows of numbers")
    return path, hashlib.sha256(data).hexdigest(), header, body, first


def _column_values(path: Path, cells: list[str], lines: list[int], label: str, fill: str) -> np.ndarray:
    """The cells as numbers; a missing or non-numeric one is an error naming its line, or interpolated."""
    values = np.empty(len(cells), dtype=np.float64)
    missing = []
    for i, cell in enumerate(cells):
        value = _parse_cell(cell)
        if value is None:
            if fill == "error":
                what = "is empty" if not cell.strip() else f"has {cell.strip()[:40]!r}, not a number"
                raise UserError(f"{path}, line {lines[i]}: column {label} {what}; fix that row, or pass "
                                "--fill interpolate to fill it from its neighbours")
            missing.append(i)
            value = np.nan
        values[i] = value
    if missing:
        if len(missing) == len(values):
            raise UserError(f"{path}: column {label} has no numbers at all; choose another --column")
        values = interpolate_missing(values)
        shown = ", ".join(str(lines[i]) for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
        info(f"{path}: filled {len(missing)} missing value(s) of column {label} by linear interpolation "
             f"(line {shown})")
    return values


def _dialect(text: str):
    """The CSV dialect: sniffed among comma, semicolon and tab; a single column reads as comma-separated."""
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _numeric_columns(body: list[list[str]]) -> list[int]:
    """The columns most of whose first cells are numbers (a bad value must not hide a column)."""
    width = max(len(r) for r in body[:100])
    return [i for i in range(width)
            if 2 * sum(_parse_cell(r[i]) is not None for r in body[:20] if i < len(r)) > min(len(body), 20)]


def _pick_column(path: Path, column: str | int | None, header: list[str] | None,
                 body: list[list[str]], option: str = "--column") -> tuple[int, str]:
    """(index, label for messages) of the column the user asked for, or of the obvious one."""
    names = [h.strip() for h in header] if header else []
    width = max(len(r) for r in body[:100])
    listing = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names)) if names else f"{width} unnamed columns"
    if column is not None:
        text = str(column).strip()
        if text in names:
            index = names.index(text)
        elif text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < max(width, len(names)):
                raise UserError(f"{option} {index} is out of range: {path} has {listing} (indices count from 0)")
        else:
            raise UserError(f"{option} {text!r} is not a column of {path}; its columns are {listing}")
    elif max(width, len(names)) == 1:
        index = 0
    else:
        numeric = _numeric_columns(body)
        if len(numeric) != 1:
            found = "no column is" if not numeric else f"columns {numeric} are"
            raise UserError(f"{path}: {found} numeric in the first rows; choose one with --column "
                            f"(name or 0-based index; columns: {listing})")
        index = numeric[0]
    label = repr(names[index]) if index < len(names) else str(index)
    return index, label


def interpolate_missing(values: np.ndarray) -> np.ndarray:
    """NaNs replaced linearly between their known neighbours (the nearest known value at the ends)."""
    known = np.isfinite(values)
    positions = np.arange(len(values))
    return np.interp(positions, positions[known], values[known])


def load_source(source: dict, path: str | Path | None = None, column: str | int | None = None,
                fill: str | None = None) -> list[Series]:
    """Read a run's data again: the file given (or the one it was trained on), or its synthetic wave; the
    series it holds (one, or the collection of a wide or long CSV, read the same way)."""
    if path is None and source.get("kind") == "synthetic":
        return [synthetic(source["name"], source["length"], source["seed"], source.get("noise", 0.1))]
    if path is None and not (source.get("kind") == "file" and Path(source["path"]).is_file()):
        where = f"its file {source['path']} is gone" if source.get("kind") == "file" else \
            "it was given as values in memory"
        raise UserError(f"the run's data cannot be read again ({where}); pass the data (a file, or the numbers)")
    path = source["path"] if path is None else path
    column = source.get("column") if column is None else column
    fill = fill or source.get("fill") or "error"
    if source.get("columns") is None and source.get("id_column") is None:
        return [read_series(path, column, fill)]
    return read_collection(path, source.get("columns"), source.get("id_column"), column, fill)


def collection_digest(collection: Sequence[Series]) -> str:
    """SHA-256 identifying the data a run was trained on: the values of its one series (values_digest), or
    every series' id and values in order."""
    if len(collection) == 1:
        return values_digest(collection[0].values)
    digest = hashlib.sha256()
    for series in collection:
        digest.update(series.name.encode("utf-8") + b"\0" + values_digest(series.values).encode("ascii"))
    return digest.hexdigest()


# -- split, standardisation, windows ---------------------------------------------------------------
def split_point(n_values: int, val_fraction: float) -> int:
    """How many leading values train: the last round(N * val_fraction) validate."""
    return n_values - int(round(n_values * val_fraction))


@dataclass
class Scaler:
    """Values -> what the model sees: (log(v) if log else v) - mean) / std, fitted on the training part only.

    Global standardisation fits the mean and std; window normalisation removes each window's level
    itself (series_relative.py), so it keeps mean 0 and divides by the mean absolute seasonal
    difference, the typical change of the series from one season to the next (the scale of MASE).
    """

    mean: float
    std: float
    log: bool = False

    @classmethod
    def fit(cls, values: np.ndarray) -> "Scaler":
        std = float(np.std(values))
        # A constant series has nothing to scale: keep its units rather than divide by zero.
        return cls(float(np.mean(values)), std if std > 1e-12 else 1.0)

    @classmethod
    def fit_relative(cls, values: np.ndarray, season: int, log: bool) -> "Scaler":
        z = np.log(values) if log else np.asarray(values, dtype=np.float64)
        change = 0.0
        for lag in dict.fromkeys((season, 1)):  # an exact repetition has no seasonal change: then step to step
            if len(z) > lag and not change > 1e-12:
                change = float(np.mean(np.abs(z[lag:] - z[:-lag])))
        if not change > 1e-12:
            raise UserError(f"the training part of the series is constant ({len(z)} values of {float(values[0]):g}): "
                            "there is nothing to learn; forecast it as that value")
        return cls(0.0, change, log)

    def transform(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if self.log:
            if np.any(values <= 0):
                raise UserError(f"the run models the logarithm of the series, but the values include "
                                f"{float(values[values <= 0][0]):g}; give a positive history, or retrain with "
                                "--transform none")
            values = np.log(values)
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64) * self.std + self.mean
        return np.exp(values) if self.log else values

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Scaler":
        return cls(float(data["mean"]), float(data["std"]), bool(data.get("log", False)))


def train_starts(n_train: int, settings: SeriesConfig) -> np.ndarray:
    """Start of every training window: inputs and targets all inside the first n_train values."""
    return np.arange(max(0, n_train - settings.window - settings.horizon + 1))


def val_starts(n_values: int, n_train: int, settings: SeriesConfig) -> np.ndarray:
    """Start of every validation window: all its targets at n_train or later (inputs may be earlier)."""
    first_target = 1 if settings.target == "every" else settings.window  # offset of a window's first target
    first = max(0, n_train - first_target)
    return np.arange(first, max(first, n_values - settings.window - settings.horizon + 1))


def window_indices(starts: np.ndarray, settings: SeriesConfig) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays into the series: inputs (B, W) and targets (B, W, H) ("every") or (B, H) ("last")."""
    W, H = settings.window, settings.horizon
    inputs = starts[:, None] + np.arange(W)[None, :]
    if settings.target == "every":
        targets = inputs[:, :, None] + 1 + np.arange(H)[None, None, :]
    else:
        targets = starts[:, None] + W + np.arange(H)[None, :]
    return inputs, targets


def check_sizes(n_values: int, n_train: int, settings: SeriesConfig, validation: bool = True) -> None:
    """One-line errors when the series is too short for a training window or (with `validation`) for a
    validation window."""
    need = settings.window + settings.horizon
    if n_train < need:
        raise UserError(f"the training part has {n_train} values but one window needs {need} "
                        f"(--window {settings.window} + --horizon {settings.horizon}); "
                        "lower --window, or give a longer series")
    if validation and n_train < n_values and len(val_starts(n_values, n_train, settings)) == 0:
        if settings.target == "every":
            raise UserError(f"the validation part has {n_values - n_train} values; a many-to-many window needs "
                            f"{settings.window + settings.horizon - 1} (--window + --horizon - 1): raise "
                            "--val-fraction, lower --window, or use --target last")
        raise UserError(f"the validation part has {n_values - n_train} values, fewer than the {settings.horizon} "
                        "a window forecasts (--horizon): raise --val-fraction, or lower --horizon")


def resolve(settings: SeriesConfig, train_parts: Sequence[np.ndarray],
            names: Sequence[str] = ()) -> tuple[SeriesConfig, str]:
    """The automatic settings made concrete for these series (season, horizon, window, normalisation,
    transform) from their training parts, and how the season was found ("given", "detected" or "none
    found"). Many series share one season: the one detected in most of them; those that show another
    (`names` name them) are listed on stderr."""
    season, found = settings.season, "given"
    if not season:
        each = [detect_season(part) or 1 for part in train_parts]
        detected = Counter(m for m in each if m > 1)
        season = detected.most_common(1)[0][0] if detected else 1
        found = "detected" if season > 1 else "none found"
        apart = [f"{name} ({'none' if m == 1 else m})" for name, m in zip(names, each) if m != season]
        if apart:
            info(f"{len(apart)} of the {len(each)} series show another season than the shared one "
                 f"({season if season > 1 else 'none'}): {', '.join(apart[:5])}{' ...' if len(apart) > 5 else ''}; "
                 "one model forecasts series of different seasons poorly: train those apart, or give --season")
    horizon = settings.horizon or min(max(2 * season, AUTO_HORIZON[0]), AUTO_HORIZON[1])
    window = settings.window or max(2 * season, 2 * horizon, 8)
    normalise = settings.normalise
    if normalise == "auto":
        normalise = "window" if settings.target == "last" else "global"
    if len(train_parts) > 1 and normalise != "window":
        raise UserError("many series are each seen on their own scale: they need --normalise window (and "
                        "--target last); train one series at a time for --normalise global")
    positive = all(bool(np.all(part > 0)) for part in train_parts)
    transform = settings.transform
    if transform == "auto" and (normalise != "window" or len(train_parts) == 1):
        transform = "log" if normalise == "window" and positive else "none"  # many: auto, decided per series
    if transform == "log" and not positive:
        raise UserError("--transform log needs a positive series, and this one has values <= 0; "
                        "use --transform none")
    concrete = SeriesConfig(**{**asdict(settings), "season": season, "horizon": horizon, "window": window,
                               "normalise": normalise, "transform": transform})
    return concrete.validate(), found


SIZED_MAX_TIME = 30.0  # seconds: the refit takes at most as many steps again, so a default run takes about 1 minute


def sized_budget(n_windows: int) -> dict:
    """The training budget of a series run given none: steps and evaluations sized to its training windows.

    8 steps per window, 400 to 2000 (a few hundred values get hundreds of steps, not tens of thousands),
    stopped after SIZED_MAX_TIME seconds if that comes first (a long series with a long season), and an
    evaluation every twentieth of the steps (also when the budget is given).
    """
    steps = int(min(max(8 * n_windows, 400), 2000))
    return {"max_steps": steps, "max_time": SIZED_MAX_TIME, "eval_every": max(10, steps // 20)}


# -- seasonality ----------------------------------------------------------------------------------
def detect_season(values: np.ndarray, max_lag: int = 1000) -> int | None:
    """The seasonal period by autocorrelation: the lag of the highest ACF peak, or None when no clear one.

    The linear trend is removed first (a trend makes every lag look correlated). Only lags up to a third
    of the series count, so that at least three cycles back the estimate; a peak must exceed
    max(0.2, 3/sqrt(N)) to stand out of the noise.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 8:
        return None
    t = np.arange(n)
    x = x - np.polyval(np.polyfit(t, x, 1), t)
    if not np.any(np.abs(x) > 1e-12):
        return None
    spectrum = np.fft.rfft(x, 2 * n)  # zero-padded: the circular correlation equals the linear one
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    acf /= acf[0]
    top = min(n // 3, max_lag)
    lags = np.arange(2, top)
    if len(lags) == 0:
        return None
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
    peaks = peaks[acf[peaks] > max(0.2, 3 / math.sqrt(n))]
    return int(peaks[np.argmax(acf[peaks])]) if len(peaks) else None
