// Pure parts of the adapter, no server: value formatting (checked against Python's own
// '.4g'), dtype codecs, slice arithmetic, outline files, condition normalisation, attributes.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { EventKind, resolvePython, SessionState, StopPoint, StopReason, type Event, type SessionInfo } from "../../client";
import { parseLaunch } from "../../debug-adapter/config";
import { generateOutline, moduleToStop, parseOutline } from "../../debug-adapter/outline";
import { DjinnRuntime } from "../../debug-adapter/runtime";
import { normalizeCondition } from "../../debug-adapter/session";
import { covering, decode, encode, fmtG, parseRegion, summaryLine } from "../../debug-adapter/variables";

test("fmtG formats like Python's format(x, '.4g') and '.6g'", () => {
  const xs = [0, 1, -1, 0.5, 1234.5, 12345.6, 0.00012345, 0.000012345, 1e-5, 123456789, -3.14159265, 2.5e-10, 1e21, 99999, 0.1 + 0.2, 9.9995, 1.00005];
  const py = `import json,sys\nxs=json.loads(sys.argv[1])\nprint(json.dumps([[format(x,'.4g'),format(x,'.6g')] for x in xs]))`;
  const out = JSON.parse(execFileSync(resolvePython(), ["-c", py, JSON.stringify(xs)], { encoding: "utf8" }));
  xs.forEach((x, i) => {
    assert.equal(fmtG(x, 4), out[i][0], `${x} .4g`);
    assert.equal(fmtG(x, 6), out[i][1], `${x} .6g`);
  });
  assert.equal(fmtG(NaN), "nan");
  assert.equal(fmtG(-Infinity), "-inf");
});

test("the summary line carries dtype, shape and the statistics", () => {
  const line = summaryLine({ name: "hidden", dtype: "bfloat16", shape: [1, 2048, 5120], min: -5.1, max: 6.3, mean: 0.0012, std: 1.02, l2Norm: 4100, nanCount: 0, infCount: 0, numel: 10485760, writable: true, description: "", computeMs: 0 });
  assert.equal(line, "bf16[1, 2048, 5120] μ=0.0012 σ=1.02 min=-5.1 max=6.3 ‖x‖=4100 nan=0");
  assert.match(summaryLine({ name: "x", dtype: "float32", shape: [2], min: 0, max: 1, mean: 0, std: 0, l2Norm: 0, nanCount: 1, infCount: 2, numel: 2, writable: false, description: "", computeMs: 0 }), /nan=1 inf=2$/);
});

test("dtype codecs: bf16, f16, f32, ints round-trip through little-endian bytes", () => {
  const vals = [0, 1, -2.5, 0.1, 65504, 1e-3, -0.0078125];
  for (const dt of ["float32", "bfloat16", "float16"]) {
    const back = decode(encode(vals, dt), dt);
    back.forEach((v, i) => assert.ok(Math.abs(v - vals[i]) <= Math.abs(vals[i]) * (dt === "bfloat16" ? 8e-3 : dt === "float16" ? 1e-3 : 1e-7) + 1e-9, `${dt} ${vals[i]} -> ${v}`));
  }
  assert.deepEqual(decode(Buffer.from([0x80, 0x3f]), "bfloat16"), [1]);
  assert.deepEqual(decode(Buffer.from([0x00, 0x3c]), "float16"), [1]);
  assert.ok(Number.isNaN(decode(encode([NaN], "bfloat16"), "bfloat16")[0]));
  const i64 = Buffer.alloc(16);
  i64.writeBigInt64LE(-5n, 0);
  i64.writeBigInt64LE(123n, 8);
  assert.deepEqual(decode(i64, "int64"), [-5, 123]);
});

test("covering: the smallest leading-dim block that holds a flat element range", () => {
  // [4, 3, 5]: elements 17..18 lie in [1, 0, 2..3]
  assert.deepEqual(covering([4, 3, 5], 17, 19), { slice: [{ start: 1, stop: 2, step: 0 }, { start: 0, stop: 1, step: 0 }, { start: 2, stop: 4, step: 0 }], base: 17 });
  // crossing rows of dim 1: [1, 0..1]
  assert.deepEqual(covering([4, 3, 5], 18, 22), { slice: [{ start: 1, stop: 2, step: 0 }, { start: 0, stop: 2, step: 0 }], base: 15 });
  // crossing dim 0
  assert.deepEqual(covering([4, 3, 5], 14, 16), { slice: [{ start: 0, stop: 2, step: 0 }], base: 0 });
  assert.deepEqual(covering([10], 3, 7), { slice: [{ start: 3, stop: 7, step: 0 }], base: 3 });
});

test("parseRegion: a tensor name with indices and slices as DimSlices (stop 0 = to the end)", () => {
  assert.deepEqual(parseRegion("hidden"), { name: "hidden", slice: [] });
  assert.deepEqual(parseRegion(" hidden[3] "), { name: "hidden", slice: [{ start: 3, stop: 4, step: 0 }] });
  assert.deepEqual(parseRegion("mlp_out[-1, :16]"), { name: "mlp_out", slice: [{ start: -1, stop: 0, step: 0 }, { start: 0, stop: 16, step: 0 }] });
  assert.deepEqual(parseRegion("$3[2:, ::2]"), { name: "$3", slice: [{ start: 2, stop: 0, step: 0 }, { start: 0, stop: 0, step: 2 }] });
  assert.equal(parseRegion("norm(hidden)"), undefined);
  assert.equal(parseRegion("hidden[:0]"), undefined);
  assert.equal(parseRegion("hidden[x]"), undefined);
});

test("outline: generated text parses back to one module per line; modules map to stop points", () => {
  const modules = [
    { name: "embed_tokens", kind: "embedding", layer: -1, numParams: 10 },
    ...[0, 1].flatMap((i) => [
      { name: `layers.${i}`, kind: "layer", layer: i, numParams: 30 },
      { name: `layers.${i}.attn`, kind: "attention", layer: i, numParams: 10 },
      { name: `layers.${i}.mlp`, kind: "mlp", layer: i, numParams: 20 },
    ]),
    { name: "norm", kind: "norm", layer: -1, numParams: 4 },
    { name: "lm_head", kind: "linear", layer: -1, numParams: 40 },
  ];
  const text = generateOutline({ name: "m", nLayers: 2, dim: 4, dtype: "float32", device: "cpu" }, modules);
  const p = parseOutline(text);
  assert.equal(p.model, "m");
  assert.deepEqual([...p.moduleAt.values()], modules.map((m) => m.name));
  assert.equal(p.moduleAt.get(p.lineOf.get("layers.1.attn")!), "layers.1.attn");
  assert.equal(p.moduleAt.get(1), undefined); // header comment
  assert.deepEqual(moduleToStop("embed_tokens", 2), { layer: 0, point: StopPoint.STOP_POINT_LAYER });
  assert.deepEqual(moduleToStop("layers.1.mlp", 2), { layer: 1, point: StopPoint.STOP_POINT_MLP });
  assert.deepEqual(moduleToStop("layers.0.attn"), { layer: 0, point: StopPoint.STOP_POINT_ATTN });
  assert.match((moduleToStop("norm", 2) as { error: string }).error, /break at layers\.1\.mlp/);
  assert.match((moduleToStop("layers.2", 2) as { error: string }).error, /layers 0\.\.1/);
  // a hand-written outline: indentation and trailing comments are free
  const hand = parseOutline("# mine\n\n   layers.7   # here\nlayers.7.mlp\n");
  assert.equal(hand.moduleAt.get(3), "layers.7");
  assert.equal(hand.lineOf.get("layers.7.mlp"), 4);
});

test("conditions: `phase == decode` gets its quotes; the rest is left to the server", () => {
  assert.equal(normalizeCondition("phase == decode"), 'phase == "decode"');
  assert.equal(normalizeCondition("token >= 3 and phase != prefill"), 'token >= 3 and phase != "prefill"');
  assert.equal(normalizeCondition('phase == "decode"'), 'phase == "decode"');
  assert.equal(normalizeCondition("  "), undefined);
});

test("launch attributes: defaults and types", () => {
  const c = parseLaunch({ type: "djinn", request: "launch", name: "x", model: "tiny-40l", __sessionId: "abc" });
  assert.equal(c.sessions, 1);
  assert.equal(c.maxNewTokens, 8);
  assert.equal(c.device, "auto");
  assert.equal(c.stopOnEntry, false);
  assert.deepEqual(c.prompts, [{ text: "Hello, Djinn." }]);
  const d = parseLaunch({ model: "tiny-40l", prompt: ["a", [1, 2, 3]], sessions: 4, breakpoints: [10, "layers.20.mlp"], vramBudgetGb: "auto:0.5" });
  assert.deepEqual(d.prompts, [{ text: "a" }, { tokens: [1, 2, 3] }]);
  assert.equal(d.sessions, 4);
  assert.deepEqual(d.breakpoints, [10, "layers.20.mlp"]);
  assert.equal(d.vramBudgetGb, "auto:0.5");
  assert.equal(parseLaunch({ server: "gpu-host:5556" }).model, undefined);
});

// ------------------------------------------------------------------ runtime ordering


function info(id: number, state: SessionState, layer = 0, tokenIndex = 0): SessionInfo {
  return {
    id, label: "", state, position: { layer, point: StopPoint.STOP_POINT_LAYER, phase: tokenIndex ? 2 : 1, tokenIndex, inputPos: 0, numTokens: 4 },
    stopReason: StopReason.STOP_REASON_BREAKPOINT, hitBreakpointIds: [1], kvLocation: 2, kvBytes: 0, context: 8, promptTokens: [1, 2, 3, 4],
    generatedTokens: [], generatedText: "", maxNewTokens: 2, lastSwapOutMs: 0, lastSwapInMs: 0, swapOuts: 0, swapIns: 0, error: "", createdAt: 0, prompt: "",
    owner: "", leaseExpiresAt: 0,
  };
}

function event(kind: EventKind, s: SessionInfo, seq: number): Event {
  return { seq, time: 0, kind, sessionId: s.id, session: s, stopReason: s.stopReason, bytes: 0, ms: 0, gbps: 0, token: 0, text: "" };
}

test("runtime: a stop that arrives before CreateSession's answer is replayed once the session is known", () => {
  const rt = new DjinnRuntime() as any;
  rt.mode = "launch";
  rt.early = new Map();
  const stops: number[] = [];
  rt.on("stopped", (e: { sessionId: number }) => stops.push(e.sessionId));
  rt.onEvent(event(EventKind.EVENT_KIND_CREATED, info(5, SessionState.SESSION_STATE_RUNNING), 1));
  rt.onEvent(event(EventKind.EVENT_KIND_STOPPED, info(5, SessionState.SESSION_STATE_PAUSED, 3), 2));
  assert.deepEqual(stops, []);
  rt.track(info(5, SessionState.SESSION_STATE_RUNNING), true); // CreateSession's (older) answer
  assert.deepEqual(stops, [5]);
  assert.equal(rt.get(5).info.state, SessionState.SESSION_STATE_PAUSED);
  assert.equal(rt.get(5).info.position.layer, 3);
  // the same stop again (a reconciliation, a replay) is not a second stop
  rt.onEvent(event(EventKind.EVENT_KIND_STOPPED, info(5, SessionState.SESSION_STATE_PAUSED, 3), 3));
  assert.deepEqual(stops, [5]);
});

test("runtime: continue's answer, its RESUMED and the next STOPPED may come in any order", async () => {
  for (const order of ["answer first", "events first"] as const) {
    const rt = new DjinnRuntime() as any;
    rt.mode = "launch";
    const s1 = info(7, SessionState.SESSION_STATE_PAUSED, 3);
    rt.track(s1, true);
    const seen: string[] = [];
    rt.on("stopped", () => seen.push("stopped"));
    rt.on("resumed", (e: { byUs: boolean }) => seen.push(`resumed(${e.byUs ? "us" : "other"})`));
    const resumed = event(EventKind.EVENT_KIND_RESUMED, info(7, SessionState.SESSION_STATE_RUNNING, 3), 10);
    const next = event(EventKind.EVENT_KIND_STOPPED, info(7, SessionState.SESSION_STATE_PAUSED, 4), 11);
    rt.client = {
      continue: async () => {
        if (order === "events first") {
          rt.onEvent(resumed);
          rt.onEvent(next);
        }
        return info(7, SessionState.SESSION_STATE_RUNNING, 3);
      },
    };
    await rt.continue(7);
    if (order === "answer first") {
      assert.equal(rt.get(7).info.state, SessionState.SESSION_STATE_RUNNING);
      rt.onEvent(resumed);
      rt.onEvent(next);
    }
    assert.deepEqual(seen, ["resumed(us)", "stopped"], order);
    assert.equal(rt.get(7).info.state, SessionState.SESSION_STATE_PAUSED, order);
    assert.equal(rt.get(7).info.position.layer, 4, order);
  }
});

test("runtime: after LAGGED, ListSessions is the truth: stops, resumes, ends and (attach) new sessions; older events are skipped", async () => {
  const rt = new DjinnRuntime() as any;
  rt.mode = "attach";
  const log: string[] = [];
  rt.on("stopped", (e: { sessionId: number }) => log.push(`stopped ${e.sessionId}`));
  rt.on("resumed", (e: { sessionId: number; byUs: boolean }) => log.push(`resumed ${e.sessionId}${e.byUs ? " by us" : ""}`));
  rt.on("sessionEnded", (e: { sessionId: number }) => log.push(`ended ${e.sessionId}`));
  rt.on("sessionStarted", (e: { sessionId: number }) => log.push(`started ${e.sessionId}`));
  rt.track(info(1, SessionState.SESSION_STATE_PAUSED, 3), false); // moved on meanwhile: paused at 7
  rt.track(info(2, SessionState.SESSION_STATE_PAUSED, 3), false); // was continued: running now
  rt.track(info(3, SessionState.SESSION_STATE_RUNNING), false); // closed meanwhile: not listed
  rt.track(info(4, SessionState.SESSION_STATE_PAUSED, 5), false); // unchanged
  log.length = 0;
  rt.client = {
    getInfo: async () => ({ eventSeq: 90, modules: [] }),
    listSessions: async () => [
      info(1, SessionState.SESSION_STATE_PAUSED, 7),
      info(2, SessionState.SESSION_STATE_RUNNING),
      info(4, SessionState.SESSION_STATE_PAUSED, 5),
      info(6, SessionState.SESSION_STATE_PAUSED, 2), // created by another window of the user
    ],
    setBreakpoints: async () => ({ breakpoints: [] }),
  };
  await rt.resync(false);
  assert.deepEqual(log, ["stopped 1", "resumed 2", "ended 3", "started 6", "stopped 6"]);
  assert.equal(rt.sessions.get(1).info.position.layer, 7);
  assert.equal(rt.ignoreUpTo, 90);
  // a replayed event the list already reflects is skipped; a newer one applies
  log.length = 0;
  rt.onEvent(event(EventKind.EVENT_KIND_STOPPED, info(2, SessionState.SESSION_STATE_PAUSED, 1), 85));
  assert.deepEqual(log, []);
  rt.onEvent(event(EventKind.EVENT_KIND_STOPPED, info(2, SessionState.SESSION_STATE_PAUSED, 9), 91));
  assert.deepEqual(log, ["stopped 2"]);
  // a new server process: every thread of the old one ends
  log.length = 0;
  rt.client.listSessions = async () => [info(1, SessionState.SESSION_STATE_PAUSED, 7)];
  await rt.resync(true);
  const after = log as string[];
  assert.ok(["ended 1", "ended 2", "ended 4", "ended 6"].every((x) => after.includes(x)), after.join(", "));
});

test("runtime: DEVICE_FAILED is said loudly once and ends every session with the server's message", () => {
  const rt = new DjinnRuntime() as any;
  rt.mode = "launch";
  const logs: Array<{ text: string; category: string }> = [];
  const ended: Array<{ sessionId: number; state: SessionState; text: string }> = [];
  const all: Array<{ why?: string }> = [];
  rt.on("log", (l: { text: string; category: string }) => logs.push(l));
  rt.on("sessionEnded", (e: { sessionId: number; state: SessionState; text: string }) => ended.push(e));
  rt.on("allEnded", (e: { why?: string }) => all.push(e));
  rt.track(info(1, SessionState.SESSION_STATE_PAUSED, 3), true);
  rt.track(info(2, SessionState.SESSION_STATE_RUNNING), true);
  const failed: Event = { seq: 10, time: 0, kind: EventKind.EVENT_KIND_DEVICE_FAILED, sessionId: 0, stopReason: 0, bytes: 0, ms: 0, gbps: 0, token: 0, text: "CUDA error: device-side assert triggered; 2 session(s) failed" };
  rt.onEvent(failed);
  rt.onEvent({ ...failed, seq: 11 });
  assert.equal(logs.filter((l) => l.category === "important").length, 1);
  assert.match(logs[0].text, /CUDA error: device-side assert/);
  assert.deepEqual(ended.map((e) => [e.sessionId, e.state]), [[1, SessionState.SESSION_STATE_FAILED], [2, SessionState.SESSION_STATE_FAILED]]);
  assert.match(ended[0].text, /device-side assert/);
  assert.equal(all.length, 1);
  assert.match(all[0].why ?? "", /device failed: CUDA error/);
});
