// Integration test: DjinnClient against a real Djinn server (tiny-40l on the CPU).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DjinnClient, DjinnError, EventKind, SessionState, StopPoint, startLocalServer, type LocalServer } from "../../client";
import { EventWaiter } from "./eventWaiter";

let server: LocalServer;
let client: DjinnClient;
let events: EventWaiter;
const logs: string[] = [];

before(async () => {
  server = await startLocalServer({ model: "tiny-40l", device: "cpu", startTimeoutMs: 180_000, onLog: (l) => logs.push(l) });
  client = new DjinnClient(server.address);
  await client.waitForReady(10_000);
  events = new EventWaiter(client.events({ sinceSeq: 0 }));
});

after(async () => {
  events?.stream.cancel();
  client?.close();
  await server?.stop();
});

test("local server reports its address and GetInfo describes the model", async () => {
  assert.match(server.address, /^127\.0\.0\.1:\d+$/);
  assert.equal(server.ready.model, "tiny-40l");
  const info = await client.getInfo();
  const m = info.model!;
  assert.equal(m.name, "tiny-40l");
  assert.equal(m.nLayers, 40);
  assert.ok(m.vocabSize > 3 && m.headDim > 0 && m.nKvHeads > 0);
  assert.equal(info.device, "cpu");
  assert.equal(info.dtype, "float32");
  const mem = info.memory!;
  assert.ok(mem.budgetBytes > 0, "budget");
  assert.ok(mem.weightsBytes > 0, "weights measured");
  // K and V of every layer for one token, in float32.
  assert.equal(mem.kvBytesPerToken, 2 * m.nLayers * m.nKvHeads * m.headDim * 4);
  assert.ok(info.modules.some((n) => n.name === "layers.39"));
  assert.ok(info.torchVersion.length > 0);
});

test("breakpoint at layer 2 stops there; hidden streams in chunks; continue to FINISHED", async () => {
  const promptTokens = Array.from({ length: 12 }, (_, i) => 10 + i);
  const created = await client.createSession({ promptTokens, maxNewTokens: 2, breakpoints: [{ id: 7, layer: 2, point: StopPoint.STOP_POINT_LAYER }] });
  const id = created.id;
  assert.ok(id > 0);
  const isStop = (e: { kind: EventKind; sessionId: number }) => e.sessionId === id && e.kind === EventKind.EVENT_KIND_STOPPED;
  const isEnd = (e: { kind: EventKind; sessionId: number }) => e.sessionId === id && (e.kind === EventKind.EVENT_KIND_FINISHED || e.kind === EventKind.EVENT_KIND_ERROR);

  const stop = await events.next(isStop);
  assert.equal(stop.session?.position?.layer, 2);
  assert.equal(stop.session?.state, SessionState.SESSION_STATE_PAUSED);
  assert.deepEqual(stop.session?.hitBreakpointIds, [7]);

  const summary = await client.getTensorSummary(id, "hidden");
  assert.equal(summary.dtype, "float32");
  assert.equal(summary.numel, summary.shape.reduce((a, b) => a * b, 1));
  assert.equal(summary.shape[summary.shape.length - 1], 128);
  const t = await client.getTensor({ sessionId: id, name: "hidden", chunkBytes: 1024 });
  assert.equal(t.data.length, summary.numel * 4);
  assert.equal(t.chunks, Math.ceil(t.data.length / 1024));
  const values = new Float32Array(t.data.buffer, t.data.byteOffset, t.data.length / 4);
  assert.ok(Math.abs(Math.min(...values) - summary.min) < 1e-5 && Math.abs(Math.max(...values) - summary.max) < 1e-5);

  // One stop per forward pass (prefill, then each decode pass) until it finishes.
  let stops = 1;
  for (;;) {
    await client.continue(id);
    const e = await events.next((x) => isStop(x) || isEnd(x));
    if (e.kind !== EventKind.EVENT_KIND_STOPPED) {
      assert.equal(e.kind, EventKind.EVENT_KIND_FINISHED, e.text);
      break;
    }
    assert.equal(e.session?.position?.layer, 2);
    stops++;
  }
  assert.ok(stops >= 1 && stops <= 2, `stops ${stops}`);
  const done = await client.getSession(id);
  assert.equal(done.state, SessionState.SESSION_STATE_FINISHED);
  assert.equal(done.generatedTokens.length, 2);
  await client.closeSession(id);
});

test("unknown session: NOT_FOUND with the server's message", async () => {
  await assert.rejects(client.getSession(987654321), (e: unknown) => {
    assert.ok(e instanceof DjinnError, String(e));
    assert.equal(e.codeName, "NOT_FOUND");
    assert.ok(e.details.length > 0);
    assert.ok(e.message.includes(e.details));
    return true;
  });
});

test("an aborted signal cancels Evaluate and GetTensor on the wire: CANCELLED, and the client goes on", async () => {
  const abort = new AbortController();
  abort.abort();
  for (const call of [() => client.evaluate({ sessionId: 987654321, expression: "1 + 1" }, abort.signal),
                      () => client.getTensor({ sessionId: 987654321, name: "hidden" }, abort.signal)]) {
    await assert.rejects(call(), (e: unknown) => {
      assert.ok(e instanceof DjinnError, String(e));
      assert.equal(e.codeName, "CANCELLED");
      return true;
    });
  }
  await assert.rejects(client.getSession(987654321), (e: unknown) => e instanceof DjinnError && e.codeName === "NOT_FOUND");
});

test("a server that exits before it is ready: the rejection carries its stderr", async () => {
  await assert.rejects(startLocalServer({ model: "no-such-model", device: "cpu", startTimeoutMs: 120_000 }), (e: Error) => {
    assert.match(e.message, /exited before it was ready/);
    assert.match(e.message, /no-such-model/);
    return true;
  });
});

test("x-djinn-token: required by a server started with --token", async () => {
  const guarded = await startLocalServer({ model: "tiny-4l", device: "cpu", extraArgs: ["--token", "s3cret"], startTimeoutMs: 120_000 });
  const anonymous = new DjinnClient(guarded.address);
  const trusted = new DjinnClient(guarded.address, { token: "s3cret" });
  try {
    await assert.rejects(anonymous.getInfo(), (e: DjinnError) => e.codeName === "UNAUTHENTICATED" || e.codeName === "PERMISSION_DENIED");
    assert.equal((await trusted.getInfo()).model?.name, "tiny-4l");
  } finally {
    anonymous.close();
    trusted.close();
    await guarded.stop();
  }
  assert.notEqual(guarded.process.exitCode ?? guarded.process.signalCode, null);
});
