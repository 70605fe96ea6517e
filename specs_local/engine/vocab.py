"""A model's vocabulary: text to tokens and back, the special tokens, and a fingerprint of the tokenizer."""
from __future__ import annotations

import ctypes
import hashlib
from typing import Iterable

import llama_cpp as llama


class Vocabulary:
    """The ``llama_vocab*`` of a loaded model (valid while the model is)."""

    def __init__(self, model) -> None:
        self._vocab = llama.llama_model_get_vocab(model)
        self.n_tokens = llama.llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, bytes] = {}
        self._fingerprint: str | None = None

    def token_text(self, token: int) -> str:
        return llama.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    @property
    def eos_token(self) -> int:
        return llama.llama_vocab_eos(self._vocab)

    @property
    def eot_token(self) -> int:
        return llama.llama_vocab_eot(self._vocab)

    @property
    def bos_token(self) -> int:
        return llama.llama_vocab_bos(self._vocab)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama.llama_vocab_is_eog(self._vocab, token))

    @property
    def fingerprint(self) -> str:
        """sha256 of the token list: equal fingerprints mean one tokenizer."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for token in range(self.n_tokens):
                h.update(llama.llama_vocab_get_text(self._vocab, token))
                h.update(b"\x00")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def tokenize(self, text: str | bytes, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else text
        capacity = len(data) + 8
        buf = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:  # the buffer was too small: -n tokens are needed
            capacity = -n
            buf = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def token_piece(self, token: int) -> bytes:
        """The bytes a token stands for; control tokens give b""."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def detokenize(self, tokens: Iterable[int], *, special: bool = True) -> str:
        tokens = list(tokens)
        if not tokens:
            return ""
        arr = (llama.llama_token * len(tokens))(*tokens)
        capacity = len(tokens) * 16 + 16
        buf = ctypes.create_string_buffer(capacity)
        n = llama.llama_detokenize(self._vocab, arr, len(tokens), buf, capacity, False, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama.llama_detokenize(self._vocab, arr, len(tokens), buf, -n, False, special)
        return buf.raw[:n].decode("utf-8", errors="replace")
