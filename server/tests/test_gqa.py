"""Grouped-query attention reads the cached K/V in place and equals the copying reference."""
import pytest
import torch
import torch.nn.functional as F

from djinn.model.config import ModelArgs
from djinn.model.llama import Attention

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _reference(q, k, v, input_pos):
    """The old path: K/V repeated per query head (a copy of the whole cache)."""
    H, T, _ = q.shape
    rep = H // k.shape[0]
    k, v = k.repeat_interleave(rep, dim=0), v.repeat_interleave(rep, dim=0)
    mask = torch.ones(T, k.shape[1], dtype=torch.bool, device=q.device).tril(diagonal=input_pos)
    return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,input_pos", [(1, 0), (1, 40), (7, 0), (5, 30)])
def test_gqa_attention_equals_the_copying_reference_without_copying(device, T, input_pos, monkeypatch):
    args = ModelArgs(n_layers=1, dim=64, n_heads=8, n_kv_heads=2, intermediate_size=128, vocab_size=32)
    attn = Attention(args).to(device)
    g = torch.Generator(device="cpu").manual_seed(T * 100 + input_pos)
    Dh, S = args.head_dim, input_pos + T
    q = torch.randn(args.n_heads, T, Dh, generator=g).to(device)
    k = torch.randn(args.n_kv_heads, S, Dh, generator=g).to(device)
    v = torch.randn(args.n_kv_heads, S, Dh, generator=g).to(device)
    ref = _reference(q, k, v, input_pos)

    def no_copy(*a, **kw):
        raise AssertionError("GQA must not repeat the KV cache")
    monkeypatch.setattr(torch.Tensor, "repeat_interleave", no_copy)
    with torch.no_grad():
        out = attn.attend(q, k, v, input_pos)   # [T, D] after o_proj
        want = attn.o_proj(ref.transpose(0, 1).reshape(T, args.n_heads * Dh))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
