"""The text classifier: the CSV / JSON-lines reader, the stratified split, the model's reading of whole
texts, predict's output, the wrong-kind-of-run refusals, a real training that learns, and --from-run."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import random

import numpy as np
import pytest
import torch

from chargen import classifier
from chargen.classifier import ClassifyTask, TextClassifier, load_classifier, pad_batch
from chargen.classify_data import read_examples, scores, stratified_split
from chargen.config import POOLINGS, ModelConfig, TrainConfig
from chargen.progress import Progress
from test_errors import chargen, one_line_error

TOY_MODEL = ["--hidden", "32", "--layers", "1", "--embedding", "16"]


def separable(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts of 'good' words are 'pos', of 'bad' words 'neg' (lengths 3-12 words, so lengths differ)."""
    rng = random.Random(seed)
    words = {"pos": ["good", "great", "lovely", "fine", "nice"], "neg": ["bad", "awful", "dull", "poor", "sad"]}
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        rows.append((" ".join(rng.choice(words[label]) for _ in range(rng.randint(3, 12))), label))
    return rows


def write_csv(path, rows, header=("review", "sentiment")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A small GRU classifier trained on a separable task (a few seconds); shared, read-only."""
    folder = tmp_path_factory.mktemp("toy")
    data = write_csv(folder / "reviews.csv", separable(400, seed=0))
    code = __import__("cli").main(["classify", "train", str(data), "--text", "review", "--label", "sentiment",
                                   "--checkpoint", str(folder / "run"), *TOY_MODEL, "--max-steps", "50",
                                   "--rng-seed", "3"])
    assert code == 0
    return folder / "run"


# -- reading --------------------------------------------------------------------------------------------
def test_csv_quoted_fields_keep_commas_quotes_and_newlines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('review,sentiment\n"Loved it, really",pos\n"He said ""dull"".\nTwice.",neg\nplain,pos\n',
                    encoding="utf-8")
    ex = read_examples(path, "review", "sentiment")
    assert ex.texts == ["Loved it, really", 'He said "dull".\nTwice.', "plain"]
    assert ex.labels == ["pos", "neg", "pos"]
    assert ex.lines == [2, 3, 5]  # the multi-line record starts on line 3; the next on 5


def test_columns_by_index_and_json_lines_labels_stay_strings(tmp_path):
    no_header = write_csv(tmp_path / "n.csv", [("1", "some text here"), ("2", "more text there")], header=None)
    ex = read_examples(no_header, "1", "0")
    assert ex.texts == ["some text here", "more text there"] and ex.labels == ["1", "2"]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"t": "first", "y": 1}\n\n{"t": "second", "y": true}\n', encoding="utf-8")
    ex = read_examples(jsonl, "t", "y")
    assert ex.texts == ["first", "second"] and ex.labels == ["1", "true"] and ex.lines == [1, 3]


BAD_FILES = {
    # name: (file name, contents, options, words the one-line error must hold)
    "empty text": ("r.csv", "review,sentiment\ngood,pos\n,neg\n", [], ["r.csv, line 3", "text (review) is empty"]),
    "empty label": ("r.csv", "review,sentiment\ngood,pos\nbad,\n", [], ["r.csv, line 3", "label (sentiment) is empty"]),
    "missing column": ("r.csv", "body,sentiment\ngood,pos\n", [], ["no column 'review'", "0: 'body', 1: 'sentiment'",
                                                                    "--text"]),
    "one example of a label": ("r.csv", "review,sentiment\ngood,pos\nfine,pos\nbad,neg\n", [],
                               ["class 'neg' has only 1 example", "--val-file"]),
    "one class": ("r.csv", "review,sentiment\ngood,pos\nfine,pos\n", [], ["one label only", "at least 2 classes"]),
    "not JSON": ("r.jsonl", '{"review": "good", "sentiment": "pos"}\n{oops\n', [], ["r.jsonl, line 2",
                                                                                    "not a JSON object"]),
    "missing key": ("r.jsonl", '{"review": "good", "label": "pos"}\n', [], ["line 1", "no key 'sentiment'"]),
    "not UTF-8": ("r.csv", b"review,sentiment\ncaf\xe9,pos\n", [], ["not UTF-8", "0xe9"]),
    "missing file": (None, "", [], ["does not exist"]),
    "freeze without a run": ("r.csv", "review,sentiment\ngood,pos\nfine,pos\nbad,neg\nsad,neg\n", ["--freeze-core"],
                             ["--freeze-core", "needs --from-run"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_labelled_file_is_one_line(case, tmp_path, capsys):
    name, content, options, words = BAD_FILES[case]
    path = tmp_path / (name or "absent.csv")
    if name:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    one_line_error(chargen(capsys, "classify", "train", path, "--text", "review", "--label", "sentiment",
                           *TOY_MODEL, "--max-steps", "1", *options), *words)


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = ["a"] * 50 + ["b"] * 9 + ["c"] * 2 + ["d"] * 1000
    rng = random.Random(0)
    rng.shuffle(labels)
    train, val = stratified_split(labels, 0.1, seed=5)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))  # a partition
    for name, n in (("a", 50), ("b", 9), ("c", 2), ("d", 1000)):
        in_val = sum(labels[i] == name for i in val)
        assert 1 <= in_val <= n - 1
        assert in_val == max(1, round(n * 0.1))
    again = stratified_split(labels, 0.1, seed=5)
    assert (again[1] == val).all() and not (stratified_split(labels, 0.1, seed=6)[1] == val).all()


def test_scores_macro_f1_counts_each_class_the_same():
    truth = np.array([0] * 8 + [1] * 2)
    predicted = np.array([0] * 10)  # the majority class everywhere
    s = scores(truth, predicted, 2)
    assert s["accuracy"] == 0.8 and s["confusion"] == [[8, 0], [2, 0]]
    assert s["macro_f1"] == pytest.approx((2 * 0.8 / 1.8 + 0) / 2)


# -- the model ------------------------------------------------------------------------------------------
def small_classifier(cell: str, pooling: str) -> TextClassifier:
    """A 2x12 classifier of 3 classes over 9 ids, seeded, in eval mode."""
    torch.manual_seed(0)
    return TextClassifier(ModelConfig(cell=cell, hidden=12, layers=2, embedding=6, head="classify", vocab_size=9,
                                      outputs=3, pooling=pooling)).eval()


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_text_reads_the_same_alone_padded_or_in_chunks(pooling, cell, monkeypatch):
    model = small_classifier(cell, pooling)
    texts = [np.array([1, 2, 3, 4, 5]), np.arange(1, 9).repeat(3)[:23], np.array([7])]
    with torch.no_grad():
        together, _ = model(pad_batch(texts, torch.device("cpu")))
        alone = torch.cat([model(pad_batch([t], torch.device("cpu")))[0] for t in texts])
        monkeypatch.setattr(classifier, "CHUNK", 4)  # read in chunks of 4, the state carried
        chunked, _ = model(pad_batch(texts, torch.device("cpu")))
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked, together, rtol=1e-5, atol=1e-6)


def test_small_real_training_learns_a_separable_task(toy_run, tmp_path):
    held_out = write_csv(tmp_path / "held.csv", separable(200, seed=1))
    run = load_classifier(checkpoint=toy_run)
    assert run.labels == ["neg", "pos"]
    config = json.loads((toy_run / "config.json").read_text())
    assert config["model"]["head"] == "classify" and config["classify"]["labels"] == ["neg", "pos"]
    figures = classifier.evaluate_file(run, held_out)
    assert figures["accuracy"] >= 0.95, figures


def test_the_kept_weights_have_the_fewest_validation_errors_then_the_lowest_loss(toy_run):
    config = json.loads((toy_run / "config.json").read_text())
    evals, best = config["evals"], config["metrics"]
    fewest = min(e["val_error"] for e in evals)
    assert sum(e["val_error"] == fewest for e in evals) > 1  # the toy task is easy: several reach it
    lowest = min(e["val_loss"] for e in evals if e["val_error"] == fewest)
    assert (best["val_error"], best["val_loss"]) == (fewest, lowest)
    assert best["val_acc"] == pytest.approx(1 - fewest)


def test_a_rising_loss_does_not_unseat_fewer_errors():
    progress = Progress()
    steps = [(100, 0.90, 0.35, True), (200, 1.10, 0.30, True), (300, 0.80, 0.31, False), (400, 1.00, 0.30, True),
             (500, 1.05, 0.30, False), (600, float("nan"), 0.10, False)]
    for step, loss, error, improves in steps:
        progress.step = step
        assert progress.record({"val_loss": loss, "val_error": error}, 1.0, ClassifyTask.selects_on) is improves, step
    assert progress.best_metrics["step"] == 400 and progress.best == 0.30 and progress.stale == 2


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_each_characters_contributions_add_up_to_the_logits(pooling, cell, monkeypatch):
    model = small_classifier(cell, pooling)
    text = np.arange(1, 9).repeat(3)[:23]
    with torch.no_grad():
        logits = model(pad_batch([text], torch.device("cpu")))[0][0]
    monkeypatch.setattr(classifier, "CHUNK", 4)  # a long text is read in chunks: the split is still exact
    parts = model.contributions(text)
    assert parts.shape == (3, 23)
    torch.testing.assert_close(parts.sum(1) + model.head.bias.detach(), logits, rtol=1e-5, atol=1e-5)


def test_inspect_on_a_classifier_shows_the_words_that_moved_it(toy_run, tmp_path, capsys):
    path = tmp_path / "review.txt"
    path.write_text("good great lovely nice fine awful\n", encoding="utf-8")  # as an editor saves it
    rc, out, err = chargen(capsys, "inspect", "--checkpoint", toy_run, path)
    assert rc == 0, err
    assert "unknown" not in err  # the file's last line ending is not read as part of the text
    probs = load_classifier(checkpoint=toy_run).predict(["good great lovely nice fine awful"])[1][0]
    assert "-> pos" in out and f"pos {probs[1]:.3f}" in out and f"neg {probs[0]:.3f}" in out
    assert "good great lovely nice fine awful" in out  # the text itself, shaded (plain into a pipe)
    margin = float(out.split("the margin of pos over neg: ")[1].split()[0])
    assert margin == pytest.approx(np.log(probs[1] / probs[0]), abs=2e-3)  # the logits' difference
    toward_pos = out.split("words toward pos: ")[1].splitlines()[0]
    toward_neg = out.split("words toward neg: ")[1].splitlines()[0]
    assert "good" in toward_pos and "awful" in toward_neg and "awful" not in toward_pos
    for option in (["--neuron", "1:0"], ["--neurons", "find"], ["--html", str(tmp_path / "absent" / "p.html")]):
        one_line_error(chargen(capsys, "inspect", "--checkpoint", toy_run, path, *option), "text-classifier run",
                       "character-model runs")


def test_inspect_on_a_classifier_says_when_the_text_is_cut(toy_run, tmp_path, capsys):
    path = tmp_path / "long.txt"
    path.write_text("good " * 40 + "awful " * 40, encoding="utf-8")
    rc, out, err = chargen(capsys, "inspect", "--checkpoint", toy_run, path, "--max-chars", "50")
    assert rc == 0, err
    assert "classifying and showing only the first 50" in err and "may differ" in err
    assert "awful" not in out.split("words toward")[0]  # only the first 50 characters were read


# -- predict and eval on the command line ----------------------------------------------------------------
def test_predict_prints_label_tab_probability_per_text(toy_run, capsys):
    rc, out, err = chargen(capsys, "classify", "predict", "--checkpoint", toy_run,
                           "good great lovely nice", "awful dull bad poor sad", "fine")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    for line, expected in zip(lines[:2], ["pos", "neg"]):
        label, probability = line.split("\t")
        assert label == expected and 0.5 <= float(probability) <= 1.0


def test_predict_file_adds_the_columns_and_keeps_the_rows(toy_run, tmp_path, capsys):
    rows = [("a great, lovely film", "x"), ('said "bad"\nand dull', "y")]
    path = write_csv(tmp_path / "new.csv", rows, header=("review", "id"))
    rc, out, err = chargen(capsys, "classify", "predict", "--checkpoint", toy_run, "--file", path)
    assert rc == 0, err
    back = list(csv.reader(io.StringIO(out)))
    assert back[0] == ["review", "id", "predicted", "probability"]
    assert [r[:2] for r in back[1:]] == [list(r) for r in rows]
    assert [r[2] for r in back[1:]] == ["pos", "neg"]
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text(json.dumps({"review": "nice fine good", "n": 1}) + "\n", encoding="utf-8")
    rc, out, _ = chargen(capsys, "classify", "predict", "--checkpoint", toy_run, "--file", jsonl)
    row = json.loads(out)
    assert rc == 0 and row["n"] == 1 and row["predicted"] == "pos" and 0.5 <= row["probability"] <= 1


def test_eval_json_and_an_unknown_label(toy_run, tmp_path, capsys):
    path = write_csv(tmp_path / "held.csv", separable(40, seed=2))
    rc, out, _ = chargen(capsys, "classify", "eval", "--checkpoint", toy_run, path, "--json")
    figures = json.loads(out)
    assert rc == 0 and figures["texts"] == 40 and sum(map(sum, figures["confusion"])) == 40
    bad = write_csv(tmp_path / "bad.csv", [("good", "pos"), ("meh", "neutral")])
    one_line_error(chargen(capsys, "classify", "eval", "--checkpoint", toy_run, bad), "labels the run never learnt",
                   "'neutral'")


def test_every_command_refuses_the_wrong_kind_of_run(toy_run, tiny_run, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("some text to read\n")
    for command in (["generate"], ["eval", text], ["series", "forecast"], ["series", "eval"]):
        one_line_error(chargen(capsys, *command, "--checkpoint", toy_run), "is a text-classifier run",
                       "chargen classify predict")
    for command in (["classify", "predict", "some text"], ["classify", "eval", text]):
        one_line_error(chargen(capsys, *command, "--checkpoint", tiny_run), "is a character-model run",
                       "not a text-classifier run")
    one_line_error(chargen(capsys, "classify", "train", text, "--from-run", str(toy_run)),
                   "is a text-classifier run, not a character-model run")


def test_from_run_starts_from_the_text_model_and_freeze_keeps_its_core(tiny_run, tmp_path, capsys):
    from chargen.api import load

    path = write_csv(tmp_path / "r.csv", separable(60, seed=4))
    rc, _, err = chargen(capsys, "classify", "train", path, "--text", "review", "--label", "sentiment",
                         "--from-run", tiny_run, "--freeze-core", "--max-steps", "3", "--hidden", "99",
                         "--checkpoint", tmp_path / "clf")
    assert rc == 0, err
    assert "ignoring --hidden" in err
    base, base_vocab, _ = load(tiny_run)
    run = load_classifier(checkpoint=tmp_path / "clf")
    assert run.vocab.chars == base_vocab.chars
    mine, theirs = run.model.state_dict(), base.state_dict()
    for name in theirs:
        if name.startswith(("embed.", "core.")):
            torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=0)
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["classify"]["from_run"] == str(tiny_run)


def test_a_trained_core_learns_at_its_fraction_of_the_rate_and_the_new_head_at_the_full_rate(tiny_run, tmp_path,
                                                                                            capsys):
    from chargen.checkpoint import read_state
    from chargen.loop import make_optimizer

    path = write_csv(tmp_path / "r.csv", separable(60, seed=4))
    rc, _, err = chargen(capsys, "classify", "train", path, "--text", "review", "--label", "sentiment",
                         "--from-run", tiny_run, "--core-lr-scale", "0.25", "--max-steps", "3",
                         "--checkpoint", tmp_path / "clf")
    assert rc == 0, err
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["classify"]["settings"]["core_lr_scale"] == 0.25
    groups = read_state(tmp_path / "clf")["optimizer"]["param_groups"]  # as the last step left them
    full = [g["lr"] for g in groups if g["lr_scale"] == 1.0]
    assert {g["lr_scale"] for g in groups} == {0.25, 1.0} and len(set(full)) == 1
    assert all(g["lr"] == pytest.approx(0.25 * full[0]) for g in groups if g["lr_scale"] == 0.25)
    # which parameters are in the slow groups: the embedding and the core, never the new head
    net = TextClassifier(ModelConfig.from_dict(config["model"]))
    net.trained_lr_scale = 0.25
    names = {id(p): name for name, p in net.named_parameters()}
    scales = {names[id(p)]: g["lr_scale"] for g in make_optimizer(net, TrainConfig(), torch.device("cpu")).param_groups
              for p in g["params"]}
    assert sorted(scales) == sorted(names.values())  # every parameter in exactly one group
    assert {name for name, scale in scales.items() if scale == 1.0} == {"head.weight", "head.bias"}
    one_line_error(chargen(capsys, "classify", "train", path, "--text", "review", "--label", "sentiment",
                           "--from-run", tiny_run, "--core-lr-scale", "0", "--checkpoint", tmp_path / "x"),
                   "--core-lr-scale")
    one_line_error(chargen(capsys, "classify", "train", path, "--text", "review", "--label", "sentiment",
                           "--core-lr-scale", "0.3", "--checkpoint", tmp_path / "y"), "--core-lr-scale", "--from-run")
    assert not (tmp_path / "y").exists()


# -- sizing ---------------------------------------------------------------------------------------------
def sizing_task(texts: int, longest: int) -> ClassifyTask:
    """A task of `texts` random texts of 5 to `longest` ids (9 ids, 2 classes), batch 16."""
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 9, size=int(n)) for n in rng.integers(5, longest, size=texts)]
    return ClassifyTask(ids, np.arange(texts) % 2, [], np.zeros(0, dtype=np.int64), 2, 16, 0, torch.device("cpu"))


SIZED = ModelConfig(hidden=256, layers=1, embedding=8, head="classify", vocab_size=9, outputs=2)


def test_sizing_takes_the_widest_width_that_makes_its_steps_in_the_budget():
    from chargen.classify_sizing import MIN_STEPS, STEP_SHARE, choose_width

    task = sizing_task(400, 200)
    typical = np.mean([task.padded_chars(b) for b in task.epoch_batches(0)])  # characters of a step
    # seconds per character per hidden unit squared: a machine where 1x192 makes 1.2 x MIN_STEPS in 300 s
    per_char = 300.0 * STEP_SHARE / (1.2 * MIN_STEPS * 192 ** 2 * typical)
    measured = []

    def measure(config, batches):  # a step's time grows with its characters and the width squared; the
        measured.append(config.hidden)  # first timed step is twice as slow (a busy moment), the next not
        fast = [per_char * config.hidden ** 2 * inputs[0].numel() for inputs, _ in batches[2:]]
        return [2 * fast[0], *fast]

    budget = TrainConfig(max_time=300.0)
    chosen = choose_width(SIZED, budget, task, torch.device("cpu"), None, measure)
    assert chosen.hidden == 192 and chosen.steps == pytest.approx(1.2 * MIN_STEPS, rel=1e-6)
    assert measured == [64, 96, 128, 192, 256]  # the probe stops at the first width that falls short
    assert chosen.passes == pytest.approx(chosen.steps / task.steps_per_epoch)
    assert f"makes {MIN_STEPS} steps" in chosen.line()

    measured.clear()
    per_char = 1e-5  # a machine too slow for any: the narrowest, probed alone
    slow = choose_width(SIZED, budget, task, torch.device("cpu"), None, measure)
    assert slow.hidden == 64 and slow.steps < MIN_STEPS and measured == [64] and "none makes" in slow.line()


def test_sizing_keeps_a_small_set_from_the_widest_core_and_leaves_the_random_state_alone():
    from chargen.classify_sizing import choose_width
    from chargen.sizing import PARAMETERS_PER_CHAR, parameters_of, time_steps

    task = sizing_task(40, 100)  # ~2,000 characters: every width would make its steps on them
    measured = []

    def measure(config, batches):  # real steps on this machine
        measured.append(config.hidden)
        return time_steps(config, lambda: batches, task.loss, TrainConfig(), torch.device("cpu"), None)

    limit = PARAMETERS_PER_CHAR * sum(len(x) for x in task.train_ids)
    state = torch.get_rng_state()
    chosen = choose_width(SIZED, TrainConfig(max_time=300.0), task, torch.device("cpu"), None, measure)
    assert torch.equal(torch.get_rng_state(), state)  # the run's seeded start is untouched
    allowed = [h for h in measured if parameters_of(dataclasses.replace(SIZED, hidden=h)) <= limit]
    assert chosen.hidden == max(allowed) == measured[-1] < 512
    assert parameters_of(dataclasses.replace(SIZED, hidden=chosen.hidden * 2)) > limit
    assert "parameters per training character" in chosen.line()


def test_sizing_chooses_the_width_only_when_the_user_did_not(tiny_run, tmp_path, capsys):
    from chargen.classify_sizing import LADDER

    path = write_csv(tmp_path / "r.csv", separable(120, seed=5))
    fields = ("--text", "review", "--label", "sentiment", "--embedding", "8")
    base_hidden = json.loads((tiny_run / "config.json").read_text())["model"]["hidden"]
    widths = {}
    for name, options in {"auto": ("--max-time", "3s"), "given": ("--max-time", "3s", "--hidden", "24"),
                          "steps": ("--max-steps", "2"), "epochs": ("--max-time", "3s", "--epochs", "1"),
                          "fixed": ("--max-time", "2s", "--sizing", "fixed"),
                          "from-run": ("--max-time", "2s", "--from-run", str(tiny_run))}.items():
        rc, _, err = chargen(capsys, "classify", "train", path, *fields, *options, "--checkpoint", tmp_path / name)
        assert rc == 0, err
        config = json.loads((tmp_path / name / "config.json").read_text())
        widths[name] = (config["model"]["hidden"], config.get("sizing"))
        assert ("sizing: " in err) == (name == "auto"), name
    hidden, sizing = widths["auto"]
    assert hidden in LADDER and sizing["hidden"] == hidden and sizing["budget"] == "3s"
    assert load_classifier(checkpoint=tmp_path / "auto").model.config.hidden == hidden
    assert widths["given"] == (24, None) and widths["from-run"] == (base_hidden, None)
    assert widths["steps"] == widths["epochs"] == widths["fixed"] == (256, None)
