// Unit tests of DjinnClient against an in-process grpc-js server (no Python):
// token metadata, error mapping, chunk reassembly, streams and cancel.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Server, ServerCredentials, status, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from "@grpc/grpc-js";
import { DjinnClient, DjinnError, EventKind, type Event } from "../../client";
import { DjinnService, SessionInfo, type GetTensorRequest, type SessionRef, type TensorChunk, type TelemetryRequest, TelemetrySample } from "../../client/generated/djinn/v1/djinn";

const TENSOR = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));
let server: Server;
let address: string;
let seenTokens: Array<string | undefined> = [];
let telemetryCancelled: Promise<void>;

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
      if (call.request.sessionId === 7) return cb(null, SessionInfo.fromPartial({ id: 7, label: "seven", generatedTokens: [1, 2] }));
      cb({ code: status.NOT_FOUND, details: `no session ${call.request.sessionId}` });
    },
    getTensor(call: ServerWritableStream<GetTensorRequest, TensorChunk>) {
      const size = call.request.chunkBytes || 1 << 20;
      for (let off = 0; off < TENSOR.length; off += size) {
        const first = off === 0;
        call.write({
          summary: first ? { name: call.request.name, dtype: "uint8", shape: [5000], min: 0, max: 250, mean: 0, std: 0, l2Norm: 0, nanCount: 0, infCount: 0, numel: 5000, writable: false, description: "", computeMs: 0 } : undefined,
          sliceShape: first ? [5000] : [],
          dtype: first ? "uint8" : "",
          offset: off,
          data: TENSOR.subarray(off, off + size),
          totalBytes: TENSOR.length,
        });
      }
      call.end();
    },
    events(call: ServerWritableStream<unknown, Event>) {
      for (let seq = 1; seq <= 3; seq++) call.write({ seq, time: 1, kind: EventKind.EVENT_KIND_TOKEN, sessionId: 7, stopReason: 0, bytes: 0, ms: 0, gbps: 0, token: seq, text: "" });
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
