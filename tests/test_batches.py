"""The truncated-BPTT batch layout: the stream order that makes a carried hidden state the true context."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargen.batches import StreamLayout, eval_chunks, fit_layout
from chargen.errors import UserError


def positions(n: int) -> np.ndarray:
    """A 'text' whose ids are their own positions, so every batch says where it came from."""
    return np.arange(n, dtype=np.int64)


def epoch_streams(layout: StreamLayout, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Every chunk of one epoch side by side: (B, steps * T) inputs and targets."""
    steps = range(epoch * layout.steps_per_epoch, (epoch + 1) * layout.steps_per_epoch)
    xs, ys = zip(*(layout.batch(s) for s in steps))
    return np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)


@given(n=st.integers(50, 3000), streams=st.integers(1, 9), seq_len=st.integers(1, 17), epoch=st.integers(0, 4))
@settings(max_examples=150, deadline=None)
def test_each_stream_is_a_contiguous_slice_chunk_after_chunk(n, streams, seq_len, epoch):
    if (n - seq_len) // streams < seq_len:
        return  # fit_layout would shrink this layout
    layout = StreamLayout(positions(n), streams, seq_len, seed=3)
    x, y = layout.batch(epoch * layout.steps_per_epoch)
    assert x.shape == y.shape == (streams, seq_len)
    xs, ys = epoch_streams(layout, epoch)
    p = layout.phase(epoch)
    assert 0 <= p < seq_len
    # Chunk i of stream b follows chunk i-1, so each row of the concatenated epoch counts up by one...
    assert (np.diff(xs, axis=1) == 1).all()
    # ...streams are cut one after another from the phase, without overlap...
    L = layout.stream_len
    assert xs[:, 0].tolist() == [p + b * L for b in range(streams)]
    assert xs.shape[1] <= L
    # ...targets are the inputs one character later, and nothing reads past the text.
    assert (ys == xs + 1).all()
    assert ys.max() <= n - 1


def test_epoch_0_has_phase_0_and_later_phases_vary_by_seed():
    layout = StreamLayout(positions(10_000), 4, 32, seed=11)
    assert layout.phase(0) == 0
    phases = {layout.phase(e) for e in range(1, 40)}
    assert len(phases) > 5 and all(0 <= p < 32 for p in phases)
    other = StreamLayout(positions(10_000), 4, 32, seed=12)
    assert [layout.phase(e) for e in range(1, 20)] != [other.phase(e) for e in range(1, 20)]


def test_a_step_number_alone_fixes_the_batch():
    """Resuming relies on this: the same step gives the same batch in a new layout object."""
    ids = np.random.default_rng(0).integers(0, 60, 5000)
    a = StreamLayout(ids, 8, 16, seed=5)
    b = StreamLayout(ids.copy(), 8, 16, seed=5)
    for step in (0, 1, a.steps_per_epoch - 1, a.steps_per_epoch, 3 * a.steps_per_epoch + 7):
        assert all(np.array_equal(u, v) for u, v in zip(a.batch(step), b.batch(step)))
    assert a.starts_epoch(0) and a.starts_epoch(a.steps_per_epoch) and not a.starts_epoch(1)


@pytest.mark.parametrize("world", [2, 4])
def test_rank_shards_concatenate_to_the_one_process_batch(world):
    ids = np.random.default_rng(1).integers(0, 60, 7000)
    single = StreamLayout(ids, 8, 16, seed=9)
    ranks = [StreamLayout(ids, 8, 16, seed=9, rank=r, world=world) for r in range(world)]
    for step in (0, 5, single.steps_per_epoch + 3):
        x, y = single.batch(step)
        parts = [r.batch(step) for r in ranks]
        assert all(p[0].shape == (8 // world, 16) for p in parts)
        assert np.array_equal(np.concatenate([p[0] for p in parts]), x)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), y)


def test_batch_size_must_divide_among_processes():
    with pytest.raises(UserError, match="divisible"):
        StreamLayout(positions(1000), 6, 8, seed=0, rank=0, world=4)


@pytest.mark.parametrize("n, streams, seq_len", [(100_000, 64, 128), (3000, 64, 128), (300, 64, 128),
                                                 (40, 64, 128), (5, 2, 2)])
def test_fit_layout_shrinks_for_short_texts(n, streams, seq_len):
    b, t = fit_layout(n, streams, seq_len)
    assert 1 <= b <= streams and 2 <= t <= seq_len
    layout = StreamLayout(positions(n), b, t, seed=0)  # at least one full batch
    assert layout.steps_per_epoch >= 1
    if (n - seq_len) // streams >= seq_len:
        assert (b, t) == (streams, seq_len)  # a long enough text keeps the asked layout


def test_fit_layout_refuses_a_text_too_short_to_train_on():
    with pytest.raises(UserError, match="3 characters"):
        fit_layout(3, 64, 128)


@given(n=st.integers(2, 2000), streams=st.integers(1, 70), seq_len=st.integers(1, 300))
@settings(max_examples=200, deadline=None)
def test_eval_chunks_count_every_target_exactly_once(n, streams, seq_len):
    ids = positions(n)
    seen = []
    for x, y in eval_chunks(ids, streams, seq_len):
        assert x.shape == y.shape and x.shape[1] <= seq_len
        keep = y >= 0
        # Each target is the character after its input: the state carried along a row is its context.
        assert (y[keep] == x[keep] + 1).all()
        seen.append((x, y))
    rows = np.concatenate([y for _, y in seen], axis=1)
    targets = rows[rows >= 0]
    assert sorted(targets.tolist()) == list(range(1, n))
    # Row-major order of the (B, L) grid is text order (what per-character losses rely on).
    assert targets.tolist() == list(range(1, n))
