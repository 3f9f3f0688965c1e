"""The recurrent models: one `RecurrentCore` shared by the character LM and the series regressor.

Contract for both heads: `forward(x, hidden=None) -> (output, hidden)`, batch first.
The loss lives in the task (loop.py trains it), so one training loop serves both.
"""
from __future__ import annotations

import dataclasses

from typing import Union

import torch
from torch import nn

from chargen import gru_cpu
from chargen.config import ModelConfig

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# LSTM state is a (h, c) pair; RNN and GRU state is h alone. Each tensor is (layers, batch, hidden).
Hidden = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph behind a carried state (truncated BPTT); handles the LSTM (h, c) pair."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


class RecurrentCore(nn.Module):
    """A stack of RNN/LSTM/GRU layers, batch first: the fused kernels (cuDNN; oneDNN for the CPU
    LSTM), and for a GRU on the CPU, where PyTorch has none, `gru_cpu` (the same GRU, faster)."""

    def __init__(self, cell: str, input_size: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.cell = cell
        self.rnn = CELLS[cell](input_size, hidden, layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0,
                               **({"nonlinearity": "tanh"} if cell == "rnn" else {}))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal recurrent matrices (per gate), Xavier input matrices, zero biases (LSTM forget gate 1)."""
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]
        hidden = self.rnn.hidden_size
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight_hh"):
                for g in range(gates):
                    nn.init.orthogonal_(p.data[g * hidden:(g + 1) * hidden])
            elif name.startswith("weight_ih"):
                for g in range(gates):
                    nn.init.xavier_uniform_(p.data[g * hidden:(g + 1) * hidden])
            elif name.startswith("bias"):
                nn.init.zeros_(p.data)
                if self.cell == "lstm" and name.startswith("bias_ih"):
                    p.data[hidden:2 * hidden] = 1.0  # remember by default: gradients flow further back

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """x: (B, T, input_size) -> outputs (B, T, hidden) and the state after the last step."""
        if gru_cpu.applies(self.rnn, x):
            return gru_cpu.gru_forward(self.rnn, x, hidden)
        return self.rnn(x, hidden)


class CharLM(nn.Module):
    """Embedding -> recurrent core -> dropout -> linear logits over the characters."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        self.core = RecurrentCore(config.cell, config.embedding, config.hidden, config.layers, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        # Unit-variance embeddings (PyTorch's own default) drive the gates out of their resting point
        # from the first step: with std 0.1 a 2x256 LSTM sat on the unigram plateau for ~100 steps
        # (train loss 2.32 vs 1.91 after 200 steps on tinyshakespeare). Tied, the same matrix makes
        # the logits, so it starts at the output layer's scale instead.
        nn.init.normal_(self.embed.weight, std=config.hidden ** -0.5 if config.tie_weights else 1.0)
        if config.tie_weights:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """ids: (B, T) int64 -> logits (B, T, vocab) and the carried state."""
        out, hidden = self.core(self.embed(ids), hidden)
        return self.head(self.drop(out)), hidden


class SeriesRegressor(nn.Module):
    """Linear input projection -> the same recurrent core -> linear regressor head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.project = nn.Linear(config.inputs, config.embedding)
        self.core = RecurrentCore(config.cell, config.embedding, config.hidden, config.layers, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.outputs)

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """x: (B, T, inputs) -> predictions (B, T, outputs) at every step, and the state."""
        out, hidden = self.core(self.project(x), hidden)
        return self.head(self.drop(out)), hidden


class SeriesEnsemble(nn.Module):
    """`config.ensemble` SeriesRegressors from different starting weights, trained side by side (N-BEATS's
    ensembles, in small): a few hundred values leave one small network's forecast at the mercy of its
    initialisation, and the median of several is steadier.

    Training (module.training): each member's predictions, stacked on the batch axis, (K x B, T, outputs),
    so that the loss is the mean of the members' own losses (series.SeriesTask.loss repeats the targets)
    and each member learns alone; only the gradient clipping sees them together. Evaluation: the
    element-wise median over members (B, T, outputs), which keeps the order of the quantiles.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        single = dataclasses.replace(config, ensemble=1)
        self.members = nn.ModuleList(SeriesRegressor(single) for _ in range(config.ensemble))

    def forward(self, x: torch.Tensor, hidden: list[Hidden] | None = None) -> tuple[torch.Tensor, list[Hidden]]:
        """x: (B, T, inputs) -> predictions (K x B or B, T, outputs), and each member's state."""
        outputs, states = [], []
        for k, member in enumerate(self.members):
            output, state = member(x, None if hidden is None else hidden[k])
            outputs.append(output)
            states.append(state)
        if self.training:
            return torch.cat(outputs), states
        return torch.stack(outputs).float().quantile(0.5, dim=0).to(outputs[0].dtype), states


def build_model(config: ModelConfig) -> nn.Module:
    """The model for a config's head."""
    if config.head == "classify":
        from chargen.classifier import TextClassifier  # its own module: it builds on RecurrentCore here

        return TextClassifier(config)
    if config.head == "char":
        return CharLM(config)
    return SeriesEnsemble(config) if config.ensemble > 1 else SeriesRegressor(config)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, counting tied weights once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
