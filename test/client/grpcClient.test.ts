// Unit tests of DjinnClient against an in-process grpc-js server (no Python):
// token and client-id metadata, error mapping, chunk reassembly, streams and cancel, Detach
// (and its fallback on a server without it), TLS with a CA file, the resilient Events stream.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Server, ServerCredentials, status, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from "@grpc/grpc-js";
import { channelSetup, CLIENT_ID_RE, DjinnClient, DjinnError, EventKind, resilientEvents, type Event } from "../../client";
import {
  DjinnService,
  Event as EventMessage,
  ServerInfo,
  SessionInfo,
  type DetachRequest,
  type DetachResponse,
  type EventsRequest,
  type GetTensorRequest,
  type SessionRef,
  type TensorChunk,
  type TelemetryRequest,
  TelemetrySample,
} from "../../client/generated/djinn/v1/djinn";

const TENSOR = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));
let server: Server;
let address: string;
let seenTokens: Array<string | undefined> = [];
let seenClients: Array<string | undefined> = [];
let telemetryCancelled: Promise<void>;
let detachImplemented = true;
const detachCalls: Array<{ terminate: boolean; client: string | undefined }> = [];
const closed: number[] = [];
const eventsSince: number[] = [];

function unimplemented(_call: unknown, cb: sendUnaryData<unknown>) {
  cb({ code: status.UNIMPLEMENTED, details: "not in this fake" });
}

before(async () => {
  server = new Server();
  let resolveCancelled: () => void;
  telemetryCancelled = new Promise((r) => (resolveCancelled = r));
  const impl: Record<string, unknown> = Object.fromEntries(Object.keys(DjinnService).map((k) => [k, unimplemented]));
  Object.assign(impl, {
    getSession(call: ServerUnaryCall<SessionRef, SessionInfo>, cb: sendUnaryData<SessionInfo>) {
      seenTokens.push(call.metadata.get("x-djinn-token")[0] as string | undefined);
      seenClients.push(call.metadata.get("x-djinn-client")[0] as string | undefined);
      if (call.request.sessionId === 7) return cb(null, SessionInfo.fromPartial({ id: 7, label: "seven", generatedTokens: [1, 2] }));
      cb({ code: status.NOT_FOUND, details: `no session ${call.request.sessionId}` });
    },
    getTensor(call: ServerWritableStream<GetTensorRequest, TensorChunk>) {
      const size = call.request.chunkBytes || 1 << 20;
      for (let off = 0; off < TENSOR.length; off += size) {
        const first = off === 0;
        call.write({
          summary: first ? { name: call.request.name, dtype: "uint8", shape: [5000], min: 0, max: 250, mean: 0, std: 0, l2Norm: 0, nanCount: 0, infCount: 0, numel: 5000, writable: false, description: "", computeMs: 0, values: [] } : undefined,
          sliceShape: first ? [5000] : [],
          dtype: first ? "uint8" : "",
          offset: off,
          data: TENSOR.subarray(off, off + size),
          totalBytes: TENSOR.length,
        });
      }
      call.end();
    },
    getInfo(_call: unknown, cb: sendUnaryData<unknown>) {
      cb(null, ServerInfo.fromPartial({ eventSeq: 1000 }));
    },
    closeSession(call: ServerUnaryCall<SessionRef, SessionInfo>, cb: sendUnaryData<SessionInfo>) {
      if (call.request.sessionId === 404) return cb({ code: status.NOT_FOUND, details: "gone" });
      closed.push(call.request.sessionId);
      cb(null, SessionInfo.fromPartial({ id: call.request.sessionId, state: 5 }));
    },
    detach(call: ServerUnaryCall<DetachRequest, DetachResponse>, cb: sendUnaryData<DetachResponse>) {
      if (!detachImplemented) return cb({ code: status.UNIMPLEMENTED, details: "Method not found!" });
      detachCalls.push({ terminate: call.request.terminate, client: call.metadata.get("x-djinn-client")[0] as string | undefined });
      cb(null, { closedSessionIds: call.request.terminate ? [3, 4] : [], breakpointsRemoved: 2 });
    },
    events(call: ServerWritableStream<EventsRequest, Event>) {
      // Three events after since_seq, then the end (as a server that goes away would).
      const since = call.request.sinceSeq;
      eventsSince.push(since);
      for (let seq = since + 1; seq <= since + 3; seq++) call.write(EventMessage.fromPartial({ seq, time: 1, kind: EventKind.EVENT_KIND_TOKEN, sessionId: 7, token: seq }));
      call.end();
    },
    telemetry(call: ServerWritableStream<TelemetryRequest, TelemetrySample>) {
      const timer = setInterval(() => call.write(TelemetrySample.fromPartial({ time: Date.now() / 1000, budgetBytes: 8 })), call.request.intervalMs);
      call.on("cancelled", () => {
        clearInterval(timer);
        resolveCancelled();
      });
    },
  });
  server.addService(DjinnService, impl as never);
  const port = await new Promise<number>((res, rej) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  address = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

test("unary calls send the token and return typed messages", async () => {
  seenTokens = [];
  const client = new DjinnClient(address, { token: "s3cret" });
  await client.waitForReady(5000);
  const s = await client.getSession(7);
  assert.equal(s.label, "seven");
  assert.deepEqual(s.generatedTokens, [1, 2]);
  assert.deepEqual(seenTokens, ["s3cret"]);
  client.close();
});

test("every call carries x-djinn-client: a random UUID per client unless one is given", async () => {
  seenClients = [];
  const a = new DjinnClient(address);
  const b = new DjinnClient(address);
  const c = new DjinnClient(address, { clientId: "window-1:adapter.2" });
  await a.getSession(7);
  await a.getSession(7);
  await b.getSession(7);
  await c.getSession(7);
  assert.match(a.clientId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.notEqual(a.clientId, b.clientId);
  assert.deepEqual(seenClients, [a.clientId, a.clientId, b.clientId, "window-1:adapter.2"]);
  assert.ok(CLIENT_ID_RE.test(a.clientId));
  assert.throws(() => new DjinnClient(address, { clientId: "has space" }), /client id/);
  assert.throws(() => new DjinnClient(address, { clientId: "x".repeat(65) }), /client id/);
  for (const x of [a, b, c]) x.close();
});

test("keepalive channel options, unless turned off", () => {
  const on = channelSetup({}).options;
  assert.equal(on["grpc.keepalive_time_ms"], 10_000);
  assert.equal(on["grpc.keepalive_timeout_ms"], 5_000);
  assert.equal(on["grpc.keepalive_permit_without_calls"], 1);
  assert.equal(channelSetup({ keepalive: false }).options["grpc.keepalive_time_ms"], undefined);
  assert.equal(channelSetup({}).tls, false);
  assert.throws(() => channelSetup({ caFile: "/no/such/ca.pem" }), /cannot read the CA file \/no\/such\/ca.pem/);
});

test("detach(terminate) calls Detach with this client's id", async () => {
  detachImplemented = true;
  detachCalls.length = 0;
  const client = new DjinnClient(address, { clientId: "c-1" });
  const r = await client.detach({ terminate: true, fallbackSessionIds: [9] });
  assert.deepEqual(r, { closedSessionIds: [3, 4], breakpointsRemoved: 2, emulated: false });
  assert.deepEqual(await client.detach(false), { closedSessionIds: [], breakpointsRemoved: 2, emulated: false });
  assert.deepEqual(detachCalls, [{ terminate: true, client: "c-1" }, { terminate: false, client: "c-1" }]);
  client.close();
});

test("detach on a server without Detach (UNIMPLEMENTED): closes the fallback sessions itself", async () => {
  detachImplemented = false;
  closed.length = 0;
  const client = new DjinnClient(address);
  try {
    const r = await client.detach({ terminate: true, fallbackSessionIds: [5, 404, 6] });
    assert.deepEqual(r, { closedSessionIds: [5, 6], breakpointsRemoved: 0, emulated: true });
    assert.deepEqual(closed.sort(), [5, 6]);
    closed.length = 0;
    assert.deepEqual(await client.detach({ terminate: false, fallbackSessionIds: [5] }), { closedSessionIds: [], breakpointsRemoved: 0, emulated: true });
    assert.deepEqual(closed, [], "no terminate: nothing closed");
  } finally {
    detachImplemented = true;
    client.close();
  }
});

test("resilientEvents resumes after the stream ends, with since_seq = the last seq", async () => {
  eventsSince.length = 0;
  const client = new DjinnClient(address);
  const rs = resilientEvents(client, { sinceSeq: 10, initialBackoffMs: 5, maxBackoffMs: 10 });
  const seqs: number[] = [];
  rs.on("message", (e) => seqs.push(e.seq));
  let reconnects = 0;
  rs.on("reconnected", () => reconnects++);
  rs.start();
  const t0 = Date.now();
  while (seqs.length < 9 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
  rs.stop();
  assert.deepEqual(seqs.slice(0, 9), [11, 12, 13, 14, 15, 16, 17, 18, 19]);
  assert.deepEqual(eventsSince.slice(0, 3), [10, 13, 16]);
  assert.ok(reconnects >= 2);
  client.close();
});

test("TLS: a CA file verifies the server; serverName overrides the name checked", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "djinn-tls-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  try {
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=djinn-test", "-addext", "subjectAltName=DNS:djinn-test,DNS:localhost"], { stdio: "ignore" });
  } catch {
    t.skip("openssl is not available");
    return;
  }
  const tlsServer = new Server();
  const impl: Record<string, unknown> = Object.fromEntries(Object.keys(DjinnService).map((k) => [k, unimplemented]));
  impl.getSession = (_c: unknown, cb: sendUnaryData<SessionInfo>) => cb(null, SessionInfo.fromPartial({ id: 7, label: "over tls" }));
  tlsServer.addService(DjinnService, impl as never);
  const creds = ServerCredentials.createSsl(null, [{ private_key: readFileSync(key), cert_chain: readFileSync(cert) }]);
  const port = await new Promise<number>((res, rej) => tlsServer.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? rej(e) : res(p))));
  t.after(() => tlsServer.forceShutdown());
  const byName = new DjinnClient(`localhost:${port}`, { caFile: cert, deadlineMs: 5000 });
  assert.equal(byName.tls, true);
  assert.equal((await byName.getSession(7)).label, "over tls");
  byName.close();
  // 127.0.0.1 is not in the certificate: refused, unless the name to check is given.
  const byIp = new DjinnClient(`127.0.0.1:${port}`, { caFile: cert, deadlineMs: 5000 });
  await assert.rejects(byIp.getSession(7), (e: DjinnError) => e.codeName === "UNAVAILABLE");
  byIp.close();
  const overridden = new DjinnClient(`127.0.0.1:${port}`, { tls: { caFile: cert, serverName: "djinn-test" }, deadlineMs: 5000 });
  assert.equal((await overridden.getSession(7)).label, "over tls");
  overridden.close();
  const plain = new DjinnClient(`localhost:${port}`, { deadlineMs: 3000 });
  await assert.rejects(plain.getSession(7), (e: DjinnError) => e.codeName === "UNAVAILABLE" || e.codeName === "DEADLINE_EXCEEDED");
  plain.close();
});

test("errors become DjinnError with the code name and the server's message", async () => {
  const client = new DjinnClient(address);
  await assert.rejects(client.getSession(99), (e: unknown) => {
    assert.ok(e instanceof DjinnError);
    assert.equal(e.codeName, "NOT_FOUND");
    assert.equal(e.code, status.NOT_FOUND);
    assert.equal(e.details, "no session 99");
    assert.match(e.message, /no session 99/);
    return true;
  });
  await assert.rejects(client.pause(1), (e: DjinnError) => e.codeName === "UNIMPLEMENTED");
  client.close();
});

test("getTensor reassembles chunks", async () => {
  const client = new DjinnClient(address);
  const t = await client.getTensor({ sessionId: 7, name: "hidden", chunkBytes: 1024 });
  assert.equal(t.chunks, 5);
  assert.equal(t.dtype, "uint8");
  assert.deepEqual(t.sliceShape, [5000]);
  assert.ok(t.data.equals(TENSOR));
  assert.equal((await client.getTensorSummary(7, "hidden")).numel, 5000);
  client.close();
});

test("events stream emits typed events then end", async () => {
  const client = new DjinnClient(address);
  const seqs: number[] = [];
  await new Promise<void>((resolve, reject) => {
    client.events({ sinceSeq: 0 }).on("event", (e) => seqs.push(e.seq)).on("error", reject).on("end", resolve);
  });
  assert.deepEqual(seqs, [1, 2, 3]);
  client.close();
});

test("telemetry cancel ends quietly and reaches the server", async () => {
  const client = new DjinnClient(address);
  const stream = client.telemetry({ intervalMs: 10 });
  let errors = 0;
  stream.on("error", () => errors++);
  await new Promise<void>((resolve) => stream.once("sample", () => resolve()));
  const ended = new Promise<void>((resolve) => stream.on("end", resolve));
  stream.cancel();
  await ended;
  await telemetryCancelled;
  assert.equal(errors, 0);
  assert.ok(stream.ended);
  client.close();
});

test("waitForReady fails with UNAVAILABLE when nothing listens", async () => {
  const client = new DjinnClient("127.0.0.1:1");
  await assert.rejects(client.waitForReady(300), (e: DjinnError) => e.codeName === "UNAVAILABLE");
  client.close();
});
