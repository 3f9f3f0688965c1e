"""Automatic sizing (chargen/sizing.py): the rule's properties, explicit settings winning, and a real run
whose printed choice, config.json and resume agree."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chargen import sizing
from chargen.config import ModelConfig, TrainConfig

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent


def machine(speed: float):
    """A probe of a pretend machine: characters/s fall with the parameters, as measured (plus a fixed cost)."""
    def measure(model, streams, seq_len, train, device, amp_dtype):
        return speed / (sizing.parameters_of(model) + 200_000)
    return measure


def choose(train_chars=1_000_000, explicit=(), speed=2e10, model=None, **budget):
    model = model or ModelConfig(vocab_size=65)
    return sizing.choose(model, TrainConfig(**budget), train_chars, CPU, None, set(explicit), measure=machine(speed))


def test_width_grows_with_the_time_budget():
    widths = [choose(max_time=seconds).hidden for seconds in (30, 60, 300, 1200, 3600, 4 * 3600)]
    assert widths == sorted(widths)
    assert widths[-1] > widths[0]


def test_width_grows_with_the_step_budget_and_needs_no_probe():
    def refuse(*_):
        raise AssertionError("a step budget needs no speed measurement")

    widths = [sizing.choose(ModelConfig(vocab_size=65), TrainConfig(max_steps=steps), 10_000_000, CPU, None, set(),
                            measure=refuse).hidden for steps in (100, 1000, 10_000, 100_000)]
    assert widths == sorted(widths) and widths[-1] > widths[0]


def test_a_smaller_text_gets_no_larger_a_model_and_no_less_dropout():
    choices = [choose(train_chars=chars, max_time=1200) for chars in (30_000, 100_000, 1_000_000, 20_000_000)]
    widths = [c.hidden for c in choices]
    dropouts = [c.dropout for c in choices]
    assert widths == sorted(widths) and widths[-1] > widths[0]
    assert dropouts == sorted(dropouts, reverse=True) and dropouts[0] > dropouts[-1] == 0.0


def test_a_faster_machine_picks_a_larger_model():
    cpu = choose(max_time=300, speed=2e10)
    gpu = choose(max_time=300, speed=2e12)
    assert gpu.hidden > cpu.hidden
    assert gpu.chars_per_s > cpu.chars_per_s


@pytest.mark.parametrize("budget", [60, 300, 1200])
def test_one_width_timed_too_fast_does_not_move_the_choice(budget):
    """The probe's speeds are smoothed across widths: a width whose two timed steps happened to run 40% fast
    (as on a busy machine) is not chosen for it."""
    exact = choose(max_time=budget)
    wider = sizing.LADDER[sizing.LADDER.index(exact.hidden) + 1]

    def lucky(model, *args):
        rate = machine(2e10)(model, *args)
        return rate * 1.4 if model.hidden == wider else rate

    noisy = sizing.choose(ModelConfig(vocab_size=65), TrainConfig(max_time=budget), 1_000_000, CPU, None, set(),
                          measure=lucky)
    assert noisy.hidden == exact.hidden


def test_a_time_budget_takes_the_width_the_loss_model_puts_lowest():
    choice = choose(max_time=300)
    predicted = {}
    for width in sizing.LADDER:
        other = choose(max_time=300, explicit=("hidden",), model=ModelConfig(vocab_size=65, hidden=width))
        if other.parameters <= sizing.PARAMETERS_PER_CHAR * 1_000_000:
            predicted[width] = sizing.predicted_loss(sizing.effective_parameters(other.parameters, 1_000_000),
                                                     other.chars_per_parameter * other.parameters)
    assert choice.hidden == min(predicted, key=predicted.get)
    assert sizing.LADDER[0] < choice.hidden < max(predicted)  # an interior minimum: neither end of the ladder


def test_a_step_budget_takes_the_compute_optimal_width_for_its_characters():
    choice = choose(max_steps=2000, train_chars=10_000_000)
    target = sizing.compute_optimal_parameters(2000 * 32 * 64)
    others = [sizing.parameters_of(ModelConfig(vocab_size=65, hidden=width)) for width in sizing.LADDER]
    assert choice.parameters == min(others, key=lambda n: abs(math.log(n / target)))


def test_explicit_settings_are_kept_and_the_rest_chosen():
    model = ModelConfig(vocab_size=65, hidden=100, dropout=0.25)
    choice = choose(model=model, explicit=("hidden", "dropout"), max_time=300, train_chars=20_000_000)
    assert (choice.hidden, choice.dropout) == (100, 0.25)
    assert choice.chosen == ["batch_size", "lr"]
    choice = choose(explicit=("lr", "batch_size"), max_time=300)
    assert choice.lr == TrainConfig().lr and choice.streams == TrainConfig().batch_size
    assert "lr" not in choice.chosen
    everything = ("hidden", "dropout", "batch_size", "lr")
    assert choose(explicit=everything, max_time=300) is None


def test_a_long_budget_on_a_small_text_stops_after_the_useful_passes():
    """A time budget longer than a small text can use ends after USEFUL_PASSES passes, annealed by then."""
    long = choose(train_chars=86_000, max_time=1200)
    assert long.passes_limit == sizing.USEFUL_PASSES == pytest.approx(long.epochs)
    assert long.chars_seen == pytest.approx(sizing.USEFUL_PASSES * 86_000)
    assert "epochs" in long.chosen and "--epochs" in long.line()
    _, train = sizing.apply(long, ModelConfig(vocab_size=65), TrainConfig(max_time=1200))
    assert (train.epochs, train.max_time) == (sizing.USEFUL_PASSES, 1200)
    assert choose(train_chars=86_000, max_time=4 * 1200).hidden == long.hidden  # more time buys nothing more

    given = sizing.choose(ModelConfig(vocab_size=65), TrainConfig(max_time=1200, epochs=30), 86_000, CPU, None,
                          {"epochs"}, measure=machine(2e10))
    assert given.passes_limit == 0 and given.epochs == 30 and "epochs" not in given.chosen
    assert choose(train_chars=20_000_000, max_time=3600).passes_limit == 0  # a large text uses the whole budget
    assert choose(train_chars=86_000, max_steps=100_000).passes_limit == 0  # a step budget is kept as given


def test_dropout_grows_with_passes_and_with_parameters_per_character():
    assert sizing.dropout_for(3, 1_000_000, 1_000_000) == 0.0  # a few passes of a large text: none
    by_passes = [sizing.dropout_for(passes, 600_000, 100_000) for passes in (1, 2, 4, 8, 16, 64)]
    by_size = [sizing.dropout_for(10, parameters, 100_000) for parameters in (50_000, 200_000, 800_000, 3_200_000)]
    for values in (by_passes, by_size):
        assert values == sorted(values) and values[0] < values[-1] == sizing.MAX_DROPOUT


def test_repeated_passes_are_worth_less_than_new_text():
    assert sizing.effective_chars(5e5, 1_000_000) == 5e5
    values = [sizing.effective_chars(passes * 1e5, 100_000) for passes in (1, 2, 4, 16, 64, 1000)]
    assert values == sorted(values)
    assert all(value <= passes * 1e5 for value, passes in zip(values, (1, 2, 4, 16, 64, 1000)))
    assert values[-1] <= 100_000 * (1 + sizing.REPEAT_HALF_LIFE)


def test_learning_rate_falls_with_width_within_its_range():
    rates = [sizing.lr_for(width) for width in sizing.LADDER]
    assert rates == sorted(rates, reverse=True)
    assert sizing.lr_for(sizing.REFERENCE_WIDTH) == sizing.REFERENCE_LR
    assert all(sizing.LR_RANGE[0] <= rate <= sizing.LR_RANGE[1] for rate in rates)


SIZING_LINE = re.compile(r"sizing: (\d+)x(\d+) \(([\d.]+)M parameters\), (\d+) streams x (\d+), lr ([\d.e-]+), "
                         r"dropout ([\d.]+)")


def _train(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "train", "text.txt", "--run", "sized", *options],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    import random

    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs"]
    (tmp_path / "text.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(9))
                                                 for _ in range(600)) + "\n", encoding="utf-8")
    return tmp_path / "text.txt"


def test_a_time_budgeted_run_says_its_choice_records_it_and_resume_keeps_it(tmp_path, text_file):
    first = _train(tmp_path, "--max-time", "4s", "--embedding", "16")
    assert first.returncode == 0, first.stderr
    found = SIZING_LINE.search(first.stderr)
    assert found, first.stderr
    layers, hidden, _, streams, seq_len, lr, dropout = found.groups()
    config = json.loads((tmp_path / "checkpoints" / "sized" / "config.json").read_text())
    assert (config["model"]["layers"], config["model"]["hidden"]) == (int(layers), int(hidden))
    assert config["model"]["embedding"] == 16  # given: kept
    assert (config["train"]["batch_size"], config["train"]["seq_len"]) == (int(streams), int(seq_len))
    assert config["train"]["lr"] == pytest.approx(float(lr))
    assert config["model"]["dropout"] == pytest.approx(float(dropout))
    record = config["sizing"]
    assert record["hidden"] == int(hidden) and record["chars_per_s"] > 0
    # --epochs too when the 4 s would pass over the small text more than USEFUL_PASSES times
    assert set(record["chosen"]) - {"epochs"} == {"hidden", "dropout", "batch_size", "lr"}
    assert config["train"]["epochs"] == (record["passes_limit"] if "epochs" in record["chosen"] else 0)

    resumed = _train(tmp_path, "--resume", "--max-time", "6s")
    assert resumed.returncode == 0, resumed.stderr
    assert "sizing:" not in resumed.stderr  # nothing chosen again
    after = json.loads((tmp_path / "checkpoints" / "sized" / "config.json").read_text())
    assert after["model"] == config["model"] and after["sizing"] == record
    assert {k: after["train"][k] for k in ("batch_size", "seq_len", "lr", "epochs")} == \
        {k: config["train"][k] for k in ("batch_size", "seq_len", "lr", "epochs")}


def test_explicit_options_and_fixed_sizing_on_the_command_line(tmp_path, text_file):
    given = _train(tmp_path, "--max-steps", "2", "--hidden", "48", "--lr", "0.002")
    assert given.returncode == 0, given.stderr
    config = json.loads((tmp_path / "checkpoints" / "sized" / "config.json").read_text())
    assert config["model"]["hidden"] == 48 and config["train"]["lr"] == 0.002
    assert config["sizing"]["chosen"] == ["dropout", "batch_size"]

    fixed = subprocess.run([sys.executable, str(REPO / "cli.py"), "train", "text.txt", "--run", "fixed",
                            "--max-steps", "2", "--sizing", "fixed"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert fixed.returncode == 0, fixed.stderr
    assert "sizing:" not in fixed.stderr
    config = json.loads((tmp_path / "checkpoints" / "fixed" / "config.json").read_text())
    defaults = ModelConfig()
    assert (config["model"]["hidden"], config["model"]["dropout"]) == (defaults.hidden, defaults.dropout)
    assert config["train"]["lr"] == TrainConfig().lr and "sizing" not in config


def test_a_one_minute_budget_probes_enough_widths_to_find_its_best():
    """The probe's time limit must not stop it at the first width when each width takes a moment to time."""
    import time

    instant = choose(max_time=60)
    slow_machine = machine(2e10)

    def slow(*args):
        time.sleep(0.7)  # timing one width of a 2-core CPU, its model and optimiser built, takes 0.2-1 s
        return slow_machine(*args)

    measured = sizing.choose(ModelConfig(vocab_size=65), TrainConfig(max_time=60), 1_000_000, CPU, None, set(),
                             measure=slow)
    assert instant.hidden > sizing.LADDER[0]
    assert measured.hidden == instant.hidden
