"""Sampling: the next-character rule, the numpy stepper against torch, and generation from a run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from chargen import api
from chargen.config import ModelConfig
from chargen.errors import UserError
from chargen.model import CharLM
from chargen.sample import SamplingSettings, generate_streams, load_sampler, next_char_probs, sample_next
from chargen.stepper import NumpyStepper
from chargen.vocab import UNK_ID

# A known distribution over 5 ids; id 0 is <unk>, which sampling must never produce.
KNOWN = np.log(np.array([[0.2, 0.4, 0.3, 0.1, 0.0 + 1e-12]]))
# Without <unk> the other four renormalise to 0.5, 0.375, 0.125 and ~0.
P = np.array([0.0, 0.5, 0.375, 0.125, 0.0])


def probs(**kw) -> np.ndarray:
    return next_char_probs(KNOWN, SamplingSettings(**kw))[0]


def test_temperature_1_is_the_model_distribution_without_unk():
    np.testing.assert_allclose(probs(temperature=1.0), P, atol=1e-9)


def test_top_k_keeps_the_k_likeliest():
    np.testing.assert_allclose(probs(temperature=1.0, top_k=2), [0, 0.5 / 0.875, 0.375 / 0.875, 0, 0], atol=1e-9)
    np.testing.assert_allclose(probs(temperature=1.0, top_k=1), [0, 1, 0, 0, 0], atol=1e-9)


@pytest.mark.parametrize("top_p, kept", [(0.3, [1]), (0.45, [1]), (0.6, [1, 2]), (0.85, [1, 2]), (0.9, [1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    expected = np.zeros(5)
    expected[kept] = P[kept] / P[kept].sum()
    np.testing.assert_allclose(probs(temperature=1.0, top_p=top_p), expected, atol=1e-9)


def test_temperature_sharpens_and_flattens():
    cold, warm = probs(temperature=0.5), probs(temperature=2.0)
    assert cold[1] > P[1] > warm[1] and cold[3] < P[3] < warm[3]


def test_temperature_0_is_argmax_even_when_unk_is_likeliest():
    logits = np.random.default_rng(0).normal(size=(64, 30))
    logits[:5, UNK_ID] = 100.0
    ids, p = sample_next(logits, SamplingSettings(temperature=0), np.random.default_rng(1))
    assert ids.tolist() == (logits[:, 1:].argmax(axis=1) + 1).tolist()  # <unk> is never produced
    assert (p == 1).all()


def test_draws_follow_the_distribution():
    rng = np.random.default_rng(7)
    ids, _ = sample_next(np.repeat(KNOWN, 40_000, axis=0), SamplingSettings(temperature=1.0), rng)
    freq = np.bincount(ids, minlength=5) / len(ids)
    np.testing.assert_allclose(freq, P, atol=0.01)
    assert freq[UNK_ID] == 0


def torch_model(cell: str, layers: int, tie: bool) -> CharLM:
    torch.manual_seed(3)
    size = 32
    model = CharLM(ModelConfig(cell=cell, hidden=size, layers=layers, embedding=size if tie else 12,
                               tie_weights=tie, vocab_size=23))
    with torch.no_grad():  # non-zero biases (they start at 0), so each bias must be in its right place
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-1.0, 1.0)
    return model.eval()


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_numpy_stepper_matches_the_torch_model(cell, layers, tie):
    """One character at a time in numpy == the torch model's full-sequence forward (in float64)."""
    model = torch_model(cell, layers, tie)
    # As model.safetensors stores it: a tied head matrix only once, as embed.weight.
    weights = {k: v.numpy() for k, v in model.state_dict().items() if not (tie and k == "head.weight")}
    stepper = NumpyStepper(weights, model.config.to_dict())
    ids = np.random.default_rng(4).integers(0, 23, size=(3, 40))
    with torch.no_grad():
        expected = torch.softmax(model.double()(torch.as_tensor(ids))[0], dim=-1).numpy()
    state = stepper.zero_state(3)
    for t in range(ids.shape[1]):
        logits, state = stepper.step(ids[:, t], state)
        z = logits.astype(np.float64)
        got = np.exp(z - z.max(axis=1, keepdims=True))
        got /= got.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(got, expected[:, t], rtol=0, atol=1e-5)


def text_of(run, **kw) -> list[str]:
    """The samples of sample.generate_streams as whole strings."""
    pieces = list(generate_streams(run, **kw))
    return ["".join(parts) for parts in zip(*pieces)]


def test_same_rng_seed_same_text(tiny_run):
    settings = SamplingSettings(temperature=1.0)
    a = text_of(tiny_run, seed="ROMEO:", length=200, settings=settings, rng_seed=5)
    b = text_of(tiny_run, seed="ROMEO:", length=200, settings=settings, rng_seed=5)
    c = text_of(tiny_run, seed="ROMEO:", length=200, settings=settings, rng_seed=6)
    assert a == b and len(a[0]) == 200
    assert a != c


def test_greedy_generation_follows_the_torch_argmax(tiny_run):
    """Temperature 0 picks the likeliest character of the full-sequence forward at every step."""
    model, vocab, _ = api.load(tiny_run)
    seed = "ROMEO:\n"
    text = text_of(tiny_run, seed=seed, length=60, settings=SamplingSettings(temperature=0))[0]
    ids = torch.as_tensor(vocab.encode(seed + text).astype(np.int64))[None]
    with torch.no_grad():
        logits = model(ids)[0][0, len(seed) - 1:-1]
    logits[:, UNK_ID] = -torch.inf
    assert vocab.decode(logits.argmax(dim=-1).numpy()) == text


def test_greedy_batch_equals_greedy_single(tiny_run):
    greedy = SamplingSettings(temperature=0)
    single = text_of(tiny_run, seed="KING", length=80, settings=greedy)
    batch = text_of(tiny_run, seed="KING", length=80, settings=greedy, num_samples=3)
    assert batch == single * 3


def test_each_sample_of_a_batch_is_drawn_from_its_own_context(tiny_run):
    """No cross-talk between the rows of a batch: every probability a sample was drawn with is the
    torch model's probability for that character after that sample's own text."""
    sampler, _ = load_sampler(tiny_run, streams=4)
    seed = sampler.encode_seed("First")
    sampler.feed(seed)
    settings = SamplingSettings(temperature=1.0)
    drawn = list(sampler.stream(50, settings, np.random.default_rng(9)))
    ids = np.stack([i for i, _ in drawn], axis=1)  # (4, 50)
    p = np.stack([q for _, q in drawn], axis=1)
    assert len({tuple(row) for row in ids}) == 4  # the samples are not copies of each other
    model, _, _ = api.load(tiny_run)
    full = np.concatenate([np.repeat(seed[None].astype(np.int64), 4, axis=0), ids], axis=1)
    with torch.no_grad():
        logits = model(torch.as_tensor(full))[0][:, len(seed) - 1:-1].numpy()
    expected = next_char_probs(logits.reshape(-1, logits.shape[-1]), settings).reshape(logits.shape)
    np.testing.assert_allclose(p, np.take_along_axis(expected, ids[..., None], axis=2)[..., 0], atol=1e-5)


@pytest.mark.parametrize("stop", ["e", "\n", "th"])
def test_stop_ends_each_sample_right_after_the_string(tiny_run, stop):
    samples = text_of(tiny_run, seed="ROMEO:", length=400, settings=SamplingSettings(temperature=1.0),
                      rng_seed=2, stop=stop, num_samples=3)
    full = text_of(tiny_run, seed="ROMEO:", length=400, settings=SamplingSettings(temperature=1.0),
                   rng_seed=2, num_samples=3)
    assert any(stop in whole for whole in full)  # the property below is exercised at least once
    for cut, whole in zip(samples, full):
        if stop in whole:  # the same sample, cut right after the first occurrence
            assert cut == whole[:whole.index(stop) + len(stop)]
        else:  # never produced: the sample runs to its full length
            assert cut == whole


def test_stop_that_never_comes_is_reported(tiny_run, capsys):
    text = text_of(tiny_run, length=30, settings=SamplingSettings(temperature=0), stop="\u00e9\u00e9")[0]
    assert len(text) == 30
    assert "did not occur in 30 characters" in capsys.readouterr().err


def test_unknown_seed_characters(tiny_run):
    with pytest.raises(UserError, match="'\u00e9'") as err:
        text_of(tiny_run, seed="caf\u00e9", length=5)
    assert "--unknown" in str(err.value) and "\n" not in str(err.value)
    greedy = SamplingSettings(temperature=0)
    skipped = text_of(tiny_run, seed="caf\u00e9", length=20, settings=greedy, unknown="skip")
    assert skipped == text_of(tiny_run, seed="caf", length=20, settings=greedy)
    assert len(text_of(tiny_run, seed="caf\u00e9", length=20, settings=greedy, unknown="unk")[0]) == 20
