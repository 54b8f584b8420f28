// Unit tests of the Exp 3 pieces that need no server: the SVG renderer,
// argument parsing and defaults, prompts, statistics and the success criteria.
import assert from "node:assert/strict";
import { test } from "node:test";
import { StopPoint } from "../../client";
import { fmtBytes, stopPointName } from "../../client/format";
import { ContinueQueue } from "../../exp3/continueQueue";
import { memoryPlotSvg } from "../../exp3/memoryPlot";
import { defaultsFor, parseArgs, UsageError } from "../../exp3/options";
import { escapeXml, niceTicks, renderChart } from "../../exp3/plot";
import { jitter, mulberry32, promptTokens } from "../../exp3/random";
import type { TelemetryPoint } from "../../exp3/recorder";
import { failureReasons, type Exp3Results } from "../../exp3/results";
import { downsampleMax, percentile } from "../../exp3/stats";
import { buildServerArgs } from "../../client/localServer";
import { baselineCommand } from "../../exp3/baseline";

function point(t: number, accounted: number, extra: Partial<TelemetryPoint> = {}): TelemetryPoint {
  return {
    t, phase: "debug", accounted_gb: accounted, nvml_used_gb: 0, allocator_gb: 0, allocator_reserved_gb: 0,
    resident_kv_gb: accounted / 2, swapped_kv_gb: 1, host_pool_used_gb: 1, budget_gb: 80, swap_outs: 0, swap_ins: 0,
    sessions_alive: 1, sessions_paused: 0, kv_on_device: 0, kv_on_host: 0, ...extra,
  };
}

test("niceTicks covers the range with round steps", () => {
  assert.deepEqual(niceTicks(0, 80), [0, 20, 40, 60, 80]);
  const t = niceTicks(0, 0.0071);
  assert.ok(t[0] <= 0 && t[t.length - 1] >= 0.0071, JSON.stringify(t));
  const steps = t.slice(1).map((v, i) => +(v - t[i]).toPrecision(6));
  assert.ok(steps.every((s) => s === steps[0]), "equal steps");
  assert.deepEqual(niceTicks(3, 3), niceTicks(3, 4));
});

test("renderChart draws axes, series, the budget line and markers", () => {
  const svg = renderChart({
    title: "t <&> 'x'",
    xLabel: "time (s)",
    yLabel: "GB",
    series: [{ name: "a", color: "#000", points: [[0, 1], [1, 5], [2, 3]] }],
    hlines: [{ y: 6, label: "budget", color: "#f00" }],
    markers: [{ name: "swap-out", color: "#f00", xs: [0.5, 1.5], shape: "down" }],
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="900" height="420"/);
  assert.ok(svg.includes("t &lt;&amp;&gt; &apos;x&apos;"));
  assert.equal((svg.match(/class="series"/g) ?? []).length, 1);
  assert.equal((svg.match(/class="hline"/g) ?? []).length, 1);
  assert.ok(svg.includes('stroke-dasharray="6 4"'));
  assert.ok(svg.includes("swap-out (2)"));
  assert.ok(svg.trim().endsWith("</svg>"));
  // Every coordinate is a finite number.
  assert.ok(!/NaN|Infinity/.test(svg));
});

test("memoryPlotSvg adds NVML only when measured, and the budget", () => {
  const telemetry = [point(0, 10), point(1, 50), point(2, 70)];
  const cpu = memoryPlotSvg({ title: "x", budgetGb: 80, telemetry, swapOutTimes: [1], swapInTimes: [1.5] });
  assert.ok(!cpu.includes("NVML used"));
  assert.ok(cpu.includes("budget 80.0 GB"));
  assert.ok(cpu.includes("swap-in (1)"));
  const gpu = memoryPlotSvg({ title: "x", budgetGb: 80, telemetry: telemetry.map((p) => ({ ...p, nvml_used_gb: p.accounted_gb + 1 })), swapOutTimes: [], swapInTimes: [] });
  assert.ok(gpu.includes("NVML used"));
  assert.equal((gpu.match(/class="series"/g) ?? []).length, 4);
  const empty = memoryPlotSvg({ title: "x", budgetGb: 0, telemetry: [], swapOutTimes: [], swapInTimes: [] });
  assert.ok(empty.includes("</svg>") && !/NaN/.test(empty));
});

test("escapeXml", () => assert.equal(escapeXml(`a<b>"c"&'d'`), "a&lt;b&gt;&quot;c&quot;&amp;&apos;d&apos;"));

test("parseArgs reads every flag", () => {
  const a = parseArgs([
    "--sessions", "6", "--model=tiny-40l", "--context", "64", "--budget-gb", "auto:0.33", "--host-pool-gb", "2",
    "--new-tokens", "2", "--breakpoints", "1,2,3", "--think-ms", "5", "--out", "/tmp/x", "--server", "h:1",
    "--baseline", "--device", "cpu", "--python", "/usr/bin/python3", "--seed", "7",
    "--ca-file", "ca.pem", "--tls-server-name", "gpu-host",
  ])!;
  assert.deepEqual(a, {
    sessions: 6, model: "tiny-40l", context: 64, budgetGb: "auto:0.33", hostPoolGb: 2, newTokens: 2,
    breakpoints: [1, 2, 3], thinkMs: 5, outDir: "/tmp/x", server: "h:1", baseline: true, device: "cpu",
    python: "/usr/bin/python3", seed: 7, caFile: "ca.pem", tlsServerName: "gpu-host",
  });
  assert.equal(parseArgs(["--budget-gb", "80"])!.budgetGb, 80);
  assert.equal(parseArgs(["--help"]), null);
  for (const bad of [["--sessions", "x"], ["--budget-gb", "auto:2"], ["--budget-gb", "0"], ["--device", "tpu"], ["--breakpoints", "1,,2"], ["--nope"], ["--sessions"], ["--baseline=1"]]) {
    assert.throws(() => parseArgs(bad), UsageError, bad.join(" "));
  }
});

test("defaults: GPU is the 13B at 2048 under 80 GB, CPU the tiny model with an auto budget", () => {
  const gpu = defaultsFor(true, {});
  assert.deepEqual([gpu.model, gpu.context, gpu.budgetGb, gpu.hostPoolGb, gpu.sessions, gpu.breakpoints], ["llama-2-13b", 2048, 80, 96, 50, [10, 20, 30]]);
  const cpu = defaultsFor(false, { sessions: 6 });
  assert.deepEqual([cpu.model, cpu.context, cpu.budgetGb, cpu.sessions, cpu.thinkMs], ["tiny-40l", 256, "auto:0.33", 6, 25]);
});

test("server and baseline command lines", () => {
  assert.deepEqual(buildServerArgs({ model: "tiny-40l", device: "cpu", budgetGb: "auto:0.33", planSessions: 6, planContext: 64, maxContext: 64 }), [
    "-m", "djinn.server.server_main", "--host", "127.0.0.1", "--port", "0", "--device", "cpu", "--model", "tiny-40l",
    "--vram-budget-gb", "auto:0.33", "--plan-sessions", "6", "--plan-context", "64", "--max-context", "64",
  ]);
  const b = baselineCommand({ model: "m", sessions: 5, context: 64, newTokens: 2, budgetGb: 1.5, breakpoints: [10, 20], device: "cpu", outDir: "/o", log: () => {}, isCancelled: () => false });
  assert.deepEqual(b.slice(0, 2), ["-m", "djinn.baselines.eager_pressure"]);
  assert.equal(b[b.indexOf("--breakpoints") + 1], "10,20");
  assert.equal(b[b.indexOf("--json-out") + 1], "/o/baseline_results.json");
});

test("prompts are deterministic and inside [3, vocab-1)", () => {
  const a = promptTokens(42, 500, 512);
  assert.deepEqual(a, promptTokens(42, 500, 512));
  assert.notDeepEqual(a, promptTokens(43, 500, 512));
  assert.ok(a.every((t) => Number.isInteger(t) && t >= 3 && t < 511));
  const r = mulberry32(1);
  for (let i = 0; i < 100; i++) {
    const j = jitter(r, 10);
    assert.ok(j >= 5 && j < 15);
  }
});

test("stats: percentile and peak-preserving downsampling", () => {
  assert.equal(percentile([1, 2, 3, 4], 50), 2.5);
  assert.equal(percentile([], 50), 0);
  const xs = Array.from({ length: 1000 }, (_, i) => (i === 777 ? 99 : i % 10));
  const d = downsampleMax(xs, 100, (x) => x);
  assert.equal(d.length, 100);
  assert.ok(d.includes(99));
});

test("continue queue is FIFO and waits for the head's think time", () => {
  const q = new ContinueQueue();
  q.push(1, 100);
  q.push(2, 50);
  q.push(1, 10); // already queued: ignored
  assert.equal(q.length, 2);
  assert.equal(q.popReady(60), undefined);
  assert.equal(q.popReady(100), 1);
  assert.equal(q.popReady(100), 2);
  assert.equal(q.popReady(1000), undefined);
});

test("failure reasons: every criterion", () => {
  const ok = {
    num_sessions_requested: 50, num_sessions_spawned: 50, num_sessions_finished: 50, outputs_match: 50, budget_gb: 80,
    peaks: { accounted_gb: 79, nvml_gb: 79.5, allocator_gb: 78, allocator_reserved_gb: 79 },
  } as Exp3Results;
  assert.deepEqual(failureReasons(ok, true), []);
  assert.equal(failureReasons({ ...ok, peaks: { ...ok.peaks, nvml_gb: 81 } }, true).length, 1);
  assert.equal(failureReasons({ ...ok, peaks: { ...ok.peaks, nvml_gb: 81 } }, false).length, 0);
  assert.equal(failureReasons({ ...ok, num_sessions_spawned: 49, num_sessions_finished: 49, outputs_match: 49 }, true).length, 3);
  assert.equal(failureReasons({ ...ok, budget_gb: 0, peaks: { ...ok.peaks, accounted_gb: 0 } }, false).length, 1);
  assert.deepEqual(failureReasons(ok, true, ["stalled"]), ["stalled"]);
  // Exact bytes win over the rounded GB: one byte over the budget fails.
  const exact = { ...ok, budget_bytes: 80e9, peaks_bytes: { accounted: 80e9, nvml: 0, allocator: 0, allocator_reserved: 0 } };
  assert.deepEqual(failureReasons(exact, true), []);
  assert.equal(failureReasons({ ...exact, peaks_bytes: { ...exact.peaks_bytes, accounted: 80e9 + 1 } }, true).length, 1);
});

test("format helpers", () => {
  assert.equal(fmtBytes(512), "512 B");
  assert.equal(fmtBytes(1_680_000_000), "1.7 GB");
  assert.equal(fmtBytes(20480, 2), "20.48 KB");
  assert.equal(stopPointName(20), "layers.20");
  assert.equal(stopPointName(20, StopPoint.STOP_POINT_ATTN), "layers.20.attn");
  assert.equal(stopPointName(3, StopPoint.STOP_POINT_MLP), "layers.3.mlp");
});
