"""The prefill on the fused row-wise kernels (runtime/pieces.py prefill_attention / prefill_mlp).

Where block attention runs (CUDA with Triton; Triton's CPU interpreter here, in a subprocess:
the mode is read at import) a prefill's norms, RoPE, K/V store and silu * up are the decode
block's Triton kernels. Checked against the eager PyTorch path (the same engine with
DJINN_TRITON_ATTENTION=0), for GQA and MHA with q/k/v biases: every stop point's activations
(hidden, attn_out, q, mlp_out), the KV written and the logits agree within the dtype's rounding;
a prefill chunk after earlier tokens (input_pos > 0) too; RoPE over many rows (several heads
per program) equals one head per program bit for bit; and a run stopped at every point, its
activations and KV copied off the device and back each time, equals the uninterrupted reference
bit for bit.
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


def _engine(model, device, dtype, fused: bool):
    from djinn.runtime.engine import Engine

    old = os.environ.get("DJINN_TRITON_ATTENTION")
    os.environ["DJINN_TRITON_ATTENTION"] = "1" if fused else "0"
    try:
        eng = Engine(model, None, device, dtype, 32, batch_rows=2, graphs=device.type == "cuda")
    finally:
        if old is None:
            del os.environ["DJINN_TRITON_ATTENTION"]
        else:
            os.environ["DJINN_TRITON_ATTENTION"] = old
    assert (eng.pieces.block_attention is not None) == fused
    eng.tokenizer = type("Tok", (), {"decode": staticmethod(lambda ids: "")})()
    return eng


def _model(device, dtype, heads, kv_heads, bias, layers=2):
    from djinn.model.config import ModelArgs
    from djinn.model.llama import Llama, init_random_

    args = ModelArgs(n_layers=layers, dim=64, n_heads=heads, n_kv_heads=kv_heads, intermediate_size=96,
                     vocab_size=64, attention_bias=bias)
    model = Llama(args).to(device, dtype)
    init_random_(model, seed=5)
    with torch.no_grad():   # norms other than 1, so their weights count
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)
    return model


def _prefill_trace(eng, tokens):
    """A prefill piece by piece: every stop point's activations, then the KV and the logits."""
    from djinn.runtime.session import ATTN, FINISHED, MLP

    s = eng.scratch_session(tokens, 1, 16)
    eng.begin(s)
    seen = []
    while eng.advance(s) is None:
        names = {ATTN: ("attn_out", "q"), MLP: ("hidden", "mlp_out")}.get(s.point, ("hidden",))
        seen.append({n: s.memory.acts[n].float().cpu().clone() for n in names})
    assert s.state == FINISHED
    return seen, s.memory.kv.float().cpu(), s.last_logits


def _close(a, b, tol, what):
    err = (a - b).abs().max().item()
    scale = b.abs().max().item() + 1e-3
    assert err <= tol * scale, f"{what}: max error {err} against max {scale}"


def _check_against_eager(device: str, dtype: torch.dtype) -> None:
    dev = torch.device(device)
    tol = 2e-4 if dtype == torch.float32 else 4e-2
    tokens = [3, 17, 9, 40, 22, 5]
    for heads, kv_heads, bias in ((4, 2, False), (4, 4, True)):
        model = _model(dev, dtype, heads, kv_heads, bias)
        fused, eager = _engine(model, dev, dtype, True), _engine(model, dev, dtype, False)
        (fa, fkv, fl), (ea, ekv, el) = _prefill_trace(fused, tokens), _prefill_trace(eager, tokens)
        assert len(fa) == len(ea) == 3 * model.args.n_layers - 1
        for i, (x, y) in enumerate(zip(fa, ea)):
            assert x.keys() == y.keys()
            for name in x:
                assert x[name].shape == y[name].shape, f"point {i} {name}: shape"
                _close(x[name], y[name], tol, f"{heads}/{kv_heads} heads, point {i}, {name}")
        _close(fkv, ekv, tol, "KV")
        assert (fkv[:, :, :, len(tokens):] == 0).all(), "K/V written past the prompt"
        _close(fl, el, tol, "logits")

        # a chunk after earlier tokens: positions 4.., its K/V after theirs, attending over both
        P, Q = fused.pieces, eager.pieces
        x = torch.randn(3, model.args.dim, device=dev).to(dtype)
        kvs = [torch.randn(model.args.n_layers, 2, kv_heads, 16, model.args.head_dim, device=dev).to(dtype)
               for _ in range(2)]
        kvs[1].copy_(kvs[0])
        c, s = fused.cos[4:7], fused.sin[4:7]
        (fo, frows), (eo, erows) = P.prefill_attention(1, x, kvs[0], 4, c, s), Q.prefill_attention(1, x, kvs[1], 4, c, s)
        _close(fo.float(), eo.float(), tol, "input_pos 4: out")
        _close(frows.float(), erows.float(), tol, "input_pos 4: rows")
        _close(kvs[0].float(), kvs[1].float(), tol, "input_pos 4: KV")
        assert torch.equal(kvs[0][:, :, :, :4], kvs[1][:, :, :, :4]) and torch.equal(kvs[0][0], kvs[1][0]), \
            "K/V written outside positions 4..6 of layer 1"


def _check_rope_head_blocks(device: str, dtype: torch.dtype) -> None:
    """rope_qkv over a prefill's many rows (several heads per program) gives what one head per
    program gives, bit for bit: out, and the K/V at each token's position."""
    from djinn.kernels import rowwise
    from djinn.kernels.decode_attention import BlockAttention

    torch.manual_seed(3)
    dev = torch.device(device)
    T, H, Hkv, D = 66, 4, 2, 16
    ba = BlockAttention(H, Hkv, D, 2, 80, dev, dtype)
    lin = torch.randn(T, (H + 2 * Hkv) * D, device=dev).to(dtype)
    cos, sin = torch.randn(T, D, device=dev).to(dtype), torch.randn(T, D, device=dev).to(dtype)
    results = []
    for hb in (1, 16):
        kv = torch.zeros(2, 2, Hkv, 80, D, device=dev, dtype=dtype)
        off, ctx = ba.meta_rows([(kv, T - 1)])[1][0], 80
        pos = torch.arange(T, device=dev)
        meta = torch.stack([pos, torch.full_like(pos, off), torch.full_like(pos, ctx), pos + 1])
        out = torch.empty(T, H + 2 * Hkv, D, device=dev, dtype=dtype)
        rowwise.rope_qkv(lin, cos, sin, out, H, Hkv, meta, ba.anchor, layer=1, heads_per_program=hb)
        results.append((out, kv))
        assert torch.equal(kv[1].permute(2, 0, 1, 3)[:T].reshape(T, 2 * Hkv, D), out[:, H:]), f"{hb}: K/V not at the positions"
        assert (kv[0] == 0).all() and (kv[1][:, :, T:] == 0).all(), f"{hb}: K/V written elsewhere"
    for out, kv in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(kv, results[0][1])


def _check_stops_bit_for_bit(device: str, dtype: torch.dtype) -> None:
    """Stopped at every point of the prefill and the decode passes, activations and KV through
    the host each time, against the uninterrupted reference (advance_span): bit for bit."""
    from djinn.runtime.session import FINISHED

    dev = torch.device(device)
    model = _model(dev, dtype, 4, 2, True)
    eng = _engine(model, dev, dtype, True)
    tokens = [7, 1, 30, 12, 8]
    ref_tokens, ref_logits = eng.reference(tokens, 3, with_logits=True)
    s = eng.scratch_session(tokens, 3)
    eng.begin(s)
    while s.state != FINISHED:
        eng.advance(s)
        eng.settle(s)
        s.memory.acts = {k: t.cpu().to(dev) for k, t in s.memory.acts.items()}   # out and back
        s.memory.kv = s.memory.kv.cpu().to(dev)
    assert s.generated == ref_tokens
    assert torch.equal(s.last_logits, ref_logits)


def test_fused_prefill_interpreted():
    """On the CPU, in Triton's interpreter (a subprocess: the mode is read at import)."""
    code = ("import torch, test_prefill_kernels as t; "
            "t._check_against_eager('cpu', torch.float32); t._check_against_eager('cpu', torch.bfloat16); "
            "t._check_rope_head_blocks('cpu', torch.bfloat16); t._check_stops_bit_for_bit('cpu', torch.float32)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    here = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([here, os.path.dirname(here), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_prefill_cuda(dtype):
    _check_against_eager("cuda", dtype)
    _check_rope_head_blocks("cuda", dtype)
    _check_stops_bit_for_bit("cuda", dtype)
