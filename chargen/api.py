"""The Python API: the same steps as the command line, as functions.

    train(corpus, run=...)        read text -> Vocab -> encode -> split -> layout -> CharLM -> train()
    load(run)                     (model, vocab, config) from a run directory, weights only
    generate(run, seed=...)       an iterator of text pieces, streamed as they are sampled
    evaluate(run, text_file)      nats/char, bits/char and perplexity of a run on a text
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Iterator

from chargen.checkpoint import (CONFIG, STATE, TOKENIZER, WEIGHTS, check_complete, checkpoints_root, read_config,
                                read_state, read_weights, resolve_run)
from chargen.config import ModelConfig, TrainConfig, parse_duration
from chargen.errors import UserError
from chargen.log import info
from chargen.sample import SamplingSettings
from chargen.vocab import UNK_ID, Vocab


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
          overrides: dict | None = None, should_stop: Callable[[int], bool] | None = None):
    """Train a character model on a text file (or folder of .txt files, or a catalogue name).

    run: name under checkpoints/ (default: the corpus name); checkpoint: a run directory anywhere.
    resume: continue the run exactly from its trainer_state.pt; `overrides` (TrainConfig field ->
    value) may then change settings such as the budget. Returns a `TrainResult`.
    """
    import torch

    from chargen.batches import fit_layout
    from chargen.corpus import char_counts, encode_chunked, read_text, split_train_val, warn_large_alphabet
    from chargen.model import build_model, count_parameters
    from chargen.runtime import init_distributed, pick_device, tune_allocator
    from chargen.textlm import TextTask
    from chargen.train import train as train_loop

    model_config = model or ModelConfig()
    config = config or TrainConfig()
    if max_time is not None:
        config.max_time = parse_duration(max_time) if isinstance(max_time, str) else float(max_time)
    source = _corpus_source(corpus)
    text = read_text(source, encoding=encoding, normalize=normalize, allow_binary=allow_binary)
    run_dir = Path(checkpoint) if checkpoint is not None else checkpoints_root() / (run or text.name)

    state = None
    if resume:
        saved = read_config(run_dir)
        check_complete(run_dir, (TOKENIZER, STATE))
        if saved["model"].get("head") != "char":
            raise UserError(f"{run_dir} is a time-series run; resume it with: chargen series train --resume")
        if saved["corpus"]["sha256"] != text.sha256:
            raise UserError(f"--resume: {source} is not the corpus this run was trained on "
                            f"({saved['corpus']['name']}, SHA-256 {saved['corpus']['sha256'][:12]}...); "
                            "pass the same corpus or start a new --run")
        vocab = Vocab.load(run_dir / TOKENIZER)
        model_config = ModelConfig.from_dict(saved["model"])
        config = dataclasses.replace(TrainConfig.from_dict(saved["train"]), **(overrides or {}))
        val_fraction = saved["corpus"].get("val_fraction", val_fraction)
        state = read_state(run_dir)
    else:
        if run_dir.exists() and (run_dir / CONFIG).exists():
            raise UserError(f"run {run_dir} already exists; continue it with --resume, or choose another --run")
        counts = char_counts(text.text)
        warn_large_alphabet(counts, text.name)
        vocab = Vocab(sorted(counts), normalize=normalize)
    config.with_default_budget().validate()

    ids = encode_chunked(vocab, text.text)
    if val_file is not None:
        val_text = read_text(Path(val_file), encoding=encoding, normalize=normalize, allow_binary=allow_binary)
        train_ids, val_ids = ids, encode_chunked(vocab, val_text.text)
        val_name = str(val_file)
    else:
        train_ids, val_ids = split_train_val(ids, val_fraction)
        val_name = f"last {val_fraction:.0%} of the corpus"
    if len(val_ids) < 2:
        raise UserError(f"the validation text ({val_name}) has fewer than 2 characters; give a longer one")

    streams, seq_len = fit_layout(len(train_ids), config.batch_size, config.seq_len)
    if (streams, seq_len) != (config.batch_size, config.seq_len):
        info(f"the training text has only {len(train_ids)} characters: using --batch-size {streams} "
             f"--seq-len {seq_len} instead of {config.batch_size} x {config.seq_len}")
        config.batch_size, config.seq_len = streams, seq_len
    if len(val_ids) - 1 < config.seq_len:
        info(f"the validation text has {len(val_ids)} characters, fewer than one chunk ({config.seq_len}); "
             "validation figures will be noisy")

    tune_allocator()
    device = pick_device(config.device)
    dist = init_distributed(device)
    model_config.head = "char"
    model_config.vocab_size = len(vocab)
    torch.manual_seed(config.rng_seed)
    net = build_model(model_config)
    task = TextTask(train_ids, val_ids, vocab, config.batch_size, config.seq_len, config.rng_seed, device, dist)
    run_info = {
        "corpus": {"name": text.name, "path": str(source), "sha256": text.sha256, "chars": len(ids),
                   "train_chars": len(train_ids), "val_chars": len(val_ids), "validation": val_name,
                   "val_fraction": val_fraction, "encoding": encoding, "normalize": normalize},
        "vocab_size": len(vocab),
    }
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            vocab.save(run_dir / TOKENIZER)
        budget = ", ".join(part for part in (
            f"{config.max_steps} steps" if config.max_steps else "",
            f"{config.epochs:g} epochs" if config.epochs else "",
            f"{config.max_time:g}s" if config.max_time else "") if part)
        info(f"{'resuming' if resume else 'training'} {run_dir}: {model_config.layers}x{model_config.hidden} "
             f"{model_config.cell.upper()} ({count_parameters(net) / 1e6:.2f}M parameters), vocabulary {len(vocab)}, "
             f"{len(train_ids):,} training / {len(val_ids):,} validation characters, "
             f"{config.batch_size} streams x {config.seq_len}, on {device}"
             + (f" x {dist.world} processes" if dist.enabled else "") + f"; budget {budget}")
    return train_loop(net, task, config, run_dir, run_info, resume=state, dist=dist, should_stop=should_stop)


def load(run: str | Path | None = None, device: str = "cpu"):
    """(model, vocab, config) of a char run: the best weights, in eval mode, on `device`."""
    import torch

    from chargen.model import build_model

    run_dir = run_path(run)
    config = read_config(run_dir)
    check_complete(run_dir, (WEIGHTS, TOKENIZER))
    vocab = Vocab.load(run_dir / TOKENIZER)
    model_config = ModelConfig.from_dict(config["model"])
    model = build_model(model_config)
    tensors = read_weights(run_dir)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"head.weight"} if model_config.tie_weights else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"{run_dir / WEIGHTS} does not match config.json (missing {sorted(set(missing) - tied)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}); the run is inconsistent — retrain it")
    if model_config.head == "char" and model_config.vocab_size != len(vocab):
        raise UserError(f"{run_dir}: tokenizer.json has {len(vocab)} ids, the model {model_config.vocab_size}")
    model.to(torch.device(device)).eval()
    model.core.rnn.flatten_parameters()
    return model, vocab, config


def evaluate(run: str | Path | None, text_file: str | Path, encoding: str = "utf-8", device: str = "cpu",
             seq_len: int = 256, streams: int = 16) -> dict:
    """nats/char, bits/char and perplexity of a run on a text file; unknown characters are counted.

    Unknown characters are fed as `<unk>` and their predictions scored like any other.
    """
    from chargen.corpus import encode_chunked, read_text
    from chargen.runtime import pick_device
    from chargen.textlm import evaluate_text

    model, vocab, config = load(run, device="cpu")
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
    from chargen.sample import generate as generate_batch

    settings = SamplingSettings(temperature, top_k, top_p)
    for pieces in generate_batch(run_path(run), seed, length, settings, 1, rng_seed, stop, unknown):
        yield pieces[0]
