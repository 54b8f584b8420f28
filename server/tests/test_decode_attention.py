"""The block decode-attention kernels (kernels/decode_attention.py) against plain PyTorch.

On CUDA they run natively; on a CPU host with Triton installed, in Triton's interpreter
(TRITON_INTERPRET=1 set before the import, so this file runs them in a subprocess). Checked:
each row's K/V lands at its position in its own buffer and nowhere else; the output equals
softmax attention over positions 0..pos (GQA: query head h reads KV head h // G) within the
dtype's tolerance; padding rows give zeros; a row's output is bit-identical whoever shares the
block (more than 16 rows of mixed lengths too, however many programs share the work); and the
meta table refuses buffers it cannot address.
"""
import os
import subprocess
import sys

import pytest
import torch

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except ImportError:
    HAVE_TRITON = False

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="needs Triton (CUDA builds of torch ship it)")


def _check_rowwise(device: str, dtype: torch.dtype) -> None:
    """The row-wise kernels against the model's PyTorch modules (within the dtype's rounding)."""
    from djinn.kernels import rowwise
    from djinn.model.llama import RMSNorm, apply_rope

    torch.manual_seed(1)
    dev, tol = torch.device(device), (1e-5 if dtype == torch.float32 else 6e-2)   # bf16: one rounding step at |x| ~ 4
    R, N, H, Hkv, D = 3, 96, 4, 2, 16
    norm = RMSNorm(N, 1e-5).to(dev, dtype)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.1)
    x, a = torch.randn(R, N, device=dev).to(dtype), torch.randn(R, N, device=dev).to(dtype)
    y = rowwise.rms_norm(x, norm.weight, norm.eps)
    assert (y.float() - norm(x).float()).abs().max() < tol
    h, y2 = rowwise.rms_norm(x, norm.weight, norm.eps, residual=a)
    # (Triton's CPU interpreter truncates to bfloat16 where the GPU rounds: exact only on CUDA)
    exact = dev.type == "cuda" or dtype == torch.float32
    assert (torch.equal(h, x + a) if exact else (h.float() - (x + a).float()).abs().max() < tol)
    assert (y2.float() - norm(x + a).float()).abs().max() < tol

    gu = torch.randn(R, 2 * 40, device=dev).to(dtype)
    ref = torch.nn.functional.silu(gu[:, :40]) * gu[:, 40:]
    assert (rowwise.silu_mul(gu).float() - ref.float()).abs().max() < tol

    from djinn.kernels.decode_attention import BlockAttention
    ba = BlockAttention(H, Hkv, D, R, 64, dev, dtype)
    kvs = [torch.zeros(2, 2, Hkv, 64, D, device=dev, dtype=dtype) for _ in range(2)]
    ba.meta.copy_(torch.tensor(ba.meta_rows([(kvs[0], 5), (kvs[1], 63)])))
    lin = torch.randn(R, (H + 2 * Hkv) * D, device=dev).to(dtype)
    cos, sin = torch.randn(R, D, device=dev).to(dtype), torch.randn(R, D, device=dev).to(dtype)
    out = torch.empty(R, H + 2 * Hkv, D, device=dev, dtype=dtype)
    rowwise.rope_qkv(lin, cos, sin, out, H, Hkv, ba.meta, ba.anchor, layer=1)
    rows = lin.view(R, H + 2 * Hkv, D)
    qk = apply_rope(rows[:, :H + Hkv].float(), cos[:, None].float(), sin[:, None].float())
    assert (out[:, :H + Hkv].float() - qk).abs().max() < tol * 4
    assert torch.equal(out[:, H + Hkv:], rows[:, H + Hkv:])
    for i, (kv, p) in enumerate(zip(kvs, (5, 63))):
        assert torch.equal(kv[1, :, :, p], out[i, H:].view(2, Hkv, D)), f"row {i}: K/V not at its position"
        assert int((kv != 0).sum()) == int((out[i, H:] != 0).sum()), f"row {i}: K/V written elsewhere"


def _check(device: str, dtype: torch.dtype) -> None:
    from djinn.kernels.decode_attention import BlockAttention

    torch.manual_seed(0)
    dev = torch.device(device)
    H, Hkv, D, R, L = 6, 2, 16, 4, 3
    ba = BlockAttention(H, Hkv, D, R, 300, dev, dtype)
    kvs = [torch.randn(L, 2, Hkv, c, D, device=dev).to(dtype) for c in (300, 200, 150)]
    pos = [259, 0, 130]
    qkv = torch.randn(R, H + 2 * Hkv, D, device=dev).to(dtype)
    before = [k.clone() for k in kvs]
    out = torch.full((R, H * D), 7.0, device=dev).to(dtype)
    ba.meta.copy_(torch.tensor(ba.meta_rows(list(zip(kvs, pos)))))
    ba(1, qkv, out)
    G, tol = H // Hkv, (2e-6 if dtype == torch.float32 else 2e-2)
    for i, (kv, p) in enumerate(zip(before, pos)):
        kv[1, :, :, p] = qkv[i, H:].view(2, Hkv, D)
        assert torch.equal(kvs[i], kv), f"row {i}: K/V written outside its position"
        q = qkv[i, :H].float() * D ** -0.5
        k = kv[1, 0, :, :p + 1].float().repeat_interleave(G, 0)
        v = kv[1, 1, :, :p + 1].float().repeat_interleave(G, 0)
        ref = torch.einsum("ht,htd->hd", torch.softmax(torch.einsum("hd,htd->ht", q, k), -1), v).reshape(-1)
        err = (out[i].float() - ref).abs().max().item()
        assert err < tol, f"row {i}: max error {err}"
    assert torch.equal(out[3], torch.zeros_like(out[3])), "a padding row is not zero"

    # Bit-identical whoever shares the block: row 0 alone in row 0, then with others around it.
    alone = torch.zeros_like(out)
    for k, b in zip(kvs, before):
        k.copy_(b)
    ba.meta.copy_(torch.tensor(ba.meta_rows([(kvs[0], pos[0])])))
    ba(1, qkv, alone)
    assert torch.equal(alone[0], out[0]), "a row's output changed with its neighbours"

    with pytest.raises(ValueError):
        ba.meta_rows([(kvs[0].transpose(3, 4), 5)])      # not contiguous
    with pytest.raises(ValueError):
        ba.meta_rows([(kvs[2], 150)])                     # position past its context


def _check_many_rows(device: str, dtype: torch.dtype) -> None:
    """More rows than 16, mixed lengths around the chunk boundaries, padding at the end: each row
    equals softmax attention over its own positions, and is bit-identical alone in a block, and
    whatever the number of programs striding through the block's (row, chunk) pairs."""
    from djinn.kernels.decode_attention import BlockAttention

    torch.manual_seed(2)
    dev = torch.device(device)
    H, Hkv, D, R, C = 4, 2, 16, 20, 140
    pos = [0, 63, 64, 127, 128, 5, 139, 1, 70, 33, 64, 62, 0, 100, 17, 63, 65]   # 17 live, 3 padding
    kvs = [torch.randn(1, 2, Hkv, C, D, device=dev).to(dtype) for _ in pos]
    qkv = torch.randn(R, H + 2 * Hkv, D, device=dev).to(dtype)
    G, tol = H // Hkv, (2e-6 if dtype == torch.float32 else 2e-2)
    outs = []
    for programs in (None, 3):
        ba = BlockAttention(H, Hkv, D, R, C, dev, dtype, programs=programs)
        assert ba.chunk == 64
        out = torch.full((R, H * D), 7.0, device=dev).to(dtype)
        ba.meta.copy_(torch.tensor(ba.meta_rows(list(zip(kvs, pos)))))
        ba(0, qkv, out, store=False)
        outs.append(out)
    assert torch.equal(outs[0], outs[1]), "the result depends on how many programs share the work"
    out = outs[0]
    for i, (kv, p) in enumerate(zip(kvs, pos)):
        q = qkv[i, :H].float() * D ** -0.5
        k = kv[0, 0, :, :p + 1].float().repeat_interleave(G, 0)
        v = kv[0, 1, :, :p + 1].float().repeat_interleave(G, 0)
        ref = torch.einsum("ht,htd->hd", torch.softmax(torch.einsum("hd,htd->ht", q, k), -1), v).reshape(-1)
        err = (out[i].float() - ref).abs().max().item()
        assert err < tol, f"row {i} (position {p}): max error {err}"
    assert torch.equal(out[len(pos):], torch.zeros_like(out[len(pos):])), "padding rows are not zero"
    ba = BlockAttention(H, Hkv, D, R, C, dev, dtype)
    for i in (6, 16):   # alone in row 0 of a block of the same size
        alone = torch.zeros_like(out)
        ba.meta.copy_(torch.tensor(ba.meta_rows([(kvs[i], pos[i])])))
        q1 = qkv.clone()
        q1[0] = qkv[i]
        ba(0, q1, alone, store=False)
        assert torch.equal(alone[0], out[i]), f"row {i}: its output changed with its neighbours"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_attention_cuda(dtype):
    _check("cuda", dtype)
    _check_many_rows("cuda", dtype)
    _check_rowwise("cuda", dtype)


def test_block_attention_interpreted():
    """On the CPU, in Triton's interpreter (a subprocess: the mode is read at import)."""
    code = ("import torch, test_decode_attention as t; "
            "t._check('cpu', torch.float32); t._check('cpu', torch.bfloat16); "
            "t._check_many_rows('cpu', torch.float32); "
            "t._check_rowwise('cpu', torch.float32); t._check_rowwise('cpu', torch.bfloat16)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    here = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([here, os.path.dirname(here), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
