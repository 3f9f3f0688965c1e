"""Training: a real run learns, the run directory is complete and records its metrics, runs reproduce."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from chargen import ModelConfig, TrainConfig, train
from chargen.corpus import char_counts, read_text
from chargen.loop import MAX_EVAL_SHARE, lr_factor, next_eval_mark

TINY_MODEL = dict(hidden=32, layers=1, embedding=16)


def unigram_entropy_nats(text: str) -> float:
    """The loss of the best model that ignores context: the entropy of the character frequencies."""
    counts = char_counts(text)
    total = sum(counts.values())
    return -sum(n / total * math.log(n / total) for n in counts.values())


@pytest.mark.slow
def test_a_short_real_run_learns_far_below_the_unigram_entropy(shakespeare, tmp_path):
    """~400 steps of a small LSTM on all of tinyshakespeare (about 15 s of CPU)."""
    text = read_text(shakespeare).text
    validation = text[-int(round(len(text) * 0.1)):]
    floor = unigram_entropy_nats(validation)
    assert 3.2 < floor < 3.4  # ~4.7 bits/char: what a model without context can reach
    result = train(shakespeare, checkpoint=tmp_path / "run", model=ModelConfig(hidden=128, layers=1, embedding=32),
                   config=TrainConfig(batch_size=32, seq_len=64, max_steps=400, eval_every=200, lr=1e-2,
                                      warmup_steps=10, rng_seed=1))
    assert result.status == "finished" and result.step == 400
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    losses = [e["val_loss"] for e in config["evals"]]
    assert losses == sorted(losses, reverse=True)  # it keeps improving
    # At least 0.8 nats (1.15 bits) per character better than the unigram model: it uses context.
    assert result.metrics["val_loss"] < floor - 0.8, (result.metrics, floor)


def test_one_step_writes_a_complete_self_describing_run(shakespeare_slice, tmp_path):
    run = tmp_path / "one"
    result = train(shakespeare_slice, checkpoint=run, model=ModelConfig(**TINY_MODEL),
                   config=TrainConfig(batch_size=8, seq_len=32, max_steps=1, rng_seed=3))
    assert result.step == 1
    assert {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"} <= {p.name for p in run.iterdir()}
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]  # no half-written files
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    m = config["metrics"]
    assert m["steps"] == 1 and m["step"] == 1 and m["elapsed_s"] >= 0
    assert m["val_bpc"] == pytest.approx(m["val_loss"] / math.log(2), rel=1e-5)
    assert 0 < m["val_loss"] < 10
    assert config["corpus"]["sha256"] == hashlib.sha256(shakespeare_slice.read_bytes()).hexdigest()
    assert config["model"]["cell"] == "gru" and config["model"]["hidden"] == 32
    assert config["model"]["vocab_size"] == config["vocab_size"] == len(set(read_text(shakespeare_slice).text)) + 1
    assert config["train"]["max_steps"] == 1 and config["train"]["rng_seed"] == 3


def test_same_rng_seed_same_weights(shakespeare_slice, tmp_path):
    def weights(name: str, seed: int) -> dict:
        train(shakespeare_slice, checkpoint=tmp_path / name, model=ModelConfig(**TINY_MODEL, dropout=0.1, cell="gru"),
              config=TrainConfig(batch_size=8, seq_len=16, max_steps=6, eval_every=6, rng_seed=seed))
        return load_file(str(tmp_path / name / "model.safetensors"))

    a, b, c = weights("a", 7), weights("b", 7), weights("c", 8)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(lr=1.0, warmup_steps=10, lr_floor=0.05)
    warm = [lr_factor(s, 0.0, config) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1) and warm[-1] == pytest.approx(1.0)
    decay = [lr_factor(100, p / 10, config) for p in range(11)]
    assert decay == sorted(decay, reverse=True)
    assert decay[0] == pytest.approx(1.0) and decay[-1] == pytest.approx(0.05)
    assert lr_factor(100, 1.5, config) == pytest.approx(0.05)  # past the budget: stays at the floor


@pytest.mark.slow
def test_a_run_that_overfits_says_so_once_and_keeps_its_best_weights(cli, tmp_path):
    """A text whose training part repeats one random passage and whose validation part is another: the
    model learns the passage by heart and validation rises from the start. The log says so once, with the
    best step; with --patience the run stops there instead."""
    rng = np.random.default_rng(0)
    passage, other = ("".join(rng.choice(list("abcdefghij klmnop"), n)) for n in (400, 2000))
    (tmp_path / "memo.txt").write_text(passage * 45 + other)
    args = ["train", "memo.txt", "--max-steps", "120", "--eval-every", "20", "--hidden", "64", "--layers", "1",
            "--batch-size", "8", "--seq-len", "64"]
    r = cli(*args, "--run", "memo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if line.startswith("validation has not improved")]
    assert len(said) == 1 and "for 4 evaluations (best" in said[0] and "at step 20," in said[0], r.stderr
    assert "--patience 4" in said[0] and "--dropout" in said[0]
    r = cli(*args, "--run", "stopped", "--patience", "4", cwd=tmp_path)
    assert r.returncode == 0 and "validation has not improved" not in r.stderr and "early-stopped" in r.stderr


def test_muon_takes_the_recurrent_matrices_and_adamw_the_rest():
    import torch

    from chargen.loop import make_optimizer
    from chargen.model import build_model

    model = build_model(ModelConfig(hidden=16, layers=2, embedding=8, vocab_size=20))
    optimizer = make_optimizer(model, TrainConfig(optimizer="muon", weight_decay=0.02), torch.device("cpu"))
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): name for name, p in model.named_parameters()}
    under_muon = {names[id(p)] for group in muon.param_groups for p in group["params"]}
    assert under_muon == {f"core.rnn.weight_{kind}_l{layer}" for kind in ("ih", "hh") for layer in (0, 1)}
    under_adamw = {names[id(p)] for group in adamw.param_groups for p in group["params"]}
    assert under_adamw == set(names.values()) - under_muon
    assert muon.param_groups[0]["weight_decay"] == 0.02
    assert len(optimizer.param_groups) == 3  # the loop sets every group's learning rate


def test_slow_validations_are_spaced_out_to_a_share_of_the_time_budget():
    """Validations at each fifth of the budget, unless one takes long for a time budget: then fewer, so that
    those before the final one take at most MAX_EVAL_SHARE of it (a large validation text in a short run)."""
    def marks(config: TrainConfig, eval_cost: float | None) -> list[float]:
        found, progress = [], 0.0
        while (progress := next_eval_mark(config, progress, eval_cost)) < 1.0:
            found.append(progress)
        return found

    assert marks(TrainConfig(max_time=300), None) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert marks(TrainConfig(max_time=300), 1.0) == pytest.approx([0.2, 0.4, 0.6, 0.8])  # cheap: unchanged
    assert marks(TrainConfig(max_steps=1000), 50.0) == pytest.approx([0.2, 0.4, 0.6, 0.8])  # no time budget
    for budget, cost in ((300, 9.0), (60, 2.0), (60, 9.0), (3600, 90.0)):
        spaced = marks(TrainConfig(max_time=budget), cost)
        assert len(spaced) < 4 and len(spaced) * cost <= MAX_EVAL_SHARE * budget + 1e-9
    assert marks(TrainConfig(max_time=60), 9.0) == []  # only the final validation is left
