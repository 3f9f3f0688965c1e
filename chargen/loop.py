"""The one training loop, for every head (the settings it reads are `TrainConfig`, in config.py).

The loop knows nothing about characters or numbers: a task object supplies the batches (by
step number, so a resumed run sees exactly the data it would have seen), the loss and the
evaluation (`TextTask` in textlm.py, `SeriesTask` in series.py). The loop owns truncated BPTT
(the carried, detached hidden state), clipping, AdamW with warm-up and cosine decay to the end
of the budget, mixed precision, evaluation, early stopping, checkpoints, resume, signals,
non-finite steps, progress and data parallelism under torchrun.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from chargen import __version__
from chargen.checkpoint import (STATE, WEIGHTS, WriteFailed, clean_temporaries, make_run_dir, write_config, write_state,
                                write_weights)
from chargen.config import TrainConfig
from chargen.errors import UserError, first_line
from chargen.log import info
from chargen.model import Hidden, detach_hidden
from chargen.progress import Progress
from chargen.runtime import Distributed, cpu_has_native_bf16, cpu_runs_bf16_recurrence, pick_device

# Evaluations without a better validation loss, in a run with no --patience, before the log says the model
# is overfitting (issue 15: runs whose validation rose in their last fifth gave no sign of it).
RISING_EVALS = 4
# Share of a time budget the validations before the final one may take (see next_eval_mark).
MAX_EVAL_SHARE = 0.1


class Task(Protocol):
    """What the loop needs from a head's data (see TextTask and SeriesTask)."""

    head: str
    carries_state: bool
    steps_per_epoch: int
    items_per_step: int
    unit: str
    selects_on: tuple[str, ...]  # validation figures (lower is better, in order) that pick the best weights

    def starts_epoch(self, step: int) -> bool: ...
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def evaluate(self, model: nn.Module) -> dict: ...
    def describe(self, metrics: dict) -> str: ...


@dataclass
class TrainResult:
    """How a training call ended."""

    run_dir: Path
    status: str                 # finished | early-stopped | interrupted | diverged
    step: int
    metrics: dict = field(default_factory=dict)
    signal: int | None = None


class TrainingStopped(Exception):
    """Training ended early in a way the command line reports with a special exit code."""

    def __init__(self, result: TrainResult, message: str):
        super().__init__(message)
        self.result = result


def lr_factor(step: int, progress: float, config: TrainConfig) -> float:
    """Linear warm-up over the first steps, then cosine from 1 to lr_floor as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return warm * (config.lr_floor + (1 - config.lr_floor) * cosine)


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device):
    """AdamW; weight decay on matrices only (not biases, not the embedding table).

    optimizer "muon": torch.optim.Muon for the recurrent layers' weight matrices (its update is the
    momentum orthogonalised; learning rate scaled to match AdamW's update size, so one --lr serves
    both), AdamW for the embedding, the head and every bias (BENCHMARKS.md, "Sizing", for the measure).
    """
    scale_of = getattr(model, "lr_scale_of", lambda name: 1.0)  # a model may train some parameters slower
    by_group: dict[tuple[bool, float], list] = {}
    orthogonal = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if config.optimizer == "muon" and p.ndim == 2 and ".rnn.weight_" in name:
            orthogonal.append(p)
        else:
            by_group.setdefault((p.ndim >= 2 and "embed" not in name, scale_of(name)), []).append(p)
    # The loop sets each group's learning rate to --lr's schedule times its lr_scale.
    groups = [{"params": params, "weight_decay": config.weight_decay if decays else 0.0, "lr_scale": scale}
              for (decays, scale), params in sorted(by_group.items(), key=lambda item: (not item[0][0], -item[0][1]))]
    adamw = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=device.type == "cuda")
    if not orthogonal:
        return adamw
    muon = torch.optim.Muon(orthogonal, lr=config.lr, weight_decay=config.weight_decay,
                            adjust_lr_fn="match_rms_adamw")
    return OptimizerPair(muon, adamw)


class OptimizerPair:
    """Two optimisers over disjoint parameters, driven as one: the loop sets every group's learning
    rate, steps, zeroes, saves and restores them together."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError("the saved optimiser is not this run's (--optimizer differs)")
        for optimizer, part in zip(self.optimizers, saved):
            optimizer.load_state_dict(part)


def autocast_dtype(config: TrainConfig, device: torch.device, cell: str) -> torch.dtype | None:
    """The autocast type, or None for plain fp32.

    auto: bf16 (fp16 without bf16 support) on CUDA; on a CPU with native bf16 arithmetic, bf16 for
    an LSTM (oneDNN's fused bf16 kernel: 1.65x measured) and fp32 for the GRU and RNN, which PyTorch
    runs step by step on a CPU, where bf16 has not been measured to help; fp32 elsewhere.
    Weights, optimiser and evaluation stay fp32 in every case.
    """
    precision = config.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and cell == "lstm" and cpu_has_native_bf16() and cpu_runs_bf16_recurrence():
            precision = "bf16"
        else:
            return None
    if precision == "bf16" and device.type == "cpu" and not cpu_runs_bf16_recurrence():
        raise UserError("--precision bf16: this CPU has no bfloat16 recurrent kernels (oneDNN needs AVX-512); "
                        "use --precision fp32 or auto")
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"--precision fp16 needs a CUDA device, not {device.type}; use --precision fp32, bf16 or auto")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# -- the carried state across processes and checkpoints ----------------------------------------
def _state_tensors(hidden: Hidden | None) -> list[torch.Tensor]:
    if hidden is None:
        return []
    return [t.detach() for t in (hidden if isinstance(hidden, tuple) else (hidden,))]


def _gather_rows(tensors: list[torch.Tensor], dist: Distributed) -> list[torch.Tensor]:
    """Concatenate every rank's streams (dim 1) so the saved state is the global one."""
    if not dist.enabled:
        return [t.cpu() for t in tensors]
    import torch.distributed as tdist

    gathered = []
    for t in tensors:
        parts = [torch.empty_like(t) for _ in range(dist.world)]
        tdist.all_gather(parts, t.contiguous())
        gathered.append(torch.cat(parts, dim=1).cpu())
    return gathered


def _gather_rng(device: torch.device, dist: Distributed) -> list[torch.Tensor]:
    """Each rank's torch RNG state (dropout): one uint8 tensor per rank."""
    state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
    if not dist.enabled:
        return [state]
    import torch.distributed as tdist

    state = state.to(device)  # NCCL gathers CUDA tensors only (the RNG state itself is a CPU tensor)
    parts = [torch.empty_like(state) for _ in range(dist.world)]
    tdist.all_gather(parts, state)
    return [p.cpu() for p in parts]


def _restore_rng(states: list[torch.Tensor], device: torch.device, dist: Distributed, step: int) -> None:
    """Each rank's saved dropout stream; a fresh, distinct one per rank when the world size or device changed."""
    now = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
    if len(states) != dist.world or states[dist.rank].shape != now.shape:
        # Saved by another number of processes (or on another kind of device, whose generator
        # state has another size): sharing one saved stream would give every rank the same masks.
        torch.manual_seed(1_000_003 * step + dist.rank)
    elif device.type == "cuda":
        torch.cuda.set_rng_state(states[dist.rank], device)
    else:
        torch.set_rng_state(states[dist.rank])


class _Signals:
    """SIGINT/SIGTERM end training at the next step boundary; a second signal stops at once."""

    def __init__(self):
        self.received: int | None = None
        self.previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt  # asked twice: leave now (the last checkpoint is intact)
        self.received = signum
        info(f"\n{signal.Signals(signum).name}: finishing this step and saving (again to quit at once)")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# -- the loop ----------------------------------------------------------------------------------
def train_loop(model: nn.Module, task: Task, config: TrainConfig, run_dir: Path, run_info: dict,
               resume: dict | None = None, dist: Distributed = Distributed(),
               should_stop: Callable[[int], bool] | None = None) -> TrainResult:
    """Train `model` on `task` until the budget, patience or a signal ends it; save to `run_dir`.

    run_info: extra config.json content (corpus, vocabulary size, series statistics...).
    resume: a trainer_state dict to continue from exactly. should_stop(step) -> True stops like
    an interrupt (saved, resumable). Raises TrainingStopped when interrupted or diverged.
    """
    config.validate()
    device = pick_device(config.device)
    run_dir = Path(run_dir)
    if dist.is_main:
        make_run_dir(run_dir)
        clean_temporaries(run_dir)
    model.to(device)
    if hasattr(model, "core"):
        model.core.rnn.flatten_parameters()
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(model, config, device)
    amp_dtype = autocast_dtype(config, device, model.config.cell)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    params = [p for p in model.parameters() if p.requires_grad]

    progress = Progress()  # where training stands: what --resume restores besides weights and RNG
    hidden: Hidden | None = None
    if resume is not None:
        hidden = _restore(resume, model, optimizer, scaler, progress, task, device, dist)
    else:  # the dropout stream; each rank its own (restored from the state on resume)
        torch.manual_seed(config.rng_seed + dist.rank)
    total_steps = _step_budget(config, task)
    started = time.perf_counter() - progress.elapsed
    eval_cost = None  # seconds one evaluation takes, measured; reserved at the end of a time budget
    last_save = time.perf_counter()
    bad_in_row = 0
    window_items, window_start = 0, time.perf_counter()
    loss_avg = None
    bar = _progress_bar(config, total_steps, progress) if dist.is_main else None

    def fraction_done(elapsed: float, step: int) -> float:
        fractions = [step / total_steps] if total_steps else []
        if config.max_time:
            usable = max(config.max_time - (eval_cost or 0.0), 1e-9)
            fractions.append(elapsed / usable)
        return max(fractions)

    def save(weights: bool) -> None:
        """Write the run: trainer_state.pt (all ranks' data), model.safetensors when asked, config.json last."""
        progress.elapsed = time.perf_counter() - started
        hidden_global = _gather_rows(_state_tensors(hidden), dist)  # collective: every rank takes part
        rng = _gather_rng(device, dist)
        if not dist.is_main:
            return
        state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if not all(bool(t.isfinite().all()) for t in state_dict.values() if t.is_floating_point()):
            # A finite gradient can still overflow the weights (a huge --lr): such weights must never
            # replace the last good checkpoint.
            info(f"step {progress.step}: the weights are no longer finite; not saving them (the last good checkpoint "
                 "is kept)")
            return
        try:
            write_state(run_dir, {**progress.state_dict(), "model": state_dict, "optimizer": optimizer.state_dict(),
                                  "scaler": scaler.state_dict() if scaler is not None else {},
                                  "hidden": hidden_global, "rng": rng, "world": dist.world})
            if weights:
                write_weights(run_dir, model.state_dict(), metadata={"step": str(progress.step)})
            write_config(run_dir, {
                "chargen_version": __version__,
                "model": model.config.to_dict(),
                "train": config.to_dict(),
                **run_info,
                "metrics": {**_round_floats(progress.best_metrics), "steps": progress.step,
                            "elapsed_s": round(progress.elapsed, 1), "items_seen": progress.step * task.items_per_step,
                            "skipped_steps": progress.bad_total},
                "evals": [_round_floats(e) for e in progress.evals],
            })
        except WriteFailed as e:
            kept = ("the last good checkpoint is kept: continue with --resume once it can be written"
                    if (run_dir / STATE).exists() else "nothing of this run was saved")
            raise WriteFailed(f"{e}; {kept}") from None

    def evaluate_and_save(final: bool) -> dict:
        nonlocal eval_cost, last_save
        t0 = time.perf_counter()
        metrics = task.evaluate(model)
        eval_cost = time.perf_counter() - t0
        improved = progress.record(metrics, time.perf_counter() - started, task.selects_on)
        save(weights=improved)
        last_save = time.perf_counter()
        if dist.is_main:
            line = f"step {progress.step}: {task.describe(metrics)}" + ("  (best)" if improved else "")
            preview = getattr(task, "preview", None)
            if preview is not None and not final:
                line += "\n  " + preview(model).replace("\n", "\n  ")
            info(line)
        return metrics

    next_eval = next_eval_mark(config, fraction_done(progress.elapsed, progress.step))
    with _Signals() as signals:
        model.train()
        try:
            while True:
                step = progress.step
                now = time.perf_counter()
                p = fraction_done(now - started, step)
                last_eval_step = progress.evals[-1]["step"] if progress.evals else -1
                # Every decision that depends on a clock or a signal is agreed by all ranks.
                finished, interrupted, eval_due, save_due = _agree([
                    p >= 1.0 or bool(total_steps and step >= total_steps),
                    signals.received is not None or (should_stop is not None and should_stop(step)),
                    step > 0 and step != last_eval_step and (
                        step % config.eval_every == 0 if config.eval_every else p >= next_eval),
                    now - last_save > config.save_every,
                ], dist, device)
                if interrupted or finished:
                    status = "interrupted" if interrupted else "finished"
                    break
                if eval_due:
                    metrics = evaluate_and_save(final=False)
                    next_eval = next_eval_mark(config, fraction_done(time.perf_counter() - started, step),
                                                eval_cost)
                    if config.patience and progress.stale >= config.patience:
                        status = "early-stopped"
                        break
                    # (best_metrics is empty while every validation has been non-finite: nothing to name)
                    if not config.patience and progress.stale == RISING_EVALS and progress.best_metrics:
                        now = metrics[task.selects_on[0]]
                        info(f"validation has not improved for {RISING_EVALS} evaluations (best "
                             f"{progress.best:.4g} at step {progress.best_metrics['step']:,}, now {now:.4g}): the "
                             "model is overfitting its training data. The best weights are kept; --patience "
                             f"{RISING_EVALS} would stop at such a point, and --dropout 0.2 or a smaller model learns "
                             "more from the same data")
                elif save_due:
                    save(weights=False)
                    last_save = time.perf_counter()

                if task.carries_state and task.starts_epoch(step):
                    hidden = None
                lr = config.lr * progress.lr_scale * lr_factor(step, p, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                x, y = task.batch(step)
                with autocast():
                    output, new_hidden = net(x, hidden if task.carries_state else None)
                    loss = task.loss(output, y)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, config.clip)
                # The norm is of the all-reduced gradients, so every rank takes the same branch.
                loss_value, norm_value = loss.item(), norm.item()  # CPU: free; CUDA: one sync per step
                if math.isfinite(norm_value):
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    hidden = detach_hidden(new_hidden) if task.carries_state else None
                    bad_in_row = 0
                    loss_avg = loss_value if loss_avg is None else 0.95 * loss_avg + 0.05 * loss_value
                elif scaler is not None and math.isfinite(loss_value):
                    scaler.update()  # fp16 overflow: the scaler lowers its scale; not a bad step
                else:
                    # Skip the update, keep the state from before this step, halve the learning rate.
                    bad_in_row += 1
                    progress.bad_total += 1
                    progress.lr_scale *= 0.5
                    if dist.is_main:
                        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                        info(f"step {step}: non-finite {what} (loss {loss_value:.4g}, norm {norm_value:.4g}); "
                             f"step skipped, learning rate halved ({progress.bad_total} skipped so far)")
                    if bad_in_row >= config.max_bad_steps:
                        status = "diverged"
                        break
                progress.step = step + 1
                window_items += task.items_per_step
                if bar is not None:
                    rate = window_items / max(time.perf_counter() - window_start, 1e-9)
                    _update_bar(bar, config, progress, time.perf_counter() - started, loss_avg, lr, rate, task)
                    if window_items > 20 * task.items_per_step:
                        window_items, window_start = 0, time.perf_counter()
        except torch.OutOfMemoryError:
            # Only the sizes the user chose decide the memory a step needs: name them and what to lower.
            kept = f" (the last checkpoint in {run_dir} is kept)" if (run_dir / STATE).exists() else ""
            raise UserError(f"out of memory on {device} at step {progress.step} with --batch-size {config.batch_size} "
                            f"x --seq-len {config.seq_len}; lower --batch-size (e.g. {max(1, config.batch_size // 2)})"
                            f" or --seq-len, or train a smaller model (--hidden, --layers){kept}") from None
        finally:
            if bar is not None:
                bar.close()

        if status == "diverged":
            kept = (f"the last good checkpoint is kept in {run_dir}. Lower --lr (or --clip) and --resume"
                    if (run_dir / STATE).exists() else "no checkpoint was saved. Train again with a lower --lr")
            raise TrainingStopped(TrainResult(run_dir, status, progress.step, progress.best_metrics),
                                  f"training diverged: {config.max_bad_steps} non-finite steps in a row, the last at "
                                  f"step {progress.step}; {kept}")
        if status == "interrupted":
            # Save fast: no evaluation. Weights too when no evaluated ones exist yet, so the run is usable.
            save(weights=not (run_dir / WEIGHTS).exists())
            result = TrainResult(run_dir, status, progress.step, progress.best_metrics, signal=signals.received)
            raise TrainingStopped(result, f"interrupted at step {progress.step}; the run is saved in {run_dir}. "
                                          f"Resume with: chargen train --resume --checkpoint {run_dir}")
        if not progress.evals or progress.evals[-1]["step"] != progress.step:
            evaluate_and_save(final=True)
    return TrainResult(run_dir, status, progress.step, progress.best_metrics)


def _agree(flags: list[bool], dist: Distributed, device: torch.device) -> list[bool]:
    """Under DDP, a flag raised on any rank is raised on all (one small all-reduce per step)."""
    if not dist.enabled:
        return flags
    import torch.distributed as tdist

    tensor = torch.tensor([int(f) for f in flags], device=device)
    tdist.all_reduce(tensor, op=tdist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def _step_budget(config: TrainConfig, task: Task) -> int:
    """The step limit from --max-steps and --epochs (0 when only time limits the run)."""
    limits = [config.max_steps] if config.max_steps else []
    if config.epochs:
        limits.append(max(1, round(config.epochs * task.steps_per_epoch)))
    return min(limits) if limits else 0


def next_eval_mark(config: TrainConfig, progress: float, eval_cost: float | None = None) -> float:
    """With automatic evaluation, evaluate at each fifth of the budget; less often when one validation is
    slow for a time budget (a large validation text, a short budget: 215k characters of a 850-character
    vocabulary took 9 s of a 1-minute run here), so that those in between take at most MAX_EVAL_SHARE of
    it. The final one is always made."""
    spacing = 1 / 5
    if config.max_time and eval_cost:
        spacing = max(spacing, eval_cost / (MAX_EVAL_SHARE * config.max_time))
    return (math.floor(progress / spacing + 1e-9) + 1) * spacing


def _progress_bar(config: TrainConfig, total_steps: int, progress: Progress):
    from tqdm import tqdm

    if total_steps:
        return tqdm(total=total_steps, initial=progress.step, unit="step", file=sys.stderr, disable=None,
                    dynamic_ncols=True, desc="train")
    return tqdm(total=round(config.max_time), initial=min(round(progress.elapsed), round(config.max_time)), unit="s",
                file=sys.stderr, disable=None, dynamic_ncols=True, desc="train",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")


def _update_bar(bar, config: TrainConfig, progress: Progress, elapsed: float, loss_avg, lr: float, rate: float,
                task) -> None:
    if config.max_steps or config.epochs:
        bar.update(progress.step - bar.n)
    else:
        bar.update(min(elapsed, config.max_time) - bar.n)
    if progress.step % 5 == 0 and loss_avg is not None:
        postfix = {"step": progress.step, "loss": f"{loss_avg:.3f}"}
        if task.head == "char":
            postfix["bpc"] = f"{loss_avg / math.log(2):.3f}"
        postfix.update({"lr": f"{lr:.2e}", f"{task.unit}/s": f"{rate:,.0f}"})
        bar.set_postfix(postfix, refresh=False)


def _round_floats(d: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}


def _restore(state: dict, model: nn.Module, optimizer, scaler, progress: Progress, task: Task, device: torch.device,
             dist: Distributed) -> Hidden | None:
    """Put back everything a checkpoint holds; returns this rank's carried hidden state."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        # load_state_dict's first line is only "Error(s) in loading state_dict for CharLM:"; the next names the tensor.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = first_line(ValueError(lines[1] if len(lines) > 1 and lines[0].endswith(":") else str(e)))
        raise UserError(f"trainer_state.pt does not fit this model ({detail}); "
                        "the run was trained with other settings: start a new run") from None
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    progress.load_state_dict(state)
    _restore_rng(state["rng"], device, dist, progress.step)
    if state.get("world", 1) != dist.world and dist.is_main:
        info(f"resuming on {dist.world} process(es), saved with {state.get('world', 1)}: the data position and "
             "hidden state carry over, but dropout random streams restart, so the run is not bit-identical")
    tensors = state["hidden"]
    if not tensors or not task.carries_state:
        return None
    per_rank = tensors[0].shape[1] // dist.world
    rows = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)
    tensors = [t[:, rows].to(device) for t in tensors]
    return tuple(tensors) if len(tensors) == 2 else tensors[0]
