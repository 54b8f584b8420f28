// The adapter through a network hiccup (a TCP proxy that drops every connection, as a dead
// SSH tunnel would), against a real CPU server: a short outage keeps the debug session and
// what happened meanwhile arrives through since_seq; a long one (past reconnectGraceSeconds)
// reports the server lost; a local server that exits is lost at once.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { SessionState, type DjinnClient, type LocalServer } from "../../client";
import { FlakyProxy, newClient, promptTokens, start, stop, testServer, topFrame, waitFor, type DC } from "./helpers";

let server: LocalServer;
let client: DjinnClient;
const open: DC[] = [];
const proxies: FlakyProxy[] = [];

before(async () => {
  ({ server, client } = await testServer());
});

after(async () => {
  for (const dc of open) await stop(dc);
  for (const p of proxies) await p.stop();
  client?.close();
  await server?.stop();
});

async function adapter() {
  const a = await newClient();
  open.push(a.dc);
  return a;
}

async function proxy(): Promise<FlakyProxy> {
  const p = await new FlakyProxy(server.address).start();
  proxies.push(p);
  return p;
}

const outputs = (all: DebugProtocol.Event[]) => all.filter((e) => e.event === "output").map((e) => String((e as DebugProtocol.OutputEvent).body.output));

test("a hiccup shorter than the grace time: the thread stays, and what happened meanwhile arrives", async () => {
  const p = await proxy();
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: p.address, prompt: [promptTokens(71)], maxNewTokens: 3, breakpoints: [2], reconnectGraceSeconds: 30 });
  const tid = (await ev.stopped()).body.threadId;
  assert.match((await topFrame(dc, tid)).name, /^layers\.2/);
  p.cut();
  await waitFor("the adapter noticed", () => outputs(ev.all).some((o) => /event stream .* failed .*reconnecting/.test(o)), 20_000);
  // Meanwhile someone else (a direct connection) continues it: it stops at layer 2 of the next pass.
  await client.continue(tid);
  await waitFor("paused again", async () => {
    const s = await client.getSession(tid);
    return s.state === SessionState.SESSION_STATE_PAUSED && s.position?.tokenIndex === 1;
  });
  p.restore();
  await ev.next<DebugProtocol.ContinuedEvent>("continued", (e) => e.body.threadId === tid, 20_000);
  await ev.stopped(tid, 20_000);
  assert.match((await topFrame(dc, tid)).name, /^layers\.2/);
  const st = await dc.stackTraceRequest({ threadId: tid });
  assert.ok(st.body.stackFrames.some((f) => /decode of token 1/.test(f.name)), st.body.stackFrames.map((f) => f.name).join(" | "));
  assert.ok(outputs(ev.all).some((o) => /reconnected to /.test(o)));
  assert.equal(ev.count("terminated"), 0);
  // and it is driven as before
  await dc.continueRequest({ threadId: tid, singleThread: true });
  await ev.stopped(tid);
  await dc.disconnectRequest({});
  await assert.rejects(client.getSession(tid), /NOT_FOUND/, "a launch's disconnect closes its session");
});

test("an outage longer than reconnectGraceSeconds: the server is reported lost and the debug session ends", async () => {
  const p = await proxy();
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: p.address, prompt: [promptTokens(72)], maxNewTokens: 3, breakpoints: [2], reconnectGraceSeconds: 1.5 });
  const tid = (await ev.stopped()).body.threadId;
  const t0 = Date.now();
  p.cut();
  await ev.next("terminated", () => true, 20_000);
  const waited = Date.now() - t0;
  assert.ok(waited >= 1400, `lost after ${waited} ms, before the grace time`);
  assert.ok(outputs(ev.all).some((o) => /has not answered for/.test(o)), outputs(ev.all).join(""));
  await stop(dc);
  // the session is still on the server (nobody could close it): clean up
  assert.equal((await client.getSession(tid)).state, SessionState.SESSION_STATE_PAUSED);
  await client.closeSession(tid);
});

test("a local server that exits is lost at once, without waiting for the grace time", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { model: "tiny-4l", device: "cpu", prompt: [promptTokens(73, 8, 290)], maxNewTokens: 2, breakpoints: [1], reconnectGraceSeconds: 60 });
  await ev.stopped();
  const info = (await dc.customRequest("djinn/serverInfo")).body as { pid: number; local: boolean };
  assert.ok(info.local && info.pid > 0);
  const t0 = Date.now();
  process.kill(info.pid, "SIGKILL");
  await ev.next("terminated", () => true, 20_000);
  assert.ok(Date.now() - t0 < 10_000);
  assert.ok(outputs(ev.all).some((o) => /local Djinn server exited/.test(o)));
});
