"""A GRU stack for the CPU with its backward pass through time written out: PyTorch's GRU, faster.

Why: on a CPU PyTorch has a fused recurrent kernel only for the LSTM (oneDNN). `nn.GRU` there runs
step by step through autograd, and its backward takes every weight gradient one time step at a
time: two small matrix products per step and layer where one large product over the chunk would do,
plus an autograd node per elementwise op. This layer computes exactly PyTorch's GRU, on `nn.GRU`'s
own parameters (so checkpoints, the sampler and the CUDA path are unchanged), with

- forward: every step's input term in one product (T*B x I @ I x 3H), then one addmm and a few
  in-place elementwise ops per step, keeping r, z, n and W_hn h + b_hn for backward;
- backward: one (B x 3H @ 3H x H) product per step for the gradient flowing to the previous state;
  the input gradient and all four weight/bias gradients as single products over the chunk.

Measured in chargen's loop (2x256, 32 streams x 64, a 2-core CPU): 1.14x the steps per second of
`nn.GRU` (BENCHMARKS.md). What remains is mostly the per-step products, which run at about one core's rate.

PyTorch's equations, gate rows stacked (r, z, n) in weight_ih / weight_hh / the biases:

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h  =  n + z * (h - n)

Tests hold outputs, final state and every gradient to `nn.GRU`'s (and to finite differences in
float64).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _GRULayer(torch.autograd.Function):
    """One GRU layer over a chunk, time-major: x (T, B, I), h0 (B, H) -> outputs (T, B, H).

    The last output row is the layer's final state; its gradient arrives through the outputs.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        T, B, I = x.shape
        H = h0.shape[1]
        gi = torch.addmm(b_ih, x.reshape(T * B, I), w_ih.t()).view(T, B, 3 * H)  # all input terms
        gh = x.new_empty(T, B, 3 * H)       # W_hh h + b_hh of each step (backward needs its n part)
        rz = x.new_empty(T, B, 2 * H)       # sigmoid gates r | z of each step
        n = x.new_empty(T, B, H)            # candidate n of each step
        out = x.new_empty(T, B, H)
        # Per-step views made once (indexing inside the loop costs as much as the arithmetic).
        steps = zip(gi[..., :2 * H].unbind(), gi[..., 2 * H:].unbind(), gh.unbind(), gh[..., :2 * H].unbind(),
                    gh[..., 2 * H:].unbind(), rz.unbind(), rz[..., :H].unbind(), rz[..., H:].unbind(), n.unbind(),
                    out.unbind())
        w_hh_t = w_hh.t()
        h = h0
        for gi_rz, gi_n, gh_t, gh_rz, gh_n, rz_t, r, z, n_t, h_new in steps:
            torch.addmm(b_hh, h, w_hh_t, out=gh_t)                        # (B, 3H)
            torch.add(gi_rz, gh_rz, out=rz_t).sigmoid_()
            torch.addcmul(gi_n, r, gh_n, out=n_t).tanh_()
            torch.sub(h, n_t, out=h_new).mul_(z).add_(n_t)                # n + z (h - n)
            h = h_new
        ctx.save_for_backward(x, h0, w_ih, w_hh, gh, rz, n, out)
        return out

    @staticmethod
    def backward(ctx, d_out: torch.Tensor):
        x, h0, w_ih, w_hh, gh, rz, n, out = ctx.saved_tensors
        T, B, H = out.shape
        I = x.shape[2]
        # Gradients of the gate pre-activations, all steps, for the products over the chunk below:
        # of the input terms (r, z, n) and of the recurrent terms (r, z, and r dn for W_hn h + b_hn).
        d_gi = x.new_empty(T, B, 3 * H)
        d_gh = x.new_empty(T, B, 3 * H)
        h_prev = [h0, *out[:-1].unbind()]
        steps = zip(d_out.unbind(), h_prev, rz[..., :H].unbind(), rz[..., H:].unbind(), n.unbind(),
                    gh[..., 2 * H:].unbind(), d_gi[..., :H].unbind(), d_gi[..., H:2 * H].unbind(),
                    d_gi[..., :2 * H].unbind(), d_gi[..., 2 * H:].unbind(), d_gh.unbind(),
                    d_gh[..., :2 * H].unbind(), d_gh[..., 2 * H:].unbind())
        dh = torch.zeros_like(h0)
        for d_out_t, h_prev_t, r, z, n_t, gh_n, d_r, d_z, d_rz, d_n, d_gh_t, d_gh_rz, d_gh_n in reversed(list(steps)):
            dh = dh + d_out_t                           # (B, H): into h_t, from above and from step t+1
            dhz = dh * z                                # h' = n + z (h - n): the direct path to h_prev
            dn = dh - dhz                               # dh (1 - z)
            torch.addcmul(dn, dn * n_t, n_t, value=-1, out=d_n)                   # dn (1 - n^2)
            dz = torch.addcmul(dhz, dhz, z, value=-1)   # dh z (1 - z)
            torch.sub(h_prev_t, n_t, out=d_z).mul_(dz)                            # dz sigmoid'
            dr = d_n * gh_n * r
            torch.addcmul(dr, dr, r, value=-1, out=d_r)                           # dr sigmoid'
            d_gh_rz.copy_(d_rz)
            torch.mul(d_n, r, out=d_gh_n)
            dh = torch.addmm(dhz, d_gh_t, w_hh)         # + (B, 3H) @ (3H, H)
        flat_gi, flat_gh = d_gi.view(T * B, 3 * H), d_gh.view(T * B, 3 * H)
        h_prevs = torch.cat([h0.unsqueeze(0), out[:-1]]).view(T * B, H)
        d_x = (flat_gi @ w_ih).view(T, B, I) if ctx.needs_input_grad[0] else None
        return (d_x, dh if ctx.needs_input_grad[1] else None,
                flat_gi.t() @ x.reshape(T * B, I), flat_gh.t() @ h_prevs, flat_gi.sum(0), flat_gh.sum(0))


def applies(rnn: nn.Module, x: torch.Tensor) -> bool:
    """Whether `gru_forward` serves this call: a GRU with biases, on the CPU, in plain fp32/fp64
    (under autocast or on a GPU, `nn.GRU` itself runs: autocast's casts and cuDNN's kernel)."""
    return (isinstance(rnn, nn.GRU) and rnn.bias and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu") and rnn.batch_first and not rnn.bidirectional)


def gru_forward(rnn: nn.GRU, x: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What `rnn(x, hidden)` returns, computed by `_GRULayer`: x (B, T, I) batch first, hidden
    (L, B, H) or None -> outputs (B, T, H) and the final state (L, B, H). Dropout between layers
    as nn.GRU applies it (training mode only)."""
    B, T, _ = x.shape
    L, H = rnn.num_layers, rnn.hidden_size
    if hidden is None:
        hidden = x.new_zeros(L, B, H)
    layer_in = x.transpose(0, 1).contiguous()  # (T, B, I): each step's rows contiguous
    finals = []
    for k in range(L):
        out = _GRULayer.apply(layer_in, hidden[k], getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}"),
                              getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}"))
        finals.append(out[-1])
        layer_in = F.dropout(out, rnn.dropout, training=True) if rnn.training and rnn.dropout and k < L - 1 else out
    return layer_in.transpose(0, 1), torch.stack(finals)
