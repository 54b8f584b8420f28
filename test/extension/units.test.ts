// Pure pieces of the extension, checked inside the extension host: the tensor viewer's
// slicing and decoding (with the native codec or its fallback) and the Exp 3 report.
import * as assert from "node:assert";
import { reportHtml } from "../../src/exp3ReportHtml";
import { defaultView, parseTensorExpression, picture, planSlice } from "../../src/tensorSlice";
import * as codec from "../../native/codec";
import { KvLocation, readyLine, SessionState, startupCause, StopPoint, type TelemetrySample } from "../../client";
import { cellClass, diskCells } from "../../media/vram/disk";
import { compactSample } from "../../src/monitor";
import { serverDifferences, type PaletteServer } from "../../src/serverManager";

function f32(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

describe("Djinn extension: tensor viewer slicing and decoding", () => {
  it("picks the last two dims, fixes the leading ones (or the variable's prefix)", () => {
    assert.deepStrictEqual(defaultView([1, 20, 128]), { rowDim: 1, colDim: 2, index: [0, 0, 0] });
    assert.deepStrictEqual(defaultView([40, 2, 8, 32], [3]), { rowDim: 2, colDim: 3, index: [3, 0, 0, 0] });
    assert.deepStrictEqual(defaultView([128]), { rowDim: -1, colDim: 0, index: [0] });
    assert.deepStrictEqual(parseTensorExpression("k_cache[3, 1]"), { name: "k_cache", prefix: [3, 1] });
    assert.deepStrictEqual(parseTensorExpression("$2"), { name: "$2", prefix: [] });
    assert.strictEqual(parseTensorExpression("norm(hidden)"), undefined);
  });

  it("asks the server for one 2-D slice, strided when it is larger than 1M values", () => {
    const p = planSlice([1, 20, 128], { rowDim: 1, colDim: 2, index: [0, 0, 0] });
    assert.deepStrictEqual(p.slice, [{ start: 0, stop: 1, step: 0 }, { start: 0, stop: 0, step: 0 }, { start: 0, stop: 0, step: 0 }]);
    assert.strictEqual(p.rows * p.cols, 20 * 128);
    const big = planSlice([1, 2048, 5120], { rowDim: 1, colDim: 2, index: [0, 0, 0] });
    assert.strictEqual(big.stride, 4);
    assert.ok(big.rows * big.cols <= 1 << 20);
  });

  it("decodes, transposes, and computes stats, histogram and picture with the codec", () => {
    // a [2, 3] tensor shown with rows = dim 1, cols = dim 0: the data comes as [2][3], the picture is [3][2]
    const plan = planSlice([2, 3], { rowDim: 1, colDim: 0, index: [0, 0] });
    assert.ok(plan.transpose);
    const pic = picture(f32([1, 2, 3, 4, 5, NaN]), "float32", plan, [2, 3]);
    assert.strictEqual(pic.rows, 3);
    assert.strictEqual(pic.cols, 2);
    assert.deepStrictEqual(Array.from(pic.values.slice(0, 4)), [1, 4, 2, 5]);
    assert.strictEqual(pic.stats.nanCount, 1);
    assert.strictEqual(pic.stats.max, 5);
    assert.strictEqual(pic.hist.counts.reduce((a, b) => a + b, 0), 5);
    assert.ok(["native", "typescript"].includes(codec.codecBackend));
  });

  it("decodes bfloat16 in its own dtype", () => {
    const bytes = new Uint8Array([0x80, 0x3f, 0x00, 0xc0]); // 1, -2
    const pic = picture(bytes, "bfloat16", planSlice([2], { rowDim: -1, colDim: 0, index: [0] }), [2]);
    assert.deepStrictEqual(Array.from(pic.values), [1, -2]);
  });
});

describe("Djinn extension: the Exp 3 report", () => {
  const results = {
    status: "success", reasons: [], num_sessions_requested: 2, num_sessions_spawned: 2, num_sessions_finished: 2, peak_sessions_alive: 2, peak_sessions_paused: 2,
    budget_gb: 80, weights_gb: 26, workspace_gb: 1, kv_bytes_per_token: 819200, kv_demand_gb: 3.4, host_pool_gb: 96,
    peaks: { accounted_gb: 78.7, nvml_gb: 77.4, allocator_gb: 75.6, allocator_reserved_gb: 76 },
    swap_count: { out: 3, in: 3 }, swap_bytes: { out: 5e9, in: 5e9 },
    swap_latency_ms_stats: { out_mean: 30.4, in_mean: 30.3, out_p50: 30, in_p50: 30, out_p95: 31, in_p95: 31 },
    swap_bandwidth_gbps: { out_mean: 55.3, in_mean: 55.4, out_p50: 55, in_p50: 55 },
    outputs_match: 2, outputs_compared: 2, total_elapsed_seconds: 12, phases_seconds: { debug_run: 5 },
    hardware: { device: "cuda:0", device_name: "NVIDIA H200" }, model: { name: "llama-2-13b", dtype: "bfloat16", n_layers: 40, dim: 5120 },
    server: { address: "127.0.0.1:1", started_locally: true, swap_policy: "pressure" }, context: 2048, new_tokens: 4, breakpoints: [10, 20, 30],
    git_commit: "abc", started_at: "2026-11-28T00:00:00Z",
    sessions: [{ index: 0, session_id: 1, stops: 3, swap_outs: 1, swap_ins: 1, ended: "finished", generated_tokens: [1, 2], output_matches: true }],
    baseline: { sessions_fit: 24, sessions_requested: 50, oom_at_session: 25, vram_held_while_paused_gb: 67.2, peak_allocator_gb: 70, budget_gb: 80, elapsed_seconds: 19 },
  };

  it("shows status, numbers, plot and the baseline side by side", () => {
    const html = reportHtml(results as never, { resultsFile: "/r.json", plotFile: "/p.svg", svg: "<svg xmlns='http://www.w3.org/2000/svg'></svg>" });
    assert.match(html, /<span class="status" id="status">SUCCESS<\/span>/);
    assert.match(html, /side by side/);
    assert.match(html, /at session 25/);
    assert.match(html, /data:image\/svg\+xml;base64,/);
    assert.match(html, /30\.40 · 30\.00 · 31\.00/);
  });
});

describe("Djinn extension: why a local server did not start, and whether the running one fits", () => {
  it("finds the telling line of the server's stderr: the missing module, a Python too old, else the last error", () => {
    const tb = ["Traceback (most recent call last):", '  File "/x/server_main.py", line 157, in main', "    import grpc", "ModuleNotFoundError: No module named 'grpc'"];
    assert.deepStrictEqual(startupCause(tb), { kind: "missing-module", cause: "ModuleNotFoundError: No module named 'grpc'", missingModule: "grpc" });
    assert.strictEqual(startupCause(["  from __future__ import annotations", "SyntaxError: future feature annotations is not defined"]).kind, "python-too-old");
    const other = startupCause(["loading", "djinn: refusing to start: --host 0.0.0.0 without --token", ""]);
    assert.strictEqual(other.kind, "exited");
    assert.match(other.cause, /refusing to start/);
  });

  it("says the ready line plainly", () => {
    const line = readyLine({ address: "127.0.0.1:5556", model: "tiny-40l", device: "cpu", device_name: "x86_64", budget_bytes: 45_000_000 });
    assert.strictEqual(line, "Djinn server ready at 127.0.0.1:5556 (tiny-40l, cpu, budget 0.045 GB)");
  });

  it("compares the running server with what a configuration wants", () => {
    const s = {
      kind: "local",
      address: "127.0.0.1:1",
      info: { model: { name: "tiny-40l" }, device: "cpu", dtype: "float32", memory: { budgetBytes: 45_000_000, hostPoolBytes: 2e9 } },
      started: { model: "tiny-40l", device: "auto", budgetGb: "auto:0.33", hostPoolGb: 2, maxContext: 256, python: "p", extraArgs: [] },
    } as unknown as PaletteServer;
    assert.deepStrictEqual(serverDifferences(s, { model: "tiny-40l", device: "cpu", hostPoolGb: 2, maxContext: 64, budgetGb: "auto:0.33" }), []);
    assert.deepStrictEqual(serverDifferences(s, { budgetGb: 8 }), ["budget 8 GB (it has 0.045 GB)"]);
    assert.deepStrictEqual(serverDifferences(s, { model: "llama-2-7b" }), ["model llama-2-7b (it runs tiny-40l)"]);
    assert.deepStrictEqual(serverDifferences(s, { device: "cuda" }), ["device cuda (it runs on cpu)"]);
    assert.deepStrictEqual(serverDifferences(s, { maxContext: 2048 }), ["context 2048 tokens (it allows 256)"]);
    assert.strictEqual(serverDifferences(s, { extraArgs: ["--swap-policy", "eager"] }).length, 1);
  });
});

describe("Djinn extension: the VRAM panel's disk tier (a swapped session in the server's spill file)", () => {
  const sample = (spill: Partial<TelemetrySample>): TelemetrySample =>
    ({ time: 1, budgetBytes: 1e9, sessions: [{ sessionId: 4, state: SessionState.SESSION_STATE_PAUSED, kvLocation: KvLocation.KV_LOCATION_DISK, kvBytes: 1, layer: 3, point: StopPoint.STOP_POINT_LAYER, historyBytes: 0, historyDeviceBytes: 0 }], ...spill }) as TelemetrySample;

  it("a server with a disk tier: a disk row with used / size, moves each way and the measured GB/s", () => {
    const s = compactSample(sample({ spillBytes: 8e9, spillUsedBytes: 1.5e9, spillsOut: 3, spillsIn: 1, spillWriteGbPerS: 2.345, spillReadGbPerS: 0 }));
    assert.deepStrictEqual(s.spill, { size: 8e9, used: 1.5e9, outs: 3, ins: 1, writeGbps: 2.345, readGbps: 0 });
    assert.deepStrictEqual(s.sessions[0], [4, "paused", "disk", 3, ""]);
    assert.deepStrictEqual(diskCells(s), [
      ["disk spill", "1.50 / 8.00 GB", "disk"],
      ["spills to / from disk", "3 / 1", ""],
      ["disk write / read", "2.35 GB/s / –", ""],
    ]);
    assert.strictEqual(cellClass("paused", "disk"), "paused-disk");
    assert.strictEqual(cellClass("paused", "moving-to-disk"), "moving");
    assert.strictEqual(cellClass("paused", "moving-from-disk"), "moving");
    assert.strictEqual(cellClass("paused", "host"), "paused-host");
  });

  it("without one (spill_bytes 0): no disk row", () => {
    const s = compactSample(sample({ spillBytes: 0 }));
    assert.strictEqual(s.spill, undefined);
    assert.deepStrictEqual(diskCells(s), []);
  });
});
