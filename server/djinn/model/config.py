"""Model shapes: a dataclass plus the named configs (gpt-fast style)."""
from __future__ import annotations

from dataclasses import dataclass, asdict


@dataclass(frozen=True)
class RopeScaling:
    """How RoPE's frequencies are stretched for long contexts (None on ModelArgs: plain RoPE).

    kind "linear": every inverse frequency divided by `factor` (positions / factor).
    kind "llama3": Llama 3.1's rule (HF's _compute_llama3_parameters): long wavelengths
    divided by `factor`, short ones kept, a smooth ramp between low_freq_factor and
    high_freq_factor of original_context.
    kind "factors": one divisor per frequency, as GGUF files store it (tensor rope_freqs).
    """
    kind: str
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192
    freq_factors: tuple[float, ...] = ()


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_context: int = 4096
    tie_embeddings: bool = False
    attention_bias: bool = False   # biases on q/k/v (Qwen2), none on o_proj
    rope_scaling: RopeScaling | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def kv_bytes_per_token(self, itemsize: int) -> int:
        """K and V of every layer for one token."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * itemsize

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, ModelArgs] = {
    "llama-2-13b": ModelArgs(n_layers=40, dim=5120, n_heads=40, n_kv_heads=40,
                             intermediate_size=13824, vocab_size=32000, max_context=4096),
    "llama-2-7b": ModelArgs(n_layers=32, dim=4096, n_heads=32, n_kv_heads=32,
                            intermediate_size=11008, vocab_size=32000, max_context=4096),
    # 40 layers like the 13B, so breakpoints 10/20/30 mean the same; small enough for a 2-core CPU.
    # GQA (4 query heads, 2 KV heads) so the grouped path is tested too.
    "tiny-40l": ModelArgs(n_layers=40, dim=128, n_heads=4, n_kv_heads=2,
                          intermediate_size=344, vocab_size=512, max_context=1024),
    # A few layers only, for fast unit tests.
    "tiny-4l": ModelArgs(n_layers=4, dim=64, n_heads=4, n_kv_heads=2,
                         intermediate_size=172, vocab_size=300, max_context=256),
}


def named_config(name: str) -> ModelArgs:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}': not a named config ({', '.join(CONFIGS)}), a packaged "
                         "model (smollm2-135m), a .gguf file or a checkpoint folder") from None
