"""The PyTorch-eager memory-pressure baseline, on the CPU (budget enforced by accounting)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("transformers")

from djinn.baselines.eager_pressure import run_pressure  # noqa: E402
from djinn.model.config import named_config  # noqa: E402

SERVER = os.path.join(os.path.dirname(__file__), "..")
MODEL, CONTEXT, NEW, BPS = "tiny-4l", 128, 8, [1, 2, 3]
FP32 = 4


def _expected_kv_bytes(pause_layer: int) -> int:
    """KV held by a user stopped before layer `pause_layer` of its first decode step, by arithmetic."""
    a = named_config(MODEL)
    per_token_layer = 2 * a.n_kv_heads * a.head_dim * FP32
    prompt = CONTEXT - NEW
    return (a.n_layers * prompt + pause_layer) * per_token_layer  # layers before it hold one more token


@pytest.fixture(scope="module")
def roomy():
    """All 6 fit: gives the measured weights and per-session bytes."""
    return run_pressure(MODEL, 6, CONTEXT, NEW, budget_gb=10.0, breakpoints=BPS, device="cpu", seed=0)


def test_all_fit_with_room(roomy):
    r = roomy
    assert r["sessions_fit"] == 6 and r["oom_at_session"] is None and r["error"] is None
    assert r["budget_enforced_by"] == "accounting" and r["device"] == "cpu"
    assert r["released_cleanly"] and r["threads_still_running"] == 0
    assert r["user_states"] == {"released": 6}
    for e in r["per_session"]:
        assert e["paused_at_layer"] == BPS[0]
        # measured from the cache tensors, equal to the arithmetic
        assert e["kv_bytes"] == _expected_kv_bytes(BPS[0])
    held = [e["allocated_gb"] for e in r["per_session"]]
    assert all(b > a for a, b in zip(held, held[1:])), "each paused user adds what it holds"
    per = r["per_session"][0]["held_bytes"]
    assert r["vram_held_while_paused_gb"] * 1e9 == pytest.approx(r["weights_gb"] * 1e9 + 6 * per)


def test_budget_refuses_the_fourth(roomy, tmp_path):
    weights = roomy["weights_gb"] * 1e9
    per = roomy["per_session"][0]["held_bytes"]
    budget_gb = (weights + 3.5 * per) / 1e9  # room for 3 paused users, not 4
    out = tmp_path / "eager.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "djinn.baselines.eager_pressure", "--model", MODEL, "--sessions", "6",
         "--context", str(CONTEXT), "--new-tokens", str(NEW), "--budget-gb", repr(budget_gb),
         "--breakpoints", "1,2,3", "--device", "cpu", "--dtype", "auto", "--seed", "0",
         "--json-out", str(out)],
        cwd=SERVER, capture_output=True, text=True, timeout=180)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3/6 sessions paused" in proc.stdout and "out of memory at session 4" in proc.stdout
    r = json.loads(out.read_text())
    expected_fit = int((budget_gb * 1e9 - r["weights_gb"] * 1e9) // per)
    assert expected_fit == 3
    assert r["sessions_fit"] == expected_fit
    assert r["oom_at_session"] == expected_fit + 1
    assert r["budget_enforced_by"] == "accounting"
    assert r["vram_held_while_paused_gb"] <= r["budget_gb"]
    assert r["vram_held_while_paused_gb"] == pytest.approx(r["weights_gb"] + 3 * per / 1e9)
    assert [e["session"] for e in r["per_session"]] == [1, 2, 3, 4]
    assert r["per_session"][-1].get("refused") and r["per_session"][-1]["allocated_gb"] > r["budget_gb"]
    assert r["released_cleanly"]
    for key in ("sessions_requested", "sessions_fit", "oom_at_session", "vram_held_while_paused_gb",
                "per_session", "peak_allocator_gb", "budget_gb", "weights_gb", "device", "device_name",
                "model", "context", "dtype", "budget_enforced_by", "elapsed_seconds", "torch_version",
                "transformers_version"):
        assert key in r, key
    assert r["elapsed_seconds"] < 60
    assert wall < 120


def test_pause_in_prefill_holds_only_earlier_layers():
    r = run_pressure(MODEL, 2, CONTEXT, NEW, budget_gb=10.0, breakpoints=[2], device="cpu",
                     pause_in="prefill")
    a = named_config(MODEL)
    assert r["sessions_fit"] == 2
    e = r["per_session"][0]
    assert e["paused_at_layer"] == 2
    assert e["kv_bytes"] == 2 * (CONTEXT - NEW) * 2 * a.n_kv_heads * a.head_dim * FP32


def test_weights_over_budget_is_an_error():
    r = run_pressure(MODEL, 2, CONTEXT, NEW, budget_gb=1e-6, breakpoints=BPS, device="cpu")
    assert r["sessions_fit"] == 0 and r["error"] and "weights" in r["error"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="outside layers"):
        run_pressure(MODEL, 2, CONTEXT, NEW, 1.0, [7], device="cpu")
    with pytest.raises(ValueError, match="new_tokens"):
        run_pressure(MODEL, 2, 8, 8, 1.0, [1], device="cpu")
    with pytest.raises(ValueError, match="max_context"):
        run_pressure(MODEL, 2, 100000, 8, 1.0, [1], device="cpu")


def test_no_threads_left_behind():
    before = {t.name for t in threading.enumerate()}
    run_pressure(MODEL, 3, CONTEXT, NEW, budget_gb=10.0, breakpoints=BPS, device="cpu")
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if n.startswith("eager-user-")]


def test_the_baseline_runs_with_the_servers_allocator_settings(monkeypatch):
    from djinn.baselines.eager_pressure import use_djinn_allocator_settings
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert use_djinn_allocator_settings("cpu") is None
    assert use_djinn_allocator_settings("cuda") == "expandable_segments:True"   # as server_main sets it
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:64")
    assert use_djinn_allocator_settings("auto") == "max_split_size_mb:64"       # an explicit setting wins
