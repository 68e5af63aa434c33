"""calibkit.backends.pieces: a token's bytes for each family of vocabulary, and its string.

Tokenizers of each family are built here with the ``tokenizers`` library (no download): a
byte-level BPE (tests/byte_level.py's), a SentencePiece-style BPE with byte fallback and a
decoder that strips the text's first space (as Llama 2's), and a word-level vocabulary with
no decoder at all.
"""

from __future__ import annotations

import pytest

from calibkit.backends.pieces import BYTE_LEVEL_TABLE, TokenBytes, token_text, vocabulary_family

pytest.importorskip("transformers")

from byte_level import build, byte_of_char  # noqa: E402


def test_token_text_writes_bytes_that_are_not_whole_characters_as_openai_does():
    assert token_text(" bad".encode()) == " bad"
    assert token_text("好".encode()) == "好"
    assert token_text(b"\xe5\xa5") == "bytes:\\xe5\\xa5"
    assert token_text(b"\xbd") == "bytes:\\xbd"
    assert token_text(b"") == ""


def test_the_byte_level_table_is_the_tokenizers_librarys():
    theirs = byte_of_char()
    assert len(theirs) == 243  # every byte UTF-8 text can hold (all but C0, C1, F5-FF)
    assert {chr(BYTE_LEVEL_TABLE[b]): b for b in theirs.values()} == theirs
    assert sorted(BYTE_LEVEL_TABLE) == sorted(set(BYTE_LEVEL_TABLE)) and len(BYTE_LEVEL_TABLE) == 256


def _fast(tok, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build(tmp_path_factory.mktemp("bbpe") / "model"))


@pytest.fixture(scope="module")
def sentencepiece():
    """Llama 2's arrangement: ▁ for a space, <0xNN> byte tokens, a decoder that strips the first space."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for t in ("▁", "b", "a", "d", "▁b", "▁ba", "▁bad"):
        vocab[t] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, [("▁", "b"), ("▁b", "a"), ("▁ba", "d")], unk_token="<unk>",
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def word_level():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "bad": 1, "good": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return _fast(tok, unk_token="[UNK]")


def test_each_family_is_read_from_the_tokenizer(byte_level, sentencepiece, word_level):
    assert vocabulary_family(byte_level) == "byte_level"
    assert vocabulary_family(sentencepiece) == "sentencepiece"
    assert vocabulary_family(word_level) == "other"


@pytest.mark.parametrize("text", ["a dull mess", " très mauvais", "naïve café", " 好 film", "😀!", "\n\t x"])
def test_byte_level_tokens_join_into_the_texts_bytes(byte_level, text):
    read = TokenBytes(byte_level)
    ids = byte_level(text, add_special_tokens=False)["input_ids"]
    pieces = [read(t) for t in ids]
    assert b"".join(pieces) == text.encode("utf-8")
    if any(ord(c) > 0x7F for c in text):
        # some tokens are parts of a character: decoded alone they would all be U+FFFD
        assert any(token_text(p).startswith("bytes:") for p in pieces)
        assert any(byte_level.decode([t]) == "\ufffd" for t in ids)


def test_byte_level_special_tokens_are_their_text(byte_level):
    read = TokenBytes(byte_level)
    assert read(byte_level.bos_token_id) == b"<s>" and read(byte_level.eos_token_id) == b"</s>"


def test_sentencepiece_tokens_keep_their_space_and_bytes(sentencepiece):
    read = TokenBytes(sentencepiece)
    ids = sentencepiece("bad 好", add_special_tokens=False)["input_ids"]
    assert sentencepiece.convert_ids_to_tokens(ids) == ["▁bad", "▁", "<0xE5>", "<0xA5>", "<0xBD>"]
    assert [read(t) for t in ids] == [b" bad", b" ", b"\xe5", b"\xa5", b"\xbd"]
    # decoded alone, the token loses its space to the decoder's Strip: why the token string is read
    assert sentencepiece.decode([ids[0]]) == "bad"
    assert read(sentencepiece.bos_token_id) == b"<s>"


def test_other_vocabularies_decode_each_token(word_level):
    read = TokenBytes(word_level)
    assert [read(t) for t in word_level("bad good", add_special_tokens=False)["input_ids"]] == [b"bad", b"good"]


def test_each_token_is_read_once(byte_level):
    calls = []

    class Counting:
        def __init__(self, tok):
            self.tok = tok
            self.backend_tokenizer = tok.backend_tokenizer
            self.added_tokens_decoder = tok.added_tokens_decoder

        def convert_ids_to_tokens(self, i):
            calls.append(i)
            return self.tok.convert_ids_to_tokens(i)

    read = TokenBytes(Counting(byte_level))
    assert read.family == "byte_level"
    assert [read(7), read(7), read(8)] == [read(7)] * 2 + [read(8)] and calls == [7, 8]
