"""The recurrent models: carried state, saving and loading, weight tying, initialisation."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from chargen import api
from chargen.checkpoint import write_config, write_weights
from chargen.config import ModelConfig
from chargen.model import CharLM, SeriesRegressor, detach_hidden
from chargen.vocab import Vocab

CELLS = ["rnn", "lstm", "gru"]


def char_model(cell: str, layers: int = 2, tie: bool = False, vocab_size: int = 11, seed: int = 0) -> CharLM:
    torch.manual_seed(seed)
    size = 24 if tie else 20
    return CharLM(ModelConfig(cell=cell, hidden=size, layers=layers, embedding=24 if tie else 8, dropout=0.2,
                              tie_weights=tie, vocab_size=vocab_size)).eval()


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_chunked_forward_with_carried_state_equals_one_shot(cell, layers):
    """What truncated BPTT and stateful evaluation rely on: the carried state is the whole context."""
    model = char_model(cell, layers)
    ids = torch.randint(0, 11, (3, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, h_whole = model(ids)
        pieces, hidden = [], None
        for start in range(0, 23, 5):  # uneven last chunk on purpose
            out, hidden = model(ids[:, start:start + 5], detach_hidden(hidden))
            pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(*(h if isinstance(h, tuple) else (h,) for h in (hidden, h_whole))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_series_regressor_carries_state_the_same_way():
    torch.manual_seed(0)
    model = SeriesRegressor(ModelConfig(cell="gru", hidden=16, layers=2, embedding=8, head="series",
                                        inputs=2, outputs=3)).eval()
    x = torch.randn(4, 17, 2)
    with torch.no_grad():
        whole, _ = model(x)
        first, h = model(x[:, :9])
        second, _ = model(x[:, 9:], h)
    assert whole.shape == (4, 17, 3)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-5)


def test_detached_state_stops_gradients_at_the_chunk_boundary():
    model = char_model("lstm").train()
    ids = torch.randint(0, 11, (2, 6))
    _, hidden = model(ids)
    carried = detach_hidden(hidden)
    assert isinstance(carried, tuple) and not any(t.requires_grad for t in carried)
    out, _ = model(ids, carried)
    out.sum().backward()  # would fail ("backward through the graph a second time") if not cut


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_matrices_start_orthogonal(cell):
    model = char_model(cell)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    w = model.core.rnn.weight_hh_l1.detach()
    for g in range(gates):
        block = w[g * 20:(g + 1) * 20]
        torch.testing.assert_close(block @ block.T, torch.eye(20), rtol=0, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_embeddings_start_at_the_scale_their_role_needs(tie):
    """Untied: unit variance, so the first steps already move the gates (a 0.1 scale left the LSTM on
    the unigram plateau for ~100 steps). Tied: the matrix also makes the logits, so ~1/sqrt(hidden)."""
    torch.manual_seed(0)
    hidden = 256
    model = CharLM(ModelConfig(hidden=hidden, layers=1, embedding=hidden if tie else 64, vocab_size=500,
                               tie_weights=tie))
    std = model.embed.weight.detach().std().item()
    expected = hidden ** -0.5 if tie else 1.0
    assert abs(std / expected - 1) < 0.05


def save_run(run_dir, model: CharLM, vocab: Vocab) -> None:
    """Write a run directory the way training does (weights, tokenizer, config)."""
    run_dir.mkdir(parents=True)
    write_weights(run_dir, model.state_dict(), metadata={"step": "0"})
    vocab.save(run_dir / "tokenizer.json")
    write_config(run_dir, {"model": model.config.to_dict(), "corpus": {"name": "test"}})


@pytest.mark.parametrize("cell, tie", [("rnn", False), ("lstm", False), ("gru", False), ("lstm", True)])
def test_save_then_load_gives_identical_logits(tmp_path, cell, tie):
    vocab = Vocab.from_text("abcdefghij")  # 11 ids with <unk>
    model = char_model(cell, tie=tie, vocab_size=len(vocab))
    save_run(tmp_path / "run", model, vocab)
    loaded, loaded_vocab, config = api.load(tmp_path / "run")
    assert loaded_vocab.chars == vocab.chars and config["model"] == model.config.to_dict()
    assert not loaded.training
    ids = torch.as_tensor(vocab.encode("abjjihgfedcbaa").astype("int64"))[None]
    with torch.no_grad():
        assert torch.equal(loaded(ids)[0], model(ids)[0])
    if tie:
        # Stored once, and still one shared matrix after loading (so training it keeps them equal).
        with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
            assert "head.weight" not in f.keys()
        assert loaded.head.weight is loaded.embed.weight


def test_trained_run_reloads_to_its_recorded_validation_loss(tiny_run, shakespeare_slice):
    """A real run: model.safetensors (the best weights) scores the validation split as training recorded."""
    from chargen.corpus import encode_chunked, read_text, split_train_val
    from chargen.textlm import evaluate_text

    model, vocab, config = api.load(tiny_run)
    ids = encode_chunked(vocab, read_text(shakespeare_slice).text)
    _, val_ids = split_train_val(ids, config["corpus"]["val_fraction"])
    assert len(val_ids) == config["corpus"]["val_chars"]
    result = evaluate_text(model, val_ids, streams=config["train"]["batch_size"], seq_len=config["train"]["seq_len"])
    assert result["loss"] == pytest.approx(config["metrics"]["val_loss"], abs=1e-5)
