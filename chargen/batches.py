"""The truncated-BPTT batch layout: B parallel streams cut into chunks of T characters.

    text ids:  t0 t1 t2 ....................................................... t(N-1)
    epoch e starts at a phase p(e) in [0, T) (p(0) = 0), then cuts B streams of L ids:

             chunk 0           chunk 1           chunk 2
    s0    [p       .. p+T-1 ][p+T      .. p+2T-1 ][ ...        ]   targets: the same, one id later
    s1    [p+L     .. ...   ][ ...               ][ ...        ]
    ...
    s(B-1)[p+(B-1)L ..      ][ ...               ][ ...        ]

    batch i = chunk i of every stream: a (B, T) block. Chunk i of a stream follows chunk i-1,
    so the hidden state carried from batch i-1 (detached) is the true context of batch i.
    The state restarts from zero at the start of each epoch, when the phase moves.

A step number alone fixes the batch (epoch, chunk, phase), which makes resuming exact.
Under data parallelism rank r of W owns streams [r*B/W, (r+1)*B/W) of the same layout, so W
ranks together see exactly the batches of one process with B streams.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from chargen.errors import UserError


class StreamLayout:
    """The training batches of one epoch after another, addressed by step number."""

    def __init__(self, ids: np.ndarray, streams: int, seq_len: int, seed: int,
                 rank: int = 0, world: int = 1):
        if streams % world:
            raise UserError(f"--batch-size {streams} must be divisible by the number of processes ({world})")
        self.ids = ids
        self.streams = streams
        self.seq_len = seq_len
        self.seed = seed
        # Every phase p < T leaves room for B streams of L ids plus the final target.
        self.stream_len = (len(ids) - seq_len) // streams
        self.steps_per_epoch = self.stream_len // seq_len
        if self.steps_per_epoch < 1:
            raise ValueError("corpus too short for this layout; use fit_layout() first")
        per_rank = streams // world
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)

    def phase(self, epoch: int) -> int:
        """Offset of the streams in this epoch: 0 for the first, then drawn from (seed, epoch)."""
        if epoch == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.seq_len))

    def epoch_of(self, step: int) -> float:
        """Epochs completed at this step, as a fraction."""
        return step / self.steps_per_epoch

    def starts_epoch(self, step: int) -> bool:
        """True when this step begins a new epoch (the carried state must restart)."""
        return step % self.steps_per_epoch == 0

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of this step for this rank: two (B/W, T) arrays of ids."""
        epoch, chunk = divmod(step, self.steps_per_epoch)
        p, L, T = self.phase(epoch), self.stream_len, self.seq_len
        rows = np.arange(self.streams)[self.rows]
        # starts[b] = first id of chunk `chunk` in stream b; gather a (B, T+1) window per stream.
        starts = p + rows * L + chunk * T
        window = self.ids[starts[:, None] + np.arange(T + 1)[None, :]]
        return window[:, :-1], window[:, 1:]


def fit_layout(n_ids: int, streams: int, seq_len: int) -> tuple[int, int]:
    """Shrink (streams, seq_len) until a corpus of `n_ids` gives at least one full batch.

    Streams go first (down to 1), then the sequence length; raises when even 1 x 2 does not fit.
    """
    def fits(b: int, t: int) -> bool:
        return (n_ids - t) // b >= t

    b, t = streams, seq_len
    while not fits(b, t) and b > 1:
        b = max(1, b // 2)
    while not fits(b, t) and t > 2:
        t = max(2, t // 2)
    if not fits(b, t):
        raise UserError(f"the training text has {n_ids} characters; at least 4 are needed "
                        f"({(streams + 1) * seq_len} for --batch-size {streams} x --seq-len {seq_len})")
    return b, t


def eval_chunks(ids: np.ndarray, streams: int, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every next-character target of `ids` exactly once, as stateful (B, T) chunks.

    The N-1 targets are laid out as B consecutive streams of ceil((N-1)/B) ids; the tail of the
    last stream is padded with target -1 (ignored by the loss). Carry the state across chunks.
    Each chunk is gathered from `ids` when it is needed (a memory map stays a memory map): no
    int64 copy of the whole text.
    """
    n_targets = len(ids) - 1
    streams = max(1, min(streams, n_targets // max(seq_len, 1)))
    length = -(-n_targets // streams)  # ceil
    first = np.arange(streams)[:, None] * length  # (B, 1): text position of each stream's first input
    for start in range(0, length, seq_len):
        pos = first + np.arange(start, min(start + seq_len, length))[None, :]  # (B, t) input positions
        inside = pos < n_targets
        x = np.where(inside, ids[np.minimum(pos, n_targets - 1)].astype(np.int64), 0)
        y = np.where(inside, ids[np.minimum(pos + 1, n_targets)].astype(np.int64), -1)
        yield x, y

