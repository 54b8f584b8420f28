"""Tokenizers: bytes for the named (random-weight) configs, tokenizer.json for checkpoints."""
from __future__ import annotations

import os


class ByteTokenizer:
    """UTF-8 bytes shifted past three special ids (0 pad, 1 bos, 2 eos); fits any vocab >= 259."""

    offset = 3

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [1] + [b + self.offset for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self.offset for i in ids if self.offset <= i < self.offset + 256)
        return data.decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        if token < self.offset:
            return ["<pad>", "<s>", "</s>"][token]
        if token < self.offset + 256:
            return self.decode([token])
        return f"<{token}>"


class HFTokenizer:
    """A checkpoint's tokenizer.json through the `tokenizers` package."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(path)
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def token_text(self, token: int) -> str:
        # special tokens too (<|im_end|>, </s>): a token's text is shown, never an empty string
        return self._tok.decode([token], skip_special_tokens=False)


def tokenizer_for(checkpoint_dir: str | None, vocab_size: int):
    if checkpoint_dir:
        path = os.path.join(checkpoint_dir, "tokenizer.json")
        if os.path.exists(path):
            return HFTokenizer(path)
    return ByteTokenizer(vocab_size)
