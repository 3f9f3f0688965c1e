"""The recurrent gradients, checked against an independent implementation.

1. A from-scratch numpy forward and backward pass through time for the tanh RNN
   (h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), stacked layers, a carried initial state,
   a linear softmax head and the mean cross-entropy of training) must give the gradients autograd
   gives for chargen's CharLM, on the same weights and inputs.
2. torch.autograd.gradcheck (finite differences, float64) on a tiny model of each cell type and
   both heads, with the carried state as an input and an output.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from chargen.config import ModelConfig
from chargen.model import build_model
from chargen.textlm import TextTask


def numpy_rnn_bptt(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, h0: np.ndarray, layers: int,
                   through_time: bool = True):
    """Loss, final state and gradients of an embedding -> tanh RNN stack -> linear -> softmax model.

    w: the weights by chargen's parameter names; x, y: (B, T) input and target ids; h0: (L, B, H).
    through_time=False drops the recurrent term of the backward pass (each step on its own): a
    wrong BPTT, to show the comparison notices.
    Returns (loss, hT (L, B, H), grads by parameter name, dL/dh0 (L, B, H)).
    """
    B, T = x.shape
    seq = w["embed.weight"][x]                       # (B, T, D): the input sequence of layer 0
    inputs, states = [], []                          # per layer: its input (B, T, in) and states (B, T, H)
    for l in range(layers):
        W_ih, W_hh = w[f"core.rnn.weight_ih_l{l}"], w[f"core.rnn.weight_hh_l{l}"]
        b = w[f"core.rnn.bias_ih_l{l}"] + w[f"core.rnn.bias_hh_l{l}"]
        h = h0[l]
        hs = np.empty((B, T, W_hh.shape[0]))
        for t in range(T):
            h = np.tanh(seq[:, t] @ W_ih.T + h @ W_hh.T + b)
            hs[:, t] = h
        inputs.append(seq)
        states.append(hs)
        seq = hs
    logits = seq @ w["head.weight"].T + w["head.bias"]           # (B, T, V)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    rows, cols = np.meshgrid(np.arange(B), np.arange(T), indexing="ij")
    loss = -logp[rows, cols, y].mean()

    grads = {name: np.zeros_like(value) for name, value in w.items()}
    dlogits = np.exp(logp)
    dlogits[rows, cols, y] -= 1.0
    dlogits /= B * T                                             # d(mean loss)/d(logits)
    grads["head.weight"] = np.einsum("btv,bth->vh", dlogits, seq)
    grads["head.bias"] = dlogits.sum(axis=(0, 1))
    d_out = dlogits @ w["head.weight"]                           # dL/d(top layer states), (B, T, H)
    dh0 = np.zeros_like(h0)
    for l in reversed(range(layers)):
        W_ih, W_hh = w[f"core.rnn.weight_ih_l{l}"], w[f"core.rnn.weight_hh_l{l}"]
        hs, inp = states[l], inputs[l]
        d_in = np.zeros_like(inp)
        d_next = np.zeros_like(h0[l])                            # dL/dh_t arriving from step t+1
        for t in reversed(range(T)):
            h_prev = hs[:, t - 1] if t > 0 else h0[l]
            da = (d_out[:, t] + d_next) * (1.0 - hs[:, t] ** 2)  # through tanh
            grads[f"core.rnn.weight_ih_l{l}"] += da.T @ inp[:, t]
            grads[f"core.rnn.weight_hh_l{l}"] += da.T @ h_prev
            grads[f"core.rnn.bias_ih_l{l}"] += da.sum(axis=0)
            grads[f"core.rnn.bias_hh_l{l}"] += da.sum(axis=0)
            d_in[:, t] = da @ W_ih
            d_next = da @ W_hh if through_time else np.zeros_like(d_next)
        dh0[l] = d_next
        d_out = d_in                                             # the layer below produced this input
    np.add.at(grads["embed.weight"], x, d_out)
    hT = np.stack([s[:, -1] for s in states])
    return loss, hT, grads, dh0


@pytest.mark.parametrize("layers", [1, 3])
def test_numpy_bptt_gives_chargens_gradients(layers):
    torch.manual_seed(layers)
    V, D, H, B, T = 11, 5, 7, 3, 9
    model = build_model(ModelConfig(cell="rnn", hidden=H, layers=layers, embedding=D, vocab_size=V)).double()
    with torch.no_grad():  # chargen starts biases at zero: make them matter
        for name, p in model.named_parameters():
            if "bias" in name:
                p.normal_(0, 0.3)
    rng = np.random.default_rng(layers)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = rng.normal(0, 0.5, (layers, B, H))  # a carried state from an earlier chunk

    hidden = torch.tensor(h0, requires_grad=True)
    logits, hT = model(torch.from_numpy(x), hidden)
    # The training loss is this mean cross-entropy, computed in float32 (TextTask.loss); here in
    # float64 throughout so that the gradients can be compared to 1e-9.
    loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
    assert TextTask.loss(logits, torch.from_numpy(y)).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()

    weights = {name: p.detach().numpy() for name, p in model.named_parameters()}
    np_loss, np_hT, np_grads, np_dh0 = numpy_rnn_bptt(weights, x, y, h0, layers)
    assert loss.item() == pytest.approx(np_loss, rel=1e-12)
    np.testing.assert_allclose(hT.detach().numpy(), np_hT, rtol=1e-10, atol=1e-12)
    assert np_grads.keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), np_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
        assert np.abs(np_grads[name]).max() > 1e-6, f"{name}: a vanishing gradient would compare trivially"
    np.testing.assert_allclose(hidden.grad.numpy(), np_dh0, rtol=1e-9, atol=1e-12)


def test_the_comparison_catches_a_backward_pass_that_skips_time():
    """Without the gradient flowing from step t+1 back to step t, the recurrent gradients disagree."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="rnn", hidden=4, layers=1, embedding=3, vocab_size=6)).double()
    rng = np.random.default_rng(0)
    x, y, h0 = rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 5)), rng.normal(0, 0.5, (1, 2, 4))
    logits, _ = model(torch.from_numpy(x), torch.tensor(h0))
    F.cross_entropy(logits.reshape(-1, 6), torch.from_numpy(y).reshape(-1)).backward()
    weights = {name: p.detach().numpy() for name, p in model.named_parameters()}
    grads = numpy_rnn_bptt(weights, x, y, h0, 1, through_time=False)[2]
    recurrent = model.core.rnn.weight_hh_l0.grad.numpy()
    assert not np.allclose(grads["core.rnn.weight_hh_l0"], recurrent, rtol=1e-3, atol=1e-6)
    # The head sees no recurrence: there the two still agree.
    np.testing.assert_allclose(grads["head.weight"], model.head.weight.grad.numpy(), rtol=1e-9)


@pytest.mark.parametrize("head", ["char", "series"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradcheck_float64(cell, head):
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, hidden=3, layers=2, embedding=4, vocab_size=6, head=head, inputs=2, outputs=2)
    model = build_model(config).double()
    names = [name for name, _ in model.named_parameters()]
    B, T = 2, 4
    x = torch.randint(0, 6, (B, T)) if head == "char" else torch.randn(B, T, 2, dtype=torch.float64)
    n_state = 2 if cell == "lstm" else 1
    state = [torch.randn(2, B, 3, dtype=torch.float64, requires_grad=True) for _ in range(n_state)]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    if head == "series":
        x.requires_grad_(True)

    def forward(*args):  # args: the parameters, the carried state, the series input (series head)
        weights, hidden = args[: len(params)], args[len(params):len(params) + n_state]
        inputs = args[-1] if head == "series" else x
        out, new_hidden = functional_call(model, dict(zip(names, weights)),
                                          (inputs, tuple(hidden) if cell == "lstm" else hidden[0]))
        return (out, *(new_hidden if cell == "lstm" else (new_hidden,)))

    args = (*params, *state, *((x,) if head == "series" else ()))
    assert torch.autograd.gradcheck(forward, args, eps=1e-6, atol=1e-6, rtol=1e-4)
