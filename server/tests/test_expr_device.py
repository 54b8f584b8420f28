"""Evaluate through tensor_ops on a real (tiny) model session: hostile indices, integer rules,
limits, host-stored results. Every test runs on the CPU and, where torch sees one, on CUDA, where
an unchecked out-of-range gather is a device-side assert that poisons the context."""
import gc
import weakref

import pytest
import torch

from djinn.inspect.expr import ExprError, ExprLimit, Limits, evaluate
from djinn.model.build import build_model
from djinn.runtime import tensor_ops
from djinn.runtime.catalog import catalog
from djinn.runtime.engine import Engine
from djinn.runtime.errors import DjinnError
from djinn.runtime.session import ATTN, PAUSED, Session
from djinn.runtime.swap import SessionMemory

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]
PROMPT = list(range(200, 208))   # token ids far past the 8 rows of hidden


def make_engine(device: str) -> Engine:
    dev = torch.device(device)
    model, tok, _ = build_model("tiny-4l", dev, torch.float32, 0)
    return Engine(model, tok, dev, torch.float32, 64)


def paused_session(engine: Engine, layer: int = 1, point: str = ATTN) -> Session:
    """What the scheduler hands tensor_ops: a session stopped mid-pass, KV on the device."""
    a = engine.args
    mem = SessionMemory((a.n_layers, 2, a.n_kv_heads, 16, a.head_dim), engine.dtype, 0)
    mem.kv = torch.zeros(mem.kv_shape, dtype=engine.dtype, device=engine.device)
    s = Session(list(PROMPT), 4, 16, mem)
    engine.begin(s)
    while (s.layer, s.point) != (layer, point):
        engine.advance(s)
    s.state = PAUSED
    return s


@pytest.fixture(scope="module", params=DEVICES)
def engine(request):
    return make_engine(request.param)


ROOMY = Limits(max_ms=120_000)   # a loaded CI machine or a kernel's first use can pass 2 s


@pytest.fixture
def sess(engine):
    engine.expr_limits = ROOMY
    yield paused_session(engine)
    engine.expr_limits = None


def ev(engine, s, src):
    return tensor_ops.evaluate_expression(engine, s, src)


def fails(engine, s, src, code="INVALID_ARGUMENT") -> str:
    with pytest.raises(DjinnError) as e:
        ev(engine, s, src)
    assert e.value.code == code, str(e.value)
    return str(e.value)


def healthy(engine, s):
    assert ev(engine, s, "sum(hidden * 0) + 1")["scalar"] == 1.0
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


# ----------------------------------------------------------------------------- indices

@pytest.mark.parametrize("src,needle", [
    ("hidden[tokens]", "index tensor 'tokens' has value 207 out of range for dim 0 with size 8 "
                       "(valid -8..7) (column 8)"),
    ("hidden[tokens - 1000]", "'tokens - 1000' has value -800 out of range for dim 0 with size 8"),
    ("hidden[-tokens]", "has value -207 out of range"),
    ("hidden[0, tokens]", "for dim 1 with size 64"),
    ("k_cache[0, tokens, 1:]", "index tensor 'tokens' has value 207 out of range for dim 1 with size 8"),
    ("k_cache[..., tokens]", "for dim 2 with size 16"),
    ("hidden[tokens[:2] - 200, tokens]", "index tensor 'tokens' has value 207 out of range for dim 1"),
    ("hidden[hidden[:, 0] > 0, tokens]", "out of range for dim 1 with size 64"),
    ("hidden[argmax(hidden, dim=1)]", "out of range for dim 0 with size 8"),
    ("hidden[shape(k_cache)]", "index tensor 'shape(k_cache)' has value 16 out of range"),
    ("hidden[9]", "index 9 out of range for dim 0 with size 8"),
    ("hidden[0, -65]", "index -65 out of range for dim 1 with size 64"),
    ("hidden[argmax(tokens) + 8]", "index 15 out of range for dim 0 with size 8"),
    ("hidden[hidden > 0, 0]", "too many indices"),
    ("hidden[k_cache[0] > 0]", "boolean mask 'k_cache[0] > 0' has shape [8, 16] but the dims it "
                               "covers (0..1) have shape [8, 64]"),
    ("hidden[k_cache > 0]", "too many indices: tensor has 2 dims, got 3"),
    ("hidden[0, hidden[:, 0] > 0]", "boolean mask 'hidden[:, 0] > 0' has shape [8]"),
])
def test_hostile_indices_are_refused_and_the_device_stays_healthy(engine, sess, src, needle):
    msg = fails(engine, sess, src)
    assert needle in msg, msg
    healthy(engine, sess)


def test_index_tensors_in_range_work_on_the_data_device(engine, sess):
    s = sess
    h, toks = s.memory.acts["hidden"], s.pass_tokens
    assert toks.device == h.device and h.device.type == engine.device.type
    idx = h[:, :8].argmax(1)
    r = ev(engine, s, "hidden[argmax(hidden[:, :8], dim=1)]")
    assert torch.equal(s.results[r["result_name"]], h[idx].cpu())
    r = ev(engine, s, "hidden[tokens - 207, tokens - 200 - 8]")   # negative, Python-style
    assert torch.equal(s.results[r["result_name"]], h[toks - 207, toks - 208].cpu())
    r = ev(engine, s, "k_cache[0, shape(hidden)[0] - 1 - shape(shape(hidden))]")  # CPU index, device data
    assert s.results[r["result_name"]].shape == (1, 16)
    healthy(engine, s)


def test_dims_k_and_slices_give_clean_messages(engine, sess):
    assert "dim 5 out of range for shape [8, 64] (valid -2..1)" in fails(engine, sess, "mean(hidden, dim=5)")
    assert "dim -3 out of range" in fails(engine, sess, "softmax(hidden, -3)")
    assert "k=65 out of range" in fails(engine, sess, "topk(hidden, 65)")
    assert "dim 2 out of range" in fails(engine, sess, "cos_sim(hidden, hidden, 2)")
    assert "'@' failed" in fails(engine, sess, "hidden @ hidden")
    assert ev(engine, sess, "hidden[:1000000, -9999999999:]")["summary"]["shape"] == [8, 64]  # clamps


def test_get_tensor_and_logit_lens_bounds(engine, sess):
    with pytest.raises(DjinnError) as e:
        tensor_ops.get_tensor(engine, sess, "hidden", [(0, 9, 1)], True)
    assert e.value.code == "OUT_OF_RANGE" and "stop 9 out of range for size 8" in str(e.value)
    with pytest.raises(DjinnError) as e:
        tensor_ops.set_tensor(engine, sess, "hidden", [(0, 0, 0), (-65, 0, 1)], "add", "", [], b"", 1.0)
    assert e.value.code == "OUT_OF_RANGE" and "dim 1: start -65 out of range for size 64" in str(e.value)
    with pytest.raises(DjinnError) as e:
        tensor_ops.logit_lens(engine, sess, 3, "hidden", 8)
    assert e.value.code == "OUT_OF_RANGE"
    assert len(tensor_ops.logit_lens(engine, sess, 3, "hidden", -8)) == 3
    healthy(engine, sess)


# ----------------------------------------------------------------------------- numbers

def test_integer_rules(engine, sess):
    assert "integer overflow: 2 ** 2048 does not fit in 64 bits" in fails(engine, sess, "2 ** 2048")
    assert "integer overflow" in fails(engine, sess, "9223372036854775807 + 1")
    assert "integer literal 99999999999999999999 is too large" in fails(engine, sess, "99999999999999999999")
    assert "numeric overflow" in fails(engine, sess, "2.0 ** 2048")
    assert "complex number" in fails(engine, sess, "(-8) ** 0.5")
    assert ev(engine, sess, "2 ** 62")["value"] == "4611686018427387904"
    assert ev(engine, sess, "-9223372036854775807 - 1")["scalar"] == -2.0 ** 63
    assert ev(engine, sess, "1e999")["value"] == "inf"


def test_last_resort_and_device_faults(engine, sess, monkeypatch):
    def boom(*a, **k):
        raise KeyError("surprise")
    monkeypatch.setattr(tensor_ops, "evaluate_outcome", boom)
    assert "expression failed: KeyError: 'surprise'" in fails(engine, sess, "1")

    def fault(*a, **k):
        raise RuntimeError("CUDA error: device-side assert triggered")
    monkeypatch.setattr(tensor_ops, "evaluate_outcome", fault)
    with pytest.raises(RuntimeError, match="device-side assert"):   # reaches the server as itself
        ev(engine, sess, "1")
    with pytest.raises(RuntimeError, match="device-side assert"):
        evaluate("a + 1", {"a": fault})


def test_out_of_memory_is_resource_exhausted(engine, sess, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    with pytest.raises(ExprLimit) as e:
        evaluate("a + 1", {"a": oom})
    assert e.value.limit == "memory" and "out of memory" in str(e.value)
    monkeypatch.setattr(tensor_ops, "expression_env", lambda engine, s: {"a": oom})
    assert "out of memory" in fails(engine, sess, "a + 1", "RESOURCE_EXHAUSTED")


# ----------------------------------------------------------------------------- limits

def test_elements_limit(engine, sess):
    engine.expr_limits = Limits(max_elements=1000, max_ms=ROOMY.max_ms)
    assert ev(engine, sess, "hidden[0] * 2")["is_tensor"]          # 64 + 1 + 64 (+ the view)
    msg = fails(engine, sess, "hidden * 2", "RESOURCE_EXHAUSTED")   # 512 + 512 + the rest
    assert "the limit is 1,000" in msg and "--expr-max-elements" in msg and "column" in msg


def test_logits_count_against_the_elements_limit(engine, sess):
    a, T = engine.args, len(PROMPT)
    cost = catalog(engine, sess)["logits"].cost
    assert cost == T * a.dim + (a.dim + T) * a.vocab_size
    engine.expr_limits = Limits(max_elements=cost - 1, max_ms=ROOMY.max_ms)
    assert "loading 'logits'" in fails(engine, sess, "max(logits)", "RESOURCE_EXHAUSTED")
    engine.expr_limits = Limits(max_elements=cost + 10 * T * a.vocab_size, max_ms=ROOMY.max_ms)
    assert ev(engine, sess, "max(logits)")["scalar"] > 0


def test_time_limit(engine, sess):
    engine.expr_limits = Limits(max_ms=0.001)
    msg = fails(engine, sess, " + ".join(["norm(hidden)"] * 50), "RESOURCE_EXHAUSTED")
    assert "time limit of 0.001 ms" in msg and "--expr-max-ms" in msg


def test_result_bytes_limit(engine, sess):
    engine.expr_limits = Limits(max_result_bytes=2400, max_ms=ROOMY.max_ms)
    ev(engine, sess, "hidden")                                      # 2048 bytes
    msg = fails(engine, sess, "hidden[0:2]", "RESOURCE_EXHAUSTED")  # + 512
    assert "this result (512 bytes) would bring session" in msg and "to 2,560 bytes" in msg
    assert "the limit is 2,400 bytes" in msg and "resume the session" in msg
    assert list(sess.results) == ["$1"] and sess.result_counter == 1
    assert ev(engine, sess, "hidden[0]")["result_name"] == "$2"     # + 256 still fits


# ----------------------------------------------------------------------------- results

def test_results_are_host_copies_and_come_back_on_the_device(engine, sess):
    s = sess
    r = ev(engine, s, "k_cache[0]")
    host = s.results[r["result_name"]]
    assert host.device.type == "cpu" and host.is_contiguous()
    assert host.untyped_storage().nbytes() == host.numel() * host.element_size()   # not a view
    ev(engine, s, "hidden")
    assert torch.equal(s.results["$2"], s.memory.acts["hidden"].cpu())
    env_names = tensor_ops.expression_env(engine, s)
    assert env_names["$2"]().device.type == engine.device.type   # back on the device when used
    assert ev(engine, s, "sum($2 != hidden)")["scalar"] == 0
    summ, shape, dtype, data = tensor_ops.get_tensor(engine, s, "$2", [(0, 2, 1)], False)
    assert shape == [2, 64] and dtype == "float32" and len(data) == 2 * 64 * 4   # the host copy


def test_a_result_is_a_copy_of_its_source(engine, sess):
    s = sess
    ev(engine, s, "hidden")
    before = s.results["$1"].clone()
    tensor_ops.set_tensor(engine, s, "hidden", [], "replace", "", [], b"", 5.0)
    assert torch.equal(s.results["$1"], before) and not torch.equal(before, s.memory.acts["hidden"].cpu())
    assert ev(engine, s, "all(hidden == 5)")["value"] == "true"


def test_a_result_from_k_cache_does_not_keep_the_kv_buffer_alive(engine):
    engine.expr_limits = ROOMY
    s = paused_session(engine)
    ref = weakref.ref(s.memory.kv)
    for src in ("k_cache[0]", "k_cache", "v_cache[..., 1:3]"):
        assert ev(engine, s, src)["is_tensor"]
    s.memory.kv = None          # what a swap-out does with the device buffer
    gc.collect()
    assert ref() is None, "a stored result still references the KV buffer"
    assert len(s.results) == 3 and all(t.device.type == "cpu" for t in s.results.values())


def test_small_results_topk_and_shape_on_the_device(engine, sess):
    s = sess
    h = s.memory.acts["hidden"]
    r = ev(engine, s, "hidden[0, :4]")
    assert r["summary"]["values"] == h[0, :4].tolist() and r["value"].startswith("f32[4] [")
    top = ev(engine, s, "topk(hidden[1], 3)")
    ref = h[1].topk(3)
    (idx,) = top["also"]
    assert top["summary"]["values"] == ref.values.tolist() and idx["summary"]["values"] == ref.indices.tolist()
    assert (top["result_name"], idx["result_name"]) == ("$2", "$3")
    assert s.results["$3"].device.type == "cpu" and s.results["$3"].dtype == torch.int64
    assert idx["value"] == f"i64[3] {ref.indices.tolist()}"
    assert ev(engine, s, "sum(hidden[1][$3] != $2)")["scalar"] == 0
    assert "also" not in ev(engine, s, "topk(hidden[1], 3) + 0")
    assert ev(engine, s, "argtopk(hidden[1], 3)")["value"] == idx["value"]
    sh = ev(engine, s, "shape(k_cache)")
    assert sh["value"] == str(list(s.memory.kv[1, 0, :, :s.input_pos + 8].shape)) and sh["is_tensor"]
    assert ev(engine, s, "hidden[:0]")["value"] == "f32[0, 64] empty"
    big = ev(engine, s, "tokens * 0 + 2 ** 62 + 1")     # int64 values past 2**53, exact
    assert big["summary"]["values"] == [2 ** 62 + 1] * 8


def test_expression_errors_keep_their_column(engine, sess):
    with pytest.raises(ExprError) as e:
        evaluate("1 + hidden[tokens]", tensor_ops.expression_env(engine, sess))
    assert e.value.col == 12
