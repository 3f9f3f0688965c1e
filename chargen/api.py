"""The Python API: the same steps as the command line, as functions.

    train(corpus, run=...)        read text -> Vocab -> encode -> split -> layout -> CharLM -> train()
    load(run)                     (model, vocab, config) from a run directory, weights only
    generate(run, seed=...)       an iterator of text pieces, streamed as they are sampled
    evaluate(run, text_file)      nats/char, bits/char and perplexity of a run on a text
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterator

from chargen.checkpoint import (CONFIG, TOKENIZER, WEIGHTS, check_complete, checkpoints_root, read_config,
                                read_weights, resolve_run)
from chargen.config import ModelConfig, TrainConfig, parse_duration
from chargen.errors import UserError, first_line
from chargen.heads import require_head
from chargen.log import info
from chargen.sample import SamplingSettings
from chargen.vocab import UNK_ID, Vocab


DEFAULT_TIME = 300.0  # seconds of training when no step, epoch or time limit is given (BENCHMARKS.md)


def run_path(run: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    """A run directory from a run name (under checkpoints/), a path, or the most recent run."""
    if checkpoint is None and run is not None and (Path(run) / CONFIG).is_file() and "/" in str(run):
        checkpoint = run
        run = None
    return resolve_run(None if run is None else str(run), checkpoint)


def _corpus_source(corpus: str | Path | None) -> Path:
    """A corpus argument as a local path: a file, a folder, or a catalogue name (downloaded once)."""
    from chargen import catalogue

    if corpus is None:
        return catalogue.corpus_path(catalogue.DEFAULT_CORPUS)
    path = Path(corpus)
    if not path.exists() and str(corpus) in catalogue.catalogue():
        return catalogue.corpus_path(str(corpus))
    return path


def train(corpus: str | Path | None = None, run: str | None = None, *, checkpoint: str | Path | None = None,
          model: ModelConfig | None = None, config: TrainConfig | None = None, max_time: str | float | None = None,
          val_file: str | Path | None = None, val_fraction: float = 0.1, encoding: str = "utf-8",
          normalize: bool = True, allow_binary: bool = False, resume: bool = False,
          overrides: dict | None = None, should_stop: Callable[[int], bool] | None = None,
          from_run: str | Path | None = None, model_given: dict | None = None):
    """Train a character model on a text file (or folder of .txt files, or a catalogue name).

    run: name under checkpoints/ (default: the corpus name); checkpoint: a run directory anywhere.
    resume: continue the run exactly from its trainer_state.pt; `overrides` (TrainConfig field ->
    value) may then change settings such as the budget. Returns a `TrainResult`.
    from_run: start from that run's weights and vocabulary (fine-tuning, chargen.finetune): the
    architecture is the base's (`model` is not used; `model_given`, the ModelConfig fields chosen
    explicitly, must agree with it) and the TrainConfig fields not in `overrides` that fine-tuning
    needs take its values.
    Sizing (chargen.sizing, unless config.sizing is "fixed"): a new run's width, dropout, streams and
    learning rate are chosen for the text, the budget and the machine, except those given explicitly:
    the keys of `model_given` and `overrides` when passed (the command line's way), otherwise every
    field of a `model` or `config` passed (a ModelConfig given is used as it is).
    """
    import torch

    from chargen.batches import fit_layout
    from chargen.corpus import encode_chunked, read_text, split_train_val
    from chargen.corpus_cache import corpus_name, open_corpus
    from chargen.model import build_model, count_parameters
    from chargen.run_setup import start_run
    from chargen.textlm import TextTask

    explicit = explicit_settings(model, config, model_given, overrides)
    config = config or TrainConfig()
    if max_time is not None:
        config.max_time = parse_duration(max_time) if isinstance(max_time, str) else float(max_time)
    source = _corpus_source(corpus)
    run_dir = Path(checkpoint) if checkpoint is not None else checkpoints_root() / (run or corpus_name(source))
    base = None
    if from_run is not None:
        if resume:
            raise UserError("--from-run starts a new run from a base and --resume continues a run: give one of them")
        from chargen.finetune import start_from

        base, config = start_from(from_run, source, encoding=encoding, allow_binary=allow_binary,
                                  given_model=model_given or {}, config=config, explicit_train=overrides or {},
                                  default_time=DEFAULT_TIME)
        model, normalize = base.model_config, base.vocab.normalize  # the base's: its characters are what it knows

    with start_run(run_dir, "char", resume=resume, model=model or ModelConfig(), config=config, overrides=overrides,
                   default_budget={"max_time": DEFAULT_TIME}) as started:
        model_config, config = started.model, started.config
        vocab, trained_on = (base.vocab if base else None), None
        finetune_record = base.record if base else None
        if started.resuming:
            finetune_record = started.saved.get("finetune")  # kept in config.json across resumes
            check_complete(run_dir, (TOKENIZER,))
            trained_on = started.saved["corpus"]  # open_corpus refuses another corpus
            vocab = Vocab.load(run_dir / TOKENIZER)
            val_fraction = trained_on.get("val_fraction", val_fraction)
            # The same bytes (checked by SHA-256) read another way would give characters outside the
            # run's vocabulary: a resumed run reads its corpus exactly as it was first read.
            encoding = trained_on.get("encoding", encoding)
            normalize = trained_on.get("normalize", normalize)
        # The corpus as ids, memory-mapped from its cache in the run directory (a new run: vocabulary from the
        # text); rank 0 encodes it once, every rank maps it.
        text = open_corpus(source, run_dir, encoding=encoding, normalize=normalize, allow_binary=allow_binary,
                           vocab=vocab, trained_on=trained_on, dist=started.dist)
        vocab, ids = text.vocab, text.ids
        if val_file is not None:
            val_text = read_text(Path(val_file), encoding=encoding, normalize=normalize, allow_binary=allow_binary)
            train_ids, val_ids = ids, encode_chunked(vocab, val_text.text)
            val_name = str(val_file)
        else:
            train_ids, val_ids = split_train_val(ids, val_fraction)
            val_name = f"last {val_fraction:.0%} of the corpus"
        if len(val_ids) < 2:
            raise UserError(f"the validation text ({val_name}) has fewer than 2 characters; give a longer one")

        model_config.head = "char"
        model_config.vocab_size = len(vocab)
        sizing = started.saved.get("sizing") if started.resuming else None
        if not started.resuming and base is None and config.sizing == "auto":
            from chargen.sizing import size_new_run

            model_config, config, sized = size_new_run(model_config, config, len(train_ids), started.device,
                                                       started.amp_dtype, explicit, started.dist)
            if sized is not None:
                info(sized.line())
                sizing = sized.record()
            started.model, started.config = model_config, config
        streams, seq_len = fit_layout(len(train_ids), config.batch_size, config.seq_len)
        if (streams, seq_len) != (config.batch_size, config.seq_len):
            info(f"the training text has only {len(train_ids)} characters: using --batch-size {streams} "
                 f"--seq-len {seq_len} instead of {config.batch_size} x {config.seq_len}")
            config.batch_size, config.seq_len = streams, seq_len
        if len(val_ids) - 1 < config.seq_len:
            info(f"the validation text has {len(val_ids)} characters, fewer than one chunk ({config.seq_len}); "
                 "validation figures will be noisy")

        torch.manual_seed(config.rng_seed)
        net = build_model(model_config)
        if base is not None:
            base.load_into(net)
        task = TextTask(train_ids, val_ids, vocab, config.batch_size, config.seq_len, config.rng_seed,
                        started.device, started.dist)
        run_info = {
            "corpus": {"name": text.name, "path": str(source), "sha256": text.sha256, "chars": len(ids),
                       "train_chars": len(train_ids), "val_chars": len(val_ids), "validation": val_name,
                       "val_fraction": val_fraction, "encoding": encoding, "normalize": normalize},
            "vocab_size": len(vocab),
        }
        if finetune_record is not None:
            run_info["finetune"] = finetune_record
        if sizing is not None:
            run_info["sizing"] = sizing  # kept across resumes, like the settings it chose
        if started.dist.is_main and not started.resuming:
            vocab.save(run_dir / TOKENIZER)
        started.announce(f"{model_config.layers}x{model_config.hidden} {model_config.cell.upper()} "
                         f"({count_parameters(net) / 1e6:.2f}M parameters), vocabulary {len(vocab)}, "
                         f"{len(train_ids):,} training / {len(val_ids):,} validation characters, "
                         f"{config.batch_size} streams x {config.seq_len}")
        return started.train(net, task, run_info, should_stop)


def explicit_settings(model: ModelConfig | None, config: TrainConfig | None, model_given: dict | None,
                      overrides: dict | None) -> set[str]:
    """The ModelConfig and TrainConfig field names a caller of `train` chose (see its docstring)."""
    def names(given: dict | None, passed, cls) -> set[str]:
        if given is not None:
            return set(given)
        return {f.name for f in fields(cls)} if passed is not None else set()

    return names(model_given, model, ModelConfig) | names(overrides, config, TrainConfig)


def load(run: str | Path | None = None, device: str = "cpu"):
    """(model, vocab, config) of a run: the best weights, in eval mode, on `device` (vocab None for a series run)."""
    import torch

    from chargen.model import build_model

    run_dir = run_path(run)
    config = read_config(run_dir)
    model_config = ModelConfig.from_dict(config["model"])
    char = model_config.head in ("char", "classify")  # the heads that read characters
    check_complete(run_dir, (WEIGHTS, TOKENIZER) if char else (WEIGHTS,))
    vocab = Vocab.load(run_dir / TOKENIZER) if char else None
    tensors = read_weights(run_dir)
    # Checked first: building a model of a damaged layer or network count could take forever.
    networks = len({name.split(".")[1] for name in tensors if name.startswith("members.")}) or 1
    if model_config.ensemble != networks:
        raise UserError(f"{run_dir / CONFIG} says {model_config.ensemble} networks but {WEIGHTS} holds {networks}; "
                        "the run is inconsistent — retrain it")
    first = "members.0." if networks > 1 else ""  # an ensemble's members are alike: the first one's layers
    layers = sum(name.startswith(first + "core.rnn.weight_hh_l") for name in tensors)
    if model_config.layers != layers:
        raise UserError(f"{run_dir / CONFIG} says {model_config.layers} layers but {WEIGHTS} holds {layers}; "
                        "the run is inconsistent — retrain it")
    try:
        with torch.device("meta"):  # shapes only: a damaged config.json must not allocate a huge model
            shapes = {k: tuple(v.shape) for k, v in build_model(model_config).state_dict().items()}
    except (RuntimeError, TypeError, OverflowError, ValueError) as e:  # sizes beyond any tensor
        raise UserError(f"{run_dir / CONFIG} describes a model that cannot be built ({first_line(e)}); "
                        "the run cannot be used — retrain it") from None
    tied = {"head.weight"} if model_config.tie_weights else set()
    missing, unexpected = sorted(shapes.keys() - tensors.keys() - tied), sorted(tensors.keys() - shapes.keys())
    wrong = sorted(k for k in shapes.keys() & tensors.keys() if tuple(tensors[k].shape) != shapes[k])
    if missing or unexpected or wrong:
        raise UserError(f"{run_dir / WEIGHTS} does not match config.json (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}, wrong shape {wrong[:3]}); the run is inconsistent — retrain it")
    model = build_model(model_config)
    model.load_state_dict(tensors, strict=False)
    if char and model_config.vocab_size != len(vocab):
        raise UserError(f"{run_dir}: tokenizer.json has {len(vocab)} ids, the model {model_config.vocab_size}; "
                        "the run is inconsistent — retrain it")
    model.to(torch.device(device)).eval()
    for module in model.modules():  # cuDNN wants each recurrent layer's weights in one block
        if isinstance(module, torch.nn.RNNBase):
            module.flatten_parameters()
    return model, vocab, config


def evaluate(run: str | Path | None, text_file: str | Path, encoding: str = "utf-8", device: str = "cpu",
             seq_len: int = 256, streams: int = 16) -> dict:
    """nats/char, bits/char and perplexity of a run on a text file; unknown characters are counted.

    Unknown characters are fed as `<unk>` and their predictions scored like any other.
    """
    from chargen.corpus import encode_chunked, read_text
    from chargen.runtime import pick_device
    from chargen.textlm import evaluate_text

    run_dir = run_path(run)
    require_head(run_dir, read_config(run_dir)["model"], "char")
    model, vocab, config = load(run_dir, device="cpu")
    dev = pick_device(device)
    model.to(dev)
    text = read_text(Path(text_file), encoding=encoding, normalize=vocab.normalize)
    ids = encode_chunked(vocab, text.text)
    if len(ids) < 2:
        raise UserError(f"{text_file} has fewer than 2 characters; nothing to predict")
    unknown = int((ids == UNK_ID).sum())
    result = evaluate_text(model, ids, streams=streams, seq_len=seq_len, device=dev)
    return {"run": config["corpus"]["name"], "file": str(text_file), "chars": result["chars"],
            "nats_per_char": result["loss"], "bits_per_char": result["bpc"],
            "perplexity": math.exp(result["loss"]), "unknown_chars": unknown,
            "unknown_distinct": vocab.unknown(text.text)[:20] if unknown else []}


def generate(run: str | Path | None = None, seed: str = "\n", length: int = 500, temperature: float = 0.8,
             top_k: int = 0, top_p: float = 1.0, rng_seed: int | None = None, stop: str | None = None,
             unknown: str = "error") -> Iterator[str]:
    """Stream one sample from a run: yields each new character as it is drawn (the seed not included)."""
    from chargen.sample import generate_streams

    settings = SamplingSettings(temperature, top_k, top_p)
    for pieces in generate_streams(run_path(run), seed, length, settings, 1, rng_seed, stop, unknown):
        yield pieces[0]
