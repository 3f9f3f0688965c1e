"""A trained character model stepped one character at a time in numpy, for sampling.

Why not torch: sampling is one tiny step per character, where the per-call overhead of the
framework dominates. numpy's BLAS matrix-vector product runs a 1024x2048 product in ~65 us here,
torch.mv in ~260 us, and importing torch alone takes ~1.5 s. This engine reads model.safetensors
with safetensors.numpy and never imports torch. It computes exactly the model's forward pass
(PyTorch's gate equations); tests hold it to the torch model's probabilities to 1e-5.

What makes a step cheap (one stream of a 2x512 LSTM: ~12.6 MB of weights read per character,
so the matrix-vector products are bound by memory bandwidth and the rest is per-call overhead):

- Layer 0's input term for every character is precomputed, E @ W_ih0^T + b (V x G): the first
  layer only multiplies its recurrent matrix.
- The hidden states of all layers live side by side in one (B, L*H) array, so layer l's input
  [h_(l-1) new | h_l old] is a contiguous slice and needs one product with [W_ih | W_hh]
  (no concatenation). Layer l-1 has already written its new h when layer l reads it.
- Sigmoid gates use sigmoid(x) = 0.5 + 0.5 tanh(x / 2); the rows of those gates (weights and
  biases) are halved once at load time (exact: a power of two), so a single tanh over the whole
  gate block serves every gate. LSTM gate rows are reordered to (i, f, o, g) so the three
  sigmoid gates are contiguous.
- Scratch buffers are allocated once per batch size; numpy ufuncs write into them (out=).

Layout: for a few streams the products are matrix-vector, memory-bound, fastest with W stored
(G, K) row-major (x @ W.T: a contiguous dot product per output); for many streams they are
matrix-matrix and ~10% faster with W stored (K, G) row-major. The second copy is made on the
first call with at least BATCHED streams.

State: a tuple of float32 arrays, batch first so streams can be selected with `a[rows]`:
LSTM (h, c), RNN and GRU (h,), each (B, L, H). `advance` updates a state in place (what a
sampler stepping one state along wants: no copy per character); `step` leaves the state it is
given untouched and returns a new one, so a caller may keep old states as snapshots.
"""
from __future__ import annotations

import copy

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# From this many streams on, multiply by (K, G) row-major copies of the weights (see above).
BATCHED = 8

State = tuple[np.ndarray, ...]


class NumpyStepper:
    """Forward one step at a time: `step(ids, state) -> (logits, state)` with ids of shape (B,)."""

    def __init__(self, weights: dict[str, np.ndarray], model: dict):
        self.cell = model["cell"]
        self.layers = model["layers"]
        self.hidden = H = model["hidden"]
        if self.cell not in GATES:
            raise ValueError(f"unknown cell {self.cell!r}")
        f32 = lambda name: np.array(weights[name], dtype=np.float32)  # a private copy: scaled below
        embed = f32("embed.weight")
        self.head_w = f32("head.weight") if "head.weight" in weights else embed  # tied: (V, H)
        self.head_b = f32("head.bias")
        self.vocab_size = self.head_b.shape[0]
        if self.head_w.shape != (self.vocab_size, H):
            raise ValueError(f"head.weight has shape {self.head_w.shape}, expected {(self.vocab_size, H)}")

        # Row permutation and scale applied to every (G, .) weight and (G,) bias of a layer.
        if self.cell == "lstm":
            # PyTorch order (i, f, g, o) -> (i, f, o, g); the first 3H rows are sigmoid gates.
            order = np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])
            scale = np.repeat(np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32), H)
        elif self.cell == "gru":
            order = np.arange(3 * H)  # (r, z, n): r and z are sigmoid gates
            scale = np.repeat(np.array([0.5, 0.5, 1.0], dtype=np.float32), H)
        else:
            order = np.arange(H)
            scale = np.ones(H, dtype=np.float32)
        rows = lambda a: np.ascontiguousarray(a[order] * (scale[:, None] if a.ndim == 2 else scale))

        w: list = []             # per layer: the (G, K) matrix (or GRU pair) multiplying the layer's input
        self.bias: list = []     # per layer: the bias added after the product (GRU: a pair)
        for layer in range(self.layers):
            w_ih, w_hh = rows(f32(f"core.rnn.weight_ih_l{layer}")), rows(f32(f"core.rnn.weight_hh_l{layer}"))
            b_ih, b_hh = rows(f32(f"core.rnn.bias_ih_l{layer}")), rows(f32(f"core.rnn.bias_hh_l{layer}"))
            if w_hh.shape != (GATES[self.cell] * H, H):
                raise ValueError(f"core.rnn.weight_hh_l{layer} has shape {w_hh.shape}")
            if layer == 0:
                # Input term of layer 0 for each character id: (V, G); GRU keeps b_hh apart
                # because its n gate multiplies the recurrent term (bias included) by r.
                self.input_table = embed @ w_ih.T + b_ih + (0 if self.cell == "gru" else b_hh)
                w.append(w_hh)
                self.bias.append(b_hh if self.cell == "gru" else None)
            elif self.cell == "gru":
                w.append((w_ih, w_hh))
                self.bias.append((b_ih, b_hh))
            else:
                w.append(np.concatenate([w_ih, w_hh], axis=1))  # (G, H + H): input [x | h]
                self.bias.append(b_ih + b_hh)
        # The right-hand operands x @ M, each (K, G): transposed views of `w`, and contiguous copies
        # made when first needed.
        transpose = lambda m, copy: np.ascontiguousarray(m.T) if copy else m.T
        self._operands = lambda copy: [tuple(transpose(m, copy) for m in mats) if isinstance(mats, tuple)
                                       else transpose(mats, copy) for mats in w]
        self._by_layout = {False: self._operands(False)}
        self._scratch: dict[int, tuple[np.ndarray, ...]] = {}

    def clone(self) -> "NumpyStepper":
        """A stepper sharing these weights (only ever read) with scratch buffers of its own: threads
        stepping at the same time each need one, as `advance` writes its gates into the scratch."""
        twin = copy.copy(self)
        twin._scratch = {}
        twin._by_layout = dict(self._by_layout)
        return twin

    def zero_state(self, batch: int) -> State:
        """The all-zero state for `batch` streams."""
        shape = (batch, self.layers, self.hidden)
        n = 2 if self.cell == "lstm" else 1
        return tuple(np.zeros(shape, dtype=np.float32) for _ in range(n))

    def _buffers(self, batch: int) -> tuple[np.ndarray, ...]:
        """Gate scratch for this batch size and its views, made once (a view costs as much as a small op).

        LSTM: the (B, 4H) gates, then views of the sigmoid block and of i, f, o, g.
        RNN: the (B, H) pre-activation. GRU: gi and gh (B, 3H), then views of gi's r|z block, r, z, n
        and of gh's r|z block and n part.
        """
        if batch not in self._scratch:
            H = self.hidden
            if self.cell == "lstm":
                gates = np.empty((batch, 4 * H), dtype=np.float32)
                self._scratch[batch] = (gates, gates[:, :3 * H], *(gates[:, k * H:(k + 1) * H] for k in range(4)))
            elif self.cell == "gru":
                gi, gh = np.empty((2, batch, 3 * H), dtype=np.float32)
                self._scratch[batch] = (gi, gh, gi[:, :2 * H], gi[:, :H], gi[:, H:2 * H], gi[:, 2 * H:],
                                        gh[:, :2 * H], gh[:, 2 * H:])
            else:
                self._scratch[batch] = (np.empty((batch, H), dtype=np.float32),)
        return self._scratch[batch]

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Feed one character per stream; returns logits (B, V) and the new state (inputs untouched)."""
        new = tuple(s.copy() for s in state)
        return self.advance(ids, new), new

    def advance(self, ids: np.ndarray, state: State) -> np.ndarray:
        """Feed one character per stream, updating `state` in place; returns new logits (B, V).

        The state's arrays must be C-contiguous (those of `zero_state`, `step` and their copies are):
        each layer's h and c are written through (B, L*H) views of them.
        """
        B, L, H = len(ids), self.layers, self.hidden
        if not all(s.flags.c_contiguous for s in state):
            raise ValueError("advance() updates the state in place: pass C-contiguous arrays")
        h = state[0].reshape(B, L * H)  # a view: [h_0 | h_1 | ... ] per stream
        batched = B >= BATCHED
        if batched not in self._by_layout:
            self._by_layout[batched] = self._operands(True)
        w = self._by_layout[batched]
        if self.cell == "lstm":
            self._lstm(w, ids, h, state[1].reshape(B, L * H), self._buffers(B))
        elif self.cell == "gru":
            self._gru(w, ids, h, self._buffers(B))
        else:
            self._rnn(w, ids, h, self._buffers(B)[0])
        logits = h[:, (L - 1) * H:] @ self.head_w.T
        logits += self.head_b
        return logits

    def _layer_input(self, w: list, layer: int, ids: np.ndarray, h: np.ndarray, gates: np.ndarray) -> None:
        """gates <- the pre-activation of `layer` for LSTM and RNN (bias included)."""
        H = self.hidden
        if layer == 0:
            np.matmul(h[:, :H], w[0], out=gates)
            gates += self.input_table[ids]
        else:
            np.matmul(h[:, (layer - 1) * H:(layer + 1) * H], w[layer], out=gates)
            gates += self.bias[layer]

    def _lstm(self, w: list, ids: np.ndarray, h: np.ndarray, c: np.ndarray, scratch: tuple) -> None:
        H = self.hidden
        gates, sig, i, f, o, g = scratch
        for layer in range(self.layers):
            self._layer_input(w, layer, ids, h, gates)
            np.tanh(gates, out=gates)               # sigmoid rows were halved: tanh(x/2)
            sig *= 0.5
            sig += 0.5                              # now sigmoid(i), sigmoid(f), sigmoid(o)
            cl, hl = c[:, layer * H:(layer + 1) * H], h[:, layer * H:(layer + 1) * H]
            cl *= f
            g *= i
            cl += g                                 # c = f c + i g
            np.tanh(cl, out=hl)
            hl *= o                                 # h = o tanh(c)

    def _rnn(self, w: list, ids: np.ndarray, h: np.ndarray, gates: np.ndarray) -> None:
        H = self.hidden
        for layer in range(self.layers):
            self._layer_input(w, layer, ids, h, gates)
            np.tanh(gates, out=h[:, layer * H:(layer + 1) * H])

    def _gru(self, w: list, ids: np.ndarray, h: np.ndarray, scratch: tuple) -> None:
        H = self.hidden
        gi, gh, rz, r, z, n, gh_rz, gh_n = scratch
        for layer in range(self.layers):
            hl = h[:, layer * H:(layer + 1) * H]   # old h of this layer, overwritten at the end
            if layer == 0:
                w_hh, b_hh = w[0], self.bias[0]
                np.take(self.input_table, ids, axis=0, out=gi)
            else:
                (w_ih, w_hh), (b_ih, b_hh) = w[layer], self.bias[layer]
                np.matmul(h[:, (layer - 1) * H:layer * H], w_ih, out=gi)
                gi += b_ih
            np.matmul(hl, w_hh, out=gh)
            gh += b_hh
            rz += gh_rz
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5                               # sigmoid(r), sigmoid(z)
            r *= gh_n
            n += r
            np.tanh(n, out=n)                       # n = tanh(W_in x + b_in + r (W_hn h + b_hn))
            hl -= n
            hl *= z
            hl += n                                 # h = n + z (h - n) = (1 - z) n + z h
