// Resuming threads, through the adapter over stdio against one CPU tiny-40l server: `singleThread`
// honoured on continue and steps (without it every paused thread of the debug session goes on,
// as js-debug and debugpy do), step out to the end of the layer from a sub-point and to the end
// of the pass from a layer point, and the custom requests continueAll / pauseAll.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { SessionState } from "../../client";
import { promptTokens, sharedServer, start, topFrame, waitFor, type DC, type Recorder } from "./helpers";

const shared = sharedServer();

async function twoStopped(dc: DC, ev: Recorder, breakpoints: DebugProtocol.FunctionBreakpoint[], n = 2, maxNewTokens = 3): Promise<number[]> {
  const prompt = Array.from({ length: n }, (_, i) => promptTokens(81 + i));
  await start(dc, ev, "launch", { server: shared.server.address, prompt, maxNewTokens }, { functionBreakpoints: breakpoints });
  const ids: number[] = [];
  for (let i = 0; i < n; i++) ids.push((await ev.stopped()).body.threadId);
  return ids.sort((a, b) => a - b);
}

const where = async (dc: DC, tid: number) => (await topFrame(dc, tid)).name;

test("singleThread: continue and steps move only that thread; without it every paused thread goes on", async () => {
  const { dc, ev } = await shared.adapter();
  const [a, b] = await twoStopped(dc, ev, [{ name: "layers.5" }], 2, 4);

  // singleThread: only a goes on; b stays where it is
  const one = await dc.continueRequest({ threadId: a, singleThread: true });
  assert.equal(one.body.allThreadsContinued, false);
  await ev.stopped(a);
  assert.match((await dc.stackTraceRequest({ threadId: a })).body.stackFrames.map((f) => f.name).join(" | "), /decode of token 1/);
  const bInfo = await shared.client.getSession(b);
  assert.equal(bInfo.state, SessionState.SESSION_STATE_PAUSED);
  assert.equal(bInfo.position?.tokenIndex, 0, "b is still in its prefill");

  // without singleThread: a and b both go on (and say so), each stops at its next layers.5
  const all = await dc.continueRequest({ threadId: a });
  assert.equal(all.body.allThreadsContinued, true);
  const stops = [await ev.stopped(), await ev.stopped()].map((s) => s.body.threadId).sort();
  assert.deepEqual(stops, [a, b]);
  assert.equal((await shared.client.getSession(b)).position?.tokenIndex, 1, "b ran its prefill to the end and stopped in decode 1");

  // a step with singleThread: b stays
  await dc.nextRequest({ threadId: a, singleThread: true });
  const s = await ev.stopped(a);
  assert.equal(s.body.reason, "step");
  assert.match(await where(dc, a), /^layers\.6 · input/);
  assert.equal((await shared.client.getSession(b)).position?.tokenIndex, 1);

  // a step without it: a steps, b continues to its next breakpoint; the client is told b continued
  const continuedBefore = ev.count("continued");
  await dc.nextRequest({ threadId: a });
  const next = [await ev.stopped(), await ev.stopped()];
  const byThread = new Map(next.map((e) => [e.body.threadId, e.body]));
  assert.equal(byThread.get(a)?.reason, "step");
  assert.equal(byThread.get(b)?.reason, "function breakpoint");
  assert.match(await where(dc, a), /^layers\.7 · input/);
  const continued = ev.all.filter((e) => e.event === "continued").slice(continuedBefore) as DebugProtocol.ContinuedEvent[];
  assert.ok(continued.some((e) => e.body.allThreadsContinued === true), "a continued event for the threads that went along");
  assert.equal((await shared.client.getSession(b)).position?.tokenIndex, 2);
});

test("step out: from layers.N.attn / .mlp to the end of the layer (before layers.N+1); from layers.N to the end of the pass", async () => {
  const { dc, ev } = await shared.adapter();
  const [t] = await twoStopped(dc, ev, [{ name: "layers.3.attn" }], 1, 2);
  assert.match(await where(dc, t), /^layers\.3\.attn/);
  await dc.stepOutRequest({ threadId: t });
  assert.equal((await ev.stopped(t)).body.reason, "step");
  const st = (await dc.stackTraceRequest({ threadId: t })).body.stackFrames.map((f) => f.name);
  assert.match(st[0], /^layers\.4 · input/);
  assert.match(st.join(" | "), /prefill/, "still the same pass");

  // from a layer point: to layer 0 of the next pass (the next token)
  await dc.stepOutRequest({ threadId: t });
  await ev.stopped(t);
  const st2 = (await dc.stackTraceRequest({ threadId: t })).body.stackFrames.map((f) => f.name);
  assert.match(st2[0], /^layers\.0 · input/);
  assert.match(st2.join(" | "), /decode of token 1/);

  // from an MLP output: the end of that layer
  await dc.stepInRequest({ threadId: t }); // layers.0.attn
  await ev.stopped(t);
  await dc.stepInRequest({ threadId: t }); // layers.0.mlp
  await ev.stopped(t);
  assert.match(await where(dc, t), /^layers\.0\.mlp/);
  await dc.stepOutRequest({ threadId: t });
  await ev.stopped(t);
  assert.match(await where(dc, t), /^layers\.1 · input/);
  assert.match((await dc.stackTraceRequest({ threadId: t })).body.stackFrames.map((f) => f.name).join(" | "), /decode of token 1/);
});

test("continueAll / pauseAll: every thread of the debug session, answered with how many", async () => {
  const { dc, ev } = await shared.adapter();
  const ids = await twoStopped(dc, ev, [{ name: "layers.2" }], 3, 200);
  assert.deepEqual((await dc.customRequest("pauseAll")).body, { threads: 0 }, "all paused already");

  // continueAll: all three go on (the client is told all continued), each stops at its next layers.2
  const continuedBefore = ev.count("continued");
  assert.deepEqual((await dc.customRequest("continueAll")).body, { threads: 3 });
  const again = [await ev.stopped(), await ev.stopped(), await ev.stopped()].map((e) => e.body.threadId).sort((x, y) => x - y);
  assert.deepEqual(again, ids);
  const continued = ev.all.filter((e) => e.event === "continued").slice(continuedBefore) as DebugProtocol.ContinuedEvent[];
  assert.ok(continued.some((e) => e.body.allThreadsContinued === true));

  // without breakpoints they would run to the end: pauseAll stops all three wherever they are
  await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
  assert.deepEqual((await dc.customRequest("continueAll")).body, { threads: 3 });
  await waitFor("all running", async () => (await Promise.all(ids.map((id) => shared.client.getSession(id)))).every((s) => s.state === SessionState.SESSION_STATE_RUNNING), 10_000, 5);
  assert.deepEqual((await dc.customRequest("pauseAll")).body, { threads: 3 });
  const paused = [await ev.stopped(), await ev.stopped(), await ev.stopped()];
  assert.deepEqual(paused.map((e) => e.body.reason), ["pause", "pause", "pause"]);
  assert.deepEqual(paused.map((e) => e.body.threadId).sort((x, y) => x - y), ids);
  for (const id of ids) assert.equal((await shared.client.getSession(id)).state, SessionState.SESSION_STATE_PAUSED);
  assert.deepEqual((await dc.customRequest("continueAll")).body, { threads: 3 });
});
