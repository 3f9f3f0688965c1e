"""The chargen command line: parses arguments and calls chargen.

    python cli.py train [FILE] [--run NAME] [--max-time 5m] ...
    python cli.py generate [--run NAME] [--seed TEXT] [--length N] [--temperature T] ...
    python cli.py eval [--run NAME] FILE
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
    "precision": f"{', '.join(PRECISIONS)}; auto = mixed precision on CUDA, fp32 elsewhere",
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


def add_config_options(parser: argparse.ArgumentParser, cls, helps: dict[str, str], title: str) -> None:
    """One option per dataclass field, default shown from the dataclass (argparse default None = not given)."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name not in helps:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
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
            kind = type(default)
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
    add_sampling_options(p)
    p.add_argument("--num-samples", type=_int_at_least(1), default=1,
                   help="independent samples, drawn together as a batch (default: 1)")
    p.add_argument("--rng-seed", type=_int_at_least(0), default=None, help="random seed: same seed, same text")
    p.add_argument("--stop", metavar="STRING", help="stop a sample once it has produced this string")
    p.add_argument("--unknown", choices=("error", "skip", "unk"), default="error",
                   help="seed characters the model never saw: error, skip them, or feed <unk> (default: error)")
    p.add_argument("--no-seed", action="store_true", help="print only the generated text, not the seed before it")
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser("eval", help="bits/char and perplexity of a run on a text file")
    add_run_options(p)
    p.add_argument("file", help="text file to score")
    p.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("runs", help="list the runs under checkpoints/")
    p.set_defaults(func=cmd_runs)
    return parser


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=0.8,
                   help="randomness: 0 = always the likeliest character, 1 = the model's own odds (default: 0.8)")
    p.add_argument("--top-k", type=_int_at_least(0), default=0, help="sample among the k likeliest only (default: 0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample among the smallest set with this much probability (default: 1.0)")


# -- commands -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from chargen import api
    from chargen.train import TrainingStopped

    overrides = given(args, TrainConfig)
    model_options = given(args, ModelConfig)
    if args.resume and model_options:
        print(f"chargen: --resume keeps the run's model; ignoring {', '.join('--' + k for k in model_options)}",
              file=sys.stderr)
    try:
        result = api.train(args.corpus, args.run, checkpoint=args.checkpoint,
                           model=ModelConfig(**model_options), config=TrainConfig(**overrides),
                           val_file=args.val_file, val_fraction=args.val_fraction, encoding=args.encoding,
                           normalize=not args.no_normalize, allow_binary=args.allow_binary,
                           resume=args.resume, overrides=overrides)
    except TrainingStopped as stop:
        print(f"chargen: {stop}", file=sys.stderr)
        if stop.result.status == "interrupted":
            return 143 if stop.result.signal == signal.SIGTERM else 130
        return 1
    m = result.metrics
    summary = f"done: {result.step} steps ({result.status})"
    if m:
        summary += f"; best validation {m['val_loss']:.4f} nats/char = {m['val_bpc']:.4f} bits/char at step {m['step']}"
    print(f"{summary}. Saved in {result.run_dir}", file=sys.stderr)
    print(f"generate with: chargen generate --checkpoint {result.run_dir} --seed \"...\"", file=sys.stderr)
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

    r = api.evaluate(api.run_path(args.run, args.checkpoint), args.file, encoding=args.encoding, device=args.device)
    if args.json:
        print(json.dumps(r, ensure_ascii=False))
        return 0
    print(f"{r['file']}: {r['chars']:,} characters, {r['nats_per_char']:.4f} nats/char, "
          f"{r['bits_per_char']:.4f} bits/char, perplexity {r['perplexity']:.3f}")
    if r["unknown_chars"]:
        shown = " ".join(repr(c) for c in r["unknown_distinct"])
        print(f"{r['unknown_chars']} characters unknown to the model (scored as <unk>): {shown}", file=sys.stderr)
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
