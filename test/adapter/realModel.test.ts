// Every debugger feature of issue 11 (parts 1 to 3) through the adapter over stdio against one
// CPU server of a real model, smollm2-135m (SmolLM2-135M-Instruct: 30 layers, dim 576, a real
// tokenizer): the logit lens naming real words, logpoints, completions, cancel, restart, Continue
// All / Pause All, singleThread, step out, the frames' scopes, breakpointLocations, data
// breakpoints, step back / reverse continue / restart frame, and a gutter breakpoint of another
// model's outline. Skipped (with the reason) where the set-up could not install the model.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test, type TestContext } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { SessionState } from "../../client";
import { generateOutline } from "../../debug-adapter/outline";
import { adapterPid, newClient, nextSeq, scopeRef, sharedServer, smollm2Missing, start, stop, topFrame, variable, waitFor, type DC, type Recorder } from "./helpers";

const shared = sharedServer([], "smollm2-135m", smollm2Missing);
const tmp = mkdtempSync(join(tmpdir(), "djinn-real-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const PARIS = "The capital of France is";
type Output = DebugProtocol.OutputEvent & { body: { data?: { sessionId?: number; breakpointId?: number; generated?: string } } };

/** An adapter on the shared server, or undefined (the test is skipped) when the model is missing. */
async function adapter(t: TestContext): Promise<{ dc: DC; ev: Recorder } | undefined> {
  if (shared.missing) {
    t.skip(shared.missing);
    return undefined;
  }
  return shared.adapter();
}

const where = async (dc: DC, tid: number) => (await topFrame(dc, tid)).name;
const frames = async (dc: DC, tid: number) => (await dc.stackTraceRequest({ threadId: tid })).body.stackFrames;
const vars = async (dc: DC, ref: number) => (await dc.variablesRequest({ variablesReference: ref })).body.variables;

/** The logit lens of a frame: [word, p] of its rows "#k \"word\"". */
async function lens(dc: DC, frameId: number): Promise<Array<[string, number]>> {
  const rows = await vars(dc, await scopeRef(dc, frameId, "Logit lens"));
  return rows.filter((v) => v.name.startsWith("#")).map((v) => [JSON.parse(v.name.replace(/^#\d+ /, "")), Number(/p=(\S+)/.exec(v.value)![1])]);
}

async function stoppedAll(ev: Recorder, n: number): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < n; i++) ids.push((await ev.stopped()).body.threadId);
  return ids.sort((a, b) => a - b);
}

test("the logit lens names real words: at the last layer of 'The capital of France is' ' Paris' is among its first three, and greedy decoding then emits it", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 1 }, { functionBreakpoints: [{ name: "layers.29" }, { name: "layers.3" }] });
  const tid = (await ev.stopped()).body.threadId;
  assert.match(await where(dc, tid), /^layers\.3 · input/);
  const early = await lens(dc, (await topFrame(dc, tid)).id);
  assert.equal(early.length, 10);
  await dc.continueRequest({ threadId: tid });
  await ev.stopped(tid);
  assert.match(await where(dc, tid), /^layers\.29 · input/);
  const fs = await frames(dc, tid);
  // lm_head(norm(hidden)) of layer 29's input (the residual before its attention and MLP)
  const top = await lens(dc, fs[0].id);
  const words = top.map(([w]) => w);
  assert.ok(words.slice(0, 3).includes(" Paris"), JSON.stringify(top));
  assert.ok(words.includes(" capital") || words.includes(" the"), "the other candidates are words too");
  assert.notDeepEqual(early.map(([w]) => w), words, "layer 3 thinks something else");
  // the pass frame has the lens too; the same numbers
  const pass = fs.find((f) => /^prefill/.test(f.name))!;
  assert.deepEqual(await lens(dc, pass.id), top);
  await dc.continueRequest({ threadId: tid });
  await ev.next("terminated");
  const generated = (ev.all as Output[]).filter((e) => e.event === "output" && typeof e.body.data?.generated === "string" && e.body.data.sessionId === tid);
  assert.match(generated.at(-1)?.body.data?.generated ?? "", /^ Paris/);
});

test("logpoints: a line per pass formatted on the server with real words in it, conditions and hit counts; never a stop", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  const outline = join(tmp, "logpoints.djinn");
  writeFileSync(outline, ["# logpoints on smollm2", "layers.3", "layers.29.mlp"].join("\n"));
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 3 }, {
    sourceBreakpoints: { path: outline, lines: [2, 3], logMessages: ["L{layer} t={token} |h|={norm(hidden)}", "t={token} top={topk(logits[-1], 1)}"], conditions: [undefined, "token >= 1"], hitConditions: [undefined, ">= 2"] },
  });
  const [every, counted] = cfg.source!.body.breakpoints;
  await ev.next("terminated");
  assert.equal(ev.count("stopped"), 0);
  const lines = (ev.all as Output[]).filter((e) => e.event === "output" && e.body.data?.breakpointId !== undefined);
  const of = (id: number) => lines.filter((e) => e.body.data!.breakpointId === id).map((e) => e.body.output);
  assert.deepEqual(of(every.id!).map((l) => /^L3 t=(\d) \|h\|=\d/.exec(l)?.[1]), ["0", "1", "2"], of(every.id!).join(""));
  assert.equal(of(counted.id!).length, 1, "token >= 1 holds twice, >= 2 from the second time: once");
  assert.match(of(counted.id!)[0], /^t=2 top=/);
  assert.equal(lines.find((e) => e.body.data!.breakpointId === counted.id)!.body.line, 3);
});

test("completions at a stop: smollm2's tensors with their shapes (dim 576, 9 heads), functions, $N, modules of 30 layers", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 1 }, { functionBreakpoints: [{ name: "layers.2.attn" }] });
  const tid = (await ev.stopped()).body.threadId;
  const frameId = (await topFrame(dc, tid)).id;
  const complete = async (text: string, column: number) => (await dc.completionsRequest({ text, column, frameId })).body.targets;
  const hid = await complete("norm(hid", 9);
  assert.deepEqual(hid.map((x) => x.label), ["hidden"]);
  assert.match(hid[0].detail ?? "", /^f32\[\d+, 576\]/);
  assert.ok((await complete("top", 4)).some((x) => x.label === "topk" && x.type === "function" && /^topk\(/.test(x.detail ?? "")));
  await dc.evaluateRequest({ expression: "hidden[-1] * 2", frameId, context: "repl" });
  assert.ok((await complete("$", 2)).some((x) => x.label === "$1" && /^f32\[576\]/.test(x.detail ?? "")));
  const mods = (await complete("layers.2", 9)).map((x) => x.label).sort();
  assert.deepEqual(mods, ["layers.2", ...Array.from({ length: 10 }, (_, i) => `layers.2${i}`)].sort());
  assert.deepEqual((await complete("layers.3", 9)).map((x) => x.label).sort(), ["layers.3"], "no layers.30: the model has 30 layers");
});

test("cancel: an Evaluate by its request seq answers 'cancelled'; the next one works", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 1 }, { functionBreakpoints: [{ name: "layers.8" }] });
  const tid = (await ev.stopped()).body.threadId;
  const frameId = (await topFrame(dc, tid)).id;
  const seq = nextSeq(dc);
  const evaluate = dc.evaluateRequest({ expression: "topk(logits[-1], 5)", frameId, context: "repl" });
  const cancel = dc.customRequest("cancel", { requestId: seq });
  await assert.rejects(evaluate, (e: Error) => (assert.equal(e.message, "cancelled"), true));
  await cancel;
  assert.equal((await dc.evaluateRequest({ expression: "layer", frameId, context: "repl" })).body.result, "8");
});

test("cancel a launch of smollm2-135m through its model-load progress: 'cancelled', the local server it started is stopped", async (t) => {
  if (shared.missing) return t.skip(shared.missing);
  await shared.release();
  const { dc, ev } = await newClient();
  try {
    await dc.initializeRequest({ adapterID: "djinn", linesStartAt1: true, columnsStartAt1: true, pathFormat: "path", supportsProgressReporting: true });
    await ev.next("initialized");
    const launched = dc.launchRequest({ model: "smollm2-135m", device: "cpu", maxNewTokens: 1 } as DebugProtocol.LaunchRequestArguments);
    await dc.configurationDoneRequest();
    const ps = await ev.next<DebugProtocol.ProgressStartEvent>("progressStart", (e) => /Starting Djinn/.test(e.body.title));
    assert.equal(ps.body.cancellable, true);
    await dc.customRequest("cancel", { progressId: ps.body.progressId });
    await assert.rejects(launched, (e: Error) => (assert.equal(e.message, "cancelled"), true));
    await ev.next("terminated");
    const pid = adapterPid(dc);
    const { execFileSync } = await import("node:child_process");
    const children = () => {
      try {
        return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).split("\n").filter(Boolean);
      } catch {
        return [];
      }
    };
    await waitFor("the local server to be stopped", () => children().length === 0, 60_000, 200);
  } finally {
    await stop(dc);
  }
});

test("restart: this launch's sessions are closed and created again on the same server; the new ones stop at the restart's breakpoints", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  const args = { type: "djinn", request: "launch", name: "r", server: shared.server.address, prompt: [PARIS, "Once upon a time"], maxNewTokens: 2, breakpoints: [4] };
  await start(dc, ev, "launch", args);
  const first = await stoppedAll(ev, 2);
  await dc.customRequest("restart", { arguments: { ...args, maxNewTokens: 3, breakpoints: [25] } });
  const second = await stoppedAll(ev, 2);
  for (const id of second) assert.ok(!first.includes(id), `new session ${id}`);
  for (const id of first) await ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === id);
  assert.match(await where(dc, second[0]), /^layers\.25 · input/);
  assert.equal((await shared.client.getSession(second[1])).maxNewTokens, 3);
  for (const id of first) assert.equal(await shared.client.getSession(id).then((s) => s.state, () => SessionState.SESSION_STATE_CLOSED), SessionState.SESSION_STATE_CLOSED);
  assert.equal(ev.count("terminated"), 0);
});

test("Continue All / Pause All over three sessions; the logit lens after Continue All is the new stop's, the old scope is refused", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS, "Once upon a time", "1, 2, 3,"], maxNewTokens: 200 }, { functionBreakpoints: [{ name: "layers.29" }] });
  const ids = await stoppedAll(ev, 3);
  const f0 = (await topFrame(dc, ids[0])).id;
  const lensRef = await scopeRef(dc, f0, "Logit lens");
  const before = await lens(dc, f0);
  assert.ok(before.slice(0, 3).some(([w]) => w === " Paris"), JSON.stringify(before));
  assert.deepEqual((await dc.customRequest("pauseAll")).body, { threads: 0 });
  assert.deepEqual((await dc.customRequest("continueAll")).body, { threads: 3 });
  assert.deepEqual(await stoppedAll(ev, 3), ids);
  // the scope of the previous stop is refused, never answered from the new stop; the new frame's lens is the decode pass's
  await assert.rejects(dc.variablesRequest({ variablesReference: lensRef }), /stale/);
  const f1 = await topFrame(dc, ids[0]);
  assert.notEqual(f1.id, f0);
  const head = (await vars(dc, await scopeRef(dc, f1.id, "Logit lens")))[0];
  const pos = (await shared.client.getSession(ids[0])).position!;
  assert.equal(pos.tokenIndex, 1);
  assert.match(head.value, new RegExp(`\\(position ${pos.inputPos}\\)$`));
  assert.notDeepEqual(await lens(dc, f1.id), before, "after ' Paris' the model predicts something else");

  await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
  assert.deepEqual((await dc.customRequest("continueAll")).body, { threads: 3 });
  await waitFor("all running", async () => (await Promise.all(ids.map((id) => shared.client.getSession(id)))).every((s) => s.state === SessionState.SESSION_STATE_RUNNING), 10_000, 5);
  assert.deepEqual((await dc.customRequest("pauseAll")).body, { threads: 3 });
  const paused = [await ev.stopped(), await ev.stopped(), await ev.stopped()];
  assert.deepEqual(paused.map((e) => e.body.reason), ["pause", "pause", "pause"]);
  for (const id of ids) assert.equal((await shared.client.getSession(id)).state, SessionState.SESSION_STATE_PAUSED);
});

test("singleThread: a continue with it moves only that thread; without it both go on", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS, "Once upon a time"], maxNewTokens: 3 }, { functionBreakpoints: [{ name: "layers.5" }] });
  const [x, y] = await stoppedAll(ev, 2);
  const one = await dc.continueRequest({ threadId: x, singleThread: true });
  assert.equal(one.body.allThreadsContinued, false);
  await ev.stopped(x);
  assert.equal((await shared.client.getSession(x)).position?.tokenIndex, 1);
  assert.equal((await shared.client.getSession(y)).position?.tokenIndex, 0, "y stayed in its prefill");
  const both = await dc.continueRequest({ threadId: x });
  assert.equal(both.body.allThreadsContinued, true);
  assert.deepEqual(await stoppedAll(ev, 2), [x, y]);
  assert.equal((await shared.client.getSession(y)).position?.tokenIndex, 1);
  await dc.nextRequest({ threadId: x, singleThread: true });
  await ev.stopped(x);
  assert.match(await where(dc, x), /^layers\.6 · input/);
  assert.match(await where(dc, y), /^layers\.5 · input/);
});

test("step out: from layers.N.attn to the end of the layer, from a layer point to the end of the pass (layers.0 of the next)", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 2 }, { functionBreakpoints: [{ name: "layers.28.attn" }] });
  const tid = (await ev.stopped()).body.threadId;
  await dc.stepOutRequest({ threadId: tid });
  assert.equal((await ev.stopped(tid)).body.reason, "step");
  assert.match(await where(dc, tid), /^layers\.29 · input/);
  await dc.stepOutRequest({ threadId: tid });
  await ev.stopped(tid);
  const names = (await frames(dc, tid)).map((f) => f.name);
  assert.match(names[0], /^layers\.0 · input/);
  assert.match(names.join(" | "), /decode of token 1/);
});

test("frames: the layer frame has layer 10's tensors, the pass frame its tokens, logits and lens, the session frame its prompt and memory", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 1 }, { functionBreakpoints: [{ name: "layers.10.attn" }], clientID: "vscode" });
  const tid = (await ev.stopped()).body.threadId;
  const [mod, layer, pass, session] = await frames(dc, tid);
  const scopes = async (f: DebugProtocol.StackFrame) => (await dc.scopesRequest({ frameId: f.id })).body.scopes;
  assert.deepEqual((await scopes(mod)).map((s) => s.name), ["Activations", "KV cache", "Session", "Logit lens"]);
  const ls = await scopes(layer);
  assert.deepEqual(ls.map((s) => s.name), ["Layer 10", "KV cache"]);
  const lv = (await vars(dc, ls[0].variablesReference)).map((v) => v.name);
  for (const n of ["hidden", "attn_out", "q", "k", "v"]) assert.ok(lv.includes(n), `${n} in ${lv}`);
  assert.ok(!lv.includes("logits"));
  const ps = await scopes(pass);
  assert.deepEqual(ps.map((s) => s.name), ["Pass", "Logit lens"]);
  const pv = await vars(dc, ps[0].variablesReference);
  assert.match(pv.find((v) => v.name === "progress")!.value, /^layer 10 after attention of 30$/);
  assert.match(pv.find((v) => v.name === "tokens")!.value, /^i64\[\d+\]/);
  const ss = await scopes(session);
  const sv = await vars(dc, ss[0].variablesReference);
  assert.equal(sv.find((v) => v.name === "prompt")!.value, JSON.stringify(PARIS));
  const q = await variable(dc, ls[0].variablesReference, "q");
  assert.match(q.value, /^f32\[\d+, 576\]|^f32\[9, \d+, 64\]|^f32\[\d+, 9, 64\]/, "9 query heads of 64");
});

test("breakpointLocations and a breakpoint moved off a comment line in a smollm2 outline; layers.30 does not exist", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  const outline = join(tmp, "hand.djinn");
  // 1 comment, 2 blank, 3 layers.12.mlp, 4 layers.30, 5 norm
  writeFileSync(outline, ["# where I look", "", "layers.12.mlp", "layers.30", "norm"].join("\n"));
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 1 }, { sourceBreakpoints: { path: outline, lines: [1, 4] } });
  const [moved, absent] = cfg.source!.body.breakpoints;
  assert.equal(moved.line, 3);
  const loc = (line: number, endLine?: number) => dc.customRequest("breakpointLocations", { source: { path: outline }, line, endLine }) as Promise<DebugProtocol.BreakpointLocationsResponse>;
  assert.deepEqual((await loc(1, 5)).body.breakpoints, [{ line: 3 }], "layers.30 and norm are no stop points of a 30-layer model");
  const s = await ev.stopped();
  assert.deepEqual(s.body.hitBreakpointIds, [moved.id]);
  assert.equal((await topFrame(dc, s.body.threadId)).line, 3);
  const refused = ev.all.find((e) => e.event === "breakpoint" && (e as DebugProtocol.BreakpointEvent).body.breakpoint.id === absent.id) as DebugProtocol.BreakpointEvent | undefined;
  const message = refused?.body.breakpoint.message ?? absent.message ?? "";
  assert.match(message, /layer 30 does not exist: the model has layers 0\.\.29/);
});

test("a gutter breakpoint of tiny-40l's outline does not stop a smollm2 session (and says why); one of smollm2's outline does", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  const model = (n: string, layers: number) => ({ name: n, nLayers: layers, dim: 128, dtype: "float32", device: "cpu" });
  const modules = (layers: number) => Array.from({ length: layers }, (_, i) => ({ name: `layers.${i}`, kind: "layer", layer: i, numParams: 1 }));
  const tiny = join(tmp, "tiny-40l.djinn");
  const smol = join(tmp, "smollm2-135m.djinn");
  writeFileSync(tiny, generateOutline(model("tiny-40l", 40), modules(40)));
  writeFileSync(smol, generateOutline(model("smollm2-135m", 30), modules(30)));
  const lineOf = (layer: number) => 5 + layer; // 4 header lines, then layers.0
  await dc.initializeRequest({ adapterID: "djinn", clientID: "djinn-tests", linesStartAt1: true, columnsStartAt1: true, pathFormat: "path" });
  await ev.next("initialized");
  const launched = dc.launchRequest({ server: shared.server.address, prompt: [PARIS], maxNewTokens: 1 } as DebugProtocol.LaunchRequestArguments);
  const other = (await dc.setBreakpointsRequest({ source: { path: tiny }, breakpoints: [{ line: lineOf(3) }] })).body.breakpoints[0];
  const mine = (await dc.setBreakpointsRequest({ source: { path: smol }, breakpoints: [{ line: lineOf(7) }] })).body.breakpoints[0];
  await dc.configurationDoneRequest();
  await launched;
  const s = await ev.stopped();
  assert.deepEqual(s.body.hitBreakpointIds, [mine.id]);
  assert.match(await where(dc, s.body.threadId), /^layers\.7 · input/, "not layers.3: that breakpoint is tiny-40l's");
  const refused = await ev.next<DebugProtocol.BreakpointEvent>("breakpoint", (e) => e.body.breakpoint.id === other.id && !e.body.breakpoint.verified && /tiny-40l/.test(e.body.breakpoint.message ?? ""));
  assert.match(refused.body.breakpoint.message!, /^this outline is tiny-40l's; this debug session runs smollm2-135m/);
  // set again now that the model is known: refused at once
  const again = (await dc.setBreakpointsRequest({ source: { path: tiny }, breakpoints: [{ line: lineOf(9) }] })).body.breakpoints[0];
  assert.equal(again.verified, false);
  assert.match(again.message ?? "", /applies to sessions of tiny-40l only/);
  await dc.continueRequest({ threadId: s.body.threadId });
  await ev.next("terminated");
  assert.equal(ev.count("stopped"), 1);
});

test("data breakpoints on smollm2: stop where max(abs(hidden)) first passes a bound at a real layer", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 1, stopOnEntry: true });
  const tid = (await ev.stopped()).body.threadId;
  const set = await dc.setDataBreakpointsRequest({ breakpoints: [{ dataId: "hidden", accessType: "write", condition: "layer >= 6 and max(abs(hidden)) > 0" }] });
  assert.equal(set.body.breakpoints[0].verified, true);
  await dc.continueRequest({ threadId: tid });
  const hit = await ev.stopped(tid);
  assert.equal(hit.body.reason, "data breakpoint");
  assert.deepEqual(hit.body.hitBreakpointIds, [set.body.breakpoints[0].id]);
  assert.match(await where(dc, tid), /^layers\.6 · input/);
});

test("time travel on smollm2: step back, reverse continue past a breakpoint whose condition was false, an edit, restart frame undoes it, the text ' Paris'", async (t) => {
  const a = await adapter(t);
  if (!a) return;
  const { dc, ev } = a;
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [PARIS], maxNewTokens: 3, timeTravel: true }, {
    functionBreakpoints: [{ name: "layers.10" }, { name: "layers.15", condition: "norm(hidden) < 0" }, { name: "layers.20" }],
  });
  const tid = (await ev.stopped()).body.threadId;
  const norm = async () => (await dc.evaluateRequest({ expression: "norm(hidden)", frameId: (await topFrame(dc, tid)).id })).body.result;
  const at10 = await norm();
  await dc.stepInRequest({ threadId: tid });
  await ev.stopped(tid);
  await dc.stepBackRequest({ threadId: tid });
  assert.match((await ev.stopped(tid)).body.description ?? "", /^Stepped back to layers\.10/);
  assert.equal(await norm(), at10);
  await dc.continueRequest({ threadId: tid });
  await ev.stopped(tid);
  assert.match(await where(dc, tid), /^layers\.20 · input/, "layers.15's condition is false");
  const before = await norm();
  await dc.reverseContinueRequest({ threadId: tid });
  const back = await ev.stopped(tid);
  assert.match(await where(dc, tid), /^layers\.10 · input/, "past layers.15: it did not fire going forward");
  assert.equal(back.body.reason, "breakpoint");
  const setv = await dc.customRequest("setExpression", { expression: "hidden", value: "hidden * 0.5", frameId: (await topFrame(dc, tid)).id });
  assert.ok(setv.success);
  await dc.continueRequest({ threadId: tid });
  await ev.stopped(tid);
  assert.notEqual(await norm(), before, "the edit at layers.10 changes layers.20");
  const pass = (await frames(dc, tid)).find((f) => f.canRestart)!;
  await dc.restartFrameRequest({ frameId: pass.id });
  assert.equal((await ev.stopped(tid)).body.reason, "restart");
  await dc.continueRequest({ threadId: tid });
  await ev.stopped(tid);
  await dc.continueRequest({ threadId: tid });
  await ev.stopped(tid);
  assert.equal(await norm(), before, "restarting the pass undid the edit");
  await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
  await dc.continueRequest({ threadId: tid });
  await ev.next("thread", (e: DebugProtocol.ThreadEvent) => e.body.reason === "exited" && e.body.threadId === tid, 120_000);
  const text = (ev.all as Output[]).filter((e) => e.event === "output" && e.body.data?.sessionId === tid && typeof e.body.data.generated === "string").at(-1)?.body.data?.generated;
  assert.match(text ?? "", /Paris/);
});
