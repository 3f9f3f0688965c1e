"""Every fast path gives what the straightforward computation gives (correctness only, never speed).

- the numpy stepper (halved sigmoid rows, reordered LSTM gates, all layers' h in one array) ==
  the torch model's full-sequence forward, for every cell, a deep stack, one stream and several;
- compact code points and table-lookup encoding == one character at a time; counting and
  encoding slice by slice == the whole text at once;
- chargen's training fast paths: glibc allocator tuning changes no number; the CPU GRU layer with its
  backward written out == nn.GRU (outputs, state, every gradient); bf16 autocast follows fp32
  closely (one step's loss and gradients, and a short run's validation loss).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from chargen import corpus, loop
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import UserError
from chargen.model import CharLM
from chargen.runtime import cpu_runs_bf16_recurrence
from chargen.stepper import BATCHED, NumpyStepper
from chargen.vocab import UNK_ID, Vocab, codepoints

VOCAB = 29


def random_model(cell: str, layers: int = 3, hidden: int = 40, embedding: int = 12) -> CharLM:
    """A model with non-zero biases everywhere, so a bias in the wrong place shows."""
    torch.manual_seed(11)
    model = CharLM(ModelConfig(cell=cell, hidden=hidden, layers=layers, embedding=embedding, vocab_size=VOCAB))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return model.eval()


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("streams", [1, BATCHED + 1])  # matrix-vector, and the batched weight layout
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stepper_probabilities_equal_the_full_sequence_forward(cell, streams):
    """Three layers (a middle layer reads [h below | own h]), one stream and a batch."""
    model = random_model(cell)
    stepper = NumpyStepper({k: v.numpy() for k, v in model.state_dict().items()}, model.config.to_dict())
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(streams, 40))
    with torch.no_grad():
        expected = torch.softmax(model.double()(torch.as_tensor(ids))[0], dim=-1).numpy()
    state = stepper.zero_state(streams)
    for t in range(ids.shape[1]):
        logits, state = stepper.step(ids[:, t], state)
        np.testing.assert_allclose(softmax(logits), expected[:, t], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stepper_never_writes_into_the_state_it_is_given(cell):
    """Old states stay valid snapshots: stepping from one twice gives the same result."""
    model = random_model(cell, layers=2)
    stepper = NumpyStepper({k: v.numpy() for k, v in model.state_dict().items()}, model.config.to_dict())
    state = stepper.zero_state(2)
    for i in (3, 4, 5):
        _, state = stepper.step(np.array([i, i + 1]), state)
    kept = [s.copy() for s in state]
    first, after = stepper.step(np.array([7, 8]), state)
    stepper.step(np.array([9, 1]), after)
    second, _ = stepper.step(np.array([7, 8]), state)
    for s, k in zip(state, kept):
        np.testing.assert_array_equal(s, k)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_advancing_in_place_gives_what_step_returns(cell):
    """The sampler's in-place path and the snapshot-keeping path compute the same step."""
    model = random_model(cell, layers=2)
    stepper = NumpyStepper({k: v.numpy() for k, v in model.state_dict().items()}, model.config.to_dict())
    kept, moving = stepper.zero_state(3), stepper.zero_state(3)
    for ids in np.random.default_rng(5).integers(0, VOCAB, size=(6, 3)):
        expected, kept = stepper.step(ids, kept)
        np.testing.assert_array_equal(stepper.advance(ids, moving), expected)
        for a, b in zip(moving, kept):
            np.testing.assert_array_equal(a, b)
    strided = tuple(np.zeros((3, 2, 2 * 40), dtype=np.float32)[:, :, ::2] for _ in moving)
    with pytest.raises(ValueError, match="C-contiguous"):
        stepper.advance(np.array([1, 2, 3]), strided)


def test_priming_many_streams_through_one_equals_stepping_them_all():
    """Sampler.feed steps one stream when all share a state, and every stream once they differ."""
    from chargen.sample import Sampler, SamplingSettings

    model = random_model("lstm", layers=2)
    stepper = NumpyStepper({k: v.numpy() for k, v in model.state_dict().items()}, model.config.to_dict())
    sampler = Sampler(stepper, Vocab([chr(ord("a") + i) for i in range(VOCAB - 1)]), streams=4)
    seed = np.array([3, 1, 4, 1, 5, 9])

    def step_all(ids, state):
        for i in ids:
            logits, state = stepper.step(np.full(4, i), state)
        return logits, state

    sampler.feed(seed)
    logits, state = step_all(seed, stepper.zero_state(4))
    np.testing.assert_allclose(sampler.logits, logits, rtol=0, atol=1e-6)
    list(sampler.stream(3, SamplingSettings(temperature=1.0), np.random.default_rng(0)))  # the streams diverge
    diverged = sampler.state
    sampler.feed(seed)
    logits, state = step_all(seed, diverged)
    np.testing.assert_array_equal(sampler.logits, logits)
    assert len({row.tobytes() for row in sampler.logits}) > 1


TEXTS = {
    "ascii": "To be, or not to be, that is the question:\n",
    "latin-1": "Caf\u00e9 cr\u00e8me, na\u00efve se\u00f1or.\n",
    "bmp": "\u201cQuoted\u201d \u2014 \u0436\u0443\u043a \u4e2d\u6587 \u00e9\n",
    "astral": "emoji \U0001F600 and \U0001D11E music \u00e9 \u4e2d\n",
}


@pytest.mark.parametrize("kind", TEXTS)
def test_codepoints_are_the_characters_code_points_in_a_narrow_type(kind):
    text = TEXTS[kind] * 3
    cps = codepoints(text)
    assert cps.tolist() == [ord(c) for c in text]
    assert cps.dtype == {"ascii": np.uint8, "astral": np.uint32}.get(kind, np.uint16)


@pytest.mark.parametrize("kind", TEXTS)
def test_table_encoding_equals_one_character_at_a_time(kind):
    """Known characters get their ids; unknown ones below, between and above the table get <unk>."""
    text = "".join(TEXTS.values())
    vocab = Vocab(sorted(set(TEXTS[kind]) - {"e"}))  # 'e' is unknown; so are the other texts' characters
    expected = [vocab.chars.index(c) + 1 if c in vocab.chars else UNK_ID for c in text]
    assert vocab.encode_normalized(text).tolist() == expected


def test_slices_count_and_encode_like_the_whole_text(monkeypatch):
    """Slice edges anywhere (astral characters included) change nothing."""
    rng = np.random.default_rng(0)
    alphabet = list("".join(TEXTS.values()))
    text = "".join(rng.choice(alphabet, size=5000))
    monkeypatch.setattr(corpus, "ENCODE_SLICE", 7)
    counts = corpus.char_counts(text)
    assert counts == {c: text.count(c) for c in set(text)}
    vocab = Vocab(sorted(counts))
    assert corpus.encode_chunked(vocab, text).tolist() == [vocab.chars.index(c) + 1 for c in text]


# -- training fast paths ---------------------------------------------------------------------------
ALLOCATOR_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from chargen.config import ModelConfig
    from chargen.model import CharLM
    from chargen.runtime import tune_allocator

    torch.set_num_threads(1)

    def losses():
        torch.manual_seed(0)
        model = CharLM(ModelConfig(cell="lstm", hidden=96, layers=2, embedding=16, vocab_size=40))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        x = torch.randint(0, 40, (16, 65), generator=torch.Generator().manual_seed(1))
        hidden, out = None, []
        for t in range(0, 64, 16):
            logits, hidden = model(x[:, t:t + 16], hidden)
            hidden = tuple(h.detach() for h in hidden)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), x[:, t + 1:t + 17].reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            out.append(loss.item())
        return out

    plain = losses()
    tuned = tune_allocator()
    print(json.dumps({"plain": plain, "tuned": losses(), "took_effect": tuned}))
""")


def test_allocator_tuning_changes_no_number():
    """Heap reuse instead of fresh zeroed pages: a kernel reading memory it never wrote would show here."""
    import json

    out = subprocess.run([sys.executable, "-c", ALLOCATOR_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if not r["took_effect"]:
        pytest.skip("glibc's mallopt is not available here")
    assert r["plain"] == r["tuned"]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_cpu_gru_equals_nn_gru_outputs_state_and_every_gradient(dtype, tol):
    """gru_cpu's written-out forward and backward against nn.GRU's own (autograd through its steps)."""
    from chargen.gru_cpu import gru_forward

    torch.manual_seed(4)
    rnn = torch.nn.GRU(7, 6, num_layers=3, batch_first=True).to(dtype)
    with torch.no_grad():
        for p in rnn.parameters():
            p.uniform_(-0.9, 0.9)  # biases too: a bias in the wrong place shows
    x = torch.randn(4, 13, 7, dtype=dtype, requires_grad=True)
    h0 = torch.randn(3, 4, 6, dtype=dtype, requires_grad=True)
    weights = torch.randn(4, 13, 6, dtype=dtype), torch.randn(3, 4, 6, dtype=dtype)  # a loss using both outputs

    def run(forward):
        out, h = forward(x, h0)
        loss = (out * weights[0]).sum() + (h * weights[1]).sum()
        return [out, h, *torch.autograd.grad(loss, [x, h0, *rnn.parameters()])]

    expected, got = run(rnn), run(lambda x, h: gru_forward(rnn, x, h))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=tol)


def test_the_model_runs_its_gru_through_gru_cpu_on_the_cpu_only_in_plain_precision(monkeypatch):
    from chargen import gru_cpu

    model = random_model("gru", layers=2)
    calls = []
    real = gru_cpu.gru_forward
    monkeypatch.setattr(gru_cpu, "gru_forward", lambda *a: calls.append(1) or real(*a))
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        logits, _ = model(ids)
        assert len(calls) == 1
        torch.testing.assert_close(logits, model.head(model.core.rnn(model.embed(ids))[0]), rtol=0, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids)
    assert len(calls) == 1  # under autocast nn.GRU runs (autocast's casts apply to its products)


def test_cpu_gru_applies_dropout_between_layers_in_training_only():
    from chargen.gru_cpu import gru_forward

    torch.manual_seed(0)
    rnn = torch.nn.GRU(5, 8, num_layers=2, batch_first=True, dropout=0.5)
    x = torch.randn(3, 6, 5)
    rnn.eval()
    torch.testing.assert_close(gru_forward(rnn, x, None)[0], rnn(x)[0], rtol=0, atol=1e-6)
    rnn.train()
    trained = [gru_forward(rnn, x, None)[0] for _ in range(2)]
    assert not torch.allclose(trained[0], trained[1])  # a fresh dropout mask each call
    assert not torch.allclose(trained[0], rnn.eval()(x)[0])


# oneDNN builds bf16 recurrent kernels only on AVX-512 CPUs; on others (e.g. an AVX2-only EPYC)
# the bf16 numerics cannot be run at all, and the tests below that compare them are skipped there.
needs_bf16_kernels = pytest.mark.skipif(not cpu_runs_bf16_recurrence(),
                                        reason="this CPU has no bf16 recurrent kernels (oneDNN needs AVX-512)")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_is_bf16_only_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(loop, "cpu_runs_bf16_recurrence", lambda: True)
    cpu = torch.device("cpu")
    assert loop.autocast_dtype(TrainConfig(), cpu, "lstm") == (torch.bfloat16 if native else None)
    assert loop.autocast_dtype(TrainConfig(precision="fp32"), cpu, "lstm") is None


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_auto_precision_on_cpu_keeps_the_step_by_step_cells_in_fp32(monkeypatch, cell):
    """Only the LSTM has oneDNN's fused bf16 kernel on a CPU; the others stay fp32 unless asked."""
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(loop, "cpu_runs_bf16_recurrence", lambda: True)
    assert loop.autocast_dtype(TrainConfig(), torch.device("cpu"), cell) is None
    assert loop.autocast_dtype(TrainConfig(precision="bf16"), torch.device("cpu"), cell) == torch.bfloat16


def test_auto_precision_falls_back_to_fp32_where_bf16_kernels_fail(monkeypatch):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(loop, "cpu_runs_bf16_recurrence", lambda: False)
    assert loop.autocast_dtype(TrainConfig(), torch.device("cpu"), "lstm") is None


def test_asking_for_bf16_on_a_cpu_without_its_kernels_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(loop, "cpu_runs_bf16_recurrence", lambda: False)
    with pytest.raises(UserError, match="--precision bf16.*--precision fp32"):
        loop.autocast_dtype(TrainConfig(precision="bf16"), torch.device("cpu"), "lstm")
    with pytest.raises(UserError, match="--precision fp16 needs a CUDA device"):
        loop.autocast_dtype(TrainConfig(precision="fp16"), torch.device("cpu"), "lstm")


def test_the_bf16_probe_matches_what_the_lstm_does():
    """The probe says True exactly when a bf16-autocast LSTM forward runs on this CPU."""
    lstm = torch.nn.LSTM(8, 16, 2, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 5, 8))
        runs = True
    except RuntimeError:
        runs = False
    assert cpu_runs_bf16_recurrence() == runs


@needs_bf16_kernels
def test_bf16_autocast_step_follows_fp32():
    """One training step of the LSTM under CPU bf16 autocast: same loss and gradients to bf16 accuracy."""
    torch.manual_seed(0)
    model = CharLM(ModelConfig(cell="lstm", hidden=128, layers=2, embedding=32, vocab_size=VOCAB))
    x = torch.randint(0, VOCAB, (8, 49), generator=torch.Generator().manual_seed(3))

    def loss_and_grads(bf16: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, grad32 = loss_and_grads(False)
    loss16, grad16 = loss_and_grads(True)
    assert loss16 != loss32  # the bf16 kernels really ran
    assert abs(loss16 - loss32) < 1e-2 * loss32
    assert ((grad16 - grad32).norm() / grad32.norm()).item() < 0.03


@needs_bf16_kernels
def test_bf16_training_reaches_the_fp32_validation_loss(shakespeare_slice, tmp_path):
    """chargen's own loop, 40 steps each way: the validation loss (evaluated in fp32) agrees closely."""
    from chargen import api

    def val_loss(precision: str) -> float:
        result = api.train(shakespeare_slice, checkpoint=tmp_path / precision,
                           model=ModelConfig(cell="lstm", hidden=64, layers=2, embedding=16),
                           config=TrainConfig(batch_size=16, seq_len=32, max_steps=40, warmup_steps=5, lr=1e-2,
                                              eval_every=40, precision=precision))
        return result.metrics["val_loss"]

    fp32, bf16 = val_loss("fp32"), val_loss("bf16")
    assert fp32 < 3.3  # it learned something (uniform over ~60 characters is ~4.1)
    assert abs(bf16 - fp32) < 0.03
