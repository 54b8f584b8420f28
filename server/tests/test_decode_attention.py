"""The block decode-attention kernels (kernels/decode_attention.py) against plain PyTorch.

On CUDA they run natively; on a CPU host with Triton installed, in Triton's interpreter
(TRITON_INTERPRET=1 set before the import, so this file runs them in a subprocess). Checked:
each row's K/V lands at its position in its own buffer and nowhere else; the output equals
softmax attention over positions 0..pos (GQA: query head h reads KV head h // G) within the
dtype's tolerance; padding rows give zeros; a row's output is bit-identical whoever shares the
block; and the meta table refuses buffers it cannot address.
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_attention_cuda(dtype):
    _check("cuda", dtype)


def test_block_attention_interpreted():
    """On the CPU, in Triton's interpreter (a subprocess: the mode is read at import)."""
    code = ("import torch, test_decode_attention as t; "
            "t._check('cpu', torch.float32); t._check('cpu', torch.bfloat16)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    here = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([here, os.path.dirname(here), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
