// Time travel inside a forward pass, through the adapter over stdio against one CPU tiny-40l
// server: stepBack to the previous stop point, reverseContinue to the previous breakpoint of the
// pass (its start when none), restartFrame on the pass frame (the only restartable frame); the
// tensors where it comes back are the bytes it had there, and the generated tokens are those of
// a session that never went back. Without `timeTravel` each is refused with what to set.
// The same on smollm2-135m: realModel.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { SessionState } from "../../client";
import { promptTokens, sharedServer, start, topFrame, waitFor, type DC } from "./helpers";

const shared = sharedServer();
const tokens = promptTokens(111);

const where = async (dc: DC, tid: number) => (await topFrame(dc, tid)).name;
const hidden = async (tid: number) => (await shared.client.getTensor({ sessionId: tid, name: "hidden" })).data;

/** The tokens a session with this prompt generates when nobody goes back (a session of the test's own client). */
async function reference(maxNewTokens: number): Promise<number[]> {
  const s = await shared.client.createSession({ promptTokens: tokens, maxNewTokens });
  const done = await waitFor("the reference session to finish", async () => {
    const i = await shared.client.getSession(s.id);
    return i.state === SessionState.SESSION_STATE_FINISHED ? i : undefined;
  }, 60_000);
  return done.generatedTokens;
}

test("stepBack, reverseContinue and restartFrame go back inside the pass; going on gives the same tokens", async () => {
  const want = await reference(2);
  const { dc, ev } = await shared.adapter();
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [tokens], maxNewTokens: 2, timeTravel: true }, {
    functionBreakpoints: [{ name: "layers.10" }, { name: "layers.20.attn" }],
  });
  assert.equal(cfg.capabilities?.supportsStepBack, true);
  assert.equal(cfg.capabilities?.supportsRestartFrame, true);
  const bpIds = cfg.functions!.body.breakpoints.map((b) => b.id!);
  const tid = (await ev.stopped()).body.threadId;
  assert.match(await where(dc, tid), /^layers\.10 · input/);
  const at10 = await hidden(tid);

  // step in twice, then back one stop point at a time: the same bytes as when it was there
  await dc.stepInRequest({ threadId: tid });
  await ev.stopped(tid);
  const at10attn = await hidden(tid);
  await dc.stepInRequest({ threadId: tid });
  assert.match(await (ev.stopped(tid).then(() => where(dc, tid))), /^layers\.10\.mlp/);
  await dc.stepBackRequest({ threadId: tid });
  let s = await ev.stopped(tid);
  assert.equal(s.body.reason, "step");
  assert.match(s.body.description ?? "", /^Stepped back to layers\.10\.attn/);
  assert.match(await where(dc, tid), /^layers\.10\.attn · attention output/);
  assert.ok((await hidden(tid)).equals(at10attn));
  await dc.stepBackRequest({ threadId: tid });
  await ev.stopped(tid);
  assert.match(await where(dc, tid), /^layers\.10 · input/);
  assert.ok((await hidden(tid)).equals(at10));

  // on to the next breakpoint and a layer further, then reverse continue: breakpoint by breakpoint
  await dc.continueRequest({ threadId: tid });
  await ev.stopped(tid);
  const at20attn = await hidden(tid);
  await dc.nextRequest({ threadId: tid });
  await ev.stopped(tid);
  assert.match(await where(dc, tid), /^layers\.21 · input/);
  await dc.reverseContinueRequest({ threadId: tid });
  s = await ev.stopped(tid);
  assert.equal(s.body.reason, "breakpoint");
  assert.deepEqual(s.body.hitBreakpointIds, [bpIds[1]]);
  assert.match(await where(dc, tid), /^layers\.20\.attn/);
  assert.ok((await hidden(tid)).equals(at20attn));
  await dc.reverseContinueRequest({ threadId: tid });
  s = await ev.stopped(tid);
  assert.deepEqual(s.body.hitBreakpointIds, [bpIds[0]]);
  assert.match(await where(dc, tid), /^layers\.10 · input/);

  // only the pass frame restarts
  const frames: DebugProtocol.StackFrame[] = (await dc.stackTraceRequest({ threadId: tid })).body.stackFrames;
  // the session frame says what the history holds
  const sessionScope = (await dc.scopesRequest({ frameId: frames[2].id })).body.scopes[0];
  const line = (await dc.variablesRequest({ variablesReference: sessionScope.variablesReference })).body.variables.find((v) => v.name === "time travel");
  assert.match(line?.value ?? "", /^31 stop points of this pass to go back to · \d+ kept \([\d.]+ KB, all on the device\) · cap 1\.1 GB$/);
  assert.deepEqual(frames.map((f) => f.canRestart), [false, true, false], frames.map((f) => f.name).join(" | "));
  await assert.rejects(dc.restartFrameRequest({ frameId: frames[0].id }), /only the pass frame/);
  await dc.restartFrameRequest({ frameId: frames[1].id });
  s = await ev.stopped(tid);
  assert.equal(s.body.reason, "restart");
  assert.match(await where(dc, tid), /^layers\.0 · input/);
  await assert.rejects(dc.stepBackRequest({ threadId: tid }), /start of the pass/);
  await assert.rejects(dc.reverseContinueRequest({ threadId: tid }), /start of the pass/);

  // going on from there: the breakpoints fire again, and the tokens are those of a run that never went back
  for (const bp of ["layers.10 ", "layers.20.attn", "layers.10 ", "layers.20.attn"]) {   // prefill, then decode 1
    await dc.continueRequest({ threadId: tid });
    assert.equal((await ev.stopped(tid)).body.reason, "function breakpoint");
    assert.ok((await where(dc, tid)).startsWith(bp), bp);
  }
  await dc.continueRequest({ threadId: tid });
  await ev.next("thread", (e: DebugProtocol.ThreadEvent) => e.body.reason === "exited" && e.body.threadId === tid);
  assert.deepEqual((await shared.client.getSession(tid)).generatedTokens, want);
});

test("without timeTravel, stepBack, reverseContinue and restartFrame say which launch attribute to set", async () => {
  const { dc, ev } = await shared.adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [tokens], maxNewTokens: 1 }, { functionBreakpoints: [{ name: "layers.3" }] });
  const tid = (await ev.stopped()).body.threadId;
  await assert.rejects(dc.stepBackRequest({ threadId: tid }), /keeps no history.*"timeTravel": true/);
  await assert.rejects(dc.reverseContinueRequest({ threadId: tid }), /keeps no history/);
  const frames = (await dc.stackTraceRequest({ threadId: tid })).body.stackFrames;
  assert.ok(frames.every((f) => f.canRestart === false));
  await assert.rejects(dc.restartFrameRequest({ frameId: frames[1].id }), /keeps no history/);
  assert.match(await where(dc, tid), /^layers\.3 · input/, "still where it was");
  await assert.rejects(dc.stepBackRequest({ threadId: 999 }), /no thread 999/);
});
