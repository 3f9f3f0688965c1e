"""The plain PyTorch baseline: a character LSTM (or GRU) trained and sampled the textbook way, no chargen code.

Training: embedding -> nn.LSTM or nn.GRU (batch first) -> linear, stateful truncated BPTT over B parallel
streams of T characters (the hidden state carried and detached between chunks), AdamW, global
gradient-norm clipping, fp32, the default allocator. The sizes default to chargen's defaults so the
two are compared like for like. Sampling: the model stepped one character at a time through
nn.LSTM with torch.multinomial, the loop most tutorials write.

    python bench/baseline_lstm.py train --steps 10            # chars/s of the training loop (JSON)
    python bench/baseline_lstm.py train --cell gru --hidden 256 --streams 32 --seq-len 64
    python bench/baseline_lstm.py sample --streams 64 --length 200

bench/speed.py runs this file in a subprocess, side by side with chargen.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class PlainCharRNN(nn.Module):
    """Embedding -> multi-layer nn.LSTM or nn.GRU -> linear logits."""

    def __init__(self, vocab: int, embedding: int = 64, hidden: int = 512, layers: int = 2, cell: str = "lstm"):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.rnn = CELLS[cell](embedding, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, hidden=None):
        """ids (B, T) -> logits (B, T, V) and the state ((h, c) for the LSTM, h for the GRU)."""
        out, hidden = self.rnn(self.embed(ids), hidden)
        return self.head(out), hidden


def synthetic_ids(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    """A stand-in corpus of n ids (training speed does not depend on the text)."""
    return np.random.default_rng(seed).integers(0, vocab, size=n).astype(np.int64)


def train_steps(model: PlainCharRNN, ids: np.ndarray, streams: int, seq_len: int, steps: int,
                lr: float = 2e-3, clip: float = 1.0, on_step=None) -> list[float]:
    """Run `steps` optimiser steps of stateful TBPTT; returns the loss of each step.

    on_step(i) is called before step i and once after the last (for timing).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    stream_len = (len(ids) - 1) // streams
    data = torch.from_numpy(ids[: streams * stream_len + 1])
    # Stream b holds ids [b*L, (b+1)*L); chunk i of every stream is the batch of step i.
    x_all = data[:-1].view(streams, stream_len)
    y_all = data[1:].view(streams, stream_len)
    chunks = stream_len // seq_len
    hidden, losses = None, []
    model.train()
    for i in range(steps):
        if on_step:
            on_step(i)
        c = i % chunks
        if c == 0:
            hidden = None
        x = x_all[:, c * seq_len:(c + 1) * seq_len]
        y = y_all[:, c * seq_len:(c + 1) * seq_len]
        logits, hidden = model(x, hidden)
        hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    if on_step:
        on_step(steps)
    return losses


@torch.no_grad()
def sample_chars(model: PlainCharRNN, streams: int, length: int, temperature: float = 0.8,
                 seed: int = 0) -> np.ndarray:
    """Generate `length` ids per stream, one nn.LSTM step per character; returns (streams, length)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(streams, 1, dtype=torch.long)
    hidden, out = None, []
    for _ in range(length):
        logits, hidden = model(x, hidden)
        probs = torch.softmax(logits[:, -1] / temperature, dim=-1)
        x = torch.multinomial(probs, 1, generator=gen)
        out.append(x)
    return torch.cat(out, dim=1).numpy()


def load_chargen_weights(model: PlainCharRNN, path: Path) -> None:
    """Load a chargen model.safetensors (a run of the same cell) into the plain model: the same weights, renamed."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    renamed = {k.replace("core.rnn.", "rnn."): v for k, v in tensors.items()}
    model.load_state_dict(renamed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("train", "sample"))
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=66, help="vocabulary size (tinyshakespeare + <unk>: 66)")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--length", type=int, default=300, help="sampled characters per stream")
    parser.add_argument("--weights", type=Path, help="a chargen model.safetensors to sample from")
    parser.add_argument("--allocator", action="store_true",
                        help="raise glibc's mmap/trim thresholds first (what chargen does), for attribution")
    args = parser.parse_args()
    if args.allocator:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)          # M_MMAP_MAX: serve large blocks from the heap
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD: keep freed memory in the process
    torch.manual_seed(0)
    model = PlainCharRNN(args.vocab, args.embedding, args.hidden, args.layers, args.cell)
    if args.what == "train":
        ids = synthetic_ids(args.streams * args.seq_len * (args.warmup + args.steps + 2) + 1, args.vocab)
        marks: dict[int, float] = {}
        train_steps(model, ids, args.streams, args.seq_len, args.warmup + args.steps,
                    on_step=lambda i: marks.__setitem__(i, time.perf_counter()))
        seconds = marks[args.warmup + args.steps] - marks[args.warmup]
        result = {"chars_per_s": args.steps * args.streams * args.seq_len / seconds,
                  "step_s": seconds / args.steps}
    else:
        if args.weights:
            load_chargen_weights(model, args.weights)
        sample_chars(model, args.streams, 5)  # warm-up
        t0 = time.perf_counter()
        sample_chars(model, args.streams, args.length)
        seconds = time.perf_counter() - t0
        result = {"chars_per_s": args.streams * args.length / seconds, "step_s": seconds / args.length}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
