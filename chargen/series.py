"""Time series on the recurrent core: the task the one training loop trains, forecasts and backtests.

    train_series(data, run=...)       values -> time split -> standardise (training part only) -> windows
                                      -> SeriesRegressor -> chargen.loop.train_loop() -> checkpoints/<run>/
    load_series(run)                  the model (best weights), its scaler and window settings
    forecast(run, steps, history)     prime on the history, roll forward, de-standardise
    backtest(run, data)               rolling-origin MSE / MAE / MASE next to naive and seasonal-naive

The model, the loop, the checkpoints and the resume logic are the ones the character model uses;
this module adds only what is particular to numbers (see series_data.py for reading and windows).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chargen import loop
from chargen.checkpoint import CONFIG, checkpoints_root, read_config, read_weights, write_config
from chargen.config import ModelConfig, TrainConfig, parse_duration
from chargen.errors import UserError, first_line
from chargen.heads import require_head
from chargen.log import info
from chargen.plot import COLORS, Band, Figure, Line
from chargen.runtime import Distributed
from chargen.series_classical import ClassicalForecasts, available, classical_forecasts
from chargen.series_data import (SERIES_MODEL_DEFAULTS, SERIES_TRAIN_DEFAULTS, SYNTHETIC_LENGTH, Scaler, Series,
                                 SeriesConfig, check_sizes, collection_digest, detect_season, from_values,
                                 load_source, read_collection, read_series, resolve, sized_budget, split_point,
                                 synthetic, train_starts, val_starts, values_digest, window_indices)
from chargen.series_relative import (INTERVALS, MEDIAN, QUANTILES, calibrate, interval_margins, level_and_base,
                                     pinball_loss, relative_inputs)

LOSS_FUNCTIONS = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}
HISTORY_KEPT = 200      # values of the series' end kept in config.json: what `forecast` starts from by default
EVAL_CHUNK = 2048       # windows per forward pass when evaluating
TRAIN_PROBE = 2048      # training windows (evenly spaced) whose MSE each evaluation reports


class SeriesTask:
    """Windows of a standardised series for `chargen.loop.train_loop`: batches by step, loss, validation.

    Windows are independent samples (each starts from a zero state, as it will when forecasting),
    so no state is carried between batches. Epoch e visits every training window once, in an order
    drawn from (seed, e): the step number alone fixes a batch, which makes --resume exact.
    """

    head = "series"
    carries_state = False
    unit = "windows"
    selects_on = ("val_loss",)

    def __init__(self, parts: Sequence[tuple[np.ndarray, int]], settings: SeriesConfig, batch_size: int, seed: int,
                 device: torch.device, std: float = 1.0, dist: Distributed = Distributed()):
        """parts: each series' scaled values and how many of its leading values train; the series are laid
        end to end, and no window crosses from one into the next."""
        self.settings = settings
        self.seed = seed
        self.device = device
        self.std = std  # the scaler's: figures in data units are reported next to the standardised loss
        self.dist = dist
        self.values = torch.as_tensor(np.concatenate([values for values, _ in parts]), dtype=torch.float32,
                                      device=device)
        offsets = np.cumsum([0] + [len(values) for values, _ in parts])
        per_series = [offset + train_starts(n_train, settings) for offset, (_, n_train) in zip(offsets, parts)]
        self.train = np.concatenate(per_series)
        # An epoch visits every series about equally often (N-BEATS samples a series first, then a window):
        # a long series must not drown the short ones it shares the model with. One series: each window once.
        most = max(len(starts) for starts in per_series)
        self.sampled = np.concatenate([np.tile(starts, max(1, round(most / len(starts)))) if len(starts) else starts
                                       for starts in per_series])
        self.val = np.concatenate([offset + val_starts(len(values), n_train, settings)
                                   for offset, (values, n_train) in zip(offsets, parts)])
        self.held_out = len(self.val) > 0
        if not self.held_out:  # --val-fraction 0: report (and select checkpoints by) the training windows
            self.val = self.train
        self.batch_size = min(batch_size, len(self.train))
        if self.batch_size < dist.world:
            raise UserError(f"{len(self.train)} training windows cannot be shared by {dist.world} processes; "
                            "run on one process or give a longer series")
        self.steps_per_epoch = math.ceil(len(self.sampled) / self.batch_size)
        self.items_per_step = self.batch_size
        self.loss_fn = LOSS_FUNCTIONS.get(settings.loss)

    def starts_epoch(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, W, 1) and targets (B, W, H) or (B, H) of the windows starting at `starts`; normalised
        per window: inputs (B, W, 2) and targets relative to the seasonal-naive forecast (series_relative.py)."""
        inputs, targets = window_indices(np.asarray(starts), self.settings)
        x = self.values[torch.as_tensor(inputs, device=self.device)]
        y = self.values[torch.as_tensor(targets, device=self.device)]
        if self.settings.normalise != "window":
            return x.unsqueeze(-1), y
        level, base = level_and_base(x, self.settings.season, self.settings.horizon)
        return relative_inputs(x, level, self.settings.season), y - level - base

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the step's windows."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sampled))
        chosen = self.sampled[order[k * self.batch_size:(k + 1) * self.batch_size]]
        return self.windows(np.array_split(chosen, self.dist.world)[self.dist.rank])

    def loss(self, output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The loss in scaled units; output (B, W, H x Q); many-to-one scores only the last step. A training
        ensemble's output holds each member's predictions, (K x B, ...): every member meets the targets."""
        if output.shape[0] != target.shape[0]:
            target = target.repeat(output.shape[0] // target.shape[0], *[1] * (target.ndim - 1))
        prediction = (output[:, -1] if target.ndim == 2 else output).float()
        if self.settings.loss == "quantile":
            return pinball_loss(prediction, target, reduction)
        return self.loss_fn(prediction, target, reduction=reduction)

    @torch.no_grad()
    def _score(self, model: nn.Module, starts: np.ndarray) -> tuple[float, float, float]:
        """(mean loss, MSE, MAE) over the windows, the last two in data units."""
        loss = sq = ab = 0.0
        count = 0
        for i in range(0, len(starts), EVAL_CHUNK):
            x, y = self.windows(starts[i:i + EVAL_CHUNK])
            output, _ = model(x)
            loss += float(self.loss(output, y, reduction="sum"))
            prediction = point(output[:, -1] if y.ndim == 2 else output, self.settings)
            sq += float(((prediction - y) ** 2).sum())
            ab += float((prediction - y).abs().sum())
            count += y.numel()
        return loss / count, sq / count * self.std ** 2, ab / count * self.std

    def evaluate(self, model: nn.Module) -> dict:
        """Loss, MSE and MAE over every validation window, and the MSE of up to 2048 training windows."""
        was_training = model.training
        model.eval()
        val_loss, val_mse, val_mae = self._score(model, self.val)
        spaced = np.linspace(0, len(self.train) - 1, min(len(self.train), TRAIN_PROBE)).astype(int)
        probe = self.train[np.unique(spaced)]
        train_mse = self._score(model, probe)[1]
        model.train(was_training)
        return {"val_loss": val_loss, "val_mse": val_mse, "val_mae": val_mae, "train_mse": train_mse}

    @torch.no_grad()
    def interval_margins(self, model: nn.Module) -> dict[str, float]:
        """How far each interval must move so that it would have held its share of the validation values
        (series_relative.interval_margins), in scaled units."""
        model.eval()
        x, y = self.windows(self.val)
        quantiles = model(x)[0][:, -1].float().unflatten(-1, (self.settings.horizon, -1))
        return interval_margins(quantiles.cpu().numpy(), y.cpu().numpy())

    def describe(self, metrics: dict) -> str:
        where = "val" if self.held_out else "train (no validation part)"
        units = " of the log" if self.settings.transform == "log" else ""
        return (f"{where} loss {metrics['val_loss']:.4g}, MSE{units} {metrics['val_mse']:.4g}, MAE{units} "
                f"{metrics['val_mae']:.4g}; train MSE {metrics['train_mse']:.4g}")


def point(prediction: torch.Tensor, settings: SeriesConfig) -> torch.Tensor:
    """The point forecast (..., H) of the model's outputs (..., H x Q): the median of a quantile run."""
    return prediction.float().unflatten(-1, (settings.horizon, -1))[..., MEDIAN if settings.loss == "quantile" else 0]


# -- training ---------------------------------------------------------------------------------------
def _read(data: str | Path | Sequence[float] | None, synthetic_kind: str | None, length: int, noise: float,
          seed: int, column: str | int | None, columns: str | None, id_column: str | int | None,
          fill: str) -> list[Series]:
    """The series to train on: one (a file's column, numbers, a synthetic wave) or a file's collection."""
    if data is not None and synthetic_kind is not None:
        raise UserError("give either a data file or --synthetic, not both")
    if synthetic_kind is not None:
        return [synthetic(synthetic_kind, length, seed, noise)]
    if data is None:
        raise UserError("no data: pass a CSV file (or one number per line), or --synthetic sine")
    if not isinstance(data, (str, Path)):
        return [from_values(data)]
    if columns is not None or id_column is not None:
        return read_collection(data, columns, id_column, column, fill)
    return [read_series(data, column, fill)]


def _name(collection: Sequence[Series]) -> str:
    """A run's default name: its one series', or its file's for a collection."""
    if len(collection) == 1:
        return collection[0].name.replace(":", "-")
    return Path(collection[0].source["path"]).stem


def train_series(data: str | Path | Sequence[float] | None = None, run: str | None = None, *,
                 synthetic: str | None = None, length: int = SYNTHETIC_LENGTH, noise: float = 0.1,
                 column: str | int | None = None, columns: str | None = None, id_column: str | int | None = None,
                 fill: str | None = None, checkpoint: str | Path | None = None,
                 settings: SeriesConfig | None = None, model: ModelConfig | None = None,
                 config: TrainConfig | None = None, max_time: str | float | None = None, resume: bool = False,
                 overrides: dict | None = None, should_stop: Callable[[int], bool] | None = None):
    """Train a regressor on a series (a CSV/number file, numbers in memory, a synthetic wave) or on many
    at once: the columns of a wide CSV (`columns`: "all" or "a,b,c") or the series of a long one
    (`id_column`, the values in `column`), one model across all, each series on its own scale.

    fill: "error" (default) or "interpolate" for missing values (on resume: the run's setting).
    settings: windows, horizon, many-to-many/one, loss, validation fraction. run: a name under
    checkpoints/ (default: the data's name); checkpoint: a run directory anywhere. resume: continue
    exactly from trainer_state.pt (the data must be the same); `overrides` may change TrainConfig
    fields such as the budget. Returns chargen.loop.TrainResult.
    """
    from chargen.model import build_model, count_parameters
    from chargen.run_setup import start_run

    config = config or TrainConfig(**SERIES_TRAIN_DEFAULTS)
    if max_time is not None:
        config.max_time = parse_duration(max_time) if isinstance(max_time, str) else float(max_time)
    budget = None
    if resume:
        if checkpoint is None and run is None:
            raise UserError("--resume needs the run: --run NAME or --checkpoint PATH")
        run_dir = Path(checkpoint) if checkpoint is not None else checkpoints_root() / run
    else:
        collection = _read(data, synthetic, length, noise, config.rng_seed, column, columns, id_column,
                           fill or "error")
        run_dir = Path(checkpoint) if checkpoint is not None else checkpoints_root() / (run or _name(collection))
        val_fraction = (settings or SeriesConfig()).validate().val_fraction
        settings, season_found = resolve(settings or SeriesConfig(), [
            series.values[:split_point(len(series.values), val_fraction)] for series in collection],
            [series.name for series in collection] if len(collection) > 1 else ())
        budget = sized_budget(sum(len(train_starts(split_point(len(series.values), val_fraction), settings))
                                  for series in collection))
        if not config.eval_every:
            config = dataclasses.replace(config, eval_every=budget["eval_every"])
        budget = {"max_steps": budget["max_steps"], "max_time": budget["max_time"]}

    with start_run(run_dir, "series", resume=resume, model=model or ModelConfig(**SERIES_MODEL_DEFAULTS),
                   config=config, overrides=overrides, default_budget=budget) as started:
        model_config, config = started.model, started.config
        refitting = False
        if started.resuming:
            about = started.saved["series"]
            collection = [from_values(data)] if data is not None and not isinstance(data, (str, Path)) else \
                load_source(about["source"], data, column, fill)
            if collection_digest(collection) != about["sha256"]:
                raise UserError(f"--resume: this is not the series the run was trained on ({about['name']}, "
                                f"{about['values']} values); pass the same data or start a new --run")
            settings = SeriesConfig.from_dict(about["settings"]).validate()
            season_found, refitting = about.get("season_found", "given"), "refit" in about

        many = len(collection) > 1
        parts, members = [], []
        for series in collection:
            n_fit = split_point(len(series.values), settings.val_fraction)  # what the scaler and phase 1 see
            n_train = len(series.values) if refitting else n_fit
            try:
                check_sizes(len(series.values), n_train, settings, validation=not many)
                log = settings.transform == "log" or (settings.transform == "auto" and bool(np.all(series.values > 0)))
                scaler = Scaler.fit_relative(series.values[:n_fit], settings.season, log) \
                    if settings.normalise == "window" else Scaler.fit(series.values[:n_fit])
                scaled = scaler.transform(series.values)
            except UserError as e:
                if many:  # a message about one series of many names it
                    raise UserError(f"series {series.name!r}: {e}") from None
                raise
            parts.append((scaled, n_train))
            members.append({"id": series.name, "scaler": scaler.to_dict(), "values": len(series.values),
                            "train_values": n_fit, "sha256": values_digest(series.values),
                            "history": [float(v) for v in series.values[-max(HISTORY_KEPT, settings.window):]]})
        model_config.head = "series"
        model_config.inputs = 2 if settings.normalise == "window" else 1
        model_config.outputs = settings.horizon * (len(QUANTILES) if settings.loss == "quantile" else 1)
        # One series: figures in its units; many: in each one's scaled units (comparable across them).
        std = 1.0 if many else Scaler.from_dict(members[0]["scaler"]).std

        def new_task(whole: bool) -> SeriesTask:
            return SeriesTask([(scaled, len(scaled) if whole else n) for scaled, n in parts], settings,
                              config.batch_size, config.rng_seed, started.device, std, started.dist)

        torch.manual_seed(config.rng_seed)
        net = build_model(model_config)
        task = new_task(refitting)
        if many and not refitting:
            unvalidated = [series.name for series, (scaled, n) in zip(collection, parts)
                           if n < len(scaled) and not len(val_starts(len(scaled), n, settings))]
            if len(unvalidated) == len(collection):
                check_sizes(len(parts[0][0]), parts[0][1], settings)  # no series has a validation window: say why
            if unvalidated:
                info(f"{len(unvalidated)} of the {len(collection)} series ({', '.join(unvalidated[:5])}"
                     f"{' ...' if len(unvalidated) > 5 else ''}) are too short for a validation window of horizon "
                     f"{settings.horizon}: they only train")
        if task.batch_size != config.batch_size:
            info(f"--batch-size {config.batch_size} is more than the {len(task.train)} training windows: "
                 f"using {task.batch_size} (full batch)")
            config.batch_size = task.batch_size
        n_values = sum(m["values"] for m in members)
        n_fit = sum(m["train_values"] for m in members)
        run_info = {"series": {
            "name": Path(collection[0].source["path"]).name if many else collection[0].name,
            "source": collection[0].source, "sha256": collection_digest(collection),
            "settings": settings.to_dict(), "season_found": season_found, "values": n_values,
            "train_values": n_fit, "val_values": n_values - n_fit,
            "season": settings.season if settings.season > 1 else None, "members": members,
        }}
        if refitting:
            run_info["series"]["refit"] = started.saved["series"]["refit"]
        mode = "many-to-many" if settings.target == "every" else "many-to-one"
        season = f"season {settings.season} ({season_found})" if settings.season > 1 else "no season"
        logs = sum(bool(m["scaler"]["log"]) for m in members)
        if many and logs:
            logs_shown = f", log for {'all' if logs == len(members) else f'{logs} of {len(members)}'} series"
        else:
            logs_shown = ", log" if logs else ""
        normalised = f"per window{logs_shown}" if settings.normalise == "window" else "standardised"
        what = f"{len(collection)} series of {run_info['series']['name']}" if many else collection[0].name
        n_train = n_values if refitting else n_fit
        started.announce(f"{model_config.layers}x{model_config.hidden} {model_config.cell.upper()} "
                         f"({count_parameters(net):,} parameters) on {what}: {n_train} training / "
                         f"{n_values - n_train} validation values, {len(task.train)} windows of "
                         f"{settings.window} ({mode}, horizon {settings.horizon}, {season}, {normalised}, "
                         f"{settings.loss} loss), batch {task.batch_size}")
        result = started.train(net, task, run_info, should_stop)
        if not refitting and task.held_out and settings.loss == "quantile" and started.dist.is_main:
            net.load_state_dict(read_weights(run_dir))  # the weights validation chose, as saved (by this rank)
            run_info["series"]["interval_margins"] = task.interval_margins(net)
            if not settings.refit:
                saved = read_config(run_dir)
                saved["series"]["interval_margins"] = run_info["series"]["interval_margins"]
                write_config(run_dir, saved)
        if refitting:  # a resumed refit: what the run is weighed by is still what validation chose
            return dataclasses.replace(result, metrics={**run_info["series"]["refit"]["selected_by"],
                                                        "refit_values": n_values})
        if not (settings.refit and task.held_out):
            return result
        # Validation chose the training length; the model that forecasts from the end of the series must
        # also have learnt from its end, so a fresh model trains on every value for that many steps.
        steps = int(result.metrics.get("step") or result.step) or 1
        run_info["series"]["refit"] = {"selected_step": steps, "selected_by": result.metrics,
                                       "train_values": n_values}
        if started.dist.is_main:
            info(f"refit: validation chose {steps} steps; training a fresh model on all {n_values} values for "
                 f"{steps} steps")
        config = dataclasses.replace(config, max_steps=steps, epochs=0.0, max_time=0.0, patience=0, eval_every=0)
        torch.manual_seed(config.rng_seed)
        refit = loop.train_loop(build_model(model_config), new_task(True), config, run_dir, run_info,
                                dist=started.dist, should_stop=should_stop)
        # What a user weighs the run by: the validation figures that chose the length (the refit has none).
        return dataclasses.replace(refit, metrics={**result.metrics, "refit_values": n_values})


# -- using a trained run ----------------------------------------------------------------------------
@dataclass
class Member:
    """One series of a run: its id, its scaler, and the end of its values (what `forecast` starts from)."""

    id: str
    scaler: Scaler
    history: np.ndarray     # (<= HISTORY_KEPT,) data units
    values: int             # how many values it had, and how many of them the first training saw
    train_values: int
    sha256: str


@dataclass
class SeriesRun:
    """A trained series run: the model (best weights, eval mode, CPU), its series and window settings."""

    model: nn.Module
    members: list[Member]
    settings: SeriesConfig
    config: dict
    run_dir: Path

    def describe(self) -> str:
        m = self.config["model"]
        return f"{m['cell']} {m['layers']}x{m['hidden']}"

    def select(self, series_id: str | None) -> list[Member]:
        """The series `series_id` names, or all of them."""
        if series_id is None:
            return self.members
        for member in self.members:
            if member.id == series_id:
                return [member]
        shown = ", ".join(repr(m.id) for m in self.members[:10]) + (" ..." if len(self.members) > 10 else "")
        raise UserError(f"--id {series_id!r}: {self.run_dir.name} has no such series; its series are {shown}")

    def one(self, series_id: str | None) -> Member:
        """The series `series_id` names, or the run's only one."""
        if series_id is None and len(self.members) > 1:
            raise UserError(f"{self.run_dir.name} was trained on {len(self.members)} series; name one with --id "
                            f"(e.g. --id {self.members[0].id})")
        return self.select(series_id)[0]


def load_series(run: str | Path | None = None, checkpoint: str | Path | None = None) -> SeriesRun:
    """Load a series run by name, path or (by default) the most recent run."""
    from chargen.api import load, run_path

    run_dir = run_path(run, checkpoint)
    config = read_config(run_dir)
    require_head(run_dir, config["model"], "series")
    model, _, config = load(run_dir)
    # config.json is read, never trusted: a damaged standardisation or history would give garbage forecasts.
    try:
        about = config["series"]
        settings = SeriesConfig.from_dict(about["settings"]).validate()
        # A run trained before many series kept its one series' scaler and history at the top level.
        listed = about["members"] if "members" in about else [
            {"id": about["name"], "scaler": about["scaler"], "history": about["history"], "values": about["values"],
             "train_values": about["train_values"], "sha256": about["sha256"]}]
        members = [Member(str(m["id"]), Scaler.from_dict(m["scaler"]), np.asarray(m["history"], dtype=np.float64),
                          int(m["values"]), int(m["train_values"]), str(m["sha256"])) for m in listed]
        if not members:
            raise KeyError("members")
    except (KeyError, TypeError, ValueError, UserError) as e:
        detail = f"no {e.args[0]!r} in it" if isinstance(e, KeyError) else first_line(e)
        raise UserError(f"{run_dir / CONFIG}: the series section is damaged ({detail}); the run cannot be "
                        "used — retrain it") from None
    if min(settings.window, settings.horizon, settings.season) < 1:
        raise UserError(f"{run_dir / CONFIG}: the series section is damaged (window {settings.window}, horizon "
                        f"{settings.horizon}, season {settings.season}); the run cannot be used — retrain it")
    margins = about.get("interval_margins") or {}
    if not all(isinstance(v, float) and math.isfinite(v) for v in margins.values()):
        raise UserError(f"{run_dir / CONFIG}: the series section holds non-finite interval margins; the run "
                        "cannot be used — retrain it")
    for m in members:
        if not (math.isfinite(m.scaler.mean) and math.isfinite(m.scaler.std) and m.scaler.std > 0) \
                or m.history.ndim != 1 or len(m.history) == 0 or not np.isfinite(m.history).all():
            raise UserError(f"{run_dir / CONFIG}: the series section holds impossible values (series {m.id!r}: "
                            f"standardisation mean {m.scaler.mean}, std {m.scaler.std}, or a non-finite history); "
                            "the run cannot be used — retrain it")
    return SeriesRun(model, members, settings, config, run_dir)


@torch.no_grad()
def roll(model: nn.Module, contexts: np.ndarray, steps: int, settings: SeriesConfig) -> np.ndarray:
    """Forecast `steps` scaled values after each context row: (B, T) -> (B, steps, Q), the Q = 5 QUANTILES
    of each value for a quantile run, else Q = 1 (the point forecast).

    The model predicts H values at once; beyond them the point forecast is fed back, H at a time.
    "every" (many-to-many): the model learnt to predict after every step from the state it carries, so
    the state is primed on the context once and each block is fed through it.
    "last" (many-to-one): the model learnt whole windows from a zero state, so each block comes from the
    last T values (the context, then the forecasts) run afresh; normalised per window, each such window
    is made relative to its own level and season first.
    """
    x = torch.as_tensor(np.asarray(contexts), dtype=torch.float32)  # (B, T)
    width, horizon, season = x.shape[1], settings.horizon, settings.season
    central = MEDIAN if settings.loss == "quantile" else 0
    blocks: list[torch.Tensor] = []
    fed, hidden = x, None
    made = 0
    while made < steps:
        shift = 0.0
        if settings.normalise == "window":
            level, base = level_and_base(x[:, -width:], season, horizon)
            output, _ = model(relative_inputs(x[:, -width:], level, season))
            shift = (level + base).unsqueeze(-1)                                   # (B, H, 1)
        elif settings.target == "every":
            output, hidden = model(fed.unsqueeze(-1), hidden)
        else:
            output, _ = model(x[:, -width:].unsqueeze(-1))
        block = output[:, -1].float().unflatten(-1, (horizon, -1)) + shift        # (B, H, Q)
        blocks.append(block)
        fed = block[..., central]
        x = torch.cat([x, fed], dim=1)
        made += horizon
    return torch.cat(blocks, dim=1)[:, :steps].numpy()


@dataclass
class Forecast:
    """The history a forecast started from and the forecast values, both in data units."""

    history: np.ndarray
    values: np.ndarray                      # (steps,) the point forecast: the median of a quantile run
    intervals: dict[int, tuple[np.ndarray, np.ndarray]] | None = None   # {80: (low, high), 95: ...}


def forecast(run: str | Path | SeriesRun | None = None, steps: int = 1,
             history: str | Path | Sequence[float] | None = None, column: str | int | None = None,
             fill: str | None = None, series_id: str | None = None) -> Forecast:
    """The `steps` values after the history of one series: the run's only one, or `series_id` of a run
    trained on many (forecast_all for all of them).

    history: a data file (read like the training data, same column(s) by default) or numbers; by
    default the end of the run's own series. The model is primed on its last --window values (all of
    them when fewer) and rolled forward.
    """
    sr = run if isinstance(run, SeriesRun) else load_series(run)
    member = sr.one(series_id)
    return forecast_all(sr, steps, history, column, fill, member.id)[member.id]


def forecast_all(run: str | Path | SeriesRun | None = None, steps: int = 1,
                 history: str | Path | Sequence[float] | None = None, column: str | int | None = None,
                 fill: str | None = None, series_id: str | None = None) -> dict[str, Forecast]:
    """forecast() for every series of the run (or the one `series_id` names), by id, each on its own scale."""
    if steps < 1:
        raise UserError(f"--steps must be at least 1, not {steps}")
    sr = run if isinstance(run, SeriesRun) else load_series(run)
    about = sr.config["series"]
    members = sr.select(series_id)
    given = {} if history is None else {key: series.values for key, series in
                                        _data_by_id(sr, history, column, fill, members).items()}
    window = sr.settings.window
    if steps > sr.settings.horizon and sr.settings.loss == "quantile":
        info(f"values beyond the run's horizon ({sr.settings.horizon}) are forecast from the forecasts before "
             "them: their intervals leave out the uncertainty of those, so they are too narrow")
    results = {}
    for member in members:
        past = member.history if history is None else given[member.id]
        if len(past) == 0:
            raise UserError("the history is empty; give at least one value to start from")
        if len(past) < window:
            info(f"the history{'' if len(sr.members) == 1 else ' of ' + repr(member.id)} has {len(past)} values, "
                 f"fewer than the run's window ({window}): forecasting from the shorter context")
        scaled = roll(sr.model, member.scaler.transform(past[-window:])[None, :], steps, sr.settings)[0]
        forecasts = member.scaler.inverse(calibrate(scaled, about.get("interval_margins")))   # (steps, Q)
        results[member.id] = Forecast(past, *split_quantiles(forecasts, sr.settings))
    return results


def split_quantiles(forecasts: np.ndarray, settings: SeriesConfig) -> tuple[np.ndarray, dict | None]:
    """(..., Q) forecasts -> the point forecast (...) and, for a quantile run, {80: (low, high), 95: ...}."""
    if settings.loss != "quantile":
        return forecasts[..., 0], None
    return forecasts[..., MEDIAN], {level: (forecasts[..., lo], forecasts[..., hi])
                                    for level, (lo, hi) in INTERVALS.items()}


def write_forecast_csv(result: Forecast | dict[str, Forecast], out: TextIO | None = None) -> None:
    """`step,value` rows (step 1 is the value right after the history), full float precision, and for a
    quantile run the interval bounds `low_95,low_80,high_80,high_95`; for forecasts by series id, an `id`
    column first. Default stdout."""
    out = out or sys.stdout
    by_id = result if isinstance(result, dict) else {None: result}
    first = next(iter(by_id.values()))
    out.write("id," * isinstance(result, dict) + "step,value"
              + (",low_95,low_80,high_80,high_95" if first.intervals is not None else "") + "\n")
    for series_id, one in by_id.items():
        bounds = []
        if one.intervals is not None:
            bounds = [one.intervals[95][0], one.intervals[80][0], one.intervals[80][1], one.intervals[95][1]]
        key = [] if series_id is None else [_csv_cell(series_id)]
        for i, value in enumerate(one.values):
            out.write(",".join(key + [str(i + 1), repr(float(value))] + [repr(float(b[i])) for b in bounds]) + "\n")


def _csv_cell(text: str) -> str:
    """A CSV field: quoted when it holds a comma, a quote or a line break."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


# -- backtest ----------------------------------------------------------------------------------------
@dataclass
class Backtest:
    """A rolling-origin backtest: per-method figures, and the arrays a plot needs."""

    summary: dict               # run, data, origins, horizon, season, rows (method, mse, mae, mase) ...
    values: np.ndarray          # the whole series, data units
    n_train: int
    origins: np.ndarray         # (B,) index of the first forecast value of each origin
    forecasts: np.ndarray       # (B, steps) the model's forecasts, data units
    intervals: dict[int, tuple[np.ndarray, np.ndarray]] | None = None  # {80: (low, high) (B, steps)...}
    classical: list[ClassicalForecasts] = dataclasses.field(default_factory=list)  # statsforecast's, if any


def _figures(method: str, prediction: np.ndarray, truth: np.ndarray, scale: float,
             intervals: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """MSE, MAE and MASE of a method's forecasts and, when it has intervals, the share of true values inside each."""
    error = prediction - truth
    mae = float(np.mean(np.abs(error)))
    row = {"method": method, "mse": float(np.mean(error ** 2)), "mae": mae, "mase": mae / scale if scale > 0 else None}
    if intervals is not None:
        row["coverage"] = {str(level): float(np.mean((truth >= low) & (truth <= high)))
                           for level, (low, high) in intervals.items()}
    return row


def backtest(run: str | Path | SeriesRun | None = None, data: str | Path | Sequence[float] | None = None,
             steps: int | None = None, season: int | None = None, stride: int = 1,
             column: str | int | None = None, fill: str | None = None, classical: bool = True,
             series_id: str | None = None) -> Backtest:
    """Rolling-origin evaluation over the validation part of one series of `data` (default: the run's own
    data): the run's only series, or `series_id` of a run trained on many (backtest_all for all).

    From each origin o (every `stride` values of the validation part) the model sees only values before
    o and forecasts `steps` values (default: the run's horizon); so do the naive (last value) and the
    seasonal-naive (the value one season earlier) baselines, and with `classical` (when statsforecast is
    installed) AutoETS, AutoTheta and AutoARIMA fitted on the training part (series_classical.py). MASE
    divides each MAE by the in-sample MAE of the seasonal-naive one-step forecast on the training part
    (plain naive when there is no season).
    """
    sr = run if isinstance(run, SeriesRun) else load_series(run)
    member = sr.one(series_id)
    series = _data_by_id(sr, data, column, fill, [member])[member.id]
    result = _backtest_series(sr, member, series, steps, season, stride, classical and available())
    _warn_if_seen(result.summary)
    return result


def backtest_all(run: str | Path | SeriesRun | None = None, data: str | Path | None = None,
                 steps: int | None = None, season: int | None = None, stride: int = 1,
                 column: str | int | None = None, fill: str | None = None,
                 classical: bool = True) -> tuple[dict, list[Backtest]]:
    """backtest() of every series of the run, and a summary of all: each method's mean MASE over the
    series (M4's measure: every series on its own scale), and the mean share inside each interval."""
    sr = run if isinstance(run, SeriesRun) else load_series(run)
    by_id = _data_by_id(sr, data, column, fill, sr.members)
    classical = classical and available()
    results, left_out = [], []
    for member in sr.members:
        try:
            results.append(_backtest_series(sr, member, by_id[member.id], steps, season, stride, classical))
        except UserError as e:  # too short to backtest: the others still are
            left_out.append(f"series {member.id!r}: {e}")
    if not results:
        raise UserError(left_out[0])
    for reason in left_out:
        info(f"left out of the backtest: {reason}")
    first = results[0].summary
    methods = list(dict.fromkeys(row["method"] for r in results for row in r.summary["rows"]))
    rows = []
    for method in methods:
        mine = [row for r in results for row in r.summary["rows"] if row["method"] == method]
        mase = [row["mase"] for row in mine if row["mase"] is not None]
        row = {"method": method, "mse": None, "mae": None, "mase": float(np.mean(mase)) if mase else None,
               "series": len(mine)}
        covered = [row_["coverage"] for row_ in mine if "coverage" in row_]
        if covered:
            row["coverage"] = {level: float(np.mean([c[level] for c in covered])) for level in covered[0]}
        rows.append(row)
    summary = {"run": first["run"], "data": f"{len(results)} series", "series": len(results),
               "left_out": left_out,
               "origins": sum(r.summary["origins"] for r in results), "stride": stride,
               "horizon": first["horizon"], "season": first["season"], "season_source": first["season_source"],
               "seen_by_refit": any(r.summary["seen_by_refit"] for r in results), "rows": rows,
               "members": [r.summary for r in results]}
    _warn_if_seen(summary)
    return summary, results


def _warn_if_seen(summary: dict) -> None:
    if summary["seen_by_refit"]:
        info("this run was refit on its whole series, so it has seen the values this backtest scores: the "
             "figures are optimistic. For an honest comparison train with --no-refit, or backtest on newer data")


def _data_by_id(sr: SeriesRun, data: str | Path | Sequence[float] | None, column: str | int | None,
                fill: str | None, members: list[Member]) -> dict[str, Series]:
    """The series of `data` (default: the run's own; a file is read like the training data, numbers are one
    series) for each of `members`, by id."""
    if data is not None and not isinstance(data, (str, Path)):
        return {sr.one(members[0].id if len(members) == 1 else None).id: from_values(data)}
    collection = load_source(sr.config["series"]["source"], data, column, fill)
    if len(sr.members) == 1:  # one series: the file's column is it, whatever its name
        return {sr.members[0].id: collection[0]}
    by_id = {series.name: series for series in collection}
    for member in members:
        if member.id not in by_id:
            raise UserError(f"the data has no series {member.id!r}; give the run's series, or name one with --id")
    return by_id


def _backtest_series(sr: SeriesRun, member: Member, series: Series, steps: int | None, season: int | None,
                     stride: int, classical: bool) -> Backtest:
    """backtest() of one series of the run, given its data."""
    about = sr.config["series"]
    settings = sr.settings
    values = series.values
    n_train = split_point(len(values), settings.val_fraction)
    steps = steps or settings.horizon
    if steps < 1 or stride < 1:
        raise UserError(f"--steps and --stride must be at least 1 (got {steps}, {stride})")
    if n_train >= len(values):
        raise UserError("the run was trained with --val-fraction 0: there is no validation part to backtest on")
    if n_train < settings.window + 1:
        raise UserError(f"{series.name}: the training part has {n_train} values, fewer than one window "
                        f"({settings.window}) plus one; give a longer series")
    seen = "refit" in about and values_digest(values[:member.values]) == member.sha256
    origins = np.arange(n_train, len(values) - steps + 1, stride)
    if len(origins) == 0:
        raise UserError(f"the validation part has {len(values) - n_train} values, fewer than --steps {steps}; "
                        "lower --steps")
    season_source = "given" if season else "detected"
    if season is not None and season < 1:
        raise UserError(f"--season must be a positive integer, not {season}")
    if not season and settings.season > 1:  # the run's own season (given or detected when it trained)
        season, season_source = settings.season, about.get("season_found", "given")
    season = season or detect_season(values[:n_train])
    if season is None:
        season_source = "none found"

    contexts = values[origins[:, None] - settings.window + np.arange(settings.window)[None, :]]
    forecasts, intervals = split_quantiles(
        member.scaler.inverse(calibrate(roll(sr.model, member.scaler.transform(contexts), steps, settings),
                                    about.get("interval_margins"))), settings)
    ahead = np.arange(steps)[None, :]
    truth = values[origins[:, None] + ahead]
    naive = np.repeat(values[origins - 1][:, None], steps, axis=1)
    lag = season or 1
    train = values[:n_train]
    scale = float(np.mean(np.abs(train[lag:] - train[:-lag]))) if n_train > lag else 0.0
    rows = [_figures(f"model ({sr.describe()})", forecasts, truth, scale, intervals),
            _figures("naive", naive, truth, scale)]
    if season:
        seasonal = values[origins[:, None] + ahead - season * (ahead // season + 1)]
        rows.append(_figures(f"seasonal naive (m={season})", seasonal, truth, scale))
    others = classical_forecasts(values, n_train, origins, steps, season) if classical else []
    rows += [_figures(other.name, other.values, truth, scale, other.intervals) for other in others]
    summary = {"run": str(sr.run_dir), "data": series.name, "values": len(values), "train_values": n_train,
               "origins": len(origins), "first_origin": int(origins[0]), "stride": stride, "horizon": steps,
               "season": season, "season_source": season_source, "mase_scale": scale, "mase_lag": lag,
               "seen_by_refit": seen,
               "rows": rows}
    return Backtest(summary, values, n_train, origins, forecasts, intervals, others)


def print_backtest(summary: dict, out: TextIO | None = None) -> None:
    """A backtest's summary (Backtest.summary, or backtest_all's) as a rich table, on the console every
    command shows text through (`display.make_console`: colour only on a terminal, none under NO_COLOR; no
    markup, so a file name such as data[x].csv is shown as it is). The best MASE is in bold. out: default
    the standard output of the moment (not of import time)."""
    from rich.table import Table

    from chargen.display import make_console

    s = summary
    many = "members" in s
    season = f"season {s['season']} ({s['season_source']})" if s["season"] else "no season found"
    if many:
        caption = (f"{s['origins']} origins in all (every {s['stride']}), horizon {s['horizon']}, {season}; "
                   "MASE of each series on its own scale (its training part's naive MAE), then the mean")
    else:
        caption = (f"{s['origins']} origins from value {s['first_origin']} (every {s['stride']}), "
                   f"horizon {s['horizon']}, {season}; MASE = MAE / {s['mase_scale']:.4g}, "
                   f"the lag-{s['mase_lag']} naive MAE of the training part")
    table = Table(title=f"Backtest of {Path(s['run']).name} on {s['data']}", caption=caption)
    table.add_column("method", no_wrap=True)
    levels = sorted({int(k) for row in s["rows"] for k in row.get("coverage", {})})
    figures = ["mean MASE"] if many else ["MSE", "MAE", "MASE"]
    for name in figures + [f"in {level}% interval" for level in levels]:
        table.add_column(name, justify="right")
    scored = [row["mase"] for row in s["rows"] if row["mase"] is not None]
    for row in s["rows"]:
        mase = "-" if row["mase"] is None else f"{row['mase']:.3f}"
        shown = [mase] if many else [f"{row['mse']:.4g}", f"{row['mae']:.4g}", mase]
        covered = [f"{row['coverage'][str(level)]:.0%}" if str(level) in row.get("coverage", {}) else ""
                   for level in levels]
        table.add_row(row["method"], *shown, *covered,
                      style="bold" if scored and row["mase"] == min(scored) else None)
    make_console(out).print(table, soft_wrap=False)  # the caption wraps to the table's width


# -- plots -----------------------------------------------------------------------------------------
def _interval_bands(x: np.ndarray, intervals: dict | None, joined: float) -> list[Band]:
    """The 95% and 80% intervals (widest first, so the narrower one is drawn over it) as bands over x, each
    starting at `joined` (the last value seen) so that it opens from the line."""
    return [Band(x, np.concatenate([[joined], low]), np.concatenate([[joined], high]), f"{level}% interval",
                 COLORS["forecast"], 0.15 if level == 95 else 0.3)
            for level, (low, high) in sorted((intervals or {}).items(), reverse=True)]


def forecast_figure(result: Forecast, title: str, shown: int = HISTORY_KEPT) -> Figure:
    """History (its last `shown` values), forecast and its intervals, on one x axis (0 = the first forecast)."""
    past = result.history[-shown:]
    x_past = np.arange(-len(past), 0)
    # The forecast line starts at the last history value so the two join.
    x_next = np.arange(-1, len(result.values))
    y_next = np.concatenate([past[-1:], result.values])
    return Figure([Line(x_past, past, "history", COLORS["history"], "."),
                   Line(x_next, y_next, "forecast", COLORS["forecast"], "*")],
                  _interval_bands(x_next, result.intervals, float(past[-1])), title)


def backtest_figure(result: Backtest, title: str, shown: int = HISTORY_KEPT) -> Figure:
    """The training tail, the validation truth, and the forecasts (with intervals) from non-overlapping
    origins."""
    values, n = result.values, result.n_train
    start = max(0, n - shown)
    figure = Figure([Line(np.arange(start, n), values[start:n], "history", COLORS["history"], "."),
                     Line(np.arange(n - 1, len(values)), values[n - 1:], "truth", COLORS["truth"], "o")],
                    title=title)
    horizon = result.forecasts.shape[1]
    for k, origin in enumerate(result.origins):
        if (origin - n) % horizon == 0:
            x = np.arange(origin - 1, origin + horizon)
            figure.lines.append(Line(x, np.concatenate([values[origin - 1:origin], result.forecasts[k]]),
                                     "forecast", COLORS["forecast"], "*"))
            intervals = {level: (low[k], high[k]) for level, (low, high) in (result.intervals or {}).items()}
            figure.bands += _interval_bands(x, intervals, float(values[origin - 1]))
    return figure


def show_plot(figure: Figure, path: str | Path | None) -> None:
    """Write the figure to a file when asked (format by suffix); on a terminal, also draw it as text on stderr."""
    from chargen.plot import text_plot, write_figure

    if path is not None:
        info(f"plot written to {write_figure(path, figure)}")
    if sys.stderr.isatty():
        print(text_plot(figure.lines), file=sys.stderr)
