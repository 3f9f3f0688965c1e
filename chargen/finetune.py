"""Start a text run from a trained one (`chargen train FILE --from-run BASE`): fine-tuning.

The base run gives the architecture, the weights and the vocabulary. Characters of the new text that
the base never saw are appended to the vocabulary (ids after the base's, so every base id keeps its
meaning), with embedding and output rows copied from `<unk>`'s: the base learnt `<unk>` as "a character
I do not know", a sensible start for a character it does not know yet. The new run's own files hold
everything (weights, extended tokenizer.json), so it never needs the base again; config.json records
which base it came from and the SHA-256 of that base's weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from chargen.checkpoint import WEIGHTS
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import UserError
from chargen.heads import KINDS
from chargen.vocab import UNK_ID, Vocab

# Model settings that fix the shapes of the weights: they come from the base and cannot change.
ARCHITECTURE = ("cell", "hidden", "layers", "embedding", "tie_weights")

# What fine-tuning changes in the training settings the user did not set (bench/finetune.py, BENCHMARKS.md
# "Fine-tuning": 2x384 bases fine-tuned on two ~90k-character texts). A trained model needs a small step
# and few passes: at the base's own peak learning rate (4.1e-3) the first evaluations were the best and
# every later one worse, at an eighth of it 0.06-0.10 nats/char better; 4 passes, with the rate annealed
# over them, were as good as 8 and better than 2 or 1. Only AdamW's moments start cold, so a short warm-up
# is enough, and training stops early once the validation loss has not improved for two evaluations (the
# best weights are kept in any case). Freezing layers was not tried.
FINETUNE_LR_SCALE = 1 / 8     # of the base run's peak learning rate
FINETUNE_PASSES = 4.0         # over the new text, unless --epochs or --max-steps says otherwise
FINETUNE_SETTINGS = {"warmup_steps": 10, "patience": 2}

# Weights that have one row per vocabulary id (first dimension): extended for added characters.
PER_ID = ("embed.weight", "head.weight", "head.bias")


@dataclass
class BaseStart:
    """What a new run takes from its base: architecture, weights, vocabulary and provenance."""

    model_config: ModelConfig   # the base's architecture, vocab_size of the extended vocabulary
    vocab: Vocab                # the base's characters, then the added ones
    weights: dict               # state dict with rows for the added characters
    added: list[str]            # characters appended to the vocabulary, in id order
    record: dict                # config.json's "finetune" section

    def load_into(self, model) -> None:
        """Put the base's (extended) weights into a freshly built model of `model_config`."""
        model.load_state_dict(self.weights)


def weights_sha256(run_dir: Path) -> str:
    """SHA-256 of a run's model.safetensors: identifies the exact base weights a run started from."""
    digest = hashlib.sha256()
    with open(Path(run_dir) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_architecture(base: ModelConfig, given: dict, base_name: str) -> None:
    """Refuse, in one line, an explicit model setting that contradicts the base's architecture."""
    clashes = [f"--{name.replace('_', '-')} {given[name]} (the base has {getattr(base, name)})"
               for name in ARCHITECTURE if name in given and given[name] != getattr(base, name)]
    if clashes:
        raise UserError(f"--from-run {base_name}: {', '.join(clashes)}; a fine-tuned run keeps its base's "
                        "architecture: drop the option, or train from scratch without --from-run")


def extend_vocab(base: Vocab, text: str) -> tuple[Vocab, list[str]]:
    """The base vocabulary with the characters of `text` it lacks appended (in code-point order)."""
    from chargen.corpus import char_counts

    added = sorted(char_counts(base.prepare(text)).keys() - set(base.chars))
    return Vocab(base.chars + added, normalize=base.normalize), added


def extend_rows(weights: dict, old_size: int, added: int) -> dict:
    """Weights with `added` more rows, copies of `<unk>`'s, in every per-id tensor: (V, ...) -> (V + added, ...)."""
    import torch

    out = dict(weights)
    for name in PER_ID:
        if name in weights and added:
            t = weights[name]
            assert t.shape[0] == old_size, f"{name} has {t.shape[0]} rows, the vocabulary {old_size} ids"
            out[name] = torch.cat([t, t[UNK_ID:UNK_ID + 1].expand(added, *t.shape[1:])])
    return out


def fine_tune_settings(config: TrainConfig, explicit: dict, base_lr: float,
                       default_time: float) -> tuple[TrainConfig, str]:
    """The training settings of a fine-tuning run (those in `explicit` are kept) and a line saying them.

    base_lr: the base run's peak learning rate; the fine-tuning one is FINETUNE_LR_SCALE of it.
    default_time: the time limit of a run given no budget, kept beside the pass limit (a large new text
    ends there first).
    """
    chosen = {**FINETUNE_SETTINGS, "lr": float(f"{base_lr * FINETUNE_LR_SCALE:.2g}")}
    if not ({"epochs", "max_steps"} & explicit.keys()):
        chosen["epochs"] = FINETUNE_PASSES
        if not config.max_time:
            chosen["max_time"] = default_time
    config = dataclasses.replace(config, **{k: v for k, v in chosen.items() if k not in explicit})
    kept = [k for k in (*FINETUNE_SETTINGS, "lr", "epochs", "max_steps") if k in explicit]
    passes = f", {config.epochs:g} passes over the text" if "epochs" in chosen else ""
    line = (f"fine-tuning settings: lr {config.lr:g} (the base's was {base_lr:g}){passes}, warm-up "
            f"{config.warmup_steps} steps, early stopping after {config.patience} evaluations without improvement"
            + (f" (yours: {', '.join('--' + k.replace('_', '-') for k in kept)})" if kept else
               " (measured for a trained model on a small text; each can be set)"))
    return config, line


def start_from(base_run: str | Path, source: Path, *, encoding: str, allow_binary: bool, given_model: dict,
               config: TrainConfig, explicit_train: dict, default_time: float) -> tuple[BaseStart, TrainConfig]:
    """Read the base run (with `chargen.api.load`), extend it for the text at `source`, pick the settings.

    given_model / explicit_train: the model and training settings the user chose explicitly. Each
    architecture setting must agree with the base (dropout may change); the training ones are kept
    over the fine-tuning choices. Says on stderr what it took from the base and what it chose.
    """
    from chargen.api import load, run_path
    from chargen.corpus import read_text
    from chargen.log import info

    run_dir = run_path(base_run)
    model, vocab, base_run_config = load(run_dir)
    head = model.config.head
    if head != "char":
        raise UserError(f"--from-run {base_run}: {run_dir} is {KINDS.get(head, f'a run of kind {head!r}')}; a text "
                        "run can only start from a text run (chargen train FILE --run NAME)")
    base_config = model.config
    check_architecture(base_config, given_model, str(base_run))
    # Read as is: the base vocabulary's own normalisation decides which characters the text has.
    text = read_text(Path(source), encoding=encoding, normalize=False, allow_binary=allow_binary).text
    new_vocab, added = extend_vocab(vocab, text)
    model_config = dataclasses.replace(base_config, vocab_size=len(new_vocab),
                                       dropout=given_model.get("dropout", base_config.dropout))
    weights = extend_rows({k: v.detach().clone() for k, v in model.state_dict().items()}, len(vocab), len(added))
    base_lr = (base_run_config.get("train") or {}).get("lr")
    if not (isinstance(base_lr, (int, float)) and 0 < base_lr < 1):  # a hand-edited or older config.json
        base_lr = TrainConfig().lr
    config, settings_line = fine_tune_settings(config, explicit_train, float(base_lr), default_time)
    record = {"base_run": run_dir.name, "base_path": str(run_dir), "base_weights_sha256": weights_sha256(run_dir),
              "base_corpus": base_run_config.get("corpus", {}).get("name"), "base_vocab_size": len(vocab),
              "added_chars": len(added),
              "settings": {k: getattr(config, k) for k in ("lr", "epochs", *FINETUNE_SETTINGS)}}
    shown = " ".join(repr(c) for c in added[:10]) + (" ..." if len(added) > 10 else "")
    info(f"starting from run {run_dir} ({base_config.layers}x{base_config.hidden} {base_config.cell.upper()}, "
         f"vocabulary {len(vocab)}): added {len(added)} new character{'s' * (len(added) != 1)}"
         + (f" ({shown})" if added else "") + ", initialised from <unk>")
    info(settings_line)
    return BaseStart(model_config, new_vocab, weights, added, record), config
