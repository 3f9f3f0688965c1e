"""Vocab: characters <-> ids, `<unk>`, and the standard tokenizer.json that other tools load."""
from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from chargen.errors import UserError
from chargen.vocab import UNK_ID, Vocab

# Arbitrary Unicode (astral planes, combining marks, controls) with spaces and newlines made common.
# Unassigned code points (Cn) are left out: the NFC of a character unassigned in Python's Unicode
# database may legitimately differ from the NFC of a newer Unicode version inside `tokenizers`.
CHARS = st.one_of(st.characters(exclude_categories=("Cs", "Cn")),
                  st.sampled_from(" \n\t\u0301\u0300\u0327e\u00e9"))
TEXTS = st.text(CHARS, min_size=1, max_size=80)


@given(TEXTS)
@settings(max_examples=200, deadline=None)
def test_decode_encode_gives_back_the_nfc_text(text):
    nfc = unicodedata.normalize("NFC", text)
    vocab = Vocab.from_text(nfc)
    ids = vocab.encode(text)
    assert ids.dtype == vocab.dtype and len(ids) == len(nfc)
    assert UNK_ID not in ids  # every character is known
    assert vocab.decode(ids) == nfc


@pytest.mark.parametrize("chars, dtype", [(255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)])
def test_ids_take_the_narrowest_type_that_holds_them(chars, dtype):
    """255 characters + <unk> = ids 0..255 fit a byte; one more character needs two."""
    vocab = Vocab([chr(0x100 + i) for i in range(chars)])
    assert vocab.dtype == dtype
    last = vocab.chars[-1]
    ids = vocab.encode(last + "\n")  # the last id, and an unknown character
    assert ids.dtype == dtype and ids.tolist() == [chars, UNK_ID]


def test_composed_and_decomposed_accents_are_one_character():
    vocab = Vocab.from_text(unicodedata.normalize("NFC", "caf\u00e9"))
    assert vocab.encode("cafe\u0301").tolist() == vocab.encode("caf\u00e9").tolist()


def test_without_normalisation_text_is_kept_as_written():
    decomposed = "cafe\u0301"
    vocab = Vocab.from_text(decomposed, normalize=False)
    assert vocab.decode(vocab.encode(decomposed)) == decomposed
    assert vocab.encode("caf\u00e9")[-1] == UNK_ID


def test_unknown_characters_become_id_0_and_are_reported():
    vocab = Vocab.from_text("abc \n")
    ids = vocab.encode("a\U0001F600bz\u00e9z")
    assert ids.tolist()[0] != UNK_ID and ids.tolist()[2] != UNK_ID
    assert ids.tolist()[1] == ids.tolist()[3] == ids.tolist()[4] == UNK_ID
    assert vocab.unknown("a\U0001F600bz\u00e9z") == ["\U0001F600", "z", "\u00e9"]
    assert vocab.decode(ids) == "a\ufffdb\ufffd\ufffd\ufffd"


def test_ids_are_dense_with_unk_first():
    vocab = Vocab.from_text("banana\n")
    assert len(vocab) == 5  # <unk>, "\n", a, b, n
    assert sorted(set(vocab.encode("banana\n").tolist())) == [1, 2, 3, 4]


@given(TEXTS, TEXTS)
@settings(max_examples=60, deadline=None)
def test_tokenizer_json_gives_the_same_ids_in_tokenizers(tmp_path_factory, train_text, other):
    """tokenizer.json loads in `tokenizers` and agrees with Vocab on known and unknown characters."""
    vocab = Vocab.from_text(unicodedata.normalize("NFC", train_text))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    vocab.save(path)
    tok = Tokenizer.from_file(str(path))
    for text in (train_text, other, train_text + other):
        assert tok.encode(text).ids == vocab.encode(text).tolist()
    assert tok.decode(tok.encode(train_text).ids) == unicodedata.normalize("NFC", train_text)


@given(TEXTS, st.booleans())
@settings(max_examples=60, deadline=None)
def test_load_round_trips(tmp_path_factory, text, normalize):
    vocab = Vocab.from_text(text, normalize=normalize)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded.chars == vocab.chars and loaded.normalize == normalize
    assert np.array_equal(loaded.encode(text), vocab.encode(text))


def test_a_foreign_tokenizer_file_is_refused_with_one_line(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"vocab": {"hello": 0, "world": 1}}}', encoding="utf-8")
    with pytest.raises(UserError, match="does not hold a chargen character vocabulary") as err:
        Vocab.load(path)
    assert "\n" not in str(err.value)
