"""The chargen command line: parses arguments and calls chargen.

    python cli.py train [FILE] [--run NAME] [--max-time 5m] ...
    python cli.py generate [--run NAME] [--seed TEXT] [--length N] [--temperature T] ...
    python cli.py eval [--run NAME] FILE
    python cli.py interactive [--run NAME] [--temperature T] [--length N] ...
    python cli.py inspect [--run NAME] FILE [--neurons find | --neuron L:U] [--html PAGE]   (classifier: FILE only)
    python cli.py series train|forecast|eval ...
    python cli.py classify train|eval|predict ...
    python cli.py serve [--run NAME ...] [--host H] [--port P]
    python cli.py runs

Same as `chargen <command>` (installed) and `python -m chargen <command>`.
stdout carries only the product (generated text, figures asked for); everything else goes to stderr.
Heavy modules (torch) are imported inside the command that needs them.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from typing import TYPE_CHECKING, Callable

from chargen import __version__
from chargen.checkpoint import WRITE_FAULTS, write_failure
from chargen.config import SIZED_OPTION_DEFAULTS, ModelConfig, TrainConfig
from chargen.errors import UserError

if TYPE_CHECKING:
    from chargen.loop import TrainResult
    from chargen.series import SeriesRun

class Parser(argparse.ArgumentParser):
    """argparse with the house style: usage errors are one line plus a pointer to --help, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum (the error names the option)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        return value
    return parse


def add_config_options(parser: argparse.ArgumentParser, cls, title: str, *, defaults: dict | None = None,
                       helps: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> None:
    """One option per `option(...)` field of the dataclass `cls` (config.py), argparse default None = not given.

    defaults, helps: another default or help text for some fields (a head's own); skip: fields left out.
    """
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta or f.name in skip:
            continue
        shown = (defaults or {}).get(f.name, meta["shown"] if meta["shown"] is not None else f.default)
        text = f"{(helps or {}).get(f.name, meta['help'])} (default: {shown})"
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        kind = str if meta["parse"] or isinstance(f.default, str) else type(f.default)
        metavar = meta["metavar"] or (None if meta["choices"] else "NAME" if kind is str else f.name.upper())
        convert = _int_at_least(meta["minimum"]) if meta["minimum"] is not None else kind
        group.add_argument(flag, type=convert, choices=meta["choices"], default=None, metavar=metavar, help=text)


def given(args: argparse.Namespace, cls) -> dict:
    """The dataclass fields the user set on the command line, parsed (a duration into seconds...)."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            parse = f.metadata.get("parse")
            values[f.name] = parse(value) if parse else value
    return values


def add_run_options(parser: argparse.ArgumentParser, reading: bool = True) -> None:
    where = "the most recent run" if reading else "derived from the corpus name"
    parser.add_argument("--run", metavar="NAME", help=f"run name under checkpoints/ (default: {where})")
    parser.add_argument("--checkpoint", metavar="PATH", help="a run directory anywhere (instead of --run)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="chargen", description="Character-level recurrent language models: train on a text "
                    "file, generate from a seed, sample interactively; the same core forecasts time series.",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chargen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    p = commands.add_parser("train", help="train a model on a text file",
                            description="Train a character-level RNN/LSTM/GRU on a text file (or every *.txt in a "
                            "folder, or a named corpus). Saves checkpoints/<run>/; Ctrl-C saves and exits.")
    p.add_argument("corpus", nargs="?",
                   help="text file, folder of .txt files, or corpus name (default: tinyshakespeare)")
    add_run_options(p, reading=False)
    p.add_argument("--resume", action="store_true", help="continue the run exactly where it stopped")
    p.add_argument("--val-file", metavar="FILE", help="validate on this file instead of the end of the corpus")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="last fraction of the text used for validation (default: 0.1)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the corpus (default: utf-8, strict)")
    p.add_argument("--no-normalize", action="store_true", help="do not apply Unicode NFC normalisation")
    p.add_argument("--allow-binary", action="store_true", help="train even on a file that looks binary")
    p.add_argument("--from-run", metavar="RUN", help="fine-tune: start from this run's weights and vocabulary (a run "
                   "name or directory); its architecture is kept, new characters are added")
    add_config_options(p, ModelConfig, "model", skip=("pooling", "ensemble"), defaults=SIZED_OPTION_DEFAULTS)
    add_config_options(p, TrainConfig, "training", defaults=SIZED_OPTION_DEFAULTS)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("generate", help="generate text from a seed",
                            description="Generate text from a trained run; streams to stdout as it is sampled.")
    add_run_options(p)
    p.add_argument("--seed", default="\n", help="text to start from (default: a newline)")
    p.add_argument("--length", type=_int_at_least(0), default=500, help="characters to generate (default: 500)")
    add_sampling_options(p, fed="seed")
    p.add_argument("--num-samples", type=_int_at_least(1), default=1,
                   help="independent samples, drawn together as a batch (default: 1)")
    p.add_argument("--no-seed", action="store_true", help="print only the generated text, not the seed before it")
    p.add_argument("--copied", nargs="?", const="", metavar="FILE",
                   help="also say on stderr how much of the generated text is copied from the training text: the "
                   "share of its 32-character windows found there verbatim (FILE: the training text, default: "
                   "the run's own corpus file)")
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser("eval", help="bits/char and perplexity of a run on a text file")
    add_run_options(p)
    p.add_argument("file", help="text file to score")
    p.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--streams", type=_int_at_least(1), default=16, metavar="N",
                   help="score the text as up to N parallel streams, each starting without context (faster on "
                   "long texts); 1 = one continuous pass, the figure `inspect` shows (default: 16)")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("interactive", help="play with a run: type a beginning, watch it continue, steer",
                            description="An interactive session with a trained run: typed text is read by the "
                            "model, which continues it as you watch; the story carries across turns. /help "
                            "inside lists the commands. With stdin not a terminal, each line is one turn.")
    add_run_options(p)
    p.add_argument("--length", type=_int_at_least(1), default=200, help="characters generated per turn (default: 200)")
    add_sampling_options(p, fed="typed")
    p.set_defaults(func=cmd_interactive)

    p = commands.add_parser("inspect", help="see inside a run: surprise heat-map of a text, neuron inspector; "
                            "what moved a classifier's decision",
                            description="Colour a text by the bits the model spent on each character (default), "
                            "by one hidden unit (--neuron), or find the units that track quotes, brackets, line "
                            "position, word starts, upper case and digits (--neurons find). On a classifier run "
                            "(chargen classify train): the file is one text, and each character is coloured by what "
                            "the state after it adds to the predicted class over the runner-up.")
    add_run_options(p)
    p.add_argument("file", help="text file to look at")
    units = p.add_mutually_exclusive_group()
    units.add_argument("--neurons", choices=("find",), help="find: rank every unit by how well it tracks "
                       "simple properties of the text; show the best with a coloured excerpt each")
    units.add_argument("--neuron", metavar="L:U", help="colour by one unit: LAYER:UNIT for the hidden output, "
                       "LAYER:cUNIT for an LSTM cell state (layers from 1, units from 0), e.g. 2:c117")
    p.add_argument("--top", type=_int_at_least(1), default=3, metavar="N",
                   help="units shown per property with --neurons find (default: 3)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained page instead (hover a character for details)")
    p.add_argument("--max-chars", type=_int_at_least(2), default=5000, metavar="N",
                   help="look at only the first N characters of the file (default: 5000)")
    p.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    p.set_defaults(func=cmd_inspect)

    from chargen.completions import Limits  # torch-free

    p = commands.add_parser("serve", help="serve runs over HTTP: an OpenAI-style completions API and a playground page",
                            description="Serve trained runs on a local web server: POST /v1/completions (the "
                            "OpenAI completions API: streamed as server-sent events with stream: true, usage "
                            "counted in characters), GET /v1/models, and a playground page at /. Only the runs "
                            "named here are served. Needs the serve extra: pip install \"chargen[serve]\".")
    p.add_argument("--run", metavar="NAME", action="append", help="a run under checkpoints/ to serve; repeat "
                   "for several (the API's model name is the run's name; default: the most recent run)")
    p.add_argument("--checkpoint", metavar="PATH", action="append", help="a run directory anywhere to serve "
                   "(repeatable; its model name is the folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but a loopback address "
                   "lets other machines use the models, with no authentication (default: 127.0.0.1)")
    p.add_argument("--port", type=_int_at_least(0), default=8000, help="port to listen on; 0 = a free one, "
                   "printed at start-up (default: 8000)")
    add_config_options(p, Limits, "limits (a request over one is refused with the API's error and status)")
    p.set_defaults(func=cmd_serve)

    add_series_parser(commands)
    add_classify_parser(commands)

    p = commands.add_parser("runs", help="list the runs under checkpoints/")
    p.set_defaults(func=cmd_runs)
    return parser


def add_sampling_options(p: argparse.ArgumentParser, fed: str) -> None:
    """How characters are drawn (generate and interactive); `fed` names the text the user gives."""
    p.add_argument("--temperature", type=float, default=0.8,
                   help="randomness: 0 = always the likeliest character, 1 = the model's own odds (default: 0.8)")
    p.add_argument("--top-k", type=_int_at_least(0), default=0,
                   help="sample among the k likeliest only (default: 0 = all)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample among the smallest set with this much probability (default: 1.0)")
    p.add_argument("--rng-seed", type=_int_at_least(0), default=None,
                   help="random seed: same seed, same text (default: a fresh one)")
    p.add_argument("--stop", metavar="STRING", help="end a sample (a turn) once it has written this string")
    p.add_argument("--unknown", choices=("error", "skip", "unk"), default="error",
                   help=f"{fed} characters the model never saw: error, skip them, or feed <unk> (default: error)")


# -- commands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from chargen import api
    from chargen.log import info

    overrides = given(args, TrainConfig)
    model_options = given(args, ModelConfig)
    if args.resume and model_options:
        info(f"chargen: --resume keeps the run's model; ignoring {', '.join('--' + k for k in model_options)}")
    return report_training(
        lambda: api.train(args.corpus, args.run, checkpoint=args.checkpoint, model=ModelConfig(**model_options),
                          config=TrainConfig(**overrides), val_file=args.val_file, val_fraction=args.val_fraction,
                          encoding=args.encoding, normalize=not args.no_normalize, allow_binary=args.allow_binary,
                          resume=args.resume, overrides=overrides, from_run=args.from_run,
                          model_given=model_options),
        lambda m: f"best validation {m['val_loss']:.4f} nats/char = {m['val_bpc']:.4f} bits/char at step {m['step']}",
        "generate with: chargen generate --checkpoint {run_dir} --seed \"...\"")


def report_training(train: Callable[[], TrainResult], best: Callable[[dict], str], next_step: str) -> int:
    """Run `train`, then say on stderr how it ended (rank 0 only under torchrun); the command's exit status.

    best(metrics): the best validation figures in words; next_step: what to do with the run ({run_dir}).
    """
    from chargen.log import info
    from chargen.loop import TrainingStopped

    try:
        result = train()
    except TrainingStopped as stop:
        info(f"chargen: {stop}")
        if stop.result.status == "interrupted":
            return 143 if stop.result.signal == signal.SIGTERM else 130
        return 1
    summary = f"done: {result.step} steps ({result.status})"
    if result.metrics:
        summary += f"; {best(result.metrics)}"
    info(f"{summary}. Saved in {result.run_dir}")
    info(next_step.format(run_dir=result.run_dir))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from chargen.api import run_path
    from chargen.sample import SamplingSettings, generate_streams

    settings = SamplingSettings(args.temperature, args.top_k, args.top_p).validate()
    run_dir = run_path(args.run, args.checkpoint)
    training = None
    if args.copied is not None:  # read (and checked) before any sampling
        from chargen.checkpoint import read_config
        from chargen.copying import training_text

        training = training_text(read_config(run_dir), args.copied)
    pieces = generate_streams(run_dir, args.seed, args.length, settings, args.num_samples, args.rng_seed,
                              args.stop, args.unknown, include_seed=not args.no_seed)
    out = sys.stdout
    live = out.isatty()
    seed_steps = 0 if args.no_seed else 1  # the first piece is the seed: the copying measure leaves it out
    generated = [[] for _ in range(args.num_samples)]
    if args.num_samples == 1:
        for i, step in enumerate(pieces):
            out.write(step[0])
            if i >= seed_steps:
                generated[0].append(step[0])
            if live:
                out.flush()
        out.write("\n")
    else:
        steps = list(pieces)
        samples = ["".join(parts) for parts in zip(*steps)]
        generated = [list(parts) for parts in zip(*steps[seed_steps:])] or generated
        for k, sample in enumerate(samples, 1):
            out.write(f"=== sample {k} ===\n{sample}\n")
    out.flush()
    if training is not None:
        report_copied(["".join(parts) for parts in generated], *training)
    return 0


def report_copied(samples: list[str], training: str, name: str) -> None:
    """One line on stderr: the share of the samples' windows found verbatim in the training text."""
    from chargen.copying import WINDOW, copied_windows

    found, total = map(sum, zip(*(copied_windows(sample, training) for sample in samples)))
    if total == 0:
        print(f"copied: not measured: the generated text is shorter than one window ({WINDOW} characters)",
              file=sys.stderr)
        return
    print(f"copied: {found / total:.1%} of the {total:,} windows of {WINDOW} characters generated are found "
          f"verbatim in the training text ({name})", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from chargen import api

    r = api.evaluate(api.run_path(args.run, args.checkpoint), args.file, encoding=args.encoding, device=args.device,
                     streams=args.streams)
    if args.json:
        print(json.dumps(r, ensure_ascii=False))
        return 0
    print(f"{r['file']}: {r['chars']:,} characters, {r['nats_per_char']:.4f} nats/char, "
          f"{r['bits_per_char']:.4f} bits/char, perplexity {r['perplexity']:.3f}")
    if r["unknown_chars"]:
        shown = " ".join(repr(c) for c in r["unknown_distinct"])
        print(f"{r['unknown_chars']} characters unknown to the model (scored as <unk>): {shown}", file=sys.stderr)
    return 0


def cmd_interactive(args: argparse.Namespace) -> int:
    from chargen.api import run_path
    from chargen.interactive import SessionSettings, run_session
    from chargen.sample import SamplingSettings

    settings = SessionSettings(SamplingSettings(args.temperature, args.top_k, args.top_p).validate(),
                               args.length, args.stop or "")
    return run_session(run_path(args.run, args.checkpoint), settings, args.rng_seed, args.unknown)


def cmd_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chargen.api import run_path
    from chargen.inspect import run_inspect

    run_inspect(run_path(args.run, args.checkpoint), Path(args.file), neuron=args.neuron,
                find=args.neurons == "find", html=None if args.html is None else Path(args.html),
                max_chars=args.max_chars, encoding=args.encoding, top=args.top)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from chargen.api import run_path
    from chargen.completions import Limits

    try:
        from chargen.server import serve
    except ImportError as e:
        raise UserError(f"chargen serve needs the serve extra ({e.name} is not installed): "
                        "pip install \"chargen[serve]\"") from None
    runs = [run_path(name) for name in args.run or []] + [run_path(checkpoint=path) for path in args.checkpoint or []]
    limits = Limits(**given(args, Limits))
    return serve(runs or [run_path()], args.host, args.port, limits)


# -- time series -------------------------------------------------------------------------------------

def add_series_parser(commands) -> None:
    """`series train | forecast | eval`: the recurrent core with a regressor head."""
    from chargen.series_data import (FILLS, SERIES_OPTION_DEFAULTS, SERIES_OPTION_HELP, SERIES_UNUSED_OPTIONS,
                                     SYNTHETIC, SYNTHETIC_LENGTH, SeriesConfig)

    series = commands.add_parser("series", help="time series: train, forecast, backtest",
                                 description="Forecast a numeric series with the same recurrent core: a linear "
                                 "input projection, RNN/LSTM/GRU, a regressor head.")
    sub = series.add_subparsers(dest="series_command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--column", metavar="NAME|INDEX",
                       help="CSV column by header name or 0-based index (default: the only numeric column; "
                       "with --id-column, the values)")
        p.add_argument("--fill", choices=FILLS, default=None,
                       help="missing or non-numeric values: error (naming the line) or interpolate "
                            "(default: error, or the run's setting)")

    def id_option(p: argparse.ArgumentParser, verb: str) -> None:
        p.add_argument("--id", dest="series_id", metavar="ID",
                       help=f"of a run trained on many series, {verb} only this one (a column name of a wide CSV, "
                       "an id of a long one; default: all of them)")

    p = sub.add_parser("train", help="train on a CSV column, a file of numbers, or a synthetic wave",
                       description="Train a regressor on windows of a series; the last part validates. "
                       "Saves checkpoints/<run>/ (with the standardisation); Ctrl-C saves and exits.")
    p.add_argument("data", nargs="?", help="CSV file (header detected) or one number per line")
    p.add_argument("--synthetic", choices=SYNTHETIC, help="train on a built-in wave instead of a file")
    p.add_argument("--length", type=_int_at_least(2), default=SYNTHETIC_LENGTH,
                   help=f"values of the synthetic wave, 0.1 apart in x (default: {SYNTHETIC_LENGTH})")
    p.add_argument("--noise", type=float, default=0.1, help="noise std of --synthetic noisy-sine (default: 0.1)")
    data_options(p)
    p.add_argument("--columns", metavar="all|A,B,...",
                   help="many series, one model: every numeric column of a wide CSV (all), or these columns by "
                   "name or 0-based index; each series is seen on its own scale")
    p.add_argument("--id-column", metavar="NAME|INDEX",
                   help="many series, one model: a long CSV whose rows name their series in this column (time "
                   "runs down the file within each id; the values in --column)")
    add_run_options(p, reading=False)
    p.add_argument("--resume", action="store_true", help="continue the run exactly where it stopped")
    add_config_options(p, SeriesConfig, "windows")
    add_config_options(p, ModelConfig, "model", defaults=SERIES_OPTION_DEFAULTS, helps=SERIES_OPTION_HELP,
                       skip=SERIES_UNUSED_OPTIONS)
    add_config_options(p, TrainConfig, "training", defaults=SERIES_OPTION_DEFAULTS, helps=SERIES_OPTION_HELP,
                       skip=(*SERIES_UNUSED_OPTIONS, "sizing"))
    p.set_defaults(func=cmd_series_train)

    p = sub.add_parser("forecast", help="forecast the values after a history (CSV step,value on stdout)",
                       description="Prime the model on the history (default: the end of the run's own series), "
                       "roll it forward and print the de-standardised forecast as CSV on stdout.")
    add_run_options(p)
    p.add_argument("--steps", type=_int_at_least(1), default=None,
                   help="values to forecast (default: the run's horizon)")
    p.add_argument("--history", metavar="FILE", help="the series to continue, read like the training data (default: "
                   "the end of the training data)")
    data_options(p)
    id_option(p, "forecast")
    p.add_argument("--plot", metavar="FILE", help="also draw history, forecast and intervals to FILE: .png, .svg "
                   "or .pdf (needs matplotlib: pip install 'chargen[plot]')")
    p.set_defaults(func=cmd_series_forecast)

    p = sub.add_parser("eval", help="rolling-origin backtest against naive and classical baselines",
                       description="From every origin of the validation part, forecast --steps values from the "
                       "past only, and compare MSE, MAE, MASE and interval coverage with the naive and "
                       "seasonal-naive forecasts and, when statsforecast is installed, AutoETS, AutoTheta and "
                       "AutoARIMA fitted on the training part.")
    add_run_options(p)
    p.add_argument("data", nargs="?", help="the series to backtest on (default: the run's own data)")
    data_options(p)
    id_option(p, "backtest")
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="forecast horizon (default: the run's horizon)")
    p.add_argument("--season", type=_int_at_least(1), default=None,
                   help="season length for the seasonal-naive baseline (default: detected by autocorrelation)")
    p.add_argument("--stride", type=_int_at_least(1), default=1, help="values between origins (default: 1)")
    p.add_argument("--no-classical", dest="classical", action="store_false",
                   help="leave out AutoETS, AutoTheta and AutoARIMA (shown when statsforecast is installed: "
                   "pip install 'chargen[classical]')")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout instead of a table")
    p.add_argument("--plot", metavar="FILE", help="also draw history, truth, forecasts and intervals to FILE: "
                   ".png, .svg or .pdf (needs matplotlib: pip install 'chargen[plot]')")
    p.set_defaults(func=cmd_series_eval)


def cmd_series_train(args: argparse.Namespace) -> int:
    from chargen.series import train_series
    from chargen.series_data import SERIES_MODEL_DEFAULTS, SERIES_TRAIN_DEFAULTS, SeriesConfig

    overrides = given(args, TrainConfig)
    return report_training(
        lambda: train_series(args.data, args.run, synthetic=args.synthetic, length=args.length, noise=args.noise,
                             column=args.column, columns=args.columns, id_column=args.id_column, fill=args.fill,
                             checkpoint=args.checkpoint, settings=SeriesConfig(**given(args, SeriesConfig)),
                             model=ModelConfig(**{**SERIES_MODEL_DEFAULTS, **given(args, ModelConfig)}),
                             config=TrainConfig(**{**SERIES_TRAIN_DEFAULTS, **overrides}), resume=args.resume,
                             overrides=overrides),
        lambda m: f"best validation MSE {m['val_mse']:.4g} (MAE {m['val_mae']:.4g}) at step {m['step']}"
                  + (f", then refit on all {m['refit_values']} values" if "refit_values" in m else ""),
        "forecast with: chargen series forecast --checkpoint {run_dir} --steps 50")


def cmd_series_forecast(args: argparse.Namespace) -> int:
    from chargen.series import forecast_all, forecast_figure, show_plot, write_forecast_csv

    run = _series_run_to_show(args)
    results = forecast_all(run, args.steps or run.settings.horizon, args.history, args.column, args.fill,
                           args.series_id)
    write_forecast_csv(results if len(run.members) > 1 else results[run.members[0].id], sys.stdout)
    sys.stdout.flush()
    if len(results) == 1:
        (series_id, result), = results.items()
        name = run.run_dir.name + (f" ({series_id})" if len(run.members) > 1 else "")
        show_plot(forecast_figure(result, f"{name}: forecast of {len(result.values)} steps"), args.plot)
    return 0


def cmd_series_eval(args: argparse.Namespace) -> int:
    import json

    from chargen.series import backtest, backtest_all, backtest_figure, print_backtest, show_plot

    run = _series_run_to_show(args)
    if len(run.members) > 1 and args.series_id is None:
        summary, _ = backtest_all(run, args.data, args.steps, args.season, args.stride, args.column, args.fill,
                                  args.classical)
    else:
        result = backtest(run, args.data, args.steps, args.season, args.stride, args.column, args.fill,
                          args.classical, args.series_id)
        summary = result.summary
    if args.json:
        print(json.dumps(summary))
    else:
        print_backtest(summary)
    sys.stdout.flush()
    if "members" not in summary:
        title = f"{run.run_dir.name}: backtest of {summary['data']}, horizon {summary['horizon']}"
        show_plot(backtest_figure(result, title), args.plot)
    return 0


def _series_run_to_show(args: argparse.Namespace) -> SeriesRun:
    """The series run of `forecast` / `eval`, with --plot checked before any work: a format matplotlib writes,
    and one series to draw."""
    from chargen.plot import figure_path
    from chargen.series import load_series

    if args.plot:
        figure_path(args.plot)
    run = load_series(args.run, args.checkpoint)
    if args.series_id is not None:
        run.select(args.series_id)  # an unknown id: one line, before any work
    elif args.plot and len(run.members) > 1:
        raise UserError(f"--plot draws one series, and {run.run_dir.name} has {len(run.members)}: name one with --id")
    return run


# -- text classification ----------------------------------------------------------------------------
def add_classify_parser(commands) -> None:
    """`classify train | eval | predict`: the recurrent core read over a whole text, a pooled linear head."""
    from chargen.classify_data import CLASSIFY_MODEL_DEFAULTS, CLASSIFY_SIZED_HIDDEN, SIZING_MIN_STEPS, ClassifyConfig

    helps = {"batch_size": "texts per step",  # the training options that mean something else for a classifier
             "epochs": "stop after this many passes over the training texts (0 = no limit)",
             "sizing": f"auto: with a time budget and no step or epoch limit, the widest core that makes "
                       f"{SIZING_MIN_STEPS} steps in it at this machine's measured speed (unless --hidden or "
                       "--from-run is given); fixed: the defaults"}
    defaults = ClassifyConfig()
    classify = commands.add_parser("classify", help="text classification: train, eval, predict",
                                   description="Give each text one of a set of labels (sentiment, language, "
                                   "topic...) with the same recurrent core, read over the whole text.")
    sub = classify.add_subparsers(dest="classify_command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def field_options(p: argparse.ArgumentParser, label: bool = True, run_default: bool = False) -> None:
        where = "the run's" if run_default else None
        p.add_argument("--text", metavar="FIELD", default=None if run_default else defaults.text,
                       help="the text column (CSV name or 0-based index) or JSON key "
                            f"(default: {where or defaults.text})")
        if label:
            p.add_argument("--label", metavar="FIELD", default=None if run_default else defaults.label,
                           help=f"the label column or key (default: {where or defaults.label})")

    p = sub.add_parser("train", help="train on a CSV or JSON-lines file of labelled texts",
                       description="Train a classifier; a stratified part of every class validates (or "
                       "--val-file). Saves checkpoints/<run>/; Ctrl-C saves and exits.")
    p.add_argument("data", help="CSV (header detected), TSV or JSON-lines file with a text and a label field")
    field_options(p)
    add_run_options(p, reading=False)
    p.add_argument("--val-file", metavar="FILE", help="validate on this labelled file instead of a split")
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                   help=f"of every class, held out for validation (default: {defaults.val_fraction})")
    p.add_argument("--balance", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--train-chars", type=_int_at_least(1), default=defaults.train_chars, metavar="N",
                   help="characters of each text read while training; eval and predict read every character "
                        f"(default: {defaults.train_chars})")
    p.add_argument("--from-run", metavar="RUN", help="start from a character-model run: its vocabulary, "
                   "embedding and core (its architecture replaces the model options)")
    p.add_argument("--freeze-core", action="store_true", help="with --from-run: train only the head")
    p.add_argument("--core-lr-scale", type=float, metavar="F",
                   help="with --from-run: the trained embedding and core learn at this fraction of --lr, the new "
                        f"head at --lr (default: {defaults.core_lr_scale:g})")
    add_config_options(p, ModelConfig, "model", defaults={**CLASSIFY_MODEL_DEFAULTS, "hidden": CLASSIFY_SIZED_HIDDEN},
                       skip=("tie_weights", "ensemble"))
    add_config_options(p, TrainConfig, "training", helps=helps, skip=("seq_len",))
    p.set_defaults(func=cmd_classify_train)

    p = sub.add_parser("eval", help="accuracy, macro-F1 and the confusion matrix on a labelled file")
    add_run_options(p)
    p.add_argument("file", help="labelled CSV or JSON-lines file")
    field_options(p, run_default=True)
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.set_defaults(func=cmd_classify_eval)

    p = sub.add_parser("predict", help="the label of each text (and its probability) on stdout",
                       description="Classify texts given on the command line (one line each: label, tab, "
                       "probability) or every row of --file (the file again on stdout, with the columns "
                       "predicted and probability added).")
    add_run_options(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument("--file", metavar="FILE", help="classify every row of this CSV or JSON-lines file")
    field_options(p, label=False, run_default=True)
    p.set_defaults(func=cmd_classify_predict)


def cmd_classify_train(args: argparse.Namespace) -> int:
    from chargen.classifier import train_classifier
    from chargen.classify_data import CLASSIFY_MODEL_DEFAULTS, ClassifyConfig

    model_options = given(args, ModelConfig)  # --pooling included
    if args.core_lr_scale is not None and args.from_run is None:
        raise UserError("--core-lr-scale sets how fast a trained core learns: it needs --from-run RUN")
    settings = ClassifyConfig(args.text, args.label, args.val_fraction, args.balance, args.train_chars,
                              args.freeze_core, ClassifyConfig.core_lr_scale if args.core_lr_scale is None
                              else args.core_lr_scale)
    return report_training(
        lambda: train_classifier(args.data, args.run, checkpoint=args.checkpoint, settings=settings,
                                 model=ModelConfig(**{**CLASSIFY_MODEL_DEFAULTS, **model_options}),
                                 config=TrainConfig(**given(args, TrainConfig)), val_file=args.val_file,
                                 from_run=args.from_run, model_options=model_options),
        lambda m: (f"best validation loss {m['val_loss']:.4f}, accuracy {m['val_acc']:.4f}, macro-F1 "
                   f"{m['val_f1']:.4f} at step {m['step']}"),
        "predict with: chargen classify predict --checkpoint {run_dir} \"TEXT\"")


def cmd_classify_eval(args: argparse.Namespace) -> int:
    import json

    from chargen.classifier import evaluate_file, load_classifier
    from chargen.classify_report import print_evaluation

    run = load_classifier(args.run, args.checkpoint)
    result = evaluate_file(run, args.file, args.text, args.label)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print_evaluation(result)
    return 0


def cmd_classify_predict(args: argparse.Namespace) -> int:
    from chargen.classifier import load_classifier
    from chargen.classify_report import predict_file, write_predictions

    if bool(args.texts) == bool(args.file):
        raise UserError("give the texts to classify, or --file FILE (one of the two)")
    run = load_classifier(args.run, args.checkpoint)
    if args.file:
        predict_file(run, args.file, args.text, sys.stdout)
    else:
        labels, probs = run.predict(args.texts)
        write_predictions(labels, probs, sys.stdout)
    sys.stdout.flush()
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from chargen.checkpoint import CONFIG, checkpoints_root, list_runs

    runs = list_runs()
    if not runs:
        print(f"no runs in {checkpoints_root()}; train one with: chargen train FILE --run NAME", file=sys.stderr)
        return 0
    # The run's name first on each line, no borders: easy to read, and to cut with a shell tool.
    table = Table(box=None, show_header=False, pad_edge=False)
    for column in ("run", "head", "model", "steps", "validation"):
        table.add_column(column, justify="right" if column == "steps" else "left", no_wrap=True)
    for run in runs:
        try:
            config = json.loads((run / CONFIG).read_text(encoding="utf-8"))
            m, model = config.get("metrics", {}), config["model"]
            bpc = (f"{m['val_bpc']:.3f} bpc" if "val_bpc" in m
                   else f"val {m['val_loss']:.4g}" if "val_loss" in m else "-")
            table.add_row(run.name, model["head"], f"{model['layers']}x{model['hidden']} {model['cell']}",
                          f"{m.get('steps', 0)} steps", bpc)
        except (ValueError, KeyError, TypeError):
            table.add_row(run.name, "(unreadable config.json)", "", "", "")
    Console(highlight=False, soft_wrap=True).print(table)
    return 0


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so Python does not complain when it flushes what is left at exit."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user error is one line on stderr and exit 1."""
    code = _run(argv)
    runtime = sys.modules.get("chargen.runtime")  # loaded only by commands that may join a process group
    if runtime is not None:
        runtime.end_process(code)  # returns unless this process trained under torchrun
    return code


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a full disk under `> file` shows here at the latest
        return code
    except UserError as e:
        print(f"chargen: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `chargen generate | head`): stop quietly.
        _discard_stdout()
        return 0
    except OSError as e:
        if e.errno not in WRITE_FAULTS:
            raise
        # Every file chargen writes itself reports its own failure (checkpoint.atomic_write): this
        # is the standard output, redirected to a file on a full or read-only disk.
        print(f"chargen: error: {write_failure('the standard output', e)}", file=sys.stderr)
        _discard_stdout()
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
