"""Fine-tuning (`chargen train FILE --from-run BASE`): the vocabulary is extended without moving any
base id, the new run stands alone (generate and resume without the base), config.json records the
base, and a contradicting size flag or an unsuitable base is one line. Plus the copied-share measure.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from chargen.copying import copied_share
from chargen.finetune import FINETUNE_LR_SCALE, FINETUNE_PASSES, FINETUNE_SETTINGS, start_from
from chargen.vocab import UNK_ID, Vocab
from test_errors import chargen, one_line_error

# Characters tinyshakespeare's first 60,000 characters (the tiny base run's corpus) do not have.
NEW_CHARS = "ë☃œ"


@pytest.fixture
def base(tiny_run, isolated_checkpoints):
    """A copy of the tiny LSTM run (2x64, trained on Shakespeare) as `--run base`; the test may delete it."""
    dest = isolated_checkpoints / "base"
    shutil.copytree(tiny_run, dest)
    return dest


@pytest.fixture
def new_text(shakespeare, tmp_path):
    """Later Shakespeare (not in the base's corpus) with characters the base never saw in every line."""
    lines = shakespeare.read_text(encoding="utf-8")[300_000:312_000].splitlines()
    path = tmp_path / "new.txt"
    path.write_text("\n".join(f"{line} {NEW_CHARS[i % 3]}" for i, line in enumerate(lines)) + "\n", encoding="utf-8")
    return path


def test_extension_keeps_every_base_id_and_prediction_and_adds_rows_from_unk(base, new_text):
    from chargen.api import load
    from chargen.config import TrainConfig
    from chargen.model import build_model

    base_model, base_vocab, _ = load(base)
    start, config = start_from("base", new_text, encoding="utf-8", allow_binary=False, given_model={},
                               config=TrainConfig(), explicit_train={}, default_time=300.0)
    n = len(base_vocab)
    added = sorted(set(new_text.read_text(encoding="utf-8")) - set(base_vocab.chars))
    assert set(NEW_CHARS) <= set(added)
    assert start.added == added and start.vocab.chars == base_vocab.chars + added
    for ch in base_vocab.chars:  # old ids unchanged
        assert start.vocab.encode(ch)[0] == base_vocab.encode(ch)[0]
    assert start.model_config.vocab_size == n + len(added)
    assert config.patience == FINETUNE_SETTINGS["patience"]

    model = build_model(start.model_config)
    start.load_into(model)
    model.eval()
    old = base_model.state_dict()
    new = model.state_dict()
    for name in ("embed.weight", "head.weight", "head.bias"):
        assert torch.equal(new[name][:n], old[name])
        assert torch.equal(new[name][n:], old[name][UNK_ID].expand_as(new[name][n:]))
    ids = torch.from_numpy(base_vocab.encode("ROMEO: what light").astype("int64"))[None]
    with torch.no_grad():  # the base's knowledge is intact: same logits for every old id
        assert torch.allclose(model(ids)[0][..., :n], base_model(ids)[0], atol=1e-6)


def test_finetuned_run_records_its_base_and_generates_without_it(base, new_text, isolated_checkpoints, capsys):
    sha = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    code, out, err = chargen(capsys, "train", new_text, "--from-run", "base", "--run", "ft", "--max-steps", "4",
                             "--eval-every", "2", "--batch-size", "8", "--seq-len", "32", "--lr", "1e-3")
    assert code == 0, err
    run = isolated_checkpoints / "ft"
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    record = config["finetune"]
    added = len(Vocab.load(run / "tokenizer.json")) - len(Vocab.load(base / "tokenizer.json"))
    assert added >= len(NEW_CHARS) and record["added_chars"] == added
    assert f"added {added} new characters" in err
    assert record["base_run"] == "base" and record["base_weights_sha256"] == sha
    # the fine-tuning settings are chosen and recorded; an explicit option wins (a step budget: no pass limit)
    assert config["train"]["lr"] == 1e-3 and record["settings"]["lr"] == 1e-3
    assert config["train"]["epochs"] == record["settings"]["epochs"] == 0 and "yours: --lr, --max-steps" in err
    assert config["train"]["warmup_steps"] == record["settings"]["warmup_steps"] == FINETUNE_SETTINGS["warmup_steps"]
    assert config["train"]["patience"] == FINETUNE_SETTINGS["patience"]
    assert {k: config["model"][k] for k in ("cell", "hidden", "layers", "embedding")} == \
        {"cell": "lstm", "hidden": 64, "layers": 2, "embedding": 32}

    shutil.rmtree(base)  # the new run is complete on its own
    code, out, err = chargen(capsys, "generate", "--run", "ft", "--seed", "ë☃", "--length", "40", "--rng-seed", "3")
    assert code == 0, err
    assert out.startswith("ë☃") and len(out) == 2 + 40 + 1  # the seed, 40 characters, a final newline


def test_fine_tuning_anneals_a_fraction_of_the_base_rate_over_a_few_passes(base, new_text, isolated_checkpoints,
                                                                           capsys):
    """With no options, a fine-tuned run trains at FINETUNE_LR_SCALE of its base's rate and ends after
    FINETUNE_PASSES passes over the new text, long before the default 5-minute budget."""
    code, _, err = chargen(capsys, "train", new_text, "--from-run", "base", "--run", "ft")
    assert code == 0, err
    config = json.loads((isolated_checkpoints / "ft" / "config.json").read_text(encoding="utf-8"))
    base_lr = json.loads((base / "config.json").read_text(encoding="utf-8"))["train"]["lr"]
    train, settings = config["train"], config["finetune"]["settings"]
    assert train["lr"] == settings["lr"] == pytest.approx(base_lr * FINETUNE_LR_SCALE, rel=0.05)
    assert train["epochs"] == settings["epochs"] == FINETUNE_PASSES and train["max_time"] == 300
    per_pass = -(-config["corpus"]["train_chars"] // (train["batch_size"] * train["seq_len"]))
    assert config["metrics"]["steps"] <= FINETUNE_PASSES * per_pass and config["metrics"]["elapsed_s"] < 120
    assert f"{FINETUNE_PASSES:g} passes over the text" in err


def test_resuming_a_finetuned_run_is_exact_and_needs_no_base(base, new_text, tmp_path):
    from chargen import TrainConfig, train
    from chargen.checkpoint import read_state
    from chargen.loop import TrainingStopped

    settings = dict(batch_size=8, seq_len=32, max_steps=6, eval_every=2)
    train(new_text, checkpoint=tmp_path / "whole", from_run=base, config=TrainConfig(**settings))
    with pytest.raises(TrainingStopped):
        train(new_text, checkpoint=tmp_path / "halves", from_run=base, config=TrainConfig(**settings),
              should_stop=lambda step: step >= 3)
    shutil.rmtree(base)
    train(new_text, checkpoint=tmp_path / "halves", resume=True)
    whole, halves = read_state(tmp_path / "whole"), read_state(tmp_path / "halves")
    assert halves["step"] == whole["step"] == 6
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, halves["model"][name]), name
    record = json.loads((tmp_path / "halves" / "config.json").read_text(encoding="utf-8"))["finetune"]
    assert record == json.loads((tmp_path / "whole" / "config.json").read_text(encoding="utf-8"))["finetune"]


@pytest.mark.parametrize("flag, value, says", [("--hidden", "128", "--hidden 128 (the base has 64)"),
                                               ("--cell", "gru", "--cell gru (the base has lstm)")])
def test_a_size_flag_that_contradicts_the_base_is_one_line(base, new_text, isolated_checkpoints, capsys,
                                                           flag, value, says):
    line = one_line_error(chargen(capsys, "train", new_text, "--from-run", "base", "--run", "x", flag, value),
                          says, "keeps its base's architecture")
    assert line and not (isolated_checkpoints / "x").exists()


def test_from_run_with_resume_a_missing_a_series_or_a_classifier_base_is_one_line(base, new_text, tmp_path, capsys):
    from chargen.classifier import train_classifier
    from chargen.config import ModelConfig, TrainConfig
    from chargen.series import train_series
    from chargen.series_data import SeriesConfig

    one_line_error(chargen(capsys, "train", new_text, "--run", "base", "--resume", "--from-run", "base"),
                   "--from-run", "--resume")
    one_line_error(chargen(capsys, "train", new_text, "--from-run", "nvoel", "--run", "y"), "nvoel", "does not exist")
    train_series(synthetic="sine", length=120, checkpoint=tmp_path / "sine", settings=SeriesConfig(window=20),
                 model=ModelConfig(hidden=8, layers=1, embedding=8), config=TrainConfig(max_steps=2, batch_size=8))
    capsys.readouterr()
    one_line_error(chargen(capsys, "train", new_text, "--from-run", str(tmp_path / "sine"), "--run", "y"),
                   "time-series run", "text run")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\n" + "".join(f"{w} {i},{w}\n" for i in range(6) for w in ("yes", "no")),
                        encoding="utf-8")
    train_classifier(labelled, checkpoint=tmp_path / "sent", model=ModelConfig(hidden=8, layers=1, embedding=8),
                     config=TrainConfig(max_steps=2, batch_size=4))
    capsys.readouterr()
    one_line_error(chargen(capsys, "train", new_text, "--from-run", str(tmp_path / "sent"), "--run", "y"),
                   "text-classifier run", "text run")


def test_copied_share_counts_windows_found_verbatim():
    training = "".join(chr(ord("a") + i % 26) + ("" if i % 7 else " ") for i in range(500))
    assert copied_share("abcdXYZW", "xxabcdefgh", window=4) == 1 / 5  # abcd; bcdX, cdXY, dXYZ, XYZW are new
    copied, novel = training[100:140], "0123456789" * 4  # 40 copied characters, then 40 never seen
    assert copied_share(copied + novel, training) == (40 - 32 + 1) / (80 - 32 + 1)
    assert copied_share(training[:300], training) == 1.0
    with pytest.raises(ValueError):
        copied_share("short", training)
