// Integration tests of the sharing features against real CPU servers: who the server thinks
// the client is, Detach, per-client breakpoints, LAGGED through resilientEvents, TLS with a CA
// file, the adapter reaching a TLS server.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { DjinnClient, EventKind, SessionState, resilientEvents, startLocalServer, type DjinnError, type LocalServer, type ReconnectInfo } from "../../client";
import { EventWaiter } from "./eventWaiter";

let dir: string;
const cleanup: Array<() => unknown> = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "djinn-client-sharing-"));
});

after(async () => {
  for (const f of cleanup.reverse()) await Promise.resolve(f()).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

async function server(extraArgs: string[], model = "tiny-4l"): Promise<LocalServer> {
  const s = await startLocalServer({ model, device: "cpu", startTimeoutMs: 180_000, extraArgs });
  cleanup.push(() => s.stop());
  return s;
}

function client(address: string, opts: ConstructorParameters<typeof DjinnClient>[1] = {}): DjinnClient {
  const c = new DjinnClient(address, opts);
  cleanup.push(() => c.close());
  return c;
}

test("GetInfo says who the client is; breakpoints are per client; Detach removes this client's and closes only its own sessions", async () => {
  const tokens = join(dir, "tokens.txt");
  writeFileSync(tokens, "alice alice-token-1\nbob bob-token-22\n");
  const s = await server(["--tokens-file", tokens], "tiny-40l");
  const w1 = client(s.address, { token: "alice-token-1", clientId: "window-1" });
  const w2 = client(s.address, { token: "alice-token-1", clientId: "window-2" });
  const bob = client(s.address, { token: "bob-token-22" });
  const info = await w1.getInfo();
  assert.deepEqual([info.user, info.admin, info.clientId, info.tls], ["alice", false, "window-1", false]);
  assert.ok(info.leaseSeconds > 0);
  assert.equal((await bob.getInfo()).clientId, bob.clientId, "the default id: a UUID per client");
  const ev1 = new EventWaiter(w1.events({ sinceSeq: (await w1.getInfo()).eventSeq }));
  cleanup.push(() => ev1.stream.cancel());
  const mine = await w1.createSession({ promptTokens: [5, 6, 7, 8], maxNewTokens: 2, breakpoints: [{ id: 1, layer: 3 }] });
  assert.equal(mine.owner, "alice");
  assert.equal(mine.leaseExpiresAt, 0);
  await ev1.next((e) => e.sessionId === mine.id && e.kind === EventKind.EVENT_KIND_STOPPED);
  // window 2 sets its own breakpoint id 1 elsewhere: window 1's stays
  await w2.setBreakpoints({ sessionId: mine.id, breakpoints: [{ id: 1, layer: 9 }] });
  await w1.continue(mine.id);
  const at9 = await ev1.next((e) => e.sessionId === mine.id && e.kind === EventKind.EVENT_KIND_STOPPED);
  assert.equal(at9.session?.position?.layer, 9);
  assert.deepEqual(at9.session?.hitBreakpointIds, [], "window 2's breakpoint: not window 1's id");
  // bob cannot see it
  await assert.rejects(bob.getSession(mine.id), (e: DjinnError) => e.codeName === "NOT_FOUND");
  assert.deepEqual(await bob.listSessions(), []);
  // window 2 detaches (terminate): its breakpoint goes, window 1's session stays
  const d2 = await w2.detach({ terminate: true });
  assert.deepEqual([d2.emulated, d2.breakpointsRemoved, d2.closedSessionIds], [false, 1, []]);
  assert.equal((await w1.getSession(mine.id)).state, SessionState.SESSION_STATE_PAUSED);
  const theirs = await w2.createSession({ promptTokens: [5, 6], maxNewTokens: 1, stopOnEntry: true });
  const d1 = await w1.detach({ terminate: true });
  assert.equal(d1.emulated, false);
  assert.deepEqual(d1.closedSessionIds, [mine.id]);
  await assert.rejects(w1.getSession(mine.id), (e: DjinnError) => e.codeName === "NOT_FOUND");
  assert.notEqual((await w2.getSession(theirs.id)).state, SessionState.SESSION_STATE_CLOSED);
  await w2.closeSession(theirs.id);
});

test("resilientEvents: a since_seq no longer retained is told LAGGED; it resubscribes and says lagged", async () => {
  const s = await server(["--replay-mb", "0.002"]);
  const c = client(s.address);
  const done = await c.createSession({ promptTokens: [5, 6, 7], maxNewTokens: 20 });
  const w = new EventWaiter(c.events({ sinceSeq: 0 }));
  cleanup.push(() => w.stream.cancel());
  await new Promise((r) => setTimeout(r, 50));
  for (;;) {
    if ((await c.getSession(done.id)).state === SessionState.SESSION_STATE_FINISHED) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const latest = (await c.getInfo()).eventSeq;
  assert.ok(latest > 20);
  const rs = resilientEvents(c, { sinceSeq: 1, initialBackoffMs: 20 });
  cleanup.push(() => rs.stop());
  const reconnects: ReconnectInfo[] = [];
  const seqs: number[] = [];
  rs.on("reconnected", (r) => reconnects.push(r));
  rs.on("message", (e) => seqs.push(e.seq));
  rs.start();
  for (let i = 0; i < 100 && reconnects.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(reconnects.length, 1);
  assert.equal(reconnects[0].lagged, true);
  assert.ok(reconnects[0].sinceSeq >= latest, `seq 1 is gone: it resumes from the latest (${reconnects[0].sinceSeq})`);
  assert.equal(rs.state, "up");
  // what comes next arrives
  const next = await c.createSession({ promptTokens: [5], maxNewTokens: 1 });
  for (let i = 0; i < 100 && !seqs.some((q) => q > latest); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(seqs.some((q) => q > latest), "new events after the lagged re-subscription");
  void next;
});

test("TLS: a client that trusts the server's certificate connects (GetInfo says tls); a plain one cannot", async (t) => {
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  try {
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=djinn-test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], { stdio: "ignore" });
  } catch {
    t.skip("openssl is not available");
    return;
  }
  const s = await server(["--tls-cert", cert, "--tls-key", key, "--token", "tls-token-123"]);
  const good = client(s.address, { caFile: cert, token: "tls-token-123", deadlineMs: 10_000 });
  const info = await good.getInfo();
  assert.equal(info.tls, true);
  const byName = client(s.address.replace("127.0.0.1", "localhost"), { tls: { caFile: cert }, token: "tls-token-123", deadlineMs: 10_000 });
  assert.equal((await byName.getInfo()).tls, true);
  const plain = client(s.address, { token: "tls-token-123", deadlineMs: 3000 });
  await assert.rejects(plain.getInfo(), (e: DjinnError) => e.codeName === "UNAVAILABLE" || e.codeName === "DEADLINE_EXCEEDED");
  // streams work over TLS too
  const stream = good.telemetry({ intervalMs: 20 });
  const sample = await new Promise((resolve, reject) => stream.once("sample", resolve).once("error", reject));
  stream.cancel();
  assert.ok(sample);
});
