"""A token's bytes, and its string as servers send it: one reading for every backend.

A token is a run of bytes, not always a whole character: a tokenizer splits a character
it has no token for into byte tokens, and a byte-level BPE (GPT-2, Llama 3, Qwen) may cut
a character anywhere. Each backend reads a token's bytes once, here, and everything
above it (the backends' token strings, ``calibkit serve``'s tokens, ``text_offset`` and
top-k keys) is made from those bytes:

- :func:`token_text`: the string of a token's bytes as OpenAI writes it, ``bytes:\\xNN``
  for bytes that are not whole UTF-8 characters;
- :class:`TokenBytes`: the bytes of a Hugging Face tokenizer's tokens, for the three
  families of vocabulary: SentencePiece with byte fallback (``<0xNN>`` tokens, ``▁`` for
  a space: Gemma, Llama 2), byte-level BPE (each byte written as one printable
  character of GPT-2's table, ``Ġ`` for a space), and any other (the token decoded on its
  own). llama.cpp reads its own (``llama_token_to_piece``), for every family.

>>> token_text(b" Paris"), token_text(b"\\xe5\\xa5")
(' Paris', 'bytes:\\\\xe5\\\\xa5')
>>> "".join(map(chr, BYTE_LEVEL_TABLE[:4])), chr(BYTE_LEVEL_TABLE[ord(" ")])
('ĀāĂă', 'Ġ')
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["BYTE_LEVEL_TABLE", "TokenBytes", "token_text", "vocabulary_family"]


def token_text(piece: bytes) -> str:
    """A token's string as servers send it; bytes that are not UTF-8 become ``bytes:\\x..``."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def _byte_level_table() -> list[int]:
    # GPT-2's bytes_to_unicode (openai/gpt-2, src/encoder.py), which the tokenizers library's
    # ByteLevel pre-tokenizer and decoder and llama.cpp's BPE vocabularies use: printable
    # bytes stand for themselves, the others for the code points from 256 up, in order.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = [0] * 256, 256
    for b in range(256):
        if b in printable:
            table[b] = b
        else:
            table[b], extra = extra, extra + 1
    return table


#: The code point that stands for each byte (by index) in a byte-level BPE token.
BYTE_LEVEL_TABLE: tuple[int, ...] = tuple(_byte_level_table())
_BYTE_OF = {chr(c): b for b, c in enumerate(BYTE_LEVEL_TABLE)}
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_types(tokenizer: Any) -> tuple[set[str], bool]:
    """The types of a fast tokenizer's decoder (a Sequence's too), and whether one replaces ``▁`` by a space."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return set(), False
    state = json.loads(decoder.__getstate__())
    types, spaces = set(), False
    stack = [state]
    while stack:
        d = stack.pop()
        types.add(d.get("type"))
        stack.extend(d.get("decoders") or ())
        replaces_space = (d.get("pattern") or {}).get("String") == "\u2581" and d.get("content") == " "
        spaces |= d.get("type") == "Metaspace" or (d.get("type") == "Replace" and replaces_space)
    return types, spaces


def vocabulary_family(tokenizer: Any) -> str:
    """``"byte_level"``, ``"sentencepiece"`` or ``"other"``: how a Hugging Face tokenizer writes its tokens.

    Read from the tokenizer's decoder (a ByteLevel decoder; a Metaspace, ``▁`` replacement or
    ByteFallback decoder), or for a tokenizer without one (the Python tokenizers) from its
    ``byte_decoder`` table (GPT-2's) or its SentencePiece model.
    """
    types, spaces = _decoder_types(tokenizer)
    if "ByteLevel" in types or getattr(tokenizer, "byte_decoder", None) is not None:
        return "byte_level"
    if spaces or "ByteFallback" in types or getattr(tokenizer, "sp_model", None) is not None:
        return "sentencepiece"
    return "other"


class TokenBytes:
    """The bytes of each token of a Hugging Face tokenizer, read once per token and kept.

    - byte-level BPE: each character of the token's string is one byte of GPT-2's table;
    - SentencePiece: ``<0xNN>`` is the byte NN, ``▁`` a space, the rest the string itself;
    - any other: the token decoded on its own.

    Added and special tokens are their text. Reading the token string rather than decoding it
    matters twice: a lone byte decodes to U+FFFD (so different bytes would look alike and a
    text's offsets drift), and a decoder may strip a leading space from a text's first token.

    >>> class Toy:                 # a byte-level vocabulary: "Ġ" is a space, "å" and "¥" two bytes of 好
    ...     byte_decoder = {}
    ...     added_tokens_decoder = {}
    ...     def convert_ids_to_tokens(self, i): return ["Ġbad", "å", "¥", "½"][i]
    >>> read = TokenBytes(Toy())
    >>> read(0), read(1), b"".join(map(read, [1, 2, 3])).decode()
    (b' bad', b'\\xe5', '好')
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.family = vocabulary_family(tokenizer)
        self._added = {int(i): str(getattr(t, "content", t)).encode("utf-8")
                       for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        self._memo: dict[int, bytes] = {}

    def __call__(self, token: int) -> bytes:
        b = self._memo.get(token)
        if b is None:
            b = self._memo[token] = self._read(int(token))
        return b

    def _read(self, token: int) -> bytes:
        if token in self._added:
            return self._added[token]
        raw = self.tokenizer.convert_ids_to_tokens(token)
        if isinstance(raw, str):
            if self.family == "byte_level" and all(c in _BYTE_OF for c in raw):
                return bytes(_BYTE_OF[c] for c in raw)
            m = _BYTE_TOKEN.fullmatch(raw)
            if m is not None:
                return bytes([int(m.group(1), 16)])
            if self.family == "sentencepiece":
                return raw.replace("\u2581", " ").encode("utf-8")
        return self.tokenizer.decode([token], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False).encode("utf-8")
