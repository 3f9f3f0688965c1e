"""The chargen command line: parses arguments and calls chargen.

    python cli.py train [FILE] [--run NAME] [--max-time 5m] ...
    python cli.py generate [--run NAME] [--seed TEXT] [--length N] [--temperature T] ...
    python cli.py eval [--run NAME] FILE
    python cli.py interactive [--run NAME] [--temperature T] [--length N] ...
    python cli.py inspect [--run NAME] FILE [--neurons find | --neuron L:U] [--html PAGE]
    python cli.py series train|forecast|eval ...
    python cli.py classify train|eval|predict ...
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

from chargen import __version__
from chargen.config import CELL_TYPES, PRECISIONS, ModelConfig, TrainConfig, parse_duration
from chargen.errors import UserError

MODEL_HELP = {
    "cell": f"recurrent cell: {', '.join(CELL_TYPES)}",
    "hidden": "units per recurrent layer",
    "layers": "recurrent layers",
    "embedding": "character embedding size",
    "dropout": "dropout between layers and before the output",
    "tie_weights": "share the embedding and output matrices (needs --embedding = --hidden)",
}
TRAIN_HELP = {
    "batch_size": "parallel streams per step (all processes together)",
    "seq_len": "characters per chunk: how far back gradients flow (truncated BPTT)",
    "lr": "peak learning rate (AdamW)",
    "lr_floor": "final learning rate as a fraction of --lr (cosine decay to the end of the budget)",
    "weight_decay": "AdamW weight decay on weight matrices",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "clip": "clip the global gradient norm to this",
    "max_steps": "stop after this many steps (0 = no limit)",
    "epochs": "stop after this many passes over the training text (0 = no limit)",
    "max_time": "stop after this long, e.g. 90, 90s, 5m, 1h (5m when no limit is given)",
    "eval_every": "evaluate every N steps (0 = at each fifth of the budget)",
    "save_every": "also save the trainer state every this many seconds",
    "patience": "stop after this many evaluations without improvement (0 = never)",
    "device": "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
    "precision": f"{', '.join(PRECISIONS)}; auto = mixed precision on CUDA, bf16 autocast on CPUs with native "
                 "bf16 (AVX512-BF16/AMX: ~1.6x faster, same loss), fp32 elsewhere",
    "rng_seed": "random seed: same seed, same run",
    "max_bad_steps": "give up after this many non-finite steps in a row",
}


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


def add_config_options(parser: argparse.ArgumentParser, cls, helps: dict[str, str], title: str,
                       defaults: dict | None = None) -> None:
    """One option per dataclass field, default shown from the dataclass or `defaults` (argparse default
    None = not given)."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name not in helps:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = (defaults or {}).get(f.name, f.default)
        shown = f"(default: {default})"
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{helps[f.name]} {shown}")
        elif f.name == "max_time":
            group.add_argument(flag, type=str, default=None, metavar="DURATION", help=f"{helps[f.name]}")
        elif f.name == "cell":
            group.add_argument(flag, choices=CELL_TYPES, default=None, help=f"{helps[f.name]} {shown}")
        elif f.name == "precision":
            group.add_argument(flag, choices=PRECISIONS, default=None, help=f"{helps[f.name]} {shown}")
        else:
            kind = type(f.default)
            group.add_argument(flag, type=int if kind is int else kind, default=None,
                               metavar=f.name.upper() if kind is not str else "NAME", help=f"{helps[f.name]} {shown}")


def given(args: argparse.Namespace, cls) -> dict:
    """The dataclass fields the user set on the command line."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = parse_duration(value) if f.name == "max_time" else value
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
    p.add_argument("corpus", nargs="?", help="text file, folder of .txt files, or corpus name (default: tinyshakespeare)")
    add_run_options(p, reading=False)
    p.add_argument("--resume", action="store_true", help="continue the run exactly where it stopped")
    p.add_argument("--val-file", metavar="FILE", help="validate on this file instead of the end of the corpus")
    p.add_argument("--val-fraction", type=float, default=0.1, help="last fraction of the text used for validation (default: 0.1)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the corpus (default: utf-8, strict)")
    p.add_argument("--no-normalize", action="store_true", help="do not apply Unicode NFC normalisation")
    p.add_argument("--allow-binary", action="store_true", help="train even on a file that looks binary")
    add_config_options(p, ModelConfig, MODEL_HELP, "model")
    add_config_options(p, TrainConfig, TRAIN_HELP, "training")
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

    p = commands.add_parser("inspect", help="see inside a run: surprise heat-map of a text, neuron inspector",
                            description="Colour a text by the bits the model spent on each character (default), "
                            "by one hidden unit (--neuron), or find the units that track quotes, brackets, line "
                            "position, word starts, upper case and digits (--neurons find).")
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

    add_series_parser(commands)
    add_classify_parser(commands)

    p = commands.add_parser("runs", help="list the runs under checkpoints/")
    p.set_defaults(func=cmd_runs)
    return parser


def add_sampling_options(p: argparse.ArgumentParser, fed: str) -> None:
    """How characters are drawn (generate and interactive); `fed` names the text the user gives."""
    p.add_argument("--temperature", type=float, default=0.8,
                   help="randomness: 0 = always the likeliest character, 1 = the model's own odds (default: 0.8)")
    p.add_argument("--top-k", type=_int_at_least(0), default=0, help="sample among the k likeliest only (default: 0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample among the smallest set with this much probability (default: 1.0)")
    p.add_argument("--rng-seed", type=_int_at_least(0), default=None,
                   help="random seed: same seed, same text (default: a fresh one)")
    p.add_argument("--stop", metavar="STRING", help="end a sample (a turn) once it has written this string")
    p.add_argument("--unknown", choices=("error", "skip", "unk"), default="error",
                   help=f"{fed} characters the model never saw: error, skip them, or feed <unk> (default: error)")


# -- commands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from chargen import api
    from chargen.log import info  # under torchrun only rank 0 prints these lines
    from chargen.train import TrainingStopped

    overrides = given(args, TrainConfig)
    model_options = given(args, ModelConfig)
    if args.resume and model_options:
        info(f"chargen: --resume keeps the run's model; ignoring {', '.join('--' + k for k in model_options)}")
    try:
        result = api.train(args.corpus, args.run, checkpoint=args.checkpoint,
                           model=ModelConfig(**model_options), config=TrainConfig(**overrides),
                           val_file=args.val_file, val_fraction=args.val_fraction, encoding=args.encoding,
                           normalize=not args.no_normalize, allow_binary=args.allow_binary,
                           resume=args.resume, overrides=overrides)
    except TrainingStopped as stop:
        info(f"chargen: {stop}")
        if stop.result.status == "interrupted":
            return 143 if stop.result.signal == signal.SIGTERM else 130
        return 1
    m = result.metrics
    summary = f"done: {result.step} steps ({result.status})"
    if m:
        summary += f"; best validation {m['val_loss']:.4f} nats/char = {m['val_bpc']:.4f} bits/char at step {m['step']}"
    info(f"{summary}. Saved in {result.run_dir}")
    info(f"generate with: chargen generate --checkpoint {result.run_dir} --seed \"...\"")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from chargen.api import run_path
    from chargen.sample import SamplingSettings, generate

    settings = SamplingSettings(args.temperature, args.top_k, args.top_p).validate()
    run_dir = run_path(args.run, args.checkpoint)
    pieces = generate(run_dir, args.seed, args.length, settings, args.num_samples, args.rng_seed,
                      args.stop, args.unknown, include_seed=not args.no_seed)
    out = sys.stdout
    live = out.isatty()
    if args.num_samples == 1:
        for step in pieces:
            out.write(step[0])
            if live:
                out.flush()
        out.write("\n")
    else:
        samples = ["".join(parts) for parts in zip(*pieces)]
        for k, sample in enumerate(samples, 1):
            out.write(f"=== sample {k} ===\n{sample}\n")
    out.flush()
    return 0


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


# -- time series -------------------------------------------------------------------------------------
from chargen.series_data import SERIES_DEFAULT_EPOCHS, SERIES_MODEL_DEFAULTS  # noqa: E402 (torch-free)

SERIES_MODEL_HELP = {**{k: v for k, v in MODEL_HELP.items() if k != "tie_weights"},
                     "embedding": "size of the input projection (values -> the recurrent core)"}
SERIES_TRAIN_HELP = {**{k: v for k, v in TRAIN_HELP.items() if k != "seq_len"},
                     "batch_size": "windows per step (all processes together); more than there are = full batch",
                     "epochs": "stop after this many passes over the training windows (the default applies "
                               "when neither --max-steps nor --max-time is given)",
                     "max_time": "stop after this long, e.g. 90, 90s, 5m, 1h (0 = no limit)"}


def add_series_parser(commands) -> None:
    """`series train | forecast | eval`: the recurrent core with a regressor head."""
    from chargen.series_data import FILLS, LOSSES, SYNTHETIC, SYNTHETIC_LENGTH, TARGETS, SeriesConfig

    defaults = SeriesConfig()
    series = commands.add_parser("series", help="time series: train, forecast, backtest",
                                 description="Forecast a numeric series with the same recurrent core: a linear "
                                 "input projection, RNN/LSTM/GRU, a regressor head.")
    sub = series.add_subparsers(dest="series_command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--column", metavar="NAME|INDEX",
                       help="CSV column by header name or 0-based index (default: the only numeric column)")
        p.add_argument("--fill", choices=FILLS, default=None,
                       help="missing or non-numeric values: error (naming the line) or interpolate "
                            "(default: error, or the run's setting)")

    p = sub.add_parser("train", help="train on a CSV column, a file of numbers, or a synthetic wave",
                       description="Train a regressor on windows of a series; the last part validates. "
                       "Saves checkpoints/<run>/ (with the standardisation); Ctrl-C saves and exits.")
    p.add_argument("data", nargs="?", help="CSV file (header detected) or one number per line")
    p.add_argument("--synthetic", choices=SYNTHETIC, help="train on a built-in wave instead of a file")
    p.add_argument("--length", type=_int_at_least(2), default=SYNTHETIC_LENGTH,
                   help=f"values of the synthetic wave, 0.1 apart in x (default: {SYNTHETIC_LENGTH})")
    p.add_argument("--noise", type=float, default=0.1, help="noise std of --synthetic noisy-sine (default: 0.1)")
    data_options(p)
    add_run_options(p, reading=False)
    p.add_argument("--resume", action="store_true", help="continue the run exactly where it stopped")
    g = p.add_argument_group("windows")
    g.add_argument("--window", type=_int_at_least(1), default=defaults.window,
                   help=f"input values per window (default: {defaults.window})")
    g.add_argument("--horizon", type=_int_at_least(1), default=defaults.horizon,
                   help=f"values predicted at once (default: {defaults.horizon})")
    g.add_argument("--target", choices=TARGETS, default=defaults.target,
                   help="every = the next value(s) after each input step (many-to-many); last = the value(s) "
                        f"after the window (many-to-one) (default: {defaults.target})")
    g.add_argument("--loss", choices=LOSSES, default=defaults.loss, help=f"(default: {defaults.loss})")
    g.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                   help=f"last part of the series held out for validation; 0 = none (default: {defaults.val_fraction})")
    add_config_options(p, ModelConfig, SERIES_MODEL_HELP, "model", defaults=SERIES_MODEL_DEFAULTS)
    add_config_options(p, TrainConfig, SERIES_TRAIN_HELP, "training", defaults={"epochs": SERIES_DEFAULT_EPOCHS})
    p.set_defaults(func=cmd_series_train)

    p = sub.add_parser("forecast", help="forecast the values after a history (CSV step,value on stdout)",
                       description="Prime the model on the history (default: the end of the run's own series), "
                       "roll it forward and print the de-standardised forecast as CSV on stdout.")
    add_run_options(p)
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="values to forecast (default: the run's horizon)")
    p.add_argument("--history", metavar="FILE", help="the series to continue (default: the end of the training data)")
    data_options(p)
    p.add_argument("--plot", metavar="FILE.png", help="also draw history and forecast to a PNG file")
    p.set_defaults(func=cmd_series_forecast)

    p = sub.add_parser("eval", help="rolling-origin backtest against naive baselines",
                       description="From every origin of the validation part, forecast --steps values from the "
                       "past only, and compare MSE, MAE and MASE with the naive and seasonal-naive forecasts.")
    add_run_options(p)
    p.add_argument("data", nargs="?", help="the series to backtest on (default: the run's own data)")
    data_options(p)
    p.add_argument("--steps", type=_int_at_least(1), default=None, help="forecast horizon (default: the run's horizon)")
    p.add_argument("--season", type=_int_at_least(1), default=None,
                   help="season length for the seasonal-naive baseline (default: detected by autocorrelation)")
    p.add_argument("--stride", type=_int_at_least(1), default=1, help="values between origins (default: 1)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw history, truth and forecasts to a PNG file")
    p.set_defaults(func=cmd_series_eval)


def cmd_series_train(args: argparse.Namespace) -> int:
    from chargen.series import train_series
    from chargen.series_data import SeriesConfig
    from chargen.train import TrainingStopped

    overrides = given(args, TrainConfig)
    settings = SeriesConfig(args.window, args.horizon, args.target, args.loss, args.val_fraction)
    try:
        result = train_series(args.data, args.run, synthetic=args.synthetic, length=args.length, noise=args.noise,
                              column=args.column, fill=args.fill, checkpoint=args.checkpoint,
                              settings=settings, model=ModelConfig(**{**SERIES_MODEL_DEFAULTS, **given(args, ModelConfig)}),
                              config=TrainConfig(**overrides), resume=args.resume, overrides=overrides)
    except TrainingStopped as stop:
        print(f"chargen: {stop}", file=sys.stderr)
        if stop.result.status == "interrupted":
            return 143 if stop.result.signal == signal.SIGTERM else 130
        return 1
    m = result.metrics
    summary = f"done: {result.step} steps ({result.status})"
    if m:
        summary += f"; best validation MSE {m['val_mse']:.4g} (MAE {m['val_mae']:.4g}) at step {m['step']}"
    print(f"{summary}. Saved in {result.run_dir}", file=sys.stderr)
    print(f"forecast with: chargen series forecast --checkpoint {result.run_dir} --steps 50", file=sys.stderr)
    return 0


def cmd_series_forecast(args: argparse.Namespace) -> int:
    from chargen.plot import png_path
    from chargen.series import forecast, forecast_lines, load_series, show_plot, write_forecast_csv

    if args.plot:
        png_path(args.plot)
    run = load_series(args.run, args.checkpoint)
    result = forecast(run, args.steps or run.settings.horizon, args.history, args.column, args.fill)
    write_forecast_csv(result.values, sys.stdout)
    sys.stdout.flush()
    show_plot(forecast_lines(result), args.plot, f"{run.run_dir.name}: forecast of {len(result.values)} steps")
    return 0


def cmd_series_eval(args: argparse.Namespace) -> int:
    import json

    from chargen.plot import png_path
    from chargen.series import backtest, backtest_lines, load_series, print_backtest, show_plot

    if args.plot:
        png_path(args.plot)
    run = load_series(args.run, args.checkpoint)
    result = backtest(run, args.data, args.steps, args.season, args.stride, args.column, args.fill)
    if args.json:
        print(json.dumps(result.summary))
    else:
        print_backtest(result)
    sys.stdout.flush()
    show_plot(backtest_lines(result), args.plot, f"{run.run_dir.name}: backtest, horizon {result.summary['horizon']}")
    return 0


# -- text classification ----------------------------------------------------------------------------
CLASSIFY_TRAIN_HELP = {**{k: v for k, v in TRAIN_HELP.items() if k != "seq_len"},
                       "batch_size": "texts per step",
                       "epochs": "stop after this many passes over the training texts (0 = no limit)",
                       "max_time": "stop after this long, e.g. 90, 90s, 5m, 1h (2m when no limit is given)"}


def add_classify_parser(commands) -> None:
    """`classify train | eval | predict`: the recurrent core read over a whole text, a pooled linear head."""
    from chargen.classify_data import CLASSIFY_MODEL_DEFAULTS, ClassifyConfig
    from chargen.config import POOLINGS

    defaults = ClassifyConfig()
    classify = commands.add_parser("classify", help="text classification: train, eval, predict",
                                   description="Give each text one of a set of labels (sentiment, language, "
                                   "topic...) with the same recurrent core, read over the whole text.")
    sub = classify.add_subparsers(dest="classify_command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def field_options(p: argparse.ArgumentParser, label: bool = True, run_default: bool = False) -> None:
        where = "the run's" if run_default else None
        p.add_argument("--text", metavar="FIELD", default=None if run_default else defaults.text,
                       help=f"the text column (CSV name or 0-based index) or JSON key (default: {where or defaults.text})")
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
    p.add_argument("--pooling", choices=POOLINGS, default=ModelConfig().pooling,
                   help="the states over a text -> one vector: the last, the mean or the maximum (default: "
                        f"{ModelConfig().pooling}, measured best: BENCHMARKS.md)")
    add_config_options(p, ModelConfig, {k: v for k, v in MODEL_HELP.items() if k != "tie_weights"}, "model",
                       defaults=CLASSIFY_MODEL_DEFAULTS)
    add_config_options(p, TrainConfig, CLASSIFY_TRAIN_HELP, "training")
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
    from chargen.train import TrainingStopped

    model_options = given(args, ModelConfig)  # --pooling included
    settings = ClassifyConfig(args.text, args.label, args.val_fraction, args.balance, args.train_chars,
                              args.freeze_core)
    try:
        result = train_classifier(args.data, args.run, checkpoint=args.checkpoint, settings=settings,
                                  model=ModelConfig(**{**CLASSIFY_MODEL_DEFAULTS, **model_options}),
                                  config=TrainConfig(**given(args, TrainConfig)), val_file=args.val_file,
                                  from_run=args.from_run, model_options=model_options)
    except TrainingStopped as stop:
        print(f"chargen: {stop}", file=sys.stderr)
        if stop.result.status == "interrupted":
            return 143 if stop.result.signal == signal.SIGTERM else 130
        return 1
    m = result.metrics
    summary = f"done: {result.step} steps ({result.status})"
    if m:
        summary += f"; best validation loss {m['val_loss']:.4f}, accuracy {m['val_acc']:.4f}, macro-F1 {m['val_f1']:.4f} at step {m['step']}"
    print(f"{summary}. Saved in {result.run_dir}", file=sys.stderr)
    print(f"predict with: chargen classify predict --checkpoint {result.run_dir} \"TEXT\"", file=sys.stderr)
    return 0


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

    from chargen.checkpoint import CONFIG, checkpoints_root, list_runs

    runs = list_runs()
    if not runs:
        print(f"no runs in {checkpoints_root()}; train one with: chargen train FILE --run NAME", file=sys.stderr)
        return 0
    for run in runs:
        try:
            config = json.loads((run / CONFIG).read_text(encoding="utf-8"))
            m, model = config.get("metrics", {}), config["model"]
            bpc = f"{m['val_bpc']:.3f} bpc" if "val_bpc" in m else (f"val {m['val_loss']:.4g}" if "val_loss" in m else "-")
            print(f"{run.name:24s} {model['head']:6s} {model['layers']}x{model['hidden']} {model['cell']:4s} "
                  f"{m.get('steps', 0):>7} steps  {bpc}")
        except (ValueError, KeyError, TypeError):
            print(f"{run.name:24s} (unreadable config.json)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user error is one line on stderr and exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"chargen: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `chargen generate | head`): stop quietly, and keep Python
        # from complaining when it flushes stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
