"""Issue 10's benchmark: Djinn's speed on the device it is given, beside transformers and the
plain-copy ceilings, in one JSON (bench/results/h200-perf-DATE.json by default).

    # on the H200 (default run: about 4-5 minutes)
    python3 bench/h200_perf.py --device cuda
    # plus Exp 3 (N=50 with the baseline) and the density run
    python3 bench/h200_perf.py --device cuda --exp3 --density
    # CPU smoke (tiny model, context 256)
    .venv/bin/python bench/h200_perf.py --device cpu --model tiny-40l --sessions 4 --out /tmp/perf-cpu.json

Parts (select with --only / --skip; exp3 and density run only when asked for):
  decode, prefill, swap, overlap  in a child process, the server's Engine / Swapper code (bench/perf_engine.py)
  hf_decode, hf_prefill      in a child process, transformers' LlamaForCausalLM (bench/hf_baseline.py)
  ready, serial, batched, decode_server, resume
                             through one real server process (bench/perf_server.py)
  exp3                       node dist/exp3.js --baseline (its own server), with --exp3
  density                    its own server under an 80 GB budget, with --density
Each key is a measured number, or null with "<key>_why". bench/NOTES.md says what each measures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import lzma
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from perf_common import REPO, device_name_fallback, log, set_alloc_conf  # noqa: E402

TAG = "h200_perf"
ENGINE_PARTS = ("decode", "prefill", "swap", "overlap")
HF_PARTS = ("hf_decode", "hf_prefill")
SERVER_PARTS = ("ready", "serial", "batched", "decode_server", "resume")
OPTIONAL_PARTS = ("exp3", "density")
ALL_PARTS = ENGINE_PARTS + HF_PARTS + SERVER_PARTS + OPTIONAL_PARTS
KEYS = {   # part -> the top-level keys it fills
    "decode": ("decode_ms_per_token", "decode_ms_per_token_p10", "decode_ms_per_token_p90"),
    "prefill": ("prefill_2048_ms",),
    "hf_decode": ("hf_decode_ms_per_token", "hf_decode_ms_per_token_p10", "hf_decode_ms_per_token_p90"),
    "hf_prefill": ("hf_prefill_2048_ms",),
    "swap": ("swap_pair_ms", "swap_pair_ceiling_ms", "swap_one_ms"),
    "overlap": ("decode_while_swapping_ms", "swap_slowdown_pct"),
    "ready": ("server_ready_s",),
    "serial": ("serial_tokens_per_s",),
    "batched": ("batched_tokens_per_s",),
    "decode_server": ("decode_server_ms_per_token",),
    "resume": ("resume_cold_ms", "resume_prefetched_ms"),
    "exp3": ("exp3_total_s", "exp3_status"),
    "density": ("max_sessions_80gb",),
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--model", default=None, help="named config (default llama-2-13b on cuda, tiny-40l on the CPU)")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on cuda, float32 on the CPU (as the server)")
    p.add_argument("--context", type=int, default=None, help="context of the decode/prefill/resume sessions "
                   "(default 2048 on cuda, 256 on the CPU); prompts are context - decode - warmup tokens")
    p.add_argument("--decode-tokens", type=int, default=30, help="timed decode tokens (after the warm-up ones)")
    p.add_argument("--warmup-tokens", type=int, default=2)
    p.add_argument("--prefill-reps", type=int, default=5)
    p.add_argument("--swap-reps", type=int, default=6)
    p.add_argument("--hf-cache", default="dynamic", choices=["dynamic", "static"])
    p.add_argument("--hf-attn", default="sdpa")
    p.add_argument("--sessions", type=int, default=50, help="sessions of the serial and batched runs")
    p.add_argument("--gen-tokens", type=int, default=16, help="tokens each of those sessions generates")
    p.add_argument("--prompt-tokens", type=int, default=16, help="prompt of each of those sessions")
    p.add_argument("--resume-reps", type=int, default=10)
    p.add_argument("--host-pool-gb", type=float, default=None, help="--host-pool-gb of the servers started "
                   "(default 96 on cuda, 0.5 on the CPU)")
    p.add_argument("--ready-timeout-s", type=float, default=600)
    p.add_argument("--only", default="", help="comma-separated parts: " + ",".join(ALL_PARTS))
    p.add_argument("--skip", default="", help="comma-separated parts to leave out")
    p.add_argument("--exp3", action="store_true", help="also run Exp 3 (node dist/exp3.js ... --baseline)")
    p.add_argument("--exp3-args", default="", help="extra driver flags, e.g. '--sessions 10'")
    p.add_argument("--exp3-no-baseline", action="store_true")
    p.add_argument("--exp3-out", default=None, help="driver results folder (default: next to --out, <stem>-exp3/)")
    p.add_argument("--exp3-timeout-s", type=float, default=900)
    p.add_argument("--density", action="store_true", help="also run the density test (sessions under a budget)")
    p.add_argument("--density-budget-gb", type=float, default=80)
    p.add_argument("--density-max", type=int, default=200, help="stop creating sessions after this many")
    p.add_argument("--density-new-tokens", type=int, default=2)
    p.add_argument("--density-spill-gb", type=float, default=40, help="--spill-gb of the density server (0: no disk tier)")
    p.add_argument("--spill-dir", default=None, help="--spill-dir of the density server (default: bench/results/.spill "
                   "under this tree, i.e. the local disk the tree is on)")
    p.add_argument("--density-create-timeout-s", type=float, default=300)
    p.add_argument("--density-finish-timeout-s", type=float, default=900)
    p.add_argument("--part-timeout-s", type=float, default=900, help="limit of each child process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-rows", type=int, default=16, help="--batch-rows of the engine parts and the servers")
    p.add_argument("--cuda-graphs", default="on", choices=["on", "off"], help="--cuda-graphs of the engine parts and the servers")
    p.add_argument("--commit", default=None, help="commit to record (wins over git rev-parse HEAD, which can be "
                   "stale in a copied tree)")
    p.add_argument("--out", default=None, help="default bench/results/h200-perf-DATE.json")
    p.add_argument("--update", action="store_true", help="--out exists: keep its figures of the parts not run now "
                   "(e.g. a second device call with --only exp3,density completes the first call's file)")
    o = p.parse_args(argv)
    return o


def choose_parts(o) -> tuple[list[str], dict[str, str]]:
    """(parts to run, why for each part not run)."""
    names = lambda s: [x.strip() for x in s.split(",") if x.strip()]
    bad = [x for x in names(o.only) + names(o.skip) if x not in ALL_PARTS]
    if bad:
        raise SystemExit(f"h200_perf: unknown part(s) {bad}; parts: {', '.join(ALL_PARTS)}")
    why: dict[str, str] = {}
    if o.only:
        run = [x for x in ALL_PARTS if x in names(o.only)]
        for x in ALL_PARTS:
            if x not in run:
                why[x] = f"skipped: not in --only {o.only}"
    else:
        run = [x for x in ALL_PARTS if x not in OPTIONAL_PARTS]
        for x in OPTIONAL_PARTS:
            if getattr(o, x):
                run.append(x)
            else:
                why[x] = {"exp3": "not run: give --exp3 (Exp 3 N=50 with the baseline, about 2 minutes on the H200)",
                          "density": "not run: give --density (sessions of the context under an 80 GB budget until "
                                     "refused; several minutes on the H200)"}[x]
    for x in names(o.skip):
        if x in run:
            run.remove(x)
            why[x] = "skipped by --skip"
    return run, why


def git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return ""


class Result(dict):
    def put(self, key: str, value, why: str = "") -> None:
        self[key] = value
        if value is None:
            self[key + "_why"] = why or "not measured"
        else:
            self.pop(key + "_why", None)

    def fail(self, part: str, why: str) -> None:
        for k in KEYS[part]:
            if self.get(k) is None:
                self.put(k, None, why)


def run_child(o, script: str, args: list[str], what: str) -> tuple[dict | None, str]:
    """Runs bench/<script> in its own process (its device memory is freed when it exits)."""
    fd, path = tempfile.mkstemp(prefix="h200-perf-", suffix=".json")
    os.close(fd)
    os.unlink(path)
    cmd = [sys.executable, os.path.join(HERE, script), *args, "--out", path]
    log(TAG, f"{what}: {' '.join(shlex.quote(c) for c in cmd)}")
    tail: deque = deque(maxlen=40)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)

    def pump():
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    try:
        rc = proc.wait(o.part_timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        th.join(5)
        return None, f"{what}: killed after --part-timeout-s {o.part_timeout_s:.0f} s; last output: " + " | ".join(list(tail)[-5:])
    th.join(5)
    if os.path.exists(path):
        with open(path) as f:
            res = json.load(f)
        os.unlink(path)
        return res, ""
    return None, f"{what}: exited with {rc} without results; last output: " + " | ".join(list(tail)[-8:])


def find_node() -> tuple[str | None, str]:
    """(node binary, where it came from): $NODE, .gpu/node.xz (as bench/gpu_checks.sh), or node on PATH."""
    if os.environ.get("NODE"):
        return os.environ["NODE"], "$NODE"
    packed = os.path.join(REPO, ".gpu", "node.xz")
    if os.path.exists(packed):
        dst = os.path.join(tempfile.mkdtemp(prefix="h200-perf-node-"), "node")
        with lzma.open(packed) as src, open(dst, "wb") as out:
            shutil.copyfileobj(src, out)
        os.chmod(dst, os.stat(dst).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return dst, ".gpu/node.xz"
    found = shutil.which("node")
    return (found, "PATH") if found else (None, "")


# ---------------------------------------------------------------------------- the parts

def engine_parts(o, run, R: Result, details: dict) -> None:
    parts = [x for x in ENGINE_PARTS if x in run]
    res, why = run_child(o, "perf_engine.py", [
        "--device", o.device, "--model", o.model, "--dtype", o.dtype, "--context", str(o.context),
        "--decode-tokens", str(o.decode_tokens), "--warmup-tokens", str(o.warmup_tokens),
        "--prefill-reps", str(o.prefill_reps), "--swap-reps", str(o.swap_reps), "--seed", str(o.seed),
        "--batch-rows", str(o.batch_rows), "--cuda-graphs", o.cuda_graphs, "--parts", ",".join(parts)], "engine parts (" + ",".join(parts) + ")")
    if res is None:
        for x in parts:
            R.fail(x, "failed: " + why)
        return
    R.meta.update({k: res[k] for k in ("torch", "device_name", "pytorch_cuda_alloc_conf") if res.get(k)})
    errs = res.get("errors", {})
    details["engine"] = {k: v for k, v in res.items() if k in ("weights_init_s", "weights_bytes", "dtype", "engine_init_s", "graphs", "batch_rows", "cuda_graphs",
                                                               "max_memory_allocated_bytes")}
    if "decode" in parts:
        d = res.get("decode")
        if d:
            R.put("decode_ms_per_token", d["ms"]["median"])
            R.put("decode_ms_per_token_p10", d["ms"]["p10"])
            R.put("decode_ms_per_token_p90", d["ms"]["p90"])
            R["decode_position"] = d["first_position"]
            R["decode_method"] = d["method"]
            details["decode"] = d
        else:
            R.fail("decode", "failed: " + errs.get("decode", "no result"))
    if "prefill" in parts:
        d = res.get("prefill")
        if d:
            R.put("prefill_2048_ms", d["ms"]["median"])
            R["prefill_tokens"] = d["tokens"]
            details["prefill"] = d
        else:
            R.fail("prefill", "failed: " + errs.get("prefill", "no result"))
    if "overlap" in parts:
        d = res.get("overlap")
        if d:
            R.put("decode_while_swapping_ms", d["swapping_ms"]["median"])
            R.put("swap_slowdown_pct", d["slowdown_pct"])
            details["overlap"] = d
        else:
            R.fail("overlap", "failed: " + errs.get("overlap", errs.get("decode", "no result")))
    if "swap" in parts:
        d = res.get("swap")
        if d:
            R.put("swap_pair_ms", d["pair_ms"]["median"])
            R.put("swap_pair_ceiling_ms", d["ceiling_pair_ms"]["median"])
            R.put("swap_one_ms", d["one_in_ms"]["median"])
            R["swap_one_out_ms"] = d["one_out_ms"]["median"]
            R["swap_bytes_each_way"] = d["bytes_each_way"]
            if not d.get("round_trip_identical"):
                R["swap_warning"] = "the swap round trip did NOT give back identical KV"
            details["swap"] = d
        else:
            R.fail("swap", "failed: " + errs.get("swap", "no result"))


def hf_parts(o, run, R: Result, details: dict) -> None:
    parts = [x for x in HF_PARTS if x in run]
    res, why = run_child(o, "hf_baseline.py", [
        "--device", o.device, "--model", o.model, "--dtype", o.dtype, "--context", str(o.context),
        "--decode-tokens", str(o.decode_tokens), "--warmup-tokens", str(o.warmup_tokens),
        "--prefill-reps", str(o.prefill_reps), "--cache", o.hf_cache, "--attn", o.hf_attn, "--seed", str(o.seed),
        "--parts", ",".join(parts)], "transformers parts (" + ",".join(parts) + ")")
    if res is None:
        for x in parts:
            R.fail(x, "failed: " + why)
        return
    if res.get("transformers"):
        R.meta["transformers"] = res["transformers"]
    if res.get("device_name") and not R.meta.get("device_name"):
        R.meta["device_name"] = res["device_name"]
    R["hf_cache"] = res.get("cache")
    R["hf_attn_implementation"] = res.get("attn_implementation")
    errs = res.get("errors", {})
    details["hf"] = {k: v for k, v in res.items() if k in ("weights_init_s", "weights_bytes", "dtype", "transformers",
                                                           "forward_keywords", "max_memory_allocated_bytes",
                                                           "pytorch_cuda_alloc_conf")}
    if "hf_decode" in parts:
        d = res.get("hf_decode")
        if d:
            R.put("hf_decode_ms_per_token", d["ms"]["median"])
            R.put("hf_decode_ms_per_token_p10", d["ms"]["p10"])
            R.put("hf_decode_ms_per_token_p90", d["ms"]["p90"])
            details["hf_decode"] = d
        else:
            R.fail("hf_decode", ("not measured: " if "importable" in errs.get("hf_decode", "") else "failed: ")
                   + errs.get("hf_decode", "no result"))
    if "hf_prefill" in parts:
        d = res.get("hf_prefill")
        if d:
            R.put("hf_prefill_2048_ms", d["ms"]["median"])
            details["hf_prefill"] = d
        else:
            R.fail("hf_prefill", ("not measured: " if "importable" in errs.get("hf_prefill", "") else "failed: ")
                   + errs.get("hf_prefill", "no result"))


def server_parts(o, run, R: Result, details: dict, save) -> None:
    import perf_server as ps

    parts = [x for x in SERVER_PARTS if x in run]
    try:
        srv, ready_s = ps.start_server(o, "--swap-policy", "eager", name="the server (eager swap policy, for resume)")
    except Exception as e:  # noqa: BLE001
        for x in parts:
            R.fail(x, f"failed: the server did not start: {type(e).__name__}: {str(e)[-2000:]}")
        return
    try:
        R.meta.setdefault("device_name", srv.ready.get("device_name"))
        details["server"] = dict(command=srv.command, ready_line=srv.ready)
        if "ready" in parts:
            R.put("server_ready_s", round(ready_s, 2))
            R["server_ready_host_pool_gb"] = o.host_pool_gb
            R["server_ready_method"] = ("wall time from spawning `python -m djinn.server.server_main ... --host-pool-gb "
                                        f"{o.host_pool_gb:g}` to its DJINN_READY line on stdout")
        c = ps.Client(srv.address)
        pinned = ps.wait_pool_pinned(c, srv, o.ready_timeout_s)
        if pinned is None:
            R.put("server_pool_pinned_s", None, "the proto has no MemoryInfo.host_pool_pinned_bytes: the pool is "
                  "pinned before DJINN_READY (server_ready_s includes it)")
        else:
            R.put("server_pool_pinned_s", pinned["pinned_s"])
            details["server"]["pool_pinned"] = pinned
            log(TAG, f"host pool fully pinned {pinned['pinned_s']} s after spawn ({pinned})")
        steps = [("serial", lambda: ps.throughput(c, o, batched=False)),
                 ("batched", lambda: ps.throughput(c, o, batched=True)),
                 ("decode_server", lambda: ps.decode_server(c, o)),
                 ("resume", lambda: ps.resume(c, o))]
        for name, fn in steps:
            if name not in parts:
                continue
            t = time.perf_counter()
            log(TAG, f"{name} ...")
            try:
                d = fn()
            except Exception as e:  # noqa: BLE001 - the other parts go on
                log(TAG, f"{name} failed: {type(e).__name__}: {e}")
                R.fail(name, f"failed: {type(e).__name__}: {e}")
                if not srv.alive():
                    for x in parts:
                        R.fail(x, f"failed: the server exited ({srv.proc.returncode}): " + srv.output()[-1500:])
                    break
                continue
            finally:
                R.meta["part_seconds"][name] = round(time.perf_counter() - t, 1)
            if name in ("serial", "batched"):
                R.put(f"{name}_tokens_per_s", d["tokens_per_s"])
                details[name] = {k: v for k, v in d.items() if k != "outputs"}
                details[name]["_outputs"] = d["outputs"]
                log(TAG, f"{name}: {d['tokens']} tokens in {d['wall_s']} s = {d['tokens_per_s']} tokens/s")
            elif name == "decode_server":
                R.put("decode_server_ms_per_token", d["ms"]["median"])
                details[name] = d
                log(TAG, f"decode through the server at {d['first_position']}: median {d['ms']['median']} ms/token")
            elif name == "resume":
                R.put("resume_cold_ms", d["cold_ms"].get("median"), "no cold sample")
                R["resume_cold_method"] = d["method"]
                R["resume_cold_server_swap_in_ms"] = d["server_swap_in_ms"].get("median")
                if d["prefetch_rpc"] is None:
                    R.put("resume_prefetched_ms", None, "not measurable: proto/djinn/v1/djinn.proto has no Prefetch "
                          "RPC (the service djinn.v1.Djinn offers none), so a session cannot be brought back before "
                          "its Continue")
                else:
                    R.put("resume_prefetched_ms", (d["prefetched_ms"] or {}).get("median"),
                          f"no prefetched sample: {d['prefetch_rpc']} failed: {d['prefetch_error']}")
                details[name] = d
                log(TAG, f"resume cold: median {d['cold_ms'].get('median')} ms (server swap-in "
                         f"{d['server_swap_in_ms'].get('median')} ms)")
            save()
        if "_outputs" in details.get("serial", {}) and "_outputs" in details.get("batched", {}):
            a, b = details["serial"]["_outputs"], details["batched"]["_outputs"]
            details["batched"]["outputs_equal_serial"] = sum(1 for k in a if a[k] == b.get(k))
        for k in ("serial", "batched"):
            details.get(k, {}).pop("_outputs", None)
        c.close()
    finally:
        rc = srv.stop()
        log(TAG, f"server stopped ({rc})")


def exp3_part(o, R: Result, details: dict) -> None:
    script = os.path.join(REPO, "dist", "exp3.js")
    if not os.path.exists(script):
        R.fail("exp3", "not run: dist/exp3.js is missing (npm run build, or carry dist/)")
        return
    node, src = find_node()
    if node is None:
        R.fail("exp3", "not run: no node ($NODE, .gpu/node.xz or node on PATH)")
        return
    try:
        _exp3(o, R, details, script, node, src)
    finally:
        if src == ".gpu/node.xz":
            shutil.rmtree(os.path.dirname(node), ignore_errors=True)


def _exp3(o, R: Result, details: dict, script: str, node: str, src: str) -> None:
    out_dir = o.exp3_out or os.path.splitext(o.out)[0] + "-exp3"
    cmd = [node, script, "--python", sys.executable, "--out", out_dir]
    if not o.exp3_no_baseline:
        cmd.append("--baseline")
    if o.device == "cpu":
        cmd += ["--device", "cpu"]
    cmd += shlex.split(o.exp3_args)
    log(TAG, f"exp3: {' '.join(cmd)} (node from {src})")
    tail: deque = deque(maxlen=30)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if not line.startswith("["):
                sys.stderr.write("exp3| " + line)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    try:
        rc = proc.wait(o.exp3_timeout_s)
    except subprocess.TimeoutExpired:
        log(TAG, f"exp3: still running after --exp3-timeout-s {o.exp3_timeout_s:.0f} s: stopping it and its server")
        try:
            os.killpg(proc.pid, signal.SIGTERM)     # its own session: the driver and the server it started
            rc = proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait(30)
    th.join(5)
    wall = time.perf_counter() - t
    path = os.path.join(out_dir, "memory_pressure_results.json")
    d = dict(command=cmd, rc=rc, wall_s=round(wall, 1), results=os.path.relpath(path, REPO), tail=list(tail)[-12:])
    if os.path.exists(path):
        with open(path) as f:
            r = json.load(f)
        d.update(status=r.get("status"), reasons=r.get("reasons"), driver_total_s=r.get("total_elapsed_seconds"),
                 phases_seconds=r.get("phases_seconds"), finished=r.get("num_sessions_finished"),
                 requested=r.get("num_sessions_requested"), outputs_match=r.get("outputs_match"),
                 swap_count=r.get("swap_count"))
        R.put("exp3_total_s", round(wall, 1))
        R.put("exp3_status", r.get("status"), "the results file has no status")
        R["exp3_method"] = ("wall time of the whole driver command (server start, the debug run, the reference run"
                            + ("" if o.exp3_no_baseline else ", the eager baseline") + "); status from its results JSON")
    else:
        R.fail("exp3", f"failed: exit {rc} after {wall:.0f} s without {d['results']}: " + " | ".join(list(tail)[-5:]))
    details["exp3"] = d


def density_part(o, R: Result, details: dict) -> None:
    import perf_server as ps

    srv = None
    try:
        spill = []
        if o.density_spill_gb > 0:
            spill_dir = o.spill_dir or os.path.join(REPO, "bench", "results", ".spill")
            spill = ["--spill-dir", spill_dir, "--spill-gb", f"{o.density_spill_gb:g}"]
        srv, ready_s = ps.start_server(o, "--vram-budget-gb", f"{o.density_budget_gb:g}", *spill, name="the density server")
        c = ps.Client(srv.address)
        pinned = ps.wait_pool_pinned(c, srv, o.ready_timeout_s)   # sessions are refused by a full pool, not a pinning one
        d = ps.density(c, o)
        d["pool_pinned"] = pinned
        d["spill"] = ps.spill_figures(c)
        c.close()
        d.update(server_command=srv.command, budget_gb=o.density_budget_gb, host_pool_gb=o.host_pool_gb,
                 spill_gb=o.density_spill_gb,
                 ready_line=srv.ready)
        path = os.path.splitext(o.out)[0] + "-density.json"
        with open(path, "w") as f:
            json.dump(d, f, indent=1)
        R.put("max_sessions_80gb", d["count_equal"])
        R["max_sessions_80gb_method"] = d["method"] + (f"; budget {o.density_budget_gb:g} GB, host pool {o.host_pool_gb:g} GB"
                                                       f", spill file {o.density_spill_gb:g} GB on local disk")
        details["density"] = {k: v for k, v in d.items() if k not in ("ready_line",)}
        details["density"]["results"] = os.path.relpath(path, REPO)
        log(TAG, f"density: {d['count_equal']} of {d['created']} sessions finished equal to their reference")
    except Exception as e:  # noqa: BLE001
        R.fail("density", f"failed: {type(e).__name__}: {str(e)[-1500:]}")
    finally:
        if srv is not None:
            srv.stop()


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    o = parse(argv)
    t_start = time.perf_counter()
    if o.device == "auto":
        import torch

        o.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = o.device == "cuda"
    o.alloc_conf = set_alloc_conf(o.device)     # before anything here or in a child initialises CUDA
    o.model = o.model or ("llama-2-13b" if cuda else "tiny-40l")
    o.context = o.context or (2048 if cuda else 256)
    o.host_pool_gb = o.host_pool_gb if o.host_pool_gb is not None else (96.0 if cuda else 0.5)
    if o.context - o.decode_tokens - o.warmup_tokens < 8:
        raise SystemExit("h200_perf: --context too small for --decode-tokens + --warmup-tokens")
    date = datetime.date.today().isoformat()
    o.out = os.path.abspath(o.out or os.path.join(HERE, "results", f"h200-perf-{date}.json"))
    os.makedirs(os.path.dirname(o.out), exist_ok=True)
    run, why = choose_parts(o)

    head = git("rev-parse", "HEAD")
    dirty = [l[3:] for l in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    R = Result()
    R.meta = dict(part_seconds={})
    R.update(commit=o.commit or head or None, git_head=head or None, git_dirty_files=dirty[:30],
             command=[sys.executable] + sys.argv if argv is None else [sys.executable, __file__] + list(argv),
             device=o.device, device_name=None, torch=None, model=o.model, date=date)
    for part, keys in KEYS.items():
        for k in keys:
            R.put(k, None, why.get(part, "not measured (the run ended before this part)"))
    details: dict = {}
    earlier: list = []
    if o.update and os.path.exists(o.out):
        with open(o.out) as f:
            prev = json.load(f)
        for part, keys in KEYS.items():
            if part in run or part not in (prev.get("parts_run") or []):
                continue
            for k in keys:
                R[k] = prev.get(k)
                if prev.get(k + "_why") is not None:
                    R[k + "_why"] = prev[k + "_why"]
                else:
                    R.pop(k + "_why", None)
        for k, v in prev.items():     # the methods and extra figures of the parts kept
            if k not in R and k not in ("details", "parts_run", "part_seconds", "settings", "wall_s", "host",
                                        "earlier_runs", "pytorch_cuda_alloc_conf", "transformers"):
                R[k] = v
        details.update(prev.get("details", {}))
        R.meta["part_seconds"].update(prev.get("part_seconds", {}))
        if prev.get("transformers"):
            R.meta["transformers"] = prev["transformers"]
        earlier = prev.get("earlier_runs", []) + [dict(command=prev.get("command"), commit=prev.get("commit"),
                                                       date=prev.get("date"), parts_run=prev.get("parts_run"),
                                                       settings=prev.get("settings"), wall_s=prev.get("wall_s"))]
        run_before = [x for x in (prev.get("parts_run") or []) if x not in run]
        log(TAG, f"--update: keeping {', '.join(run_before) or 'nothing'} from {o.out}")
    else:
        run_before = []

    def save() -> None:
        out = dict(R)
        out.update({k: v for k, v in R.meta.items() if k in ("torch", "device_name", "transformers")})
        out["pytorch_cuda_alloc_conf"] = o.alloc_conf
        out["parts_run"] = run_before + run
        if earlier:
            out["earlier_runs"] = earlier
        out["part_seconds"] = R.meta["part_seconds"]
        out["settings"] = dict(context=o.context, dtype=o.dtype, decode_tokens=o.decode_tokens,
                               warmup_tokens=o.warmup_tokens, prefill_reps=o.prefill_reps, swap_reps=o.swap_reps,
                               sessions=o.sessions, gen_tokens=o.gen_tokens, prompt_tokens=o.prompt_tokens,
                               resume_reps=o.resume_reps, host_pool_gb=o.host_pool_gb, hf_cache=o.hf_cache,
                               hf_attn=o.hf_attn)
        out["host"] = platform.node()
        out["wall_s"] = round(time.perf_counter() - t_start, 1)
        out["details"] = details
        tmp = o.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, o.out)
        return out

    log(TAG, f"{o.model} on {o.device}, context {o.context}; parts: {', '.join(run)}; results -> {o.out}")
    groups = [(ENGINE_PARTS, "engine", lambda: engine_parts(o, run, R, details)),
              (HF_PARTS, "hf", lambda: hf_parts(o, run, R, details)),
              (SERVER_PARTS, "server", lambda: server_parts(o, run, R, details, save)),
              (("exp3",), "exp3", lambda: exp3_part(o, R, details)),
              (("density",), "density", lambda: density_part(o, R, details))]
    for parts, name, fn in groups:
        if not any(x in run for x in parts):
            continue
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one group's failure leaves the others measured
            import traceback

            traceback.print_exc()
            for x in parts:
                if x in run:
                    R.fail(x, f"failed: {type(e).__name__}: {e}")
        R.meta["part_seconds"][name] = round(time.perf_counter() - t, 1)
        save()
        log(TAG, f"{name} done in {R.meta['part_seconds'][name]} s")
    if not R.meta.get("device_name"):
        R.meta["device_name"] = device_name_fallback(o.device)
    if not R.meta.get("torch"):
        import torch

        R.meta["torch"] = torch.__version__
    out = save()
    print(json.dumps({k: v for k, v in out.items() if k != "details"}, indent=1))
    for part in run:
        for k in KEYS[part]:
            log(TAG, f"  {k:<28} {out[k]!s:>12}" + (f"   ({out[k + '_why']})" if out[k] is None else ""))
    log(TAG, f"wrote {o.out} in {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
