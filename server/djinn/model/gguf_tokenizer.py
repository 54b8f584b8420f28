"""A GGUF file's own tokenizer, rebuilt with the `tokenizers` package from its metadata.

"gpt2" (byte-level BPE: SmolLM, Llama 3, Qwen2) from tokenizer.ggml.tokens + merges, with the
pre-tokenizer regex that tokenizer.ggml.pre names (as llama.cpp picks it); "llama"
(SentencePiece BPE: Llama 2, Mistral) from tokens + scores, merges derived from the scores
the way transformers' converter does. Control and user-defined tokens (token_type 3 and 4)
are matched whole, so a chat template's "<|im_start|>" is one token.
"""
from __future__ import annotations

from .tokenizer import HFTokenizer

CONTROL, USER_DEFINED = 3, 4
# Pre-tokenizer regexes of llama.cpp's llama-vocab.cpp, by tokenizer.ggml.pre.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_REGEX = {"llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3, "qwen2": _QWEN2}


def _byte_level_pre(pre: str | None):
    from tokenizers import Regex, pre_tokenizers as pt

    if pre in _SPLIT_REGEX:
        return pt.Sequence([pt.Split(Regex(_SPLIT_REGEX[pre]), behavior="isolated"),
                            pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    if pre == "smollm":  # digits one by one, then GPT-2's regex (SmolLM's tokenizer.json)
        return pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    return pt.ByteLevel(add_prefix_space=False, use_regex=True)  # "gpt2", "default" and the rest


def _gpt2(meta, tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models

    merges = meta.need("tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges], fuse_unk=False))
    tok.pre_tokenizer = _byte_level_pre(meta.get("tokenizer.ggml.pre"))
    tok.decoder = decoders.ByteLevel()
    return tok


def _spm_merges(vocab: dict[str, int], scores: list[float]) -> list[tuple[str, str]]:
    """Merges of a SentencePiece BPE vocab: every split of a piece into two pieces, the merge
    of higher-scoring pieces first (transformers' convert_slow_tokenizer.generate_merges)."""
    found = []
    for piece, i in vocab.items():
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        found.extend((scores[i], lr) for lr in local)
    found.sort(key=lambda s_lr: s_lr[0], reverse=True)  # stable: ties keep the order above
    return [lr for _, lr in found]


def _spm(meta, tokens: list[str], types: list[int]):
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = list(meta.need("tokenizer.ggml.scores"))
    vocab = {t: i for i, t in enumerate(tokens)}
    unk_id = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
    normal = {t: i for t, i in vocab.items() if types[i] not in (CONTROL, USER_DEFINED) and not
              (t.startswith("<0x") and len(t) == 6)}
    tok = Tokenizer(models.BPE(vocab, _spm_merges(normal, scores), unk_token=tokens[unk_id],
                               fuse_unk=True, byte_fallback=True))
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend("▁")] if prefix else []) +
                                          [normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


class GGUFTokenizer(HFTokenizer):
    """HFTokenizer over a tokenizer built from GGUF metadata, adding BOS when the file says so."""

    def __init__(self, tok, bos_id: int | None, eos_id: int | None, add_bos: bool):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos

    def encode(self, text: str) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] + ids) if self.add_bos and self.bos_id is not None else ids


def tokenizer_from_gguf(meta) -> GGUFTokenizer:
    from tokenizers import AddedToken

    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind not in ("gpt2", "llama") or tokens is None:
        raise ValueError(f"{meta.path}: tokenizer.ggml.model {kind!r} is not supported (only 'gpt2' byte-level "
                         "BPE and 'llama' SentencePiece BPE)")
    tokens = list(tokens)
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    tok = _gpt2(meta, tokens) if kind == "gpt2" else _spm(meta, tokens, types)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED])
    bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    return GGUFTokenizer(tok, None if bos is None else int(bos), None if eos is None else int(eos), add_bos)
