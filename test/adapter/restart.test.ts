// Restart and cancel, through the adapter over stdio: restart keeps the local server it started
// (same process, model loaded once) and creates this launch's sessions again; cancel answers a
// long request with "cancelled" (a launch while its model loads, through its progress; an
// Evaluate; a page of a tensor) and leaves the adapter working.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { DjinnClient, SessionState } from "../../client";
import { adapterPid, newClient, nextSeq, promptTokens, sharedServer, start, stop, topFrame, waitFor } from "./helpers";

const shared = sharedServer();

function children(pid: number): number[] {
  try {
    return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
  } catch {
    return []; // pgrep exits 1 when there is none
  }
}

test("restart keeps the local server and its model: this launch's sessions are closed and created again", async () => {
  const { dc, ev } = await newClient();
  try {
    const init = await dc.initializeRequest({ adapterID: "djinn", linesStartAt1: true, columnsStartAt1: true, pathFormat: "path", supportsProgressReporting: true });
    assert.equal(init.body?.supportsRestartRequest, true);
    await ev.next("initialized");
    const args = { type: "djinn", request: "launch", name: "r", model: "tiny-40l", device: "cpu", prompt: [promptTokens(101), promptTokens(102)], maxNewTokens: 2, breakpoints: [4] };
    const launched = dc.launchRequest(args as DebugProtocol.LaunchRequestArguments);
    await dc.configurationDoneRequest();
    await launched;
    const first = [(await ev.stopped()).body.threadId, (await ev.stopped()).body.threadId].sort((a, b) => a - b);
    const before = (await dc.customRequest("djinn/serverInfo")).body;
    const loads = ev.count("progressStart");

    // restart with the configuration VS Code sends again (maxNewTokens and breakpoints changed: they only shape the sessions)
    await dc.customRequest("restart", { arguments: { ...args, maxNewTokens: 3, breakpoints: [5] } });
    const after = (await dc.customRequest("djinn/serverInfo")).body;
    assert.equal(after.pid, before.pid, "the same server process");
    assert.equal(after.address, before.address);
    assert.equal(ev.count("progressStart"), loads, "no second model load");
    const second = [(await ev.stopped()).body.threadId, (await ev.stopped()).body.threadId].sort((a, b) => a - b);
    assert.equal(second.length, 2);
    for (const id of second) assert.ok(!first.includes(id), `new session ${id}`);
    assert.deepEqual(after.sessions, second);
    for (const id of first) await ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === id);
    assert.match((await topFrame(dc, second[0])).name, /^layers\.5 · input/, "the launch's breakpoints, as the restart gave them, hold in the new sessions");
    const client = new DjinnClient(after.address);
    try {
      for (const id of first) {
        const state = await client.getSession(id).then((s) => s.state, () => SessionState.SESSION_STATE_CLOSED);
        assert.equal(state, SessionState.SESSION_STATE_CLOSED);
      }
      assert.equal((await client.getSession(second[0])).maxNewTokens, 3);
    } finally {
      client.close();
    }
    assert.equal(ev.count("terminated"), 0, "the debug session goes on");

    // a change that needs another server or model is refused, naming the attribute
    await assert.rejects(dc.customRequest("restart", { arguments: { ...args, model: "tiny-4l" } }), /launch attribute 'model' changed/);
    await dc.terminateRequest({});
    await ev.next("terminated");
  } finally {
    await stop(dc);
  }
});

test("cancel a launch through its model-load progress: 'cancelled', the debug session ends, the local server is stopped", async () => {
  const { dc, ev } = await newClient();
  try {
    const init = await dc.initializeRequest({ adapterID: "djinn", linesStartAt1: true, columnsStartAt1: true, pathFormat: "path", supportsProgressReporting: true });
    assert.equal(init.body?.supportsCancelRequest, true);
    await ev.next("initialized");
    const launched = dc.launchRequest({ model: "tiny-40l", device: "cpu", maxNewTokens: 1 } as DebugProtocol.LaunchRequestArguments);
    await dc.configurationDoneRequest();
    const ps = await ev.next<DebugProtocol.ProgressStartEvent>("progressStart", (e) => /Starting Djinn/.test(e.body.title));
    assert.equal(ps.body.cancellable, true);
    await dc.customRequest("cancel", { progressId: ps.body.progressId });
    await assert.rejects(launched, (e: Error) => (assert.equal(e.message, "cancelled"), true));
    await ev.next("terminated");
    const pid = adapterPid(dc);
    await waitFor("the local server to be stopped", () => children(pid).length === 0, 60_000, 200);
  } finally {
    await stop(dc);
  }
});

test("cancel an Evaluate and a tensor page by their request seq: each answers 'cancelled'; later requests work", async () => {
  const { dc, ev } = await shared.adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(103)], maxNewTokens: 1, breakpoints: [8] });
  const tid = (await ev.stopped()).body.threadId;
  const f = await topFrame(dc, tid);

  // sent and cancelled at once: the cancel is read before the server answers
  const seq = nextSeq(dc);
  const evaluate = dc.evaluateRequest({ expression: "topk(logits[-1], 5)", frameId: f.id, context: "repl" });
  const cancel = dc.customRequest("cancel", { requestId: seq });
  await assert.rejects(evaluate, (e: Error) => (assert.equal(e.message, "cancelled"), true));
  await cancel;

  const acts = (await dc.scopesRequest({ frameId: f.id })).body.scopes[0].variablesReference;
  const hidden = (await dc.variablesRequest({ variablesReference: acts })).body.variables.find((v) => v.name === "hidden")!;
  const pageSeq = nextSeq(dc);
  const page = dc.variablesRequest({ variablesReference: hidden.variablesReference, start: 0, count: 12 });
  void dc.customRequest("cancel", { requestId: pageSeq });
  await assert.rejects(page, /cancelled/);

  // nothing is left broken: the same requests answer; cancelling a finished request does nothing
  const ok = await dc.evaluateRequest({ expression: "layer", frameId: f.id, context: "repl" });
  assert.equal(ok.body.result, "8");
  await dc.customRequest("cancel", { requestId: pageSeq });
  assert.equal((await dc.variablesRequest({ variablesReference: hidden.variablesReference, start: 0, count: 2 })).body.variables.length, 2);
});

test("cancel an attach that waits for a server: 'cancelled' at once, the debug session ends", async () => {
  const { dc, ev } = await newClient();
  try {
    await dc.initializeRequest({ adapterID: "djinn", linesStartAt1: true, columnsStartAt1: true, pathFormat: "path" });
    await ev.next("initialized");
    const seq = nextSeq(dc);
    const t0 = Date.now();
    const attached = dc.attachRequest({ server: "127.0.0.1:1" } as DebugProtocol.AttachRequestArguments); // nothing listens there
    await dc.customRequest("cancel", { requestId: seq });
    await assert.rejects(attached, (e: Error) => (assert.equal(e.message, "cancelled"), true));
    assert.ok(Date.now() - t0 < 2500, "before the connect timeout (3 s in the tests)");
    await ev.next("terminated");
  } finally {
    await stop(dc);
  }
});
