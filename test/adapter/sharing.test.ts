// Several adapters on one shared server (real CPU servers, users from a tokens file): each
// window's breakpoints are its own (even with colliding ids), detach and terminate touch only
// what that adapter owns, another user's adapter sees none of the first user's threads; a
// subscriber that lagged re-reads the sessions and the threads come back where they are; a
// device failure is said loudly and ends the threads.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { DjinnClient, SessionState, startLocalServer, type LocalServer } from "../../client";
import { FlakyProxy, newClient, promptTokens, start, stop, topFrame, waitFor, type DC, type Recorder, type Stopped } from "./helpers";

const ALICE = "alice-token-1";
const BOB = "bob-token-22";
let dir: string;
let server: LocalServer;
let alice: DjinnClient;
const open: DC[] = [];
const extra: Array<() => Promise<void>> = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "djinn-sharing-"));
  const tokens = join(dir, "tokens.txt");
  writeFileSync(tokens, `alice ${ALICE}\nbob ${BOB}\nroot root-token-333 admin\n`);
  server = await startLocalServer({ model: "tiny-40l", device: "cpu", startTimeoutMs: 180_000, extraArgs: ["--tokens-file", tokens] });
  alice = new DjinnClient(server.address, { token: ALICE });
  await alice.waitForReady(10_000);
});

after(async () => {
  for (const dc of open) await stop(dc);
  for (const f of extra) await f().catch(() => undefined);
  alice?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function adapter(): Promise<{ dc: DC; ev: Recorder }> {
  const a = await newClient();
  open.push(a.dc);
  return a;
}

const outputs = (ev: Recorder, category?: string) =>
  ev.all.filter((e) => e.event === "output" && (!category || (e as DebugProtocol.OutputEvent).body.category === category)).map((e) => String((e as DebugProtocol.OutputEvent).body.output));

async function layerOf(dc: DC, threadId: number): Promise<string> {
  return (await topFrame(dc, threadId)).name.split(" ")[0];
}

async function passOf(dc: DC, threadId: number): Promise<string> {
  const st = await dc.stackTraceRequest({ threadId });
  return st.body.stackFrames.find((f) => /prefill|decode/.test(f.name))?.name ?? "?";
}

test("two windows of one user on one session: each stops at its own breakpoints only, ids may collide, detach removes only its own", async () => {
  const A = await adapter();
  const cfgA = await start(A.dc, A.ev, "launch", { server: server.address, token: ALICE, prompt: [promptTokens(81)], maxNewTokens: 3 }, { functionBreakpoints: [{ name: "layers.3" }] });
  const idA = cfgA.functions!.body.breakpoints[0].id!;
  const t = (await A.ev.stopped()).body.threadId;
  assert.equal(await layerOf(A.dc, t), "layers.3");

  const B = await adapter();
  const cfgB = await start(B.dc, B.ev, "attach", { server: server.address, token: ALICE }, { functionBreakpoints: [{ name: "layers.7" }] });
  const idB = cfgB.functions!.body.breakpoints[0].id!;
  assert.equal(idA, idB, "both windows number their breakpoints from 1: the ids collide");
  await B.ev.stopped(t); // attach reports the paused session
  assert.deepEqual((await B.dc.threadsRequest()).body.threads.map((x) => x.id), [t]);

  // A continues: the session stops at B's breakpoint. B hit its own; for A it is another client's.
  await A.dc.continueRequest({ threadId: t, singleThread: true });
  const atB = await B.ev.stopped(t);
  const seenByA = await A.ev.stopped(t);
  assert.equal(await layerOf(A.dc, t), "layers.7");
  assert.deepEqual(atB.body.hitBreakpointIds, [idB]);
  assert.equal(seenByA.body.hitBreakpointIds, undefined);
  assert.match(String(seenByA.body.description), /another client/);

  // A replaces its breakpoints (layers.3 -> layers.5): B's layers.7 stays.
  const replaced = await A.dc.setFunctionBreakpointsRequest({ breakpoints: [{ name: "layers.5" }] });
  const idA2 = replaced.body.breakpoints[0].id!;
  await A.dc.continueRequest({ threadId: t, singleThread: true });
  const at5 = await A.ev.stopped(t);
  assert.deepEqual(at5.body.hitBreakpointIds, [idA2]);
  assert.equal(await layerOf(A.dc, t), "layers.5");
  assert.match(await passOf(A.dc, t), /decode of token 1/);
  await B.ev.stopped(t);
  await B.dc.continueRequest({ threadId: t, singleThread: true });
  await B.ev.stopped(t);
  await A.ev.stopped(t);
  assert.equal(await layerOf(B.dc, t), "layers.7", "B's breakpoint survived A's SetBreakpoints");

  // B leaves (attach: no terminate): its breakpoint goes, the session stays and A drives on.
  await B.dc.disconnectRequest({});
  await A.dc.continueRequest({ threadId: t, singleThread: true });
  await A.ev.stopped(t);
  assert.equal(await layerOf(A.dc, t), "layers.5");
  assert.match(await passOf(A.dc, t), /decode of token 2/);
  A.ev.drop("stopped");
  await A.dc.continueRequest({ threadId: t, singleThread: true });
  await A.ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === t);
  assert.equal(A.ev.all.filter((e) => e.event === "stopped" && (e as Stopped).body.threadId === t).length, 5, "no stop at layers.7 once B detached");
  const done = await alice.getSession(t);
  assert.equal(done.state, SessionState.SESSION_STATE_FINISHED);
  await A.dc.disconnectRequest({});
});

test("disconnect with terminate closes only that adapter's own sessions", async () => {
  const A = await adapter();
  await start(A.dc, A.ev, "launch", { server: server.address, token: ALICE, prompt: [promptTokens(82)], maxNewTokens: 2, breakpoints: [2] });
  const sa = (await A.ev.stopped()).body.threadId;
  const B = await adapter();
  await start(B.dc, B.ev, "launch", { server: server.address, token: ALICE, prompt: [promptTokens(83)], maxNewTokens: 2, breakpoints: [4] });
  const sb = (await B.ev.stopped()).body.threadId;
  assert.deepEqual((await A.dc.threadsRequest()).body.threads.map((x) => x.id), [sa], "a launch shows only its own sessions");

  // An attached window that terminates closes nothing: it created nothing.
  const C = await adapter();
  await start(C.dc, C.ev, "attach", { server: server.address, token: ALICE });
  assert.deepEqual((await C.dc.threadsRequest()).body.threads.map((x) => x.id).sort((x, y) => x - y), [sa, sb].sort((x, y) => x - y));
  await C.dc.disconnectRequest({ terminateDebuggee: true });
  for (const id of [sa, sb]) assert.equal((await alice.getSession(id)).state, SessionState.SESSION_STATE_PAUSED);

  // A terminates: its session is closed, B's is untouched.
  await A.dc.disconnectRequest({ terminateDebuggee: true });
  await assert.rejects(alice.getSession(sa), /NOT_FOUND/);
  assert.equal((await alice.getSession(sb)).state, SessionState.SESSION_STATE_PAUSED);

  // B leaves without terminating: its session stays, without B's breakpoints (it runs to the end).
  await B.dc.disconnectRequest({ terminateDebuggee: false });
  assert.equal((await alice.getSession(sb)).state, SessionState.SESSION_STATE_PAUSED);
  await alice.continue(sb);
  await waitFor("finished", async () => (await alice.getSession(sb)).state === SessionState.SESSION_STATE_FINISHED, 30_000);
  await alice.closeSession(sb).catch(() => undefined);
});

test("another user's adapter sees none of the first user's threads", async () => {
  const A = await adapter();
  await start(A.dc, A.ev, "launch", { server: server.address, token: ALICE, prompt: [promptTokens(84)], maxNewTokens: 2, breakpoints: [2] });
  const sa = (await A.ev.stopped()).body.threadId;
  const bob = await adapter();
  await start(bob.dc, bob.ev, "attach", { server: server.address, token: BOB });
  assert.deepEqual((await bob.dc.threadsRequest()).body.threads, []);
  assert.ok(outputs(bob.ev).some((o) => /: 0 session\(s\)/.test(o)));
  // a session of alice's created while bob is attached does not appear either
  const late = await alice.createSession({ promptTokens: promptTokens(85), maxNewTokens: 1, stopOnEntry: true });
  await waitFor("paused", async () => (await alice.getSession(late.id)).state === SessionState.SESSION_STATE_PAUSED);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual((await bob.dc.threadsRequest()).body.threads, []);
  assert.equal(bob.ev.all.filter((e) => e.event === "thread").length, 0);
  // bob's own work is his: alice's attach does not show it
  const bobLaunch = await adapter();
  await start(bobLaunch.dc, bobLaunch.ev, "launch", { server: server.address, token: BOB, prompt: [promptTokens(86)], maxNewTokens: 1, stopOnEntry: true });
  const sBob = (await bobLaunch.ev.stopped()).body.threadId;
  await bob.ev.stopped(sBob);
  assert.deepEqual((await bob.dc.threadsRequest()).body.threads.map((x) => x.id), [sBob]);
  const aliceAttach = await adapter();
  await start(aliceAttach.dc, aliceAttach.ev, "attach", { server: server.address, token: ALICE });
  const ids = (await aliceAttach.dc.threadsRequest()).body.threads.map((x) => x.id);
  assert.ok(ids.includes(sa) && ids.includes(late.id) && !ids.includes(sBob), `alice sees ${ids}`);
  // and bob cannot drive alice's session through his adapter
  const r = await bob.dc.customRequest("continue", { threadId: sa }).then(() => "ok", (e: Error) => e.message);
  assert.match(r, /no thread/);
  for (const dc of [aliceAttach.dc, bob.dc, bobLaunch.dc, A.dc]) await dc.disconnectRequest({ terminateDebuggee: true });
  await alice.closeSession(late.id).catch(() => undefined);
});

test("a subscriber that lagged re-reads the sessions: the thread comes back where it is now", async () => {
  // A server that retains very few events for since_seq replays: a reconnection after a busy
  // outage is told LAGGED and must re-read ListSessions.
  const srv = await startLocalServer({ model: "tiny-40l", device: "cpu", startTimeoutMs: 180_000, extraArgs: ["--replay-mb", "0.002"] });
  extra.push(() => srv.stop());
  const direct = new DjinnClient(srv.address);
  extra.push(async () => direct.close());
  const p = await new FlakyProxy(srv.address).start();
  extra.push(() => p.stop());
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: p.address, prompt: [promptTokens(87)], maxNewTokens: 3, breakpoints: [2], reconnectGraceSeconds: 60 });
  const t = (await ev.stopped()).body.threadId;
  p.cut();
  await waitFor("the adapter noticed", () => outputs(ev).some((o) => /reconnecting/.test(o)), 20_000);
  // Meanwhile: many events (a noisy session), and the thread is continued to its next stop.
  const noise = await direct.createSession({ promptTokens: promptTokens(88), maxNewTokens: 40 });
  await waitFor("the noise finished", async () => (await direct.getSession(noise.id)).state === SessionState.SESSION_STATE_FINISHED, 60_000);
  await direct.continue(t);
  await waitFor("paused again", async () => {
    const s = await direct.getSession(t);
    return s.state === SessionState.SESSION_STATE_PAUSED && s.position?.tokenIndex === 1;
  });
  ev.drop("stopped");
  p.restore();
  await ev.stopped(t, 30_000);
  assert.ok(outputs(ev).some((o) => /events were missed: re-reading the sessions/.test(o)), outputs(ev).join(""));
  assert.equal(await layerOf(dc, t), "layers.2");
  assert.match(await passOf(dc, t), /decode of token 1/);
  assert.deepEqual((await dc.threadsRequest()).body.threads.map((x) => x.id), [t]);
  // and it goes on from there
  await dc.continueRequest({ threadId: t, singleThread: true });
  await ev.stopped(t);
  assert.match(await passOf(dc, t), /decode of token 2/);
  await dc.disconnectRequest({});
  await assert.rejects(direct.getSession(t), /NOT_FOUND/);
});

test("a device failure: the reason as an important output, every thread ends, the session says why", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { model: "tiny-4l", device: "cpu", prompt: [promptTokens(89, 8, 290), promptTokens(90, 8, 290)], maxNewTokens: 2, breakpoints: [1], serverArgs: ["--test-fault-injection"] });
  const ids = [(await ev.stopped()).body.threadId, (await ev.stopped()).body.threadId];
  const frame = (await dc.stackTraceRequest({ threadId: ids[0] })).body.stackFrames[0];
  const r = await dc.evaluateRequest({ expression: "__device_fault__", frameId: frame.id, context: "repl" }).then(() => "ok", (e: Error) => e.message);
  assert.match(r, /device/i);
  await ev.next<DebugProtocol.OutputEvent>("output", (e) => e.body.category === "important" && /device/i.test(e.body.output), 20_000);
  for (const id of ids) await ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === id, 20_000);
  await ev.next("terminated", () => true, 20_000);
  const important = ev.all.findIndex((e) => e.event === "output" && (e as DebugProtocol.OutputEvent).body.category === "important");
  assert.ok(important >= 0 && important < ev.all.findIndex((e) => e.event === "terminated"), "said before the debug session ends");
  assert.equal(outputs(ev, "important").length, 1, "said once");
  assert.ok(outputs(ev, "console").some((o) => /device failed/.test(o)), outputs(ev).join(""));
});

test("TLS: launch and attach reach a TLS server with caFile (and tlsServerName); without it the connection is refused", async (t) => {
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  try {
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=djinn-gpu-host", "-addext", "subjectAltName=DNS:djinn-gpu-host"], { stdio: "ignore" });
  } catch {
    t.skip("openssl is not available");
    return;
  }
  const srv = await startLocalServer({ model: "tiny-4l", device: "cpu", startTimeoutMs: 180_000, extraArgs: ["--tls-cert", cert, "--tls-key", key, "--token", "tls-token-123"] });
  extra.push(() => srv.stop());
  // the certificate names djinn-gpu-host, not 127.0.0.1 (as through an SSH tunnel): tlsServerName says which name to check
  const tls = { server: srv.address, token: "tls-token-123", caFile: cert, tlsServerName: "djinn-gpu-host" };
  const L = await adapter();
  await start(L.dc, L.ev, "launch", { ...tls, prompt: [promptTokens(91, 8, 290)], maxNewTokens: 1, stopOnEntry: true });
  const id = (await L.ev.stopped()).body.threadId;
  const A = await adapter();
  await start(A.dc, A.ev, "attach", tls);
  assert.deepEqual((await A.dc.threadsRequest()).body.threads.map((x) => x.id), [id]);
  await A.dc.disconnectRequest({});
  await L.dc.disconnectRequest({});
  const plain = await adapter();
  const r = await start(plain.dc, plain.ev, "attach", { server: srv.address, token: "tls-token-123" }).then(() => "attached", (e: Error) => e.message);
  assert.match(r, /could not attach/);
});
