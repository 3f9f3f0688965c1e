"""Time series: the regressor head on the shared core and loop, data handling, forecasts, backtests, CLI."""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from chargen import loop
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import UserError
from chargen.plot import Band, Figure, Line, text_plot, write_figure
from chargen.series import (Forecast, SeriesTask, backtest, forecast, load_series, roll, train_series,
                            write_forecast_csv)
from chargen.series_data import (Scaler, SeriesConfig, detect_season, read_collection, read_series, split_point,
                                 synthetic, train_starts, val_starts, window_indices)

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = dict(hidden=16, layers=1, embedding=8)
ADAM = dict(warmup_steps=0, lr_floor=1.0, weight_decay=0.0)
GLOBAL = dict(normalise="global", loss="mse", refit=False)  # the plain regressor: standardised once, MSE


def tutorials():
    """examples/rnn_tutorials.py as a module: the tests run exactly what the example runs."""
    spec = importlib.util.spec_from_file_location("rnn_tutorials", REPO / "examples" / "rnn_tutorials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory) -> Path:
    """A small many-to-many RNN trained on the sine through the command line (shared, read-only)."""
    from conftest import run_cli

    run_dir = tmp_path_factory.mktemp("series") / "sine"
    r = run_cli("series", "train", "--synthetic", "sine", "--length", "400", "--checkpoint", str(run_dir),
                "--window", "40", "--cell", "rnn", "--hidden", "24", "--layers", "1", "--embedding", "8",
                "--batch-size", "1000", "--epochs", "80", "--lr", "0.01", "--warmup-steps", "0",
                "--lr-floor", "1", "--weight-decay", "0", "--rng-seed", "3", "--target", "every", "--horizon", "1",
                "--loss", "mse", "--no-refit", timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # training prints nothing on stdout
    assert "full batch" in r.stderr and "best validation MSE" in r.stderr
    return run_dir


# -- the shared core and loop ------------------------------------------------------------------------
def test_regressor_shares_the_core_module_and_the_one_training_loop(monkeypatch, tmp_path):
    from chargen.model import CharLM, RecurrentCore, SeriesRegressor, build_model

    regressor = build_model(ModelConfig(head="series", outputs=3, **TINY_MODEL))
    char = CharLM(ModelConfig(vocab_size=10, **TINY_MODEL))
    assert isinstance(regressor, SeriesRegressor)
    assert type(regressor.core) is type(char.core) is RecurrentCore

    real, calls = loop.train_loop, []

    def spy(model, task, *args, **kwargs):
        calls.append((model, task))
        return real(model, task, *args, **kwargs)

    monkeypatch.setattr(loop, "train_loop", spy)
    result = train_series(synthetic="sine", length=200, checkpoint=tmp_path / "run",
                          settings=SeriesConfig(window=10, horizon=3, target="last"),
                          model=ModelConfig(**TINY_MODEL), config=TrainConfig(max_steps=4, batch_size=8))
    (model, task), (refit_model, refit_task) = calls  # chosen on validation, then refit on every value
    assert all(isinstance(m, SeriesRegressor) for m in (model, refit_model))
    assert all(isinstance(t, SeriesTask) for t in (task, refit_task))
    assert task.held_out and not refit_task.held_out and len(refit_task.train) > len(task.train)
    assert result.step == 4 and result.status == "finished"
    assert {"config.json", "model.safetensors", "trainer_state.pt"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert model.head.out_features == 3 * 5  # --horizon values, 5 quantiles of each


def test_without_options_the_model_and_its_budget_are_sized_to_the_series(tmp_path):
    """The series defaults are a small model's, not the character model's, and with no budget given the
    steps follow the number of training windows: 8 each, 400 to 2000 (a few hundred values must not get
    tens of thousands of steps) and at most 30 s, evaluated every twentieth, stopped after 8 evaluations
    without progress."""
    from chargen.series_data import SERIES_MODEL_DEFAULTS, sized_budget

    result = train_series(synthetic="sine", length=120, checkpoint=tmp_path / "run",
                          settings=SeriesConfig(window=20, horizon=4, refit=False))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: config["model"][k] for k in SERIES_MODEL_DEFAULTS} == SERIES_MODEL_DEFAULTS
    windows = len(train_starts(config["series"]["train_values"], SeriesConfig(window=20, horizon=4)))
    assert windows == 73 and config["train"]["max_steps"] == sized_budget(windows)["max_steps"] == 8 * 73
    assert config["train"]["eval_every"] == 8 * 73 // 20 and config["train"]["patience"] == 8
    assert config["train"]["epochs"] == 0 and config["train"]["max_time"] == 30
    assert result.step <= 8 * 73
    given = train_series(synthetic="sine", length=120, checkpoint=tmp_path / "given", max_time=600,
                         settings=SeriesConfig(window=20, horizon=4, refit=False), config=TrainConfig(max_steps=5))
    saved = json.loads((tmp_path / "given" / "config.json").read_text())["train"]
    assert given.step == 5 and (saved["max_steps"], saved["max_time"]) == (5, 600)  # a budget given is kept whole
    assert sized_budget(30)["max_steps"] == 400 and sized_budget(10_000)["max_steps"] == 2000  # the bounds


def test_resume_is_exact(tmp_path):
    """Stopped at step 5 and resumed, a run ends with the weights of one that ran 10 steps straight."""
    from chargen.checkpoint import read_state
    from chargen.loop import TrainingStopped

    kwargs = dict(synthetic="noisy-sine", length=300, settings=SeriesConfig(window=12),
                  model=ModelConfig(dropout=0.2, **{**TINY_MODEL, "layers": 2}),
                  config=TrainConfig(max_steps=10, batch_size=16, eval_every=4))
    straight = train_series(checkpoint=tmp_path / "straight", **kwargs)
    assert straight.metrics["refit_values"] == 300
    # Resumed once it has finished (its refit too), the run still reports what validation chose.
    again = train_series(checkpoint=tmp_path / "straight", resume=True)
    assert again.metrics == straight.metrics
    with pytest.raises(TrainingStopped):
        train_series(checkpoint=tmp_path / "resumed", should_stop=lambda step: step == 5, **kwargs)
    train_series(checkpoint=tmp_path / "resumed", resume=True)
    a, b = read_state(tmp_path / "straight")["model"], read_state(tmp_path / "resumed")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="not the series"):
        train_series(list(range(300)), checkpoint=tmp_path / "resumed", resume=True)


# -- data: split, standardisation, windows ---------------------------------------------------------------
def test_standardisation_round_trip_and_it_is_stored_with_the_run(tmp_path):
    values = np.concatenate([np.linspace(0, 10, 80), np.full(20, 1000.0)])  # validation far off the training range
    scaler = Scaler.fit(values[:split_point(len(values), 0.2)])
    assert scaler.mean == pytest.approx(5.0) and scaler.std == pytest.approx(np.std(np.linspace(0, 10, 80)))
    np.testing.assert_allclose(scaler.inverse(scaler.transform(values)), values, rtol=1e-12)
    assert Scaler.fit(np.full(5, 3.0)).std == 1.0  # a constant series keeps its units

    train_series(values, checkpoint=tmp_path / "run", settings=SeriesConfig(window=10, horizon=1, **GLOBAL),
                 model=ModelConfig(**TINY_MODEL), config=TrainConfig(max_steps=1))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["series"]
    assert saved["members"][0]["scaler"] == scaler.to_dict() and saved["train_values"] == 80
    assert load_series(tmp_path / "run").members[0].scaler == scaler


@pytest.mark.parametrize("target,horizon", [("every", 1), ("every", 3), ("last", 1), ("last", 4)])
def test_no_look_ahead_in_the_split(target, horizon):
    settings = SeriesConfig(window=7, horizon=horizon, target=target)
    n, n_train = 60, 48
    inputs, targets = window_indices(train_starts(n_train, settings), settings)
    assert inputs.max() < n_train and targets.max() < n_train        # training never touches validation
    assert targets.max() == n_train - 1                              # ... but uses all of its own part
    v_inputs, v_targets = window_indices(val_starts(n, n_train, settings), settings)
    assert v_targets.min() == n_train and v_targets.max() == n - 1   # every validation value is a target
    assert v_inputs.max() < n                                        # ... and only validation values are

    # Changing the validation part changes neither the scaler nor any training batch.
    values = np.sin(np.arange(n) * 0.3)
    altered = values.copy()
    altered[n_train:] = 50.0
    tasks = []
    for v in (values, altered):
        scaler = Scaler.fit(v[:n_train])
        tasks.append(SeriesTask([(scaler.transform(v), n_train)], settings, 8, seed=1, device=torch.device("cpu")))
    for step in range(2 * tasks[0].steps_per_epoch):
        (x0, y0), (x1, y1) = tasks[0].batch(step), tasks[1].batch(step)
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_an_epoch_visits_every_training_window_once():
    settings = SeriesConfig(window=5, horizon=1, target="last", **GLOBAL)
    task = SeriesTask([(np.arange(50, dtype=float), 40)], settings, 8, seed=0, device=torch.device("cpu"))
    firsts = torch.cat([task.batch(s)[0][:, 0, 0] for s in range(task.steps_per_epoch)])
    assert sorted(firsts.tolist()) == list(range(len(task.train)))
    x, y = task.batch(0)  # many-to-one: the targets are the values after each window
    assert torch.equal(y[:, 0], x[:, -1, 0] + 1)


def test_too_short_series_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="training part has 8 values but one window needs 11"):
        train_series(list(range(10)), checkpoint=tmp_path / "r", settings=SeriesConfig(window=10, horizon=1))
    with pytest.raises(UserError, match="validation part has 10 values"):
        train_series(list(range(50)), checkpoint=tmp_path / "r",
                     settings=SeriesConfig(window=20, horizon=1, target="every"))


def test_season_is_detected_by_autocorrelation():
    assert detect_season(synthetic("sine").values) == 63  # period 2*pi / 0.1 = 62.8 values
    t = np.arange(240)
    assert detect_season(0.5 * t + 10 * np.sin(2 * np.pi * t / 12)) == 12  # a trend does not hide it
    assert detect_season(np.random.default_rng(0).normal(size=500)) is None


# -- reading CSV ---------------------------------------------------------------------------------------------
def test_csv_column_by_name_or_index_with_header_detection(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text("time,load,temp\n2024-01-01,1.5,3\n2024-01-02,2.5,4\n2024-01-03,4.0,5\n")
    assert read_series(path, "load").values.tolist() == [1.5, 2.5, 4.0]
    assert read_series(path, 2).values.tolist() == [3, 4, 5]
    with pytest.raises(UserError, match="columns \\[1, 2\\] are numeric.*--column"):
        read_series(path)
    with pytest.raises(UserError, match="'lod' is not a column.*'load'"):
        read_series(path, "lod")
    plain = tmp_path / "numbers.txt"
    plain.write_text("3\n1.5e2\n-2\n\n")
    assert read_series(plain).values.tolist() == [3, 150, -2]   # no header, trailing blank line ignored
    semi = tmp_path / "semi.csv"
    semi.write_text("a;b\nx;1\ny;2\n")
    assert read_series(semi).values.tolist() == [1, 2]          # the only numeric column, ';' sniffed


def test_csv_bad_values_name_the_line_or_are_interpolated(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("day,value\n1,10\n2,oops\n3,30\n4,\n5,50\n")
    with pytest.raises(UserError, match=r"line 3: column 'value' has 'oops', not a number.*--fill interpolate"):
        read_series(path, "value")
    assert read_series(path, "value", fill="interpolate").values.tolist() == [10, 20, 30, 40, 50]
    plain = tmp_path / "plain.txt"
    plain.write_text("1\n2\n3\n4\n\n6\n")  # a blank line inside the series is a missing value
    with pytest.raises(UserError, match="line 5: column 0 is empty"):
        read_series(plain)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_series(empty)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"1\n\xff\xfe2\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_series(binary)


# -- forecasting -------------------------------------------------------------------------------------------
def test_rolling_forward_feeds_predictions_back_exactly():
    """Many-to-many: each forecast is what one forward pass over context + earlier forecasts predicts;
    many-to-one: each block of H is the prediction from the last window of values; normalised per window:
    each block is the network's quantiles over the relative window, plus the window's level and
    seasonal-naive base."""
    torch.manual_seed(0)
    from chargen.model import build_model
    from chargen.series_relative import level_and_base, relative_inputs

    many = build_model(ModelConfig(head="series", cell="gru", **TINY_MODEL)).eval()
    context = np.random.default_rng(0).normal(size=(2, 9))
    rolled = roll(many, context, 5, SeriesConfig(window=9, horizon=1, target="every", **GLOBAL))[..., 0]
    assert rolled.shape == (2, 5)
    full = torch.as_tensor(np.concatenate([context, rolled[:, :-1]], axis=1), dtype=torch.float32)
    with torch.no_grad():
        one_pass = many(full.unsqueeze(-1))[0][:, 8:, 0].numpy()
    np.testing.assert_allclose(rolled, one_pass, atol=1e-5)

    one = build_model(ModelConfig(head="series", outputs=3, **TINY_MODEL)).eval()
    rolled = roll(one, context, 7, SeriesConfig(window=9, horizon=3, target="last", **GLOBAL))[..., 0]
    assert rolled.shape == (2, 7)
    with torch.no_grad():
        first = one(torch.as_tensor(context, dtype=torch.float32).unsqueeze(-1))[0][:, -1].numpy()
        window = np.concatenate([context, rolled[:, :3]], axis=1)[:, -9:]
        second = one(torch.as_tensor(window, dtype=torch.float32).unsqueeze(-1))[0][:, -1].numpy()
    np.testing.assert_allclose(rolled[:, :3], first, atol=1e-6)
    np.testing.assert_allclose(rolled[:, 3:6], second, atol=1e-6)

    relative = build_model(ModelConfig(head="series", inputs=2, outputs=3 * 5, **TINY_MODEL)).eval()
    settings = SeriesConfig(window=9, horizon=3, season=4, target="last", normalise="window")
    rolled = roll(relative, context, 6, settings)
    assert rolled.shape == (2, 6, 5)
    x = torch.as_tensor(context, dtype=torch.float32)
    with torch.no_grad():
        level, base = level_and_base(x, 4, 3)
        quantiles = relative(relative_inputs(x, level, 4))[0][:, -1].unflatten(-1, (3, 5))
    np.testing.assert_allclose(rolled[:, :3], (quantiles + (level + base)[..., None]).numpy(), atol=1e-5)
    # the seasonal-naive base: value k ahead is the one a season before it, relative to the last season's mean
    np.testing.assert_allclose((level + base).numpy(), context[:, [5, 6, 7]], atol=1e-6)


def test_forecast_continues_the_sine_in_data_units(sine_run):
    result = forecast(sine_run, 30)  # from the end of the run's own series (kept in config.json)
    assert result.values.shape == (30,)
    truth = np.sin(np.arange(400, 430) * 0.1)
    assert np.max(np.abs(result.values - truth)) < 0.15
    # A history file gives the same forecast as the same numbers in memory.
    past = np.sin(np.arange(100) * 0.1 + 2.0)
    file = sine_run.parent / "past.txt"
    file.write_text("\n".join(str(float(v)) for v in past) + "\n")
    from_file = forecast(sine_run, 20, history=file).values
    np.testing.assert_allclose(from_file, forecast(sine_run, 20, history=past.tolist()).values)
    assert np.max(np.abs(from_file - np.sin(np.arange(100, 120) * 0.1 + 2.0))) < 0.15
    with pytest.raises(UserError, match="--steps"):
        forecast(sine_run, 0)


def test_forecast_csv_format():
    import io

    out = io.StringIO()
    write_forecast_csv(Forecast(np.zeros(3), np.array([0.5, -1.25])), out)
    assert out.getvalue() == "step,value\n1,0.5\n2,-1.25\n"
    out = io.StringIO()
    bounds = {80: (np.array([0.0, -2.0]), np.array([1.0, 0.0])), 95: (np.array([-1.0, -3.0]), np.array([2.0, 1.5]))}
    write_forecast_csv(Forecast(np.zeros(3), np.array([0.5, -1.25]), bounds), out)
    assert out.getvalue() == ("step,value,low_95,low_80,high_80,high_95\n"
                              "1,0.5,-1.0,0.0,1.0,2.0\n2,-1.25,-3.0,-2.0,0.0,1.5\n")


def test_backtest_baselines_on_an_exactly_periodic_series(tmp_path):
    period = [0.0, 1.0, 3.0, 2.0, -1.0]
    values = np.tile(period, 40)  # 200 values, season 5
    train_series(values, checkpoint=tmp_path / "run", settings=SeriesConfig(window=10, horizon=2, target="last"),
                 model=ModelConfig(**TINY_MODEL), config=TrainConfig(max_steps=2))
    assert load_series(tmp_path / "run").settings.season == 5  # detected when it trained
    with pytest.raises(UserError, match="cannot be read again"):
        backtest(tmp_path / "run", steps=3)  # numbers given in memory are not kept with the run
    result = backtest(tmp_path / "run", values, steps=3, classical=False)
    s = result.summary
    assert (s["season"], s["season_source"], s["origins"], s["first_origin"]) == (5, "detected", 38, 160)
    model, naive, seasonal = s["rows"]
    assert seasonal["method"] == "seasonal naive (m=5)" and seasonal["mse"] == 0 and seasonal["mae"] == 0
    errors = np.concatenate([values[o:o + 3] - values[o - 1] for o in range(160, 198)])
    assert naive["mse"] == pytest.approx(np.mean(errors ** 2))
    # MASE divides by the training part's lag-5 naive MAE, which is 0 on an exact repetition: undefined.
    assert s["mase_lag"] == 5 and s["mase_scale"] == 0.0 and naive["mase"] is None
    assert result.forecasts.shape == (38, 3)
    assert set(model["coverage"]) == {"80", "95"} and 0 <= model["coverage"]["80"] <= model["coverage"]["95"] <= 1
    assert backtest(tmp_path / "run", values.tolist(), steps=3, season=2,
                    classical=False).summary["season_source"] == "given"


def test_the_classical_models_forecast_from_the_same_origins_after_fitting_on_the_training_part(tmp_path):
    """What `series eval` shows beside the model: statsforecast's models, fitted on the training part only,
    each forecast made from the values before its origin, with interval coverage."""
    from statsforecast.models import AutoETS

    values = trend_and_season(200, noise=1.0)
    train_series(values, checkpoint=tmp_path / "run", settings=SeriesConfig(horizon=6, season=12),
                 model=ModelConfig(**TINY_MODEL), config=TrainConfig(max_steps=2))
    result = backtest(tmp_path / "run", values, stride=5)
    methods = [row["method"] for row in result.summary["rows"]]
    assert methods[3:] == ["AutoETS (m=12)", "AutoTheta (m=12)", "AutoARIMA (m=12)"]
    assert [c.name for c in result.classical] == methods[3:]
    n = result.n_train
    assert n == 160 and list(result.origins) == list(range(160, 195, 5))
    ets = AutoETS(season_length=12).fit(values[:n])
    for k in (0, len(result.origins) - 1):
        expected = ets.forward(y=values[:result.origins[k]], h=6, level=[80])
        np.testing.assert_allclose(result.classical[0].values[k], expected["mean"], rtol=1e-6)
        np.testing.assert_allclose(result.classical[0].intervals[80][0][k], expected["lo-80"], rtol=1e-6)
    truth = values[result.origins[:, None] + np.arange(6)]
    ets_row = result.summary["rows"][3]
    assert ets_row["mae"] == pytest.approx(np.mean(np.abs(result.classical[0].values - truth)))
    assert 0 <= ets_row["coverage"]["80"] <= ets_row["coverage"]["95"] <= 1
    # A clean trend and season is what ETS models exactly: far better than the seasonal naive.
    assert ets_row["mase"] < 0.5 * result.summary["rows"][2]["mase"]


def test_without_statsforecast_eval_says_how_to_add_the_classical_models(tmp_path, monkeypatch, capsys):
    values = trend_and_season(200, noise=1.0)
    train_series(values, checkpoint=tmp_path / "run", settings=SeriesConfig(horizon=6, season=12),
                 model=ModelConfig(**TINY_MODEL), config=TrainConfig(max_steps=2))
    capsys.readouterr()
    monkeypatch.setitem(__import__("sys").modules, "statsforecast", None)
    result = backtest(tmp_path / "run", values, stride=5)
    assert [row["method"] for row in result.summary["rows"]][1:] == ["naive", "seasonal naive (m=12)"]
    assert result.classical == []
    assert 'once statsforecast is installed: pip install "chargen[classical]"' in capsys.readouterr().err


def test_a_char_run_is_refused_by_series_commands(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": 1, "model": ModelConfig(vocab_size=5).to_dict()}))
    with pytest.raises(UserError, match="character-model run"):
        load_series(tmp_path)


# -- plots -------------------------------------------------------------------------------------------------
def squares_figure() -> Figure:
    x = np.arange(9, 15)
    return Figure([Line(np.arange(10), np.arange(10) ** 2, "history"), Line(x, np.linspace(81, 50, 6), "forecast")],
                  [Band(x, np.linspace(75, 40, 6), np.linspace(87, 60, 6), "80% interval")], "squares")


@pytest.mark.parametrize("suffix,magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_a_figure_is_written_in_the_format_of_its_suffix(suffix, magic, tmp_path):
    path = write_figure(tmp_path / f"plot.{suffix.upper()}", squares_figure())
    assert path.read_bytes().startswith(magic)
    if suffix == "svg":  # matplotlib names each text it draws in a comment: the title and every legend entry
        svg = path.read_text()
        assert all(f"<!-- {word} -->" in svg for word in ("squares", "history", "forecast", "80% interval"))


def test_a_figure_format_matplotlib_cannot_write_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(UserError, match=r"ending in \.png, \.svg or \.pdf"):
        write_figure(tmp_path / "plot.jpg", squares_figure())
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_a_plot_is_one_line_saying_how_to_install_it(sine_run, tmp_path, monkeypatch, capsys):
    from chargen import cli

    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = cli.main(["series", "forecast", "--checkpoint", str(sine_run), "--plot", str(tmp_path / "f.png")])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and not (tmp_path / "f.png").exists()
    assert err == "chargen: error: --plot needs matplotlib, which is not installed: pip install \"chargen[plot]\"\n"


def test_forecast_figure_shades_both_intervals_from_the_last_value():
    from chargen.series import forecast_figure

    history, values = np.arange(30.0), np.array([30.0, 31.0, 32.0])
    intervals = {80: (values - 1, values + 1), 95: (values - 2, values + 2)}
    figure = forecast_figure(Forecast(history, values, intervals), "t")
    assert [band.label for band in figure.bands] == ["95% interval", "80% interval"]  # the wider one underneath
    wide = figure.bands[0]
    np.testing.assert_array_equal(wide.x, [-1, 0, 1, 2])
    np.testing.assert_array_equal(wide.low, [29, 28, 29, 30])
    np.testing.assert_array_equal(wide.high, [29, 32, 33, 34])


def test_text_plot_shows_both_lines_and_the_range():
    text = text_plot([Line(np.arange(20), np.sin(np.arange(20) * 0.3), "history", mark="."),
                      Line(np.arange(19, 30), np.linspace(0, 2, 11), "forecast", mark="*")])
    lines = text.splitlines()
    assert lines[0].lstrip().startswith("2 |") and "*" in lines[0]          # the top row holds the maximum, 2
    assert "." in text and "* forecast" in lines[-1] and ". history" in lines[-1]
    assert len(lines) == 14


# -- the tutorials ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("cell,limit", [("rnn", 1.5e-3), ("lstm", 2.5e-3)])
def test_tutorial_sine_many_to_many_reaches_the_reported_mse(cell, limit, tmp_path):
    """Reported: ~6e-4 (RNN) and ~1e-3 (LSTM); held to 2.5x that."""
    m = tutorials().sine_many_to_many(cell, tmp_path)
    assert m["steps"] == 100 and m["val_mse"] < limit and m["train_mse"] < limit


@pytest.mark.slow
def test_tutorial_next_value_many_to_one(tmp_path):
    m = tutorials().next_value(tmp_path)
    assert m["steps"] == 30 * 12  # 750 windows in batches of 64: 12 steps an epoch
    assert m["train_mse"] < 1e-4 and m["val_mse"] < 1e-4  # measured: ~2e-6 for both


def test_tutorial_toy_sequence(tmp_path):
    m = tutorials().toy(tmp_path)
    assert m["answers"][(1, 2, 3, 4)] == pytest.approx(5, abs=0.01)
    assert m["answers"][(2, 3, 4)] == pytest.approx(5, abs=0.5)


# -- the command line ----------------------------------------------------------------------------------------
def test_cli_forecast_eval_and_plot(sine_run, cli, tmp_path):
    r = cli("series", "forecast", "--checkpoint", str(sine_run), "--steps", "25", "--plot", str(tmp_path / "f.png"))
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0] == "step,value" and len(rows) == 26
    steps, values = zip(*(map(float, row.split(",")) for row in rows[1:]))
    assert steps == tuple(range(1, 26))
    np.testing.assert_allclose(values, np.sin(np.arange(400, 425) * 0.1), atol=0.15)
    png = (tmp_path / "f.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert png[12:16] == b"IHDR" and (width, height) == (990, 462)  # 9 x 4.2 inches at 110 dpi
    assert "plot written to" in r.stderr

    r = cli("series", "eval", "--checkpoint", str(sine_run), "--steps", "5", "--json", "--no-classical")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["season"] == 63 and s["origins"] == 76 and [row["method"] for row in s["rows"]][1:] == \
        ["naive", "seasonal naive (m=63)"]
    assert s["rows"][0]["mse"] < s["rows"][1]["mse"]  # the model beats the last value on a sine

    r = cli("series", "eval", "--checkpoint", str(sine_run), "--steps", "5", "--season", "20", env={"NO_COLOR": "1"})
    assert r.returncode == 0 and "Backtest of sine" in r.stdout and "seasonal naive (m=20)" in r.stdout
    assert "season 20 (given)" in " ".join(r.stdout.split()) and "\x1b[" not in r.stdout


def test_cli_errors_are_one_line(cli, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("value\n1\n2\nabc\n4\n")
    r = cli("series", "train", str(bad))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "line 4" in r.stderr and "--fill interpolate" in r.stderr
    r = cli("series", "train", str(bad), "--synthetic", "sine")
    assert r.returncode == 1 and "not both" in r.stderr
    r = cli("series", "forecast", "--run", "nothing-here")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = cli("series", "forecast", "--run", "nothing-here", "--plot", "forecast.jpg")
    assert r.returncode == 1 and r.stdout == "" and "ending in .png, .svg or .pdf" in r.stderr  # before any work
    r = cli("series", "train", "--synthetic", "sine", "--target", "middle")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# -- forecasting real shapes: trend, intervals, refit ---------------------------------------------------------
def trend_and_season(n: int, noise: float, seed: int = 0) -> np.ndarray:
    """100 + 0.5 t + a 12-value season of amplitude 10, plus Gaussian noise of std `noise`."""
    t = np.arange(n)
    return 100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(seed).normal(0, noise, n)


def test_a_trend_is_followed_beyond_the_training_range_and_the_refit_is_recorded(cli, tmp_path):
    """Issue 14's failure: a model on globally standardised values fell back into the range it was trained
    on. Normalised per window, the forecast continues the trend past every value it has seen."""
    values = trend_and_season(240, noise=0.5)
    data = tmp_path / "trend.csv"
    data.write_text("value\n" + "\n".join(f"{v:.4f}" for v in values) + "\n")
    r = cli("series", "train", str(data), "--run", "trend", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "season 12 (detected)" in r.stderr and "refit: validation chose" in r.stderr
    config = json.loads((tmp_path / "checkpoints" / "trend" / "config.json").read_text())
    about = config["series"]
    assert about["refit"]["train_values"] == 240 and about["refit"]["selected_step"] >= 1
    assert config["train"]["max_steps"] == about["refit"]["selected_step"]  # the refit ran that many steps
    assert about["settings"]["horizon"] == 24 and about["settings"]["transform"] == "log"

    r = cli("series", "forecast", "--run", "trend", "--steps", "24", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [list(map(float, line.split(","))) for line in r.stdout.splitlines()[1:]]
    point = np.array([row[1] for row in rows])
    truth = trend_and_season(264, noise=0.0)[240:]
    assert point.min() > values.max() - 15 and point.max() > values.max() + 5   # out of the training range
    assert np.mean(np.abs(point - truth)) < 3.0                                # ... and along the trend
    ahead = np.arange(24)
    assert abs(np.polyfit(ahead, point, 1)[0] - np.polyfit(ahead, truth, 1)[0]) < 0.15  # the truth's: 0.11
    low95, low80, high80, high95 = (np.array([row[k] for row in rows]) for k in (2, 3, 4, 5))
    assert np.all(low95 <= low80) and np.all(low80 <= point) and np.all(point <= high80) and np.all(high80 <= high95)
    negative = tmp_path / "negative.csv"
    negative.write_text("value\n" + "\n".join(f"{v:.4f}" for v in values[:59]) + "\n-5\n")
    r = cli("series", "forecast", "--run", "trend", "--history", str(negative), cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1 and "logarithm" in r.stderr


def test_intervals_cover_the_noise_they_were_trained_on(tmp_path):
    """On a season plus Gaussian noise of known std, the backtest's 80% and 95% intervals hold about that
    share of the held-out values, and their width matches the noise (80%: 2 x 1.28 sigma)."""
    values = trend_and_season(600, noise=2.0, seed=1)
    train_series(values, checkpoint=tmp_path / "run", settings=SeriesConfig(horizon=6, refit=False))
    result = backtest(tmp_path / "run", values, classical=False)
    coverage = result.summary["rows"][0]["coverage"]
    assert 0.65 <= coverage["80"] <= 0.92 and 0.85 <= coverage["95"] <= 0.99
    width = forecast(tmp_path / "run", 6).intervals[80]
    assert 2 * 1.28 * 2.0 * 0.6 < np.mean(width[1] - width[0]) < 2 * 1.28 * 2.0 * 2  # the noise's, plus the model's


def test_series_too_short_for_its_season_or_constant_are_one_line_errors(cli, tmp_path):
    constant = tmp_path / "flat.csv"
    constant.write_text("value\n" + "5\n" * 100)
    r = cli("series", "train", str(constant), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "constant" in r.stderr
    short = tmp_path / "short.csv"
    short.write_text("value\n" + "\n".join(str(v) for v in trend_and_season(30, 0.1)) + "\n")
    r = cli("series", "train", str(short), "--season", "12", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "training part has 24 values" in r.stderr
    negative = tmp_path / "negative.csv"
    negative.write_text("value\n" + "\n".join(str(v) for v in trend_and_season(100, 0.1) - 200) + "\n")
    r = cli("series", "train", str(negative), "--transform", "log", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--transform none" in r.stderr
    r = cli("series", "train", str(negative), "--target", "every", "--normalise", "window", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "needs --target last" in r.stderr


def test_calibration_moves_the_bounds_never_the_median():
    from chargen.series_relative import calibrate, interval_margins

    quantiles = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])  # 2.5%, 10%, 50%, 90%, 97.5%
    wider = calibrate(quantiles, {"80": 0.5, "95": 1.0})
    np.testing.assert_allclose(wider, [[-3.0, -1.5, 0.0, 1.5, 3.0]])
    narrower = calibrate(quantiles, {"80": -5.0, "95": -0.5})  # too far in: stops at the median, 95% holds 80%
    np.testing.assert_allclose(narrower, [[-1.5, 0.0, 0.0, 0.0, 1.5]])
    # Values 0..99, each with the interval [-10, 10]: scores y - 10; the (n + 1)-corrected 81st percentile.
    truth = np.arange(100.0)
    margins = interval_margins(np.tile(quantiles * 10, (100, 1)), truth)
    covered = np.mean(truth <= calibrate(np.tile(quantiles * 10, (100, 1)), margins)[:, 3])
    assert margins["80"] == pytest.approx(-10 + 0.81 * 99) and 0.8 <= covered <= 0.82


# -- many series, one model ----------------------------------------------------------------------------------
def three_shops(n: int = 144) -> dict[str, np.ndarray]:
    """Three monthly series of very different level, trend and scale, the same season."""
    t = np.arange(n)
    rng = np.random.default_rng(7)
    return {name: level + slope * t + amplitude * np.sin(2 * np.pi * t / 12) + rng.normal(0, amplitude / 20, n)
            for name, level, slope, amplitude in (("north", 100, 0.5, 10), ("south", 5000, -4, 300),
                                                    ("east", 20, 0.05, 2))}


def test_a_wide_csv_and_a_long_csv_give_the_same_series(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("month,a,b\n2020-01,1,\n2020-02,2,10\n2020-03,3,11\n2020-04,,12\n")  # b starts late, a ends early
    collection = read_collection(wide, "all")
    assert [s.name for s in collection] == ["a", "b"]
    np.testing.assert_array_equal(collection[0].values, [1, 2, 3])
    np.testing.assert_array_equal(collection[1].values, [10, 11, 12])
    assert [s.name for s in read_collection(wide, "b,1")] == ["b", "a"]  # by name or index, in the order given
    wide.write_text("year,a,b\n2001,1,\n2002,3,10\n2003,2,11\n2004,4,12\n")
    assert [s.name for s in read_collection(wide, "all")] == ["a", "b"]   # a time index is not a series
    assert [s.name for s in read_collection(wide, "year,a")] == ["year", "a"]  # unless asked for

    long = tmp_path / "long.csv"
    long.write_text("shop,sales\nb,10\na,1\nb,11\na,2\na,3\nb,12\n")
    collection = read_collection(long, id_column="shop")
    assert [s.name for s in collection] == ["b", "a"]  # in order of first appearance; time runs down the file
    np.testing.assert_array_equal(collection[0].values, [10, 11, 12])
    np.testing.assert_array_equal(collection[1].values, [1, 2, 3])
    long.write_text("shop,sales\na,1\na,\na,3\n")
    with pytest.raises(UserError, match=r"line 3: column 'sales' is empty.*--fill interpolate"):
        read_collection(long, id_column="shop")
    np.testing.assert_array_equal(read_collection(long, id_column="shop", fill="interpolate")[0].values, [1, 2, 3])


def test_one_model_learns_many_series_and_forecasts_each_on_its_own_scale(cli, tmp_path):
    shops = three_shops()
    data = tmp_path / "shops.csv"
    data.write_text("month," + ",".join(shops) + "\n" + "".join(
        f"{i}," + ",".join(f"{v[i]:.4f}" for v in shops.values()) + "\n" for i in range(132)))
    r = cli("series", "train", str(data), "--columns", "north,south,east", "--run", "shops", "--horizon", "12",
            "--max-steps", "600", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "on 3 series of shops.csv" in r.stderr and "season 12 (detected)" in r.stderr
    about = json.loads((tmp_path / "checkpoints" / "shops" / "config.json").read_text())["series"]
    assert [m["id"] for m in about["members"]] == ["north", "south", "east"] and about["values"] == 3 * 132

    r = cli("series", "forecast", "--run", "shops", "--steps", "12", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "id,step,value,low_95,low_80,high_80,high_95" and len(lines) == 1 + 3 * 12
    for name, truth in shops.items():
        point = np.array([float(line.split(",")[2]) for line in lines[1:] if line.startswith(name + ",")])
        seasonal_naive = shops[name][120:132]
        # Each on its own scale, and better than repeating the last season (the trend moved on).
        assert np.mean(np.abs(point - truth[132:])) < 0.7 * np.mean(np.abs(seasonal_naive - truth[132:])), name
    one = cli("series", "forecast", "--run", "shops", "--steps", "12", "--id", "south", cwd=tmp_path)
    assert one.stdout.splitlines()[1:] == [line for line in lines if line.startswith("south,")]

    r = cli("series", "eval", "--run", "shops", "--json", "--no-classical", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["series"] == 3 and [m["data"] for m in summary["members"]] == ["north", "south", "east"]
    model = summary["rows"][0]
    assert model["mase"] == pytest.approx(np.mean([m["rows"][0]["mase"] for m in summary["members"]]))
    assert "optimistic" in r.stderr  # refit on every value: the backtest has seen them

    for argv, message in [(["--id", "west"], "--id 'west': shops has no such series; its series are 'north', "
                                             "'south', 'east'"),
                          (["--plot", "f.png"], "--plot draws one series, and shops has 3: name one with --id")]:
        r = cli("series", "forecast", "--run", "shops", *argv, cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == "" and r.stderr == f"chargen: error: {message}\n"


@pytest.mark.parametrize("rows,message", [
    ("".join(f"a,{100 + i % 12 + i}\n" for i in range(100)) + "b,5\n",
     "series 'b': the training part has 1 values but one window needs"),                 # an id with one value
    ("".join(f"a,{100 + i % 12 + i}\nb,5\n" for i in range(100)),
     "series 'b': the training part of the series is constant (80 values of 5)"),         # a constant series
    ("".join(f"a,{100 + i % 12 + i}\n" for i in range(20)),
     "the training part has 16 values but one window needs 72 (--window 48 + --horizon 24)"),  # short for the season
])
def test_bad_collections_are_one_line_naming_the_series(rows, message, cli, tmp_path):
    data = tmp_path / "long.csv"
    data.write_text("shop,value\n" + rows)
    r = cli("series", "train", str(data), "--id-column", "shop", "--season", "12", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"chargen: error: {message}") and not (tmp_path / "checkpoints" / "long").exists()


# -- an ensemble of small networks ---------------------------------------------------------------------------
def test_an_ensemble_trains_each_member_on_its_own_loss_and_forecasts_their_median(tmp_path):
    from chargen.model import SeriesEnsemble, build_model

    config = ModelConfig(head="series", inputs=2, outputs=4 * 5, ensemble=3, **TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(config)
    assert isinstance(model, SeriesEnsemble) and len(model.members) == 3
    members = [dict(m.named_parameters())["head.weight"] for m in model.members]
    assert not torch.equal(members[0], members[1])  # different starting weights
    x = torch.randn(6, 10, 2)
    alone = [m(x)[0] for m in model.members]
    model.train()
    stacked, _ = model(x)
    assert stacked.shape == (3 * 6, 10, 20) and torch.equal(stacked[6:12], alone[1])
    model.eval()
    median, _ = model(x)
    torch.testing.assert_close(median, torch.stack(alone).median(dim=0).values)

    # The loss of the stacked output is the mean of each member's loss against the same targets.
    settings = SeriesConfig(window=10, horizon=4, season=1, normalise="window", transform="none")
    task = SeriesTask([(np.arange(40, dtype=float), 30)], settings, 8, seed=0, device=torch.device("cpu"))
    target = torch.randn(6, 4)
    mean_of_members = torch.stack([task.loss(a, target) for a in alone]).mean()
    torch.testing.assert_close(task.loss(stacked, target), mean_of_members)


def test_an_ensemble_run_is_recorded_and_forecasts_with_ordered_intervals(cli, tmp_path):
    values = trend_and_season(150, noise=1.0)
    data = tmp_path / "trend.csv"
    data.write_text("value\n" + "\n".join(f"{v:.4f}" for v in values) + "\n")
    r = cli("series", "train", str(data), "--run", "five", "--ensemble", "5", "--max-steps", "60", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "checkpoints" / "five" / "config.json").read_text())
    assert config["model"]["ensemble"] == 5
    r = cli("series", "forecast", "--run", "five", "--steps", "12", cwd=tmp_path)
    rows = np.array([list(map(float, line.split(","))) for line in r.stdout.splitlines()[1:]])
    assert r.returncode == 0 and rows.shape == (12, 6)
    low95, low80, point, high80, high95 = rows[:, 2], rows[:, 3], rows[:, 1], rows[:, 4], rows[:, 5]
    assert np.all(low95 <= low80) and np.all(low80 <= point) and np.all(point <= high80) and np.all(high80 <= high95)
    assert "--ensemble" not in cli("train", "--help").stdout  # a series option only
    config["model"]["ensemble"] = 9  # config.json edited: never trusted to build 9 networks from 5
    (tmp_path / "checkpoints" / "five" / "config.json").write_text(json.dumps(config))
    r = cli("series", "forecast", "--run", "five", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr == (f"chargen: error: {tmp_path / 'checkpoints/five/config.json'} says 9 "
                                              "networks but model.safetensors holds 5; the run is inconsistent — "
                                              "retrain it\n")


def test_many_series_are_sampled_equally_and_each_decides_its_own_log(tmp_path):
    settings = SeriesConfig(window=10, horizon=2, season=1, normalise="window", transform="none")
    task = SeriesTask([(np.arange(200.0), 200), (np.arange(30.0), 30)], settings, 16, seed=0,
                      device=torch.device("cpu"))
    assert len(task.train) == 189 + 19  # every window once for reporting ...
    from_short = task.sampled >= 200     # ... but an epoch visits the short series as often as the long one
    assert from_short.sum() == 19 * 10 and (~from_short).sum() == 189
    assert set(task.sampled[from_short]) == set(range(200, 219)) and task.steps_per_epoch == math.ceil(379 / 16)

    values = trend_and_season(120, noise=1.0)
    data = tmp_path / "two.csv"
    data.write_text("up,crossing\n" + "".join(f"{u:.4f},{u - 150:.4f}\n" for u in values))
    train_series(data, checkpoint=tmp_path / "run", columns="all", config=TrainConfig(max_steps=1),
                 model=ModelConfig(**TINY_MODEL), settings=SeriesConfig(season=12, horizon=6))
    about = json.loads((tmp_path / "run" / "config.json").read_text())["series"]
    assert about["settings"]["transform"] == "auto"  # decided per series:
    assert [m["scaler"]["log"] for m in about["members"]] == [True, False]  # the one that crosses 0 stays linear


def test_series_of_another_season_than_the_shared_one_are_named(tmp_path, capsys):
    t = np.arange(144)
    rng = np.random.default_rng(3)
    columns = {"a": 50 + 10 * np.sin(2 * np.pi * t / 12), "b": 80 + 5 * np.cos(2 * np.pi * t / 12),
               "odd": 30 + 8 * np.sin(2 * np.pi * t / 5)}
    data = tmp_path / "mixed.csv"
    data.write_text("a,b,odd\n" + "".join(",".join(f"{v[i] + rng.normal(0, 0.3):.3f}" for v in columns.values())
                                          + "\n" for i in range(144)))
    train_series(data, checkpoint=tmp_path / "run", columns="all", config=TrainConfig(max_steps=1),
                 model=ModelConfig(**TINY_MODEL))
    err = capsys.readouterr().err
    assert "1 of the 3 series show another season than the shared one (12): odd (5); one model forecasts " in err
    assert "season 12 (detected)" in err
    train_series(data, checkpoint=tmp_path / "given", columns="all", config=TrainConfig(max_steps=1),
                 model=ModelConfig(**TINY_MODEL), settings=SeriesConfig(season=12))
    assert "another season" not in capsys.readouterr().err  # a season given is the user's choice
