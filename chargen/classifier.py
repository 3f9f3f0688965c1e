"""Text classification on the recurrent core (many-to-one): read a text, give it one of a set of labels.

    train_classifier(data, run=...)   labelled texts -> stratified split -> Vocab (or a text run's) ->
                                      TextClassifier -> chargen.loop.train_loop() -> checkpoints/<run>/
    load_classifier(run)              the model (best weights), its vocabulary and label names
    predict_proba(model, ids)         class probabilities of any number of texts of any length
    evaluate_file(run, file)          accuracy, macro-F1, per-class figures and the confusion matrix

The embedding, the core, the loop, the checkpoints and the run directory are the character model's;
this module adds the pooled linear head, the batches of whole texts, and the transfer from a text run
(`--from-run`: its vocabulary, embedding and core, fine-tuned or with the core frozen).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chargen.checkpoint import CONFIG, TOKENIZER, checkpoints_root, read_config
from chargen.classify_data import (CLASSIFY_MODEL_DEFAULTS, ClassifyConfig, Examples, class_names,
                                   describe_classes, read_examples, scores, stratified_split)
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import UserError
from chargen.heads import require_head
from chargen.log import info
from chargen.model import RecurrentCore
from chargen.vocab import Vocab

CHUNK = 1024            # characters read per call of the core: memory stays bounded on a text of any length
EVAL_BATCH = 64         # texts per forward pass when evaluating or predicting
BUCKET_POOL = 50        # batches' worth of shuffled texts sorted by length together (bucketing)


class TextClassifier(nn.Module):
    """Embedding -> the recurrent core, read over the whole text -> pooled state -> dropout -> linear.

    The embedding and core are named as in CharLM (`embed`, `core`), so a text run's weights load into
    them as they are.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        self.core = RecurrentCore(config.cell, config.embedding, config.hidden, config.layers, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden * (2 if config.pooling == "mean-max" else 1), config.outputs)
        nn.init.normal_(self.embed.weight, std=1.0)  # as CharLM's (untied) embedding
        self.trained_lr_scale = 1.0  # learning-rate factor of the embedding and core (--core-lr-scale)

    def lr_scale_of(self, name: str) -> float:
        """The learning-rate factor of a parameter: trained_lr_scale for the embedding and core (set when
        they come from a text run, which a full learning rate would unlearn), 1 for the new head."""
        return self.trained_lr_scale if name.startswith(("embed.", "core.")) else 1.0

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor], hidden=None) -> tuple[torch.Tensor, None]:
        """batch: ids (B, T) right-padded and lengths (B,) -> class logits (B, classes), no carried state."""
        ids, lengths = batch
        return self.head(self.drop(self.pool(ids, lengths))), None

    def pool(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, hidden), or (B, 2 hidden) for mean-max: the top layer's states over each text's own
        characters, pooled.

        The text is read CHUNK characters at a time with the state carried, which is the same
        computation as one call but bounds the memory of a long text. Padding after a text's end is
        read too (the batch is one rectangle) but never pooled: `last` takes the state at the text's
        last character, `mean` and `max` mask the padding out; `mean-max` is the two side by side
        (a cue that occurs once in a long text is averaged away by the mean, not by the max).
        """
        B = ids.shape[0]
        mode = self.config.pooling
        takes_mean, takes_max = mode in ("mean", "mean-max"), mode in ("max", "mean-max")
        last = total = ids.new_zeros((B, self.config.hidden), dtype=torch.float32)
        peak = ids.new_full((B, self.config.hidden), -math.inf, dtype=torch.float32)
        rows = torch.arange(B, device=ids.device)
        for start, out in self.read(ids):
            t = out.shape[1]
            if mode == "last":
                at = lengths - 1 - start                                   # (B,) position in this chunk
                here = (at >= 0) & (at < t)
                last = torch.where(here[:, None], out[rows, at.clamp(0, t - 1)], last)
                continue
            valid = (start + torch.arange(t, device=ids.device))[None, :] < lengths[:, None]  # (B, t)
            if takes_mean:
                total = total + (out * valid[..., None]).sum(1)
            if takes_max:
                peak = torch.maximum(peak, out.masked_fill(~valid[..., None], -math.inf).amax(1))
        if mode == "last":
            return last
        parts = ([total / lengths[:, None].to(total.dtype)] if takes_mean else []) + ([peak] if takes_max else [])
        return torch.cat(parts, dim=1)

    def read(self, ids: torch.Tensor):
        """Yield (start, the top layer's states (B, t, H) in fp32) for each CHUNK of ids (B, T), the state
        carried from chunk to chunk: the same as one call, with the memory of a long text bounded."""
        hidden = None
        for start in range(0, ids.shape[1], CHUNK):
            out, hidden = self.core(self.embed(ids[:, start:start + CHUNK]), hidden)
            yield start, out.float()

    @torch.no_grad()
    def contributions(self, text_ids: np.ndarray) -> torch.Tensor:
        """(classes, T): what the state after each character of one text (ids (T,)) adds to each class's
        logit. With the head's bias they sum exactly to the logits of `forward`. Eval mode only: dropout
        would break the sum.

        The head is linear in the pooled vector, so each pooled part splits over the characters: the mean
        gives w . h_t / T to every t, the max gives unit j's w_j h_tj to the t where unit j peaked, and the
        last state telescopes into the steps w . (h_t - h_{t-1}).
        """
        if self.training:
            raise ValueError("contributions() needs the model in eval mode (dropout off): call .eval() first")
        ids = torch.as_tensor(np.asarray(text_ids, dtype=np.int64), device=self.head.weight.device)
        states = torch.cat([out[0] for _, out in self.read(ids[None])])  # (T, H) the top layer after each character
        weight, size = self.head.weight.float(), self.config.hidden  # (classes, H or 2H)
        mode = self.config.pooling
        if mode == "last":
            steps = states - torch.cat([states.new_zeros(1, size), states[:-1]])
            return (steps @ weight.T).T
        total = states.new_zeros(len(ids), weight.shape[0])        # (T, classes)
        column = 0
        if mode in ("mean", "mean-max"):
            total += states @ weight[:, :size].T / len(ids)
            column = size
        if mode in ("max", "mean-max"):
            units, at = torch.arange(size, device=ids.device), states.argmax(0)  # (H,) where each unit peaked
            peaks = torch.zeros_like(states)
            peaks[at, units] = states[at, units]                   # each unit's value at its peak only
            total += peaks @ weight[:, column:column + size].T
        return total.T


def pad_batch(ids: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts as ids (B, longest) right-padded with 0, and their lengths (B,), on the device."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    block = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
    for row, x in enumerate(ids):
        block[row, :len(x)] = x
    return torch.from_numpy(block).to(device), torch.from_numpy(lengths).to(device)


@torch.no_grad()
def predict_proba(model: nn.Module, ids: list[np.ndarray], device: torch.device | str = "cpu") -> np.ndarray:
    """(N, classes) probabilities of every text, each read in full; texts go in batches of similar length."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    probs = np.zeros((len(ids), model.config.outputs), dtype=np.float64)
    for i in range(0, len(order), EVAL_BATCH):
        chosen = order[i:i + EVAL_BATCH]
        logits, _ = model(pad_batch([ids[j] for j in chosen], torch.device(device)))
        probs[chosen] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    model.train(was_training)
    return probs


class ClassifyTask:
    """Labelled texts for `chargen.loop.train_loop`: bucketed batches by step, weighted loss, validation.

    Each text is one example read from a zero state, so no state is carried between batches. Epoch e
    shuffles the texts with (seed, e), sorts each pool of BUCKET_POOL batches' worth by length, cuts it
    into batches and shuffles the batches: texts of similar length share a batch (little padding to
    read), and the step number alone fixes a batch.
    """

    head = "classify"
    carries_state = False
    unit = "texts"
    # The best weights are those with the fewest validation errors, and of equals the lowest loss: a
    # classifier's loss rises from overconfidence on the texts it gets wrong while it still gets more of them
    # right (validation loss lowest at step 590 with accuracy 0.648, accuracy 0.698 at step 1128:
    # BENCHMARKS.md, "Text classification"). The loss breaks ties: on an easy task accuracy reaches 1.0
    # early, and the first model to reach it is the least trained.
    selects_on = ("val_error", "val_loss")

    def __init__(self, train_ids: list[np.ndarray], train_y: np.ndarray, val_ids: list[np.ndarray],
                 val_y: np.ndarray, classes: int, batch_size: int, seed: int, device: torch.device,
                 class_weights: np.ndarray | None = None):
        self.train_ids, self.train_y = train_ids, train_y
        self.val_ids, self.val_y = val_ids, val_y
        self.classes = classes
        self.batch_size = min(batch_size, len(train_ids))
        self.seed = seed
        self.device = device
        self.steps_per_epoch = math.ceil(len(train_ids) / self.batch_size)
        self.items_per_step = self.batch_size
        self.weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32,
                                                                         device=device)
        self._plan: tuple[int, list[np.ndarray]] | None = None

    def starts_epoch(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The batches (index arrays) of one epoch, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.train_ids))
        lengths = np.array([len(x) for x in self.train_ids])
        pool = self.batch_size * BUCKET_POOL
        batches = []
        for p in range(0, len(order), pool):
            part = order[p:p + pool]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches.extend(part[b:b + self.batch_size] for b in range(0, len(part), self.batch_size))
        return [batches[k] for k in rng.permutation(len(batches))]

    def batch(self, step: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """((ids (B, T), lengths (B,)), class ids (B,)) of this step."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._plan is None or self._plan[0] != epoch:
            self._plan = (epoch, self.epoch_batches(epoch))
        return self.batch_of(self._plan[1][k])

    def batch_of(self, chosen: np.ndarray) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """((ids (B, T), lengths (B,)), class ids (B,)) of these training texts (indices)."""
        return (pad_batch([self.train_ids[i] for i in chosen], self.device),
                torch.as_tensor(self.train_y[chosen], device=self.device))

    def padded_chars(self, chosen: np.ndarray) -> int:
        """Characters a step on these training texts reads: B x the longest, padding included."""
        return len(chosen) * max(len(self.train_ids[i]) for i in chosen)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy; output (B, classes) logits, target (B,) class ids; weighted with --balance."""
        return F.cross_entropy(output.float(), target, weight=self.weights)

    def evaluate(self, model: nn.Module) -> dict:
        """Loss (unweighted), accuracy, macro-F1 and error rate over every validation text, each read in full."""
        probs = predict_proba(model, self.val_ids, self.device)
        picked = probs[np.arange(len(self.val_y)), self.val_y]
        figures = scores(self.val_y, probs.argmax(1), self.classes)
        return {"val_loss": float(-np.log(np.maximum(picked, 1e-12)).mean()),
                "val_acc": figures["accuracy"], "val_f1": figures["macro_f1"], "val_error": 1.0 - figures["accuracy"]}

    def describe(self, metrics: dict) -> str:
        return (f"val loss {metrics['val_loss']:.4f}, accuracy {metrics['val_acc']:.4f}, "
                f"macro-F1 {metrics['val_f1']:.4f}")


# -- training -----------------------------------------------------------------------------------------
def _transfer(from_run: str | Path, wanted: ModelConfig, model_options: dict) -> tuple[ModelConfig, Vocab, dict, Path]:
    """A text run's model settings (with `wanted`'s dropout and pooling), vocabulary and embedding + core
    weights (its model is loaded with chargen.api.load, which checks the run)."""
    from chargen.api import load, run_path

    base_dir = run_path(from_run)
    require_head(base_dir, read_config(base_dir)["model"], "char")
    base, vocab, base_config = load(base_dir)
    kept = {k: v for k, v in model_options.items() if k in ("cell", "hidden", "layers", "embedding")}
    if kept:
        info(f"--from-run keeps {base_dir}'s model; ignoring {', '.join('--' + k for k in kept)}")
    config = ModelConfig.from_dict({**base_config["model"], "dropout": wanted.dropout, "pooling": wanted.pooling,
                                    "tie_weights": False})
    weights = {k: v for k, v in base.state_dict().items() if k.startswith(("embed.", "core."))}
    return config, vocab, weights, base_dir


def train_classifier(data: str | Path, run: str | None = None, *, checkpoint: str | Path | None = None,
                     settings: ClassifyConfig | None = None, model: ModelConfig | None = None,
                     config: TrainConfig | None = None, val_file: str | Path | None = None,
                     from_run: str | Path | None = None, model_options: dict | None = None,
                     should_stop: Callable[[int], bool] | None = None):
    """Train a classifier on a CSV / JSON-lines file of labelled texts; returns chargen.loop.TrainResult.

    settings: the text and label fields, validation fraction, --balance, --train-chars, --freeze-core.
    from_run: a character-model run whose vocabulary, embedding and core start the model (its
    architecture wins over `model`; `model_options` are the options the user set, for the notice).
    Sizing (chargen.classify_sizing, unless config.sizing is "fixed"): with a time budget, no step or epoch
    limit and no --from-run, the core's width is chosen for the texts and the machine unless given: "hidden"
    in `model_options` when passed (the command line's way), otherwise any `model` passed (a ModelConfig
    given is used as it is).
    """
    from chargen.api import DEFAULT_TIME, explicit_settings
    from chargen.model import build_model, count_parameters
    from chargen.run_setup import start_run

    settings = (settings or ClassifyConfig()).validate()
    if settings.freeze_core and from_run is None:
        raise UserError("--freeze-core keeps a trained core as it is: it needs --from-run RUN")
    model_config, vocab, base_weights, base_dir = model or ModelConfig(**CLASSIFY_MODEL_DEFAULTS), None, None, None
    if from_run is not None:
        model_config, vocab, base_weights, base_dir = _transfer(from_run, model_config, model_options or {})
    examples = read_examples(data, settings.text, settings.label)
    run_dir = Path(checkpoint) if checkpoint is not None else checkpoints_root() / (run or examples.name)

    with start_run(run_dir, "classify", resume=False, model=model_config, config=config or TrainConfig(),
                   default_budget={"max_time": DEFAULT_TIME}) as started:
        if started.dist.enabled:
            raise UserError("chargen classify train runs as one process; start it without torchrun")
        model_config, config = started.model, started.config
        if vocab is None:
            vocab = Vocab.from_text("".join(examples.texts))
        labels = examples.labels
        if val_file is not None:
            held = read_examples(val_file, settings.text, settings.label)
            names = class_names(labels)
            unseen = sorted(set(held.labels) - set(names))
            if unseen:
                raise UserError(f"--val-file {val_file} has labels the training data lacks: "
                                f"{', '.join(map(repr, unseen[:5]))}; every validation label must be a training "
                                "class")
            train_texts, train_labels, val_texts, val_labels = examples.texts, labels, held.texts, held.labels
            validation = str(val_file)
        else:
            tr, va = stratified_split(labels, settings.val_fraction, config.rng_seed)
            train_texts, train_labels = [examples.texts[i] for i in tr], [labels[i] for i in tr]
            val_texts, val_labels = [examples.texts[i] for i in va], [labels[i] for i in va]
            names = class_names(labels)
            validation = f"{settings.val_fraction:.0%} of each class"
        if len(names) < 2:
            raise UserError(f"{data} has one label only ({names[0]!r}); a classifier needs at least 2 classes")
        index = {name: i for i, name in enumerate(names)}
        train_y = np.array([index[x] for x in train_labels], dtype=np.int64)
        val_y = np.array([index[x] for x in val_labels], dtype=np.int64)
        info(describe_classes(train_labels, settings.balance))
        weights = None
        if settings.balance:
            counts = np.bincount(train_y, minlength=len(names)).astype(np.float64)
            weights = np.where(counts > 0, len(train_y) / (len(names) * np.maximum(counts, 1)), 0.0)

        long = sum(len(t) > settings.train_chars for t in train_texts)
        if long:
            info(f"{long} of {len(train_texts)} training texts are longer than --train-chars "
                 f"{settings.train_chars}: training reads their first {settings.train_chars} characters; "
                 "validation, eval and predict read every character")
        train_ids = [vocab.encode(t[:settings.train_chars]) for t in train_texts]
        val_ids = [vocab.encode(t) for t in val_texts]

        model_config.head, model_config.vocab_size, model_config.outputs = "classify", len(vocab), len(names)
        task = ClassifyTask(train_ids, train_y, val_ids, val_y, len(names), config.batch_size, config.rng_seed,
                            started.device, weights)
        config.batch_size = task.batch_size
        sizing = None
        width_given = "hidden" in explicit_settings(model, None, model_options, None)
        if (config.sizing == "auto" and base_weights is None and not width_given and config.max_time
                and not (config.max_steps or config.epochs)):
            from chargen.classify_sizing import choose_width

            sized = choose_width(model_config, config, task, started.device, started.amp_dtype)
            info(sized.line())
            model_config.hidden, sizing = sized.hidden, sized.record()
        torch.manual_seed(config.rng_seed)
        net = build_model(model_config)
        if base_weights is not None:
            net.load_state_dict(base_weights, strict=False)
            net.trained_lr_scale = settings.core_lr_scale
            if settings.freeze_core:
                for p in [*net.embed.parameters(), *net.core.parameters()]:
                    p.requires_grad_(False)
        run_info = {
            "classify": {"labels": names, "settings": settings.to_dict(),
                         "data": {"name": examples.name, "path": str(data), "sha256": examples.sha256,
                                  "examples": len(examples.texts), "train": len(train_texts),
                                  "val": len(val_texts), "validation": validation},
                         "from_run": None if base_dir is None else str(base_dir)},
            "vocab_size": len(vocab),
            **({"sizing": sizing} if sizing else {}),
        }
        vocab.save(run_dir / TOKENIZER)
        start = f"from {base_dir}" + (" (core frozen)" if settings.freeze_core else "") if base_dir else "from scratch"
        started.announce(f"{model_config.layers}x{model_config.hidden} {model_config.cell.upper()} "
                         f"({count_parameters(net):,} trainable parameters, {start}), {model_config.pooling} "
                         f"pooling, {len(names)} classes, {len(train_texts):,} training / {len(val_texts):,} "
                         f"validation texts ({validation}), batch {task.batch_size}")
        return started.train(net, task, run_info, should_stop)


# -- using a trained run ----------------------------------------------------------------------------
@dataclass
class ClassifierRun:
    """A trained classifier: the model (best weights, eval mode, CPU), its vocabulary and label names."""

    model: nn.Module
    vocab: Vocab
    labels: list[str]
    settings: ClassifyConfig
    config: dict
    run_dir: Path

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text as the run reads it (NFC when it normalises); an empty text is refused."""
        for i, t in enumerate(texts):
            if not t:
                raise UserError(f"text {i + 1} is empty; give some text to classify")
        return [self.vocab.encode(t) for t in texts]

    def predict(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """(label of each text, the probabilities (N, classes))."""
        probs = predict_proba(self.model, self.encode(texts))
        return [self.labels[i] for i in probs.argmax(1)], probs


def load_classifier(run: str | Path | None = None, checkpoint: str | Path | None = None) -> ClassifierRun:
    """Load a classifier run by name, path or (by default) the most recent run."""
    from chargen.api import load, run_path

    run_dir = run_path(run, checkpoint)
    require_head(run_dir, read_config(run_dir)["model"], "classify")
    model, vocab, config = load(run_dir)
    about = config.get("classify") or {}
    labels = about.get("labels")
    if not (isinstance(labels, list) and len(labels) == model.config.outputs
            and all(isinstance(x, str) for x in labels)):
        raise UserError(f"{run_dir / CONFIG}: classify.labels does not list the model's {model.config.outputs} "
                        "classes; the run is inconsistent — retrain it")
    return ClassifierRun(model, vocab, labels, ClassifyConfig.from_dict(about.get("settings", {})), config, run_dir)


def evaluate_file(run: ClassifierRun, path: str | Path, text: str | None = None, label: str | None = None) -> dict:
    """Accuracy, macro-F1, per-class precision / recall / F1 and the confusion matrix on a labelled file.

    The fields default to the run's own; a label the run never learnt is a UserError.
    """
    examples: Examples = read_examples(path, text or run.settings.text, label or run.settings.label,
                                       normalize=run.vocab.normalize)
    unseen = sorted(set(examples.labels) - set(run.labels))
    if unseen:
        raise UserError(f"{path} has labels the run never learnt: {', '.join(map(repr, unseen[:5]))}; "
                        f"its classes are {', '.join(map(repr, run.labels[:12]))}")
    index = {name: i for i, name in enumerate(run.labels)}
    truth = np.array([index[x] for x in examples.labels], dtype=np.int64)
    ids = [run.vocab.encode_normalized(t) for t in examples.texts]
    probs = predict_proba(run.model, ids)
    figures = scores(truth, probs.argmax(1), len(run.labels))
    unknown = sum(int((x == 0).sum()) for x in ids)
    return {"run": str(run.run_dir), "file": str(path), "texts": len(truth), "labels": run.labels,
            "unknown_chars": unknown, **figures}
