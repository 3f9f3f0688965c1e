"""Fuzzing the loaders (hypothesis): whatever is in a run directory or a corpus file, chargen either
loads it or says what is wrong in one line (UserError) — never a traceback, never a huge allocation.
And the adversarial side of the vocabulary: arbitrary Unicode, surrogates and unassigned code points
included (tests/test_vocab.py has the ordinary round trips).
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
import unicodedata
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chargen import api
from chargen.checkpoint import STATE_KEYS, read_state
from chargen.corpus import read_text
from chargen.errors import UserError
from chargen.sample import generate_streams
from chargen.vocab import UNK_CHAR, UNK_ID, Vocab

RUN_FILES = ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Leaves include sizes at the edges: zero, negative, beyond 32 and 64 bits.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([0, -1, 2**31, 2**63, 10**30]) | st.floats()
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@contextmanager
def run_with(tiny_run: Path, name: str, data: bytes):
    """A fresh copy of the tiny run's files with `name` replaced by `data`."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        for file in RUN_FILES:
            shutil.copyfile(tiny_run / file, run / file)
        (run / name).write_bytes(data)
        yield run


def load_all(run: Path) -> None:
    """Every way a run directory is read for use: the torch model, and generation (numpy)."""
    api.load(str(run))
    assert len("".join(p[0] for p in generate_streams(run, seed="\n", length=3, rng_seed=0))) <= 3


def loads_or_says_why(run: Path) -> bool:
    """True when the run loads, False when chargen refused it with a UserError; anything else fails."""
    try:
        load_all(run)
    except UserError as e:
        assert "\n" not in str(e)
        return False
    return True


def mutate_json(data, original: dict, places: list[tuple[str, ...]]) -> bytes:
    """1-3 edits of a JSON document: a value replaced by arbitrary JSON, or a key deleted."""
    doc = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        node = doc
        for key in data.draw(st.sampled_from(places)):
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        key = data.draw(st.sampled_from(sorted(node)) | st.text(max_size=3)) if node else data.draw(st.text(max_size=3))
        if data.draw(st.booleans()):
            node.pop(key, None)
        else:
            node[key] = data.draw(JSON_VALUES)
    return json.dumps(doc, ensure_ascii=data.draw(st.booleans())).encode("utf-8")


# -- damaged files always refused -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
@FUZZ
@given(data=st.data())
def test_truncated_file_is_a_user_error(name, tiny_run, data):
    original = (tiny_run / name).read_bytes()
    # Cut inside the content (a cut that only removes trailing whitespace leaves the file whole).
    cut = data.draw(st.integers(0, len(original.rstrip()) - 1))
    with run_with(tiny_run, name, original[:cut]) as run, pytest.raises(UserError):
        load_all(run)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
@FUZZ
@given(junk=st.binary(max_size=400))
def test_random_bytes_are_a_user_error(name, tiny_run, junk):
    with run_with(tiny_run, name, junk) as run, pytest.raises(UserError):
        load_all(run)


def test_deeply_nested_json_is_a_user_error(tiny_run):
    for name in ("config.json", "tokenizer.json"):
        with run_with(tiny_run, name, b"[" * 100_000 + b"]" * 100_000) as run, pytest.raises(UserError):
            load_all(run)


# -- edited files load or are refused -------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_edited_config_loads_or_is_refused(tiny_run, data):
    original = json.loads((tiny_run / "config.json").read_text(encoding="utf-8"))
    with run_with(tiny_run, "config.json", mutate_json(data, original, [(), ("model",), ("model",)])) as run:
        loads_or_says_why(run)


@FUZZ
@given(data=st.data())
def test_edited_tokenizer_loads_or_is_refused(tiny_run, data):
    original = json.loads((tiny_run / "tokenizer.json").read_text(encoding="utf-8"))
    places = [(), ("model",), ("model", "vocab"), ("model", "vocab"), ("normalizer",), ("decoder",)]
    with run_with(tiny_run, "tokenizer.json", mutate_json(data, original, places)) as run:
        loads_or_says_why(run)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
@FUZZ
@given(data=st.data())
def test_flipped_bytes_load_or_are_refused(name, tiny_run, data):
    damaged = bytearray((tiny_run / name).read_bytes())
    # The header of model.safetensors (its first bytes) is where damage matters: aim there half the time.
    end = len(damaged) if name != "model.safetensors" or data.draw(st.booleans()) else 2000
    for position in data.draw(st.lists(st.integers(0, end - 1), min_size=1, max_size=4)):
        damaged[position] ^= data.draw(st.integers(1, 255))
    with run_with(tiny_run, name, bytes(damaged)) as run:
        loads_or_says_why(run)


DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_]


@FUZZ
@given(data=st.data())
def test_weights_of_other_shapes_and_types_are_refused_or_fit(tiny_run, data):
    """A well-formed model.safetensors whose tensors do not match config.json: never a crash."""
    from safetensors.numpy import load_file, save

    tensors = load_file(str(tiny_run / "model.safetensors"))
    for name in data.draw(st.lists(st.sampled_from(sorted(tensors)) | st.text(min_size=1, max_size=8), max_size=3)):
        if data.draw(st.booleans()) and name in tensors:
            del tensors[name]
        else:
            shape = data.draw(st.lists(st.integers(0, 6), max_size=3))
            tensors[name] = np.ones(shape, dtype=data.draw(st.sampled_from(DTYPES)))
    if not tensors:
        tensors["x"] = np.zeros(1, dtype=np.float32)
    with run_with(tiny_run, "model.safetensors", save(tensors)) as run:
        loads_or_says_why(run)


@pytest.mark.parametrize("how", ["truncate", "flip", "random"])
@FUZZ
@given(data=st.data())
def test_damaged_trainer_state_is_refused_or_whole(how, tiny_run, data):
    original = (tiny_run / "trainer_state.pt").read_bytes()
    if how == "truncate":
        damaged = original[: data.draw(st.integers(0, len(original) - 1))]
    elif how == "flip":
        damaged = bytearray(original)
        for position in data.draw(st.lists(st.integers(0, len(original) - 1), min_size=1, max_size=4)):
            damaged[position] ^= data.draw(st.integers(1, 255))
    else:
        damaged = data.draw(st.binary(max_size=400))
    with run_with(tiny_run, "trainer_state.pt", bytes(damaged)) as run:
        try:
            state = read_state(run)
        except UserError as e:
            assert "\n" not in str(e)
        else:  # only a flip inside tensor data can go unnoticed; the state is still complete
            assert how == "flip" and STATE_KEYS <= state.keys()


# -- corpus files ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(content=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8")),
       encoding=st.sampled_from(["utf-8", "latin-1", "utf-16", "unicode_escape", "cp1252"]))
def test_any_corpus_bytes_read_or_refused(tmp_path_factory, content, encoding):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_bytes(content)
    try:
        text = read_text(path, encoding=encoding)
    except UserError as e:
        assert "\n" not in str(e)
        return
    assert text.text.strip() and "\r" not in text.text
    assert text.text == unicodedata.normalize("NFC", text.text)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text.text)  # only real characters reach the vocabulary
    Vocab.from_text(text.text).to_tokenizer_json()  # and its vocabulary can be saved


# -- the vocabulary on arbitrary Unicode ----------------------------------------------------------
# Every code point: all planes, controls, combining marks, unassigned ones and lone surrogates.
ANY_CHAR = st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs", "Cn", "Co"]),
                     st.sampled_from("\x00\n\r\t \u0301\ufffd\U0010ffff"))
ANY_TEXT = st.text(ANY_CHAR, max_size=60)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_without_normalisation_any_text_round_trips_exactly(text):
    vocab = Vocab.from_text(text, normalize=False)
    ids = vocab.encode(text)
    assert len(ids) == len(text) and (ids > 0).all() and (ids < len(vocab)).all()
    assert vocab.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, ANY_TEXT, st.booleans())
def test_unknown_characters_are_exactly_those_outside_the_vocabulary(known, other, normalize):
    vocab = Vocab.from_text(unicodedata.normalize("NFC", known) if normalize else known, normalize=normalize)
    seen = vocab.prepare(other)
    ids = vocab.encode(other)
    assert len(ids) == len(seen) and ids.max(initial=0) < len(vocab)
    outside = [c not in vocab.chars for c in seen]
    assert [i == UNK_ID for i in ids] == outside
    assert vocab.decode(ids) == "".join(UNK_CHAR if o else c for c, o in zip(seen, outside))
    assert vocab.unknown(other) == list(dict.fromkeys(c for c, o in zip(seen, outside) if o))


@settings(max_examples=150, deadline=None)
@given(st.lists(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), unique=True, max_size=40),
       st.booleans())
def test_any_character_set_survives_tokenizer_json(chars, normalize):
    assume(all(unicodedata.normalize("NFC", c) == c for c in chars) or not normalize)
    vocab = Vocab(sorted(chars), normalize=normalize)
    back = Vocab.from_tokenizer_json(vocab.to_tokenizer_json())
    assert back.chars == vocab.chars and back.normalize == normalize


def test_a_vocabulary_beyond_65535_ids():
    """More characters than uint16 ids: the ids widen, and text still round trips."""
    chars = [chr(c) for c in range(0x20, 0x11000) if not 0xD800 <= c <= 0xDFFF]
    vocab = Vocab(chars, normalize=False)
    assert len(vocab) > 65536 and vocab.dtype == np.uint32
    text = "".join(chars[::-1][:5000]) + chars[-1] + "\U0010ffff"
    ids = vocab.encode(text)
    assert ids[-2] == len(vocab) - 1 and ids[-1] == UNK_ID  # the last id, and a code point above every known one
    assert vocab.decode(ids[:-1]) == text[:-1]
