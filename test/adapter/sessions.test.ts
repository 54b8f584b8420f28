// The adapter over stdio against one shared CPU server (tiny-40l, eager swap policy: every
// stop swaps the session's KV to the host pool, so every tensor read brings it back).
// Each test launches (or attaches) its own adapter with `server`.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { SessionState } from "../../client";
import { decode } from "../../debug-adapter/variables";
import { DjinnDebugSession } from "../../debug-adapter/session";
import {
  close,
  parseSummary,
  readMemory,
  setExpression,
  promptTokens,
  scopeRef,
  start,
  topFrame,
  variable,
  waitFor,
  type Stopped,
  sharedEagerServer,
  threadNames,
} from "./helpers";

const shared = sharedEagerServer();
const adapter = shared.adapter;

async function sample() {
  const stream = shared.client.telemetry({ intervalMs: 20 });
  const s = await new Promise<import("../../client").TelemetrySample>((resolve) => stream.once("sample", resolve));
  stream.cancel();
  return s;
}

test("8 sessions are 8 threads; one is continued while the other seven stay paused", async () => {
  const { dc, ev } = await adapter();
  const prompts = Array.from({ length: 8 }, (_, i) => promptTokens(10 + i));
  await start(dc, ev, "launch", { server: shared.server.address, prompt: prompts, maxNewTokens: 3, breakpoints: [3] });
  const stops: Stopped[] = [];
  for (let i = 0; i < 8; i++) stops.push(await ev.stopped());
  const ids = stops.map((s) => s.body.threadId).sort((a, b) => a - b);
  assert.equal(new Set(ids).size, 8);
  for (const s of stops) {
    assert.equal(s.body.allThreadsStopped, false);
    assert.equal(s.body.reason, "breakpoint");
  }
  const names = await threadNames(dc);
  assert.deepEqual([...names.keys()].sort((a, b) => a - b), ids);
  for (const [id, name] of names) assert.match(name, new RegExp(`^s${id} · L3 · (host|dev|→host) · \\[12 tokens\\] \\(prompt \\d\\)$`));
  // eager swap policy: each paused session's KV goes to the host, and the thread name says so
  await waitFor("KV on host in every name", async () => [...(await threadNames(dc)).values()].every((n) => / · L3 · host · /.test(n)));

  const chosen = ids[3];
  const r = await dc.continueRequest({ threadId: chosen, singleThread: true });
  assert.equal(r.body.allThreadsContinued, false);
  const again = await ev.stopped(chosen);
  assert.equal(again.body.reason, "breakpoint");
  const st = await dc.stackTraceRequest({ threadId: chosen });
  assert.match(st.body.stackFrames.map((f) => f.name).join(" | "), /decode of token 1/);
  for (const id of ids.filter((x) => x !== chosen)) {
    const info = await shared.client.getSession(id);
    assert.equal(info.state, SessionState.SESSION_STATE_PAUSED);
    assert.equal(info.position?.tokenIndex, 0, `session ${id} stayed in its prefill`);
    assert.equal(info.generatedTokens.length, 0);
    const frames = await dc.stackTraceRequest({ threadId: id });
    assert.match(frames.body.stackFrames[1].name, /^prefill/);
  }
  assert.equal(ev.count("stopped"), 9);
  // terminateThreads closes one session on the server; its thread exits
  const gone = ids[0];
  const exited = ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === gone);
  await dc.customRequest("terminateThreads", { threadIds: [gone] });
  await exited;
  await assert.rejects(shared.client.getSession(gone), /NOT_FOUND/);
  assert.equal((await dc.threadsRequest()).body.threads.length, 7);
});

test("stack, scopes and tensor summaries match the server; paging a slice; readMemory; swap-in progress", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(3, 20)], maxNewTokens: 2 }, { functionBreakpoints: [{ name: "layers.10.attn" }] });
  const stop1 = await ev.stopped();
  const tid = stop1.body.threadId;
  assert.equal(stop1.body.reason, "function breakpoint");

  const st = await dc.stackTraceRequest({ threadId: tid });
  const frames = st.body.stackFrames;
  assert.deepEqual(frames.map((f) => f.name), [
    "layers.10.attn · attention output",
    "layers.10",
    "prefill · 20 tokens at positions 0..19",
    `session ${tid}`,
  ]);
  // every frame points at its line of the outline (a virtual source when there is no file)
  const ref = frames[0].source!.sourceReference!;
  assert.ok(ref > 0);
  const text = (await dc.sourceRequest({ source: frames[0].source, sourceReference: ref })).body.content.split("\n");
  assert.equal(text[frames[0].line - 1].trim().split(/\s+/)[0], "layers.10.attn");
  assert.equal(text[frames[1].line - 1].trim().split(/\s+/)[0], "layers.10");
  assert.equal(text[frames[2].line - 1].trim().split(/\s+/)[0], "embed_tokens");
  assert.equal(frames[3].line, 1);

  const scopes = await dc.scopesRequest({ frameId: frames[0].id });
  assert.deepEqual(scopes.body.scopes.map((s) => s.name), ["Activations", "KV cache", "Session", "Logit lens"]);

  // The session was swapped out at the stop (eager): reading it brings it back, with progress.
  await waitFor("KV on host", async () => / · host( · |$)/.test((await threadNames(dc)).get(tid) ?? ""));
  const kvRef = scopes.body.scopes[1].variablesReference;
  assert.match((await variable(dc, kvRef, "location")).value, /on host/);
  const acts = await dc.variablesRequest({ variablesReference: scopes.body.scopes[0].variablesReference });
  const ps = await ev.next<DebugProtocol.ProgressStartEvent>("progressStart", (e) => e.body.title === `Bringing session ${tid} back to the device`);
  await ev.next<DebugProtocol.ProgressEndEvent>("progressEnd", (e) => e.body.progressId === ps.body.progressId);
  const names = acts.body.variables.map((v) => v.name);
  for (const n of ["hidden", "attn_out", "q", "k", "v", "k_cache", "v_cache", "logits", "tokens"]) assert.ok(names.includes(n), `${n} in ${names}`);

  // The summary line is the server's own line (format_summary_line, which adds inf=0) ...
  const hiddenVar = acts.body.variables.find((x) => x.name === "hidden")!;
  const serverLine = (await shared.client.evaluate({ sessionId: tid, expression: "hidden + 0" })).value;
  assert.equal(`${hiddenVar.value} inf=0`, serverLine);
  // ... and each summary's numbers are the server's.
  for (const name of ["hidden", "attn_out", "q", "k_cache"]) {
    const v = acts.body.variables.find((x) => x.name === name)!;
    const mine = parseSummary(v.value);
    const theirs = await shared.client.getTensorSummary(tid, name);
    assert.equal(mine.dtype, "f32");
    assert.deepEqual(mine.shape, theirs.shape);
    assert.ok(close(mine.mean, theirs.mean) || Math.abs(mine.mean - theirs.mean) < 1e-6, `${name} mean ${mine.mean} vs ${theirs.mean}`);
    assert.ok(close(mine.std, theirs.std), `${name} std`);
    assert.ok(close(mine.min, theirs.min) && close(mine.max, theirs.max), `${name} min/max`);
    assert.ok(close(mine.norm, theirs.l2Norm), `${name} norm`);
    assert.equal(mine.nan, theirs.nanCount);
    assert.equal(v.indexedVariables, theirs.shape[0]);
    assert.equal(v.type, `float32[${theirs.shape.join(", ")}]`);
  }
  const attnOut = acts.body.variables.find((x) => x.name === "attn_out")!;
  assert.deepEqual(attnOut.presentationHint?.attributes, []); // writable at .attn
  assert.deepEqual(acts.body.variables.find((x) => x.name === "q")!.presentationHint?.attributes, ["readOnly"]);
  const logits = acts.body.variables.find((x) => x.name === "logits")!;
  assert.equal(logits.presentationHint?.lazy, true);
  const lz = await dc.variablesRequest({ variablesReference: logits.variablesReference });
  assert.equal(parseSummary(lz.body.variables[0].value).shape.join(","), `20,${512}`);

  // Paging: rows 5..7 of attn_out, then elements 10..13 of row 6: exactly what the server slices.
  const rows = await dc.variablesRequest({ variablesReference: attnOut.variablesReference, filter: "indexed", start: 5, count: 3 });
  assert.deepEqual(rows.body.variables.map((v) => v.name), ["[5]", "[6]", "[7]"]);
  const row6 = rows.body.variables[1];
  assert.equal(row6.evaluateName, "attn_out[6]");
  assert.equal(row6.indexedVariables, 128);
  const elems = await dc.variablesRequest({ variablesReference: row6.variablesReference, filter: "indexed", start: 10, count: 4 });
  assert.deepEqual(elems.body.variables.map((v) => v.name), ["[10]", "[11]", "[12]", "[13]"]);
  const truth = await shared.client.getTensor({ sessionId: tid, name: "attn_out", slice: [{ start: 6, stop: 7, step: 0 }, { start: 10, stop: 14, step: 0 }] });
  const want = decode(truth.data, truth.dtype);
  elems.body.variables.forEach((v, i) => assert.ok(close(Number(v.value), want[i], 1e-5), `${v.value} vs ${want[i]}`));
  assert.equal(elems.body.variables[2].evaluateName, "attn_out[6, 12]");
  // the preview of a row is its first values
  const first = Number(/\[([^,\]]+),/.exec(row6.value.replace(/^f32\[128\] /, ""))![1]);
  const row6Truth = decode((await shared.client.getTensor({ sessionId: tid, name: "attn_out", slice: [{ start: 6, stop: 7, step: 0 }, { start: 0, stop: 1, step: 0 }] })).data, "float32");
  assert.ok(close(first, row6Truth[0], 1e-5));

  // readMemory: raw float32 bytes of a region, byte-exact.
  const mem = await readMemory(dc, { memoryReference: row6.memoryReference!, offset: 40, count: 64 });
  const bytes = Buffer.from(mem.body!.data!, "base64");
  const rowBytes = (await shared.client.getTensor({ sessionId: tid, name: "attn_out", slice: [{ start: 6, stop: 7, step: 0 }] })).data;
  assert.deepEqual(bytes, rowBytes.subarray(40, 104));
  const whole = await readMemory(dc, { memoryReference: attnOut.memoryReference!, offset: 128 * 4 * 2 - 8, count: 24 });
  const all = (await shared.client.getTensor({ sessionId: tid, name: "attn_out" })).data;
  assert.deepEqual(Buffer.from(whole.body!.data!, "base64"), all.subarray(128 * 4 * 2 - 8, 128 * 4 * 2 + 16));

  // KV cache scope: bytes, resident now, last swap times; Session scope; Logit lens = the server's.
  const info = await shared.client.getSession(tid);
  assert.match((await variable(dc, kvRef, "bytes")).value, new RegExp(info.kvBytes.toLocaleString("en-US")));
  const kvs = (await dc.variablesRequest({ variablesReference: kvRef })).body.variables;
  assert.match(kvs.find((v) => v.name === "location")!.value, /resident/);
  assert.match(kvs.find((v) => v.name === "last swap out")!.value, /^\d+\.\d+ ms$/);
  assert.match(kvs.find((v) => v.name === "last swap in")!.value, /^\d+\.\d+ ms$/);
  const kc = kvs.find((v) => v.name === "k_cache")!;
  const kcv = await dc.variablesRequest({ variablesReference: kc.variablesReference });
  assert.deepEqual(parseSummary(kcv.body.variables[0].value).shape, (await shared.client.getTensorSummary(tid, "k_cache")).shape);
  const sess = (await dc.variablesRequest({ variablesReference: scopes.body.scopes[2].variablesReference })).body.variables;
  assert.match(sess.find((v) => v.name === "prompt tokens")!.value, /\(20\)$/);
  assert.match(sess.find((v) => v.name === "position")!.value, /prefill · positions 0\.\.19 · layer 10 after attention/);
  const lens = (await dc.variablesRequest({ variablesReference: scopes.body.scopes[3].variablesReference })).body.variables.slice(1);
  const top = await shared.client.logitLens({ sessionId: tid, topK: 10 });
  assert.equal(lens.length, 10);
  lens.forEach((v, i) => assert.match(v.value, new RegExp(`\\(token ${top.top[i].token}\\)$`)));

  // After a resume, references of the old stop are refused (the adapter lives on).
  await dc.continueRequest({ threadId: tid, singleThread: true });
  await ev.stopped(tid);
  await assert.rejects(dc.variablesRequest({ variablesReference: attnOut.variablesReference }), /stale/);
});

test("evaluate in the console, watch and hover (well under 500 ms); errors are the server's", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: "Hello Djinn", maxNewTokens: 2, breakpoints: ["layers.20.mlp"] });
  const s = await ev.stopped();
  const f = await topFrame(dc, s.body.threadId);
  const tid = s.body.threadId;

  const n = await dc.evaluateRequest({ expression: "norm(hidden)", frameId: f.id, context: "repl" });
  const theirs = await shared.client.evaluate({ sessionId: tid, expression: "norm(hidden)" });
  assert.equal(n.body.result, theirs.value);
  assert.equal(n.body.type, "number");
  const b = await dc.evaluateRequest({ expression: 'phase == "prefill" and layer == 20', frameId: f.id, context: "watch" });
  assert.equal(b.body.result, "true");
  const t = await dc.evaluateRequest({ expression: "mlp_out[-1, :16] * 2", frameId: f.id, context: "repl" });
  // 16 elements: the values themselves, as the server printed them
  assert.match(t.body.result, /^\$\d+ = f32\[16\] \[[^\]]+\]$/);
  assert.equal(t.body.indexedVariables, 16);
  const vals = await dc.variablesRequest({ variablesReference: t.body.variablesReference, filter: "indexed", start: 0, count: 16 });
  assert.equal(vals.body.variables.length, 16);
  const direct = decode((await shared.client.getTensor({ sessionId: tid, name: "mlp_out", slice: [{ start: -1, stop: 0, step: 0 }, { start: 0, stop: 16, step: 0 }] })).data, "float32");
  vals.body.variables.forEach((v, i) => assert.ok(close(Number(v.value), 2 * direct[i], 1e-5)));
  // without a frame: the last stopped session
  const noFrame = await dc.evaluateRequest({ expression: "session", context: "repl" });
  assert.equal(noFrame.body.result, String(tid));

  // hovers: a tensor name, and a module name (in the outline file)
  const times: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    const h = await dc.evaluateRequest({ expression: "hidden", frameId: f.id, context: "hover" });
    times.push(performance.now() - t0);
    assert.match(h.body.result, /^f32\[\d+, 128\] μ=/);
  }
  times.sort((a, b) => a - b);
  assert.ok(times[18] < 500, `hover p95 ${times[18].toFixed(1)} ms`);
  assert.ok(times[10] < 100, `hover p50 ${times[10].toFixed(1)} ms`);
  const mod = await dc.evaluateRequest({ expression: "layers.20.attn", frameId: f.id, context: "hover" });
  assert.match(mod.body.result, /^layers\.20\.attn · attention · [\d,]+ params · layer 20$/);

  await assert.rejects(dc.evaluateRequest({ expression: "hidden[1,,", frameId: f.id, context: "repl" }), /expression/);
  await assert.rejects(dc.evaluateRequest({ expression: "__import__('os')", frameId: f.id, context: "repl" }), /'__' are not allowed|not allowed/);
  await assert.rejects(dc.evaluateRequest({ expression: "nope + 1", frameId: f.id, context: "repl" }), /unknown name 'nope'/);
  // still alive
  assert.equal((await dc.evaluateRequest({ expression: "1 + 1", frameId: f.id, context: "repl" })).body.result, "2");
});

test("setVariable / setExpression write an activation and the generated tokens change", async () => {
  const { dc, ev } = await adapter();
  const p = promptTokens(7, 24);
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [p, p], maxNewTokens: 4 }, { functionBreakpoints: [{ name: "layers.20" }] });
  const a = (await ev.stopped()).body.threadId;
  const b = (await ev.stopped()).body.threadId;
  const [steered, plain] = [Math.min(a, b), Math.max(a, b)];
  const f = await topFrame(dc, steered);
  const acts = await scopeRef(dc, f.id, "Activations");
  const before = await variable(dc, acts, "hidden");
  const r = await dc.setVariableRequest({ variablesReference: acts, name: "hidden", value: "+= 3" });
  const mean = parseSummary(r.body.value).mean;
  assert.ok(close(mean, parseSummary(before.value).mean + 3, 1e-3), `${before.value} -> ${r.body.value}`);
  await ev.next("invalidated");
  // one element, through an expanded row (a fresh Activations read after the write)
  const acts2 = await scopeRef(dc, f.id, "Activations");
  const hidden = await variable(dc, acts2, "hidden");
  const row = (await dc.variablesRequest({ variablesReference: hidden.variablesReference, start: 2, count: 1 })).body.variables[0];
  const el = await dc.setVariableRequest({ variablesReference: row.variablesReference, name: "[5]", value: "1.5" });
  assert.equal(el.body.value, "1.5");
  const check = decode((await shared.client.getTensor({ sessionId: steered, name: "hidden", slice: [{ start: 2, stop: 3, step: 0 }, { start: 5, stop: 6, step: 0 }] })).data, "float32");
  assert.equal(check[0], 1.5);
  // setExpression on a region, and from an expression
  const se = await setExpression(dc, { expression: "hidden[-1, :8]", value: "0", frameId: f.id });
  assert.equal(se.body.value, "f32[1, 8] [[0, 0, 0, 0, 0, 0, 0, 0]]");
  const sx = await setExpression(dc, { expression: "hidden[0]", value: "hidden[1] * 2", frameId: f.id });
  assert.match(sx.body.value, /^f32\[1, 128\]/);
  const h01 = decode((await shared.client.getTensor({ sessionId: steered, name: "hidden", slice: [{ start: 0, stop: 2, step: 0 }] })).data, "float32");
  assert.ok(close(h01[3], 2 * h01[128 + 3], 1e-6));
  await assert.rejects(setExpression(dc, { expression: "q[0]", value: "1", frameId: f.id }), /read-only/);
  await assert.rejects(setExpression(dc, { expression: "hidden[0]", value: "hidden[0:3]", frameId: f.id }), /elements/);
  await assert.rejects(setExpression(dc, { expression: "norm(hidden)", value: "1", frameId: f.id }), /cannot assign/);

  // remove the breakpoint and run both to the end: the steered one says something else
  await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
  const ends = [steered, plain].map((id) => ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === id));
  for (const id of [steered, plain]) await dc.continueRequest({ threadId: id, singleThread: true });
  await Promise.all(ends);
  const sa = await shared.client.getSession(steered);
  const sb = await shared.client.getSession(plain);
  assert.equal(sa.generatedTokens.length, 4);
  assert.equal(sb.generatedTokens.length, 4);
  assert.notDeepEqual(sa.generatedTokens, sb.generatedTokens);
  await ev.next("terminated");
});

test("conditions and hit counts are evaluated on the server", async () => {
  const { dc, ev } = await adapter();
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(21), promptTokens(22)], maxNewTokens: 5, stopOnEntry: true }, {
    functionBreakpoints: [
      { name: "layers.4", condition: "token >= 2" },
      { name: "layers.6.attn", hitCondition: "3" },
      { name: "layers.8", condition: "norm(hidden) > 1e9" },
      { name: "layers.9", condition: "hidden[1,," },
    ],
  });
  const bad = await ev.next<DebugProtocol.BreakpointEvent>("breakpoint", (e) => e.body.breakpoint.id === cfg.functions!.body.breakpoints[3].id);
  assert.equal(bad.body.breakpoint.verified, false);
  assert.match(bad.body.breakpoint.message ?? "", /condition/);
  const e1 = await ev.stopped();
  const e2 = await ev.stopped();
  assert.equal(e1.body.reason, "entry");
  assert.equal(e2.body.reason, "entry");
  const [x, y] = [e1.body.threadId, e2.body.threadId].sort((a, b) => a - b);
  // add a per-session condition now that the ids are known, and `phase == decode` (unquoted)
  const fb = await dc.setFunctionBreakpointsRequest({
    breakpoints: [
      { name: "layers.4", condition: "token >= 2" },
      { name: "layers.6.attn", hitCondition: "3" },
      { name: "layers.8", condition: "norm(hidden) > 1e9" },
      { name: "layers.30.mlp", condition: `session == ${y} and phase == decode` },
      { name: "layers.35", condition: "token == 4 and norm(hidden) > 0.001" },
    ],
  });
  assert.ok(fb.body.breakpoints.every((b) => b.verified), JSON.stringify(fb.body.breakpoints));
  const [cond, hits, never, sess, stat] = fb.body.breakpoints.map((b) => b.id!);
  const where = async (id: number) => {
    const st = await dc.stackTraceRequest({ threadId: id });
    return st.body.stackFrames.map((f) => f.name).join(" | ");
  };
  // x: layers.4 when token >= 2 (decode pass 2), then the 3rd hit of layers.6.attn (same pass)
  await dc.continueRequest({ threadId: x, singleThread: true });
  let s = await ev.stopped(x);
  assert.deepEqual(s.body.hitBreakpointIds, [cond]);
  assert.match(await where(x), /^layers\.4 .*decode of token 2 /);
  await dc.continueRequest({ threadId: x, singleThread: true });
  s = await ev.stopped(x);
  assert.deepEqual(s.body.hitBreakpointIds, [hits]);
  assert.match(await where(x), /^layers\.6\.attn .*decode of token 2 /);
  // y: layers.30.mlp only for session y in a decode pass: its first decode pass, before the others
  await dc.continueRequest({ threadId: y, singleThread: true });
  s = await ev.stopped(y);
  assert.deepEqual(s.body.hitBreakpointIds, [sess]);
  assert.match(await where(y), /^layers\.30\.mlp .*decode of token 1 /);
  await dc.continueRequest({ threadId: y, singleThread: true });
  s = await ev.stopped(y);
  assert.deepEqual(s.body.hitBreakpointIds, [cond]);
  // x goes on to its end without stopping at layers.30.mlp (another session's condition) or layers.8
  const xEnd = ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === x);
  for (const token of [3, 4]) {
    await dc.continueRequest({ threadId: x, singleThread: true });
    s = await ev.stopped(x);
    assert.deepEqual(s.body.hitBreakpointIds, [cond]);
    assert.match(await where(x), new RegExp(`^layers\\.4 .*decode of token ${token} `));
  }
  // a comparison on a tensor statistic, evaluated on the server
  await dc.continueRequest({ threadId: x, singleThread: true });
  s = await ev.stopped(x);
  assert.deepEqual(s.body.hitBreakpointIds, [stat]);
  assert.match(await where(x), /^layers\.35 .*decode of token 4 /);
  await dc.continueRequest({ threadId: x, singleThread: true });
  await xEnd;
  assert.ok(!ev.all.some((e) => e.event === "stopped" && (e as DebugProtocol.StoppedEvent).body.hitBreakpointIds?.includes(never)));
});

test("exception filters: NaN (a NaN written by setExpression) and norm spike (a scaled residual) stop where activations go bad", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(5), promptTokens(6)], maxNewTokens: 3, breakpoints: [5] }, {
    exceptionFilters: ["nan"],
    filterOptions: [{ filterId: "normSpike", condition: "50" }],
  });
  const [a, b] = [(await ev.stopped()).body.threadId, (await ev.stopped()).body.threadId].sort((x, y) => x - y);
  // a: a NaN in the residual stream; the filter stops at the next sub-point, where it spreads
  let f = await topFrame(dc, a);
  await setExpression(dc, { expression: "hidden[0]", value: "nan", frameId: f.id });
  const acts = await scopeRef(dc, f.id, "Activations");
  assert.equal(parseSummary((await variable(dc, acts, "hidden")).value).nan, 128);
  await dc.continueRequest({ threadId: a, singleThread: true });
  const bad = await ev.stopped(a);
  assert.equal(bad.body.reason, "exception");
  assert.equal(bad.body.text, "NaN");
  assert.match(bad.body.description ?? "", /NaN value\(s\) at layers\.5\.attn/);
  const info = await dc.exceptionInfoRequest({ threadId: a });
  assert.equal(info.body.exceptionId, "nan");
  assert.equal(info.body.breakMode, "always");
  assert.match((await topFrame(dc, a)).name, /^layers\.5\.attn/);
  // b: the residual scaled by 1000 at layers.5: ||hidden|| grows > 50x into layers.6
  f = await topFrame(dc, b);
  await setExpression(dc, { expression: "hidden", value: "hidden * 1000", frameId: f.id });
  await dc.continueRequest({ threadId: b, singleThread: true });
  const spike = await ev.stopped(b);
  assert.equal(spike.body.reason, "exception");
  assert.equal(spike.body.text, "norm spike");
  assert.match(spike.body.description ?? "", /grew [\d.]+x into layers\.6/);
  assert.equal((await dc.exceptionInfoRequest({ threadId: b })).body.exceptionId, "normSpike");
});

test("step granularity: step in = next sub-point, next = next layer, step out = next token; pause a running session", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(9)], maxNewTokens: 300, contextTokens: 320, stopOnEntry: true });
  const e = await ev.stopped();
  assert.equal(e.body.reason, "entry");
  const tid = e.body.threadId;
  const at = async () => (await topFrame(dc, tid)).name;
  assert.match(await at(), /^layers\.0 · input/);
  const expect = [
    ["stepIn", /^layers\.0\.attn/],
    ["stepIn", /^layers\.0\.mlp/],
    ["stepIn", /^layers\.1 · input/],
    ["next", /^layers\.2 · input/],
    ["stepIn", /^layers\.2\.attn/],
    ["next", /^layers\.3 · input/],
  ] as const;
  for (const [kind, re] of expect) {
    if (kind === "stepIn") await dc.stepInRequest({ threadId: tid, singleThread: true });
    else await dc.nextRequest({ threadId: tid, singleThread: true });
    const s = await ev.stopped(tid);
    assert.equal(s.body.reason, "step");
    assert.match(await at(), re);
  }
  await dc.stepOutRequest({ threadId: tid, singleThread: true });
  await ev.stopped(tid);
  const st = await dc.stackTraceRequest({ threadId: tid });
  assert.match(st.body.stackFrames[0].name, /^layers\.0 · input/);
  assert.match(st.body.stackFrames[1].name, /^decode of token 1 at position 12/);
  // pause a running session: it stops wherever it is
  await dc.continueRequest({ threadId: tid, singleThread: true });
  await dc.pauseRequest({ threadId: tid });
  const p = await ev.stopped(tid);
  assert.equal(p.body.reason, "pause");
  assert.match(await at(), /^layers\.\d+/);
  const info = await shared.client.getSession(tid);
  assert.equal(info.state, SessionState.SESSION_STATE_PAUSED);
  assert.ok(info.generatedTokens.length < 300);
});

test("attach: sessions already on the server appear as threads; detaching leaves them", async () => {
  const pre = [
    await shared.client.createSession({ promptTokens: promptTokens(31), maxNewTokens: 3, breakpoints: [{ id: 900, layer: 2 }] }),
    await shared.client.createSession({ promptTokens: promptTokens(32), maxNewTokens: 3, breakpoints: [{ id: 901, layer: 2 }] }),
  ].map((s) => s.id);
  await waitFor("both paused", async () => (await Promise.all(pre.map((id) => shared.client.getSession(id)))).every((s) => s.state === SessionState.SESSION_STATE_PAUSED));
  const { dc, ev } = await adapter();
  await start(dc, ev, "attach", { server: shared.server.address });
  const stops = [await ev.stopped(), await ev.stopped()];
  assert.deepEqual(stops.map((s) => s.body.threadId).sort((a, b) => a - b), pre);
  assert.ok(stops.every((s) => s.body.reason === "breakpoint"));
  const names = await threadNames(dc);
  for (const id of pre) assert.match(names.get(id) ?? "", new RegExp(`^s${id} · L2 · `));
  assert.match((await topFrame(dc, pre[0])).name, /^layers\.2 · input/);
  // the adapter drives them: continue one; its own breakpoint (set by another client) stops it again
  await dc.continueRequest({ threadId: pre[0], singleThread: true });
  await ev.stopped(pre[0]);
  // a session created by someone else while attached appears as a thread
  const late = await shared.client.createSession({ promptTokens: promptTokens(33), maxNewTokens: 2, breakpoints: [{ id: 902, layer: 1 }] });
  await ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "started" && e.body.threadId === late.id);
  await ev.stopped(late.id);
  await dc.disconnectRequest({});
  for (const id of [...pre, late.id]) {
    const s = await shared.client.getSession(id);
    assert.equal(s.state, SessionState.SESSION_STATE_PAUSED, `session ${id} left as it was`);
    await shared.client.closeSession(id);
  }
});

test("terminate frees the server's memory: the launch's sessions are closed", async () => {
  const base = await sample();
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(41, 40), promptTokens(42, 40), promptTokens(43, 40)], maxNewTokens: 4, breakpoints: [2] });
  const ids = [(await ev.stopped()).body.threadId, (await ev.stopped()).body.threadId, (await ev.stopped()).body.threadId];
  const held = await sample();
  assert.ok(held.hostPoolUsedBytes > base.hostPoolUsedBytes, "the sessions reserve host pool memory");
  assert.ok(held.swappedKvBytes + held.residentKvBytes > base.swappedKvBytes + base.residentKvBytes);
  await dc.terminateRequest({});
  await ev.next("terminated");
  const freed = await sample();
  assert.equal(freed.hostPoolUsedBytes, base.hostPoolUsedBytes);
  assert.equal(freed.residentKvBytes, base.residentKvBytes);
  assert.equal(freed.swappedKvBytes, base.swappedKvBytes);
  for (const id of ids) await assert.rejects(shared.client.getSession(id), /NOT_FOUND/);
});

test("inline: the same session class runs in-process (as the extension host runs it), without stdio", async () => {
  await shared.release();
  const session = new DjinnDebugSession();
  const messages: DebugProtocol.ProtocolMessage[] = [];
  const waiters: Array<(m: DebugProtocol.ProtocolMessage) => boolean> = [];
  const sub = session.onDidSendMessage((m) => {
    const msg = m as DebugProtocol.ProtocolMessage;
    messages.push(msg);
    for (const w of [...waiters]) if (w(msg)) waiters.splice(waiters.indexOf(w), 1);
  });
  const until = (match: (m: any) => boolean) =>
    new Promise<any>((resolve, reject) => {
      const found = messages.find(match);
      if (found) return resolve(found);
      const t = setTimeout(() => reject(new Error("timed out")), 30_000);
      waiters.push((m) => (match(m) ? (clearTimeout(t), resolve(m), true) : false));
    });
  let seq = 1;
  const request = async (command: string, args?: object) => {
    const s = seq++;
    session.handleMessage({ type: "request", seq: s, command, arguments: args } as DebugProtocol.Request);
    const r = await until((m) => m.type === "response" && m.request_seq === s);
    if (!r.success) throw new Error(r.message);
    return r;
  };
  try {
    await request("initialize", { adapterID: "djinn", pathFormat: "path", linesStartAt1: true, columnsStartAt1: true });
    await until((m) => m.type === "event" && m.event === "initialized");
    await assert.rejects(request("launch", { model: 3 }), /'model' must be a string; got 3 \(a number\)/);
    await request("setFunctionBreakpoints", { breakpoints: [{ name: "layers.2" }] });
    await request("configurationDone");
    await request("launch", { server: shared.server.address, prompt: [promptTokens(51)], maxNewTokens: 2 });
    const stopped = await until((m) => m.type === "event" && m.event === "stopped");
    const st = await request("stackTrace", { threadId: stopped.body.threadId });
    assert.match(st.body.stackFrames[0].name, /^layers\.2 · input/);
    await request("disconnect", {});
    await assert.rejects(shared.client.getSession(stopped.body.threadId), /NOT_FOUND/);
  } finally {
    sub.dispose();
  }
});
