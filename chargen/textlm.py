"""The character-model task: what `train()` needs to know about text (batches, loss, evaluation).

`evaluate_text` is the one stateful full-pass evaluation used by validation, `chargen eval`
and the surprise inspector.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chargen.batches import StreamLayout, eval_chunks
from chargen.runtime import Distributed
from chargen.vocab import Vocab

LN2 = math.log(2)


@torch.no_grad()
def evaluate_text(model: nn.Module, ids: np.ndarray, streams: int = 64, seq_len: int = 256,
                  device: torch.device | str = "cpu", per_char: bool = False,
                  dist: Distributed = Distributed()) -> dict:
    """Stateful evaluation over every next-character target of `ids`.

    Returns {"nats": total nats, "chars": targets counted, "loss": nats/char, "bpc": bits/char}
    and, with per_char=True, "per_char_nats": an array of N-1 losses in text order.
    Under DDP each rank takes a share of the streams and the totals are all-reduced.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    share = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    losses = []
    hidden = None
    for x, y in eval_chunks(ids, streams, seq_len):
        if share is None:  # this rank's streams (all of them without DDP)
            rows = x.shape[0]
            share = slice(dist.rank * rows // dist.world, (dist.rank + 1) * rows // dist.world)
        x = torch.from_numpy(x[share]).to(device)
        y = torch.from_numpy(y[share]).to(device)
        if x.shape[0] == 0:
            break
        logits, hidden = model(x, hidden)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=-1, reduction="none").view_as(y)
        total += loss.sum(dtype=torch.float64)
        count += int((y >= 0).sum())
        if per_char:
            losses.append(loss.cpu().numpy())
    stats = torch.tensor([total.item(), float(count)], dtype=torch.float64, device=device)
    if dist.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(stats)
    model.train(was_training)
    nats, chars = float(stats[0]), int(stats[1])
    result = {"nats": nats, "chars": chars, "loss": nats / max(chars, 1), "bpc": nats / max(chars, 1) / LN2}
    if per_char:
        # per-chunk (B, T) blocks side by side give the (B, L) grid; row-major it is text order
        grid = np.concatenate(losses, axis=1)
        result["per_char_nats"] = grid.ravel()[: len(ids) - 1]
    return result


class TextTask:
    """Next-character prediction over a TBPTT stream layout."""

    head = "char"
    carries_state = True
    selects_on = ("val_loss",)

    def __init__(self, train_ids: np.ndarray, val_ids: np.ndarray, vocab: Vocab, streams: int,
                 seq_len: int, seed: int, device: torch.device, dist: Distributed = Distributed()):
        self.vocab = vocab
        self.val_ids = val_ids
        self.device = device
        self.dist = dist
        self.layout = StreamLayout(train_ids, streams, seq_len, seed, dist.rank, dist.world)
        self.steps_per_epoch = self.layout.steps_per_epoch
        self.items_per_step = streams * seq_len  # characters per optimiser step, all ranks
        self.unit = "chars"

    def starts_epoch(self, step: int) -> bool:
        return self.layout.starts_epoch(step)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B/W, T) int64 inputs and targets for this step, on the device."""
        x, y = self.layout.batch(step)
        return (torch.from_numpy(x.astype(np.int64)).to(self.device, non_blocking=True),
                torch.from_numpy(y.astype(np.int64)).to(self.device, non_blocking=True))

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats/char; output (B, T, V) logits, target (B, T) ids."""
        return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), target.reshape(-1))

    def evaluate(self, model: nn.Module) -> dict:
        """Validation loss over the whole validation split."""
        r = evaluate_text(model, self.val_ids, streams=self.layout.streams, seq_len=self.layout.seq_len,
                          device=self.device, dist=self.dist)
        return {"val_loss": r["loss"], "val_bpc": r["bpc"]}

    def describe(self, metrics: dict) -> str:
        return f"val {metrics['val_loss']:.4f} nats/char ({metrics['val_bpc']:.3f} bpc)"

    def preview(self, model: nn.Module, length: int = 120, seed: int = 0) -> str:
        """A short sample from the current weights (numpy sampler; does not touch torch's RNG)."""
        from chargen.sample import Sampler, SamplingSettings
        from chargen.stepper import NumpyStepper

        weights = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        with np.errstate(all="ignore"):  # weights blown up by a diverging run: say so instead of warning
            sampler = Sampler(NumpyStepper(weights, model.config.to_dict()), self.vocab)
            rng = np.random.default_rng(seed)
            ids = [int(i[0]) for i, _ in sampler.stream(length, SamplingSettings(temperature=0.8), rng)]
        if not np.isfinite(sampler.logits).all():
            return "(no sample: the model's outputs are not finite)"
        return self.vocab.decode(ids)

