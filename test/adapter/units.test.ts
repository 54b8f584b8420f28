// Pure parts of the adapter, no server: value formatting (checked against Python's own
// '.4g'), dtype codecs, slice arithmetic, outline files, condition normalisation, attributes.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { EventKind, KvLocation, resolvePython, SessionState, StopPoint, StopReason, type Event, type SessionInfo } from "../../client";
import { DEFAULT_PROMPTS, parseLaunch, sessionLabel } from "../../debug-adapter/config";
import { generateOutline, moduleToStop, parseOutline } from "../../debug-adapter/outline";
import { DjinnRuntime } from "../../debug-adapter/runtime";
import { normalizeCondition } from "../../debug-adapter/breakpoints";
import { endLine, spillLine, swapLine, threadName, tokenLine } from "../../debug-adapter/lines";
import { offDevice } from "../../debug-adapter/runtime";
import { covering, decode, encode, fmtG, formatValues, kvLocationName, parseRegion, summaryLine, VariableStore, type TensorTarget } from "../../debug-adapter/variables";
import type { RtSession, TensorSummary } from "../../debug-adapter/runtime";

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
  const line = summaryLine({ name: "hidden", dtype: "bfloat16", shape: [1, 2048, 5120], min: -5.1, max: 6.3, mean: 0.0012, std: 1.02, l2Norm: 4100, nanCount: 0, infCount: 0, numel: 10485760, writable: true, description: "", computeMs: 0, values: [] });
  assert.equal(line, "bf16[1, 2048, 5120] μ=0.0012 σ=1.02 min=-5.1 max=6.3 ‖x‖=4100 nan=0");
  assert.match(summaryLine({ name: "x", dtype: "float32", shape: [2], min: 0, max: 1, mean: 0, std: 0, l2Norm: 0, nanCount: 1, infCount: 2, numel: 2, writable: false, description: "", computeMs: 0, values: [] }), /nan=1 inf=2$/);
});

function summ(dtype: string, shape: number[], values: number[] = []): TensorSummary {
  const numel = shape.reduce((a, b) => a * b, 1);
  return { name: "x", dtype, shape, min: NaN, max: NaN, mean: NaN, std: NaN, l2Norm: 0, nanCount: 0, infCount: 0, numel, writable: false, description: "", computeMs: 0, values };
}

test("small tensors print their values (nested like the shape, as the server does); empty tensors say 'empty'", () => {
  assert.equal(summaryLine(summ("float32", [5], [0.1, 0.2, -1.5, 1e-7, 123456789])), "f32[5] [0.1, 0.2, -1.5, 1e-07, 1.23457e+08]");
  assert.equal(summaryLine(summ("int64", [1], [457])), "i64[1] [457]");
  assert.equal(summaryLine(summ("int64", [3], [1, -2, 3])), "i64[3] [1, -2, 3]");
  assert.equal(summaryLine(summ("float32", [2, 2], [1, 0.5, NaN, -Infinity])), "f32[2, 2] [[1, 0.5], [nan, -inf]]");
  assert.equal(summaryLine(summ("bool", [2], [1, 0])), "bool[2] [true, false]");
  assert.equal(summaryLine(summ("float32", [], [2.5])), "f32[] 2.5");
  assert.equal(formatValues([1, 2, 3, 4, 5, 6], [1, 2, 3], "int32"), "[[[1, 2, 3], [4, 5, 6]]]");
  // no elements: never μ=nan σ=nan (the k_cache of the prefill)
  assert.equal(summaryLine(summ("float32", [2, 0, 32])), "f32[2, 0, 32] empty");
  // values that do not cover the tensor (an older server sends none) leave the statistics
  assert.match(summaryLine(summ("float32", [5], [1, 2])), /^f32\[5\] μ=nan σ=nan/);
});

test("thread names: state first (layer, KV place; running with tokens; done), then the prompt and label", () => {
  const s = (over: Partial<SessionInfo>): RtSession => ({ id: 3, info: { ...info(3, SessionState.SESSION_STATE_PAUSED, 10), ...over }, owned: true, epoch: 1, ended: false, gen: 0, lastEventAt: 0, expectResumes: 0 });
  assert.equal(threadName(s({ prompt: "The quick brown fox", label: "prompt 2", kvLocation: KvLocation.KV_LOCATION_HOST })), 's3 · L10 · host · "The quick brown fox" (prompt 2)');
  assert.equal(threadName(s({ kvLocation: KvLocation.KV_LOCATION_DEVICE })), "s3 · L10 · dev · [4 tokens]");
  assert.equal(threadName(s({ kvLocation: KvLocation.KV_LOCATION_MOVING_IN })), "s3 · L10 · →dev · [4 tokens]");
  const attn = s({ kvLocation: KvLocation.KV_LOCATION_DEVICE });
  attn.info.position = { ...attn.info.position!, point: StopPoint.STOP_POINT_ATTN };
  assert.equal(threadName(attn), "s3 · L10.attn · dev · [4 tokens]");
  assert.equal(threadName(s({ state: SessionState.SESSION_STATE_RUNNING, generatedTokens: [5, 6, 7], prompt: "a prompt that is longer than twenty-four characters" })), 's3 · running · 3 tok · "a prompt that is longer…"');
  assert.equal(threadName(s({ state: SessionState.SESSION_STATE_RUNNING })), "s3 · running · [4 tokens]");
  assert.equal(threadName(s({ state: SessionState.SESSION_STATE_FINISHED, label: "x" })), "s3 · done · [4 tokens] (x)");
});

test("console lines: short, with the session first", () => {
  assert.equal(tokenLine(1, 457, "<457>", 3, 4), 's1 token 3/4: "<457>" (id 457)');
  assert.equal(swapLine(2, "out", 1_640_000, 0.512), "s2 KV → host: 1.64 MB in 0.51 ms");
  assert.equal(swapLine(2, "in", 1_640_000, 0.5), "s2 KV → device: 1.64 MB in 0.50 ms");
  assert.equal(endLine(1, SessionState.SESSION_STATE_FINISHED, "", { generatedText: " the end", generatedTokens: [1, 2] }), 's1 finished: 2 tokens " the end"');
  assert.equal(endLine(1, SessionState.SESSION_STATE_FINISHED, "", { generatedText: "", generatedTokens: [1] }), "s1 finished: 1 token");
  assert.equal(endLine(4, SessionState.SESSION_STATE_FAILED, "boom"), "s4 failed: boom");
  assert.equal(endLine(5, SessionState.SESSION_STATE_CLOSED, "lease expired", { generatedText: "", generatedTokens: [] }), "s5 closed: lease expired");
  assert.equal(endLine(5, SessionState.SESSION_STATE_CLOSED, "abc", { generatedText: "abc", generatedTokens: [1] }), "s5 closed");
});

test("default prompts differ per session; labels tell prompts and copies apart", () => {
  assert.deepEqual(parseLaunch({ model: "tiny-40l", sessions: 4 }).prompts.map((p) => ("text" in p ? p.text : "")), DEFAULT_PROMPTS.slice(0, 4));
  assert.equal(new Set(DEFAULT_PROMPTS).size, DEFAULT_PROMPTS.length);
  assert.equal(parseLaunch({ model: "tiny-40l", sessions: 20 }).prompts.length, DEFAULT_PROMPTS.length);
  assert.deepEqual(parseLaunch({ model: "tiny-40l", prompt: "x", sessions: 3 }).prompts, [{ text: "x" }]);
  assert.equal(sessionLabel(0, 1, 1), "");
  assert.deepEqual([0, 1, 2, 3].map((i) => sessionLabel(i, 4, 4)), ["prompt 1", "prompt 2", "prompt 3", "prompt 4"]);
  assert.deepEqual([0, 1, 2].map((i) => sessionLabel(i, 3, 1)), ["prompt 1, copy 1", "prompt 1, copy 2", "prompt 1, copy 3"]);
  assert.deepEqual([0, 1, 2, 3].map((i) => sessionLabel(i, 4, 2)), ["prompt 1, copy 1", "prompt 2, copy 1", "prompt 1, copy 2", "prompt 2, copy 2"]);
});

test("VS Code's Set Value: writable multi-element tensors readOnly + djinnTensor; one-element tensors and other clients keep it; every tensor has a menu context", () => {
  const rt = { get: () => ({ epoch: 0 }), info: undefined } as unknown as DjinnRuntime;
  const store = new VariableStore(rt);
  const w = (shape: number[], writable = true) => ({ ...summ("float32", shape), name: "hidden", writable });
  const ctx = (v: object) => (v as { __vscodeVariableMenuContext?: string }).__vscodeVariableMenuContext;
  for (const vscode of [true, false]) {
    store.forVsCode = vscode;
    const big = store.tensorVariable(1, w([4, 128]), "hidden");
    assert.deepEqual(big.presentationHint?.attributes, vscode ? ["readOnly"] : []);
    assert.equal(ctx(big), vscode ? "djinnTensor" : "tensor");
    assert.equal(big.evaluateName, "hidden");
    const one = store.tensorVariable(1, w([1, 1]), "hidden");
    assert.deepEqual(one.presentationHint?.attributes, [], "a one-element tensor's value is a number");
    assert.equal(ctx(one), "tensor", "a tensor still: View Tensor");
    const ro = store.tensorVariable(1, w([4, 128], false), "q");
    assert.deepEqual(ro.presentationHint?.attributes, ["readOnly"]);
    assert.equal(ctx(ro), "tensor");
    const row: TensorTarget = { sessionId: 1, name: "hidden", prefix: [2], shape: [4, 1], dtype: "float32", writable: true };
    assert.deepEqual(store.tensorVariable(1, w([4, 1]), "hidden[2]", row).presentationHint?.attributes, []);
  }
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
  return { seq, time: 0, kind, sessionId: s.id, session: s, stopReason: s.stopReason, bytes: 0, ms: 0, gbps: 0, token: 0, text: "", breakpointId: 0 };
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
  const failed: Event = { seq: 10, time: 0, kind: EventKind.EVENT_KIND_DEVICE_FAILED, sessionId: 0, stopReason: 0, bytes: 0, ms: 0, gbps: 0, token: 0, breakpointId: 0, text: "CUDA error: device-side assert triggered; 2 session(s) failed" };
  rt.onEvent(failed);
  rt.onEvent({ ...failed, seq: 11 });
  assert.equal(logs.filter((l) => l.category === "important").length, 1);
  assert.match(logs[0].text, /CUDA error: device-side assert/);
  assert.deepEqual(ended.map((e) => [e.sessionId, e.state]), [[1, SessionState.SESSION_STATE_FAILED], [2, SessionState.SESSION_STATE_FAILED]]);
  assert.match(ended[0].text, /device-side assert/);
  assert.equal(all.length, 1);
  assert.match(all[0].why ?? "", /device failed: CUDA error/);
});

// ------------------------------------------------------------------ the disk tier

test("the disk tier: thread names, the Memory scope's location, console lines; a session on disk counts as swapped out", () => {
  const s = (kvLocation: KvLocation) => ({ id: 3, info: { ...info(3, SessionState.SESSION_STATE_PAUSED, 10), kvLocation } }) as unknown as RtSession;
  assert.equal(threadName(s(KvLocation.KV_LOCATION_DISK)), "s3 · L10 · disk · [4 tokens]");
  assert.equal(threadName(s(KvLocation.KV_LOCATION_MOVING_TO_DISK)), "s3 · L10 · →disk · [4 tokens]");
  assert.equal(threadName(s(KvLocation.KV_LOCATION_MOVING_FROM_DISK)), "s3 · L10 · disk→host · [4 tokens]");
  assert.equal(kvLocationName(KvLocation.KV_LOCATION_DISK), "on disk (spilled)");
  assert.equal(kvLocationName(KvLocation.KV_LOCATION_MOVING_TO_DISK), "moving to disk");
  assert.equal(kvLocationName(KvLocation.KV_LOCATION_MOVING_FROM_DISK), "moving from disk");
  assert.equal(kvLocationName(KvLocation.KV_LOCATION_HOST), "on host (swapped out)");
  assert.equal(spillLine(2, "to disk", 12_000_000, 3), "s2 KV host → disk: 12.00 MB in 3.00 ms (4.00 GB/s)");
  assert.equal(spillLine(2, "from disk", 12_000_000, 0), "s2 KV disk → host: 12.00 MB in 0.00 ms");
  const off = [KvLocation.KV_LOCATION_HOST, KvLocation.KV_LOCATION_MOVING_OUT, KvLocation.KV_LOCATION_DISK, KvLocation.KV_LOCATION_MOVING_TO_DISK, KvLocation.KV_LOCATION_MOVING_FROM_DISK];
  for (const k of off) assert.equal(offDevice(k), true, KvLocation[k]);
  for (const k of [KvLocation.KV_LOCATION_DEVICE, KvLocation.KV_LOCATION_MOVING_IN, KvLocation.KV_LOCATION_NONE]) assert.equal(offDevice(k), false, KvLocation[k]);
});

test("runtime: a SPILL event moves the session's location and says which way; looking at a spilled thread prefetches it", () => {
  const rt = new DjinnRuntime() as any;
  rt.mode = "launch";
  rt.track(info(9, SessionState.SESSION_STATE_PAUSED, 3), true);
  rt.get(9).stop = { reason: StopReason.STOP_REASON_BREAKPOINT, text: "", hitIds: [], time: 0 };
  const spills: Array<{ direction: string; bytes: number }> = [];
  rt.on("spill", (e: { direction: string; bytes: number }) => spills.push(e));
  const onDisk = { ...info(9, SessionState.SESSION_STATE_PAUSED, 3), kvLocation: KvLocation.KV_LOCATION_DISK };
  rt.onEvent({ ...event(EventKind.EVENT_KIND_SPILL, onDisk, 5), bytes: 4096, ms: 1, text: "to disk" });
  assert.deepEqual(spills.map((e) => [e.direction, e.bytes]), [["to disk", 4096]]);
  assert.equal(rt.get(9).info.kvLocation, KvLocation.KV_LOCATION_DISK);
  let prefetched = 0;
  rt.client = { prefetch: async () => void prefetched++ };
  rt.prefetch(9, () => undefined);
  assert.equal(prefetched, 1, "a thread on disk is brought back when looked at, as one on the host");
  rt.onEvent({ ...event(EventKind.EVENT_KIND_SPILL, { ...onDisk, kvLocation: KvLocation.KV_LOCATION_HOST }, 6), text: "from disk" });
  assert.equal(spills[1].direction, "from disk");
  assert.equal(rt.get(9).info.kvLocation, KvLocation.KV_LOCATION_HOST);
});

test("a gutter breakpoint of another model's outline is refused once the model is known (and at once after); a hand-written outline applies to any model", async () => {
  const { BreakpointStore } = await import("../../debug-adapter/breakpoints");
  const announced: Array<{ id?: number; verified: boolean; message?: string }> = [];
  const store = new BreakpointStore((bp) => announced.push(bp));
  const outline = (model?: string) => parseOutline([...(model ? [`# Djinn model outline · ${model} · 40 layers · dim 128 · float32 on cpu`] : []), "layers.3"].join("\n"));
  const [tiny] = store.setSource({ path: "/w/tiny-40l.djinn" }, outline("tiny-40l"), [{ line: 2 }]);
  const [hand] = store.setSource({ path: "/w/mine.djinn" }, outline(), [{ line: 1 }]);
  assert.ok(tiny.target && hand.target, "before the model is known: pending, as any breakpoint");
  store.modelKnown(30, "smollm2-135m");
  assert.equal(tiny.target, undefined);
  assert.match(tiny.message ?? "", /^this outline is tiny-40l's; this debug session runs smollm2-135m/);
  assert.ok(announced.some((b) => b.id === tiny.id && !b.verified), "a changed breakpoint event");
  assert.ok(hand.target, "no header: any model's");
  assert.deepEqual(store.union().map((b) => b.id), [hand.id]);
  const [again] = store.setSource({ path: "/w/tiny-40l.djinn" }, outline("tiny-40l"), [{ line: 2 }]);
  assert.equal(again.target, undefined);
  const [own] = store.setSource({ path: "/w/smol.djinn" }, outline("smollm2-135m"), [{ line: 2 }]);
  assert.ok(own.target, "its own model's outline applies");
});
