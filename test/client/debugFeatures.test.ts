// Integration test: the client library's logpoints, completions and data breakpoints against a
// real Djinn server (tiny-40l on the CPU): what the debug adapter builds on.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { DjinnClient, DjinnError, EventKind, StopPoint, StopReason, startLocalServer, type Event, type LocalServer } from "../../client";
import { EventWaiter } from "./eventWaiter";

let server: LocalServer;
let client: DjinnClient;
let events: EventWaiter;
const promptTokens = Array.from({ length: 8 }, (_, i) => 20 + i);

before(async () => {
  server = await startLocalServer({ model: "tiny-40l", device: "cpu", startTimeoutMs: 180_000 });
  client = new DjinnClient(server.address);
  await client.waitForReady(10_000);
  events = new EventWaiter(client.events({ sinceSeq: 0 }));
});

after(async () => {
  events?.stream.cancel();
  client?.close();
  await server?.stop();
});

const of = (id: number, kind: EventKind) => (e: Event) => e.sessionId === id && e.kind === kind;

test("a logpoint's line arrives as an OUTPUT event with its breakpoint id, and the session never stops", async () => {
  const s = await client.createSession({
    promptTokens,
    maxNewTokens: 2,
    breakpoints: [{ id: 11, layer: 4, point: StopPoint.STOP_POINT_LAYER, logMessage: "t={token} {{n}}={norm(hidden)}" }],
  });
  const lines = [await events.next(of(s.id, EventKind.EVENT_KIND_OUTPUT)), await events.next(of(s.id, EventKind.EVENT_KIND_OUTPUT))];
  assert.deepEqual(lines.map((e) => e.breakpointId), [11, 11]);
  assert.match(lines[0].text, /^t=0 \{n\}=\d/);
  assert.match(lines[1].text, /^t=1 \{n\}=\d/);
  const end = await events.next(of(s.id, EventKind.EVENT_KIND_FINISHED));
  assert.ok(end.seq > lines[1].seq);
});

test("an invalid log message is an unverified breakpoint with the reason", async () => {
  const s = await client.createSession({ promptTokens, maxNewTokens: 1, stopOnEntry: true });
  await events.next(of(s.id, EventKind.EVENT_KIND_STOPPED));
  const r = await client.setBreakpoints({ sessionId: s.id, breakpoints: [{ id: 1, layer: 3, logMessage: "oops {" }] });
  assert.equal(r.breakpoints[0].verified, false);
  assert.match(r.breakpoints[0].message, /^log message: '\{' at column 6 is never closed/);
  await client.closeSession(s.id);
});

test("completions: tensor names at the stop, functions with signatures, the range they replace", async () => {
  const s = await client.createSession({ promptTokens, maxNewTokens: 1, breakpoints: [{ id: 1, layer: 2 }] });
  await events.next(of(s.id, EventKind.EVENT_KIND_STOPPED));
  const r = await client.complete({ sessionId: s.id, text: "norm(hid", column: 9 });
  assert.deepEqual(r.items.map((i) => i.label), ["hidden"]);
  assert.equal(r.items[0].type, "variable");
  assert.match(r.items[0].detail, /^f32\[8, 128\] residual stream/);
  assert.deepEqual([r.start, r.length], [5, 3]);
  const fn = await client.complete({ sessionId: s.id, text: "soft" });
  assert.deepEqual(fn.items.map((i) => [i.label, i.type]), [["softmax", "function"]]);
  assert.match(fn.items[0].detail, /^softmax\(x, dim\?\): /);
  await assert.rejects(client.complete({ sessionId: s.id, text: "ab", column: 9 }), (e: DjinnError) => e.code === status.INVALID_ARGUMENT);
  await client.closeSession(s.id);
});

test("a data breakpoint stops where its condition becomes true; an invalid one is INVALID_ARGUMENT", async () => {
  const s = await client.createSession({ promptTokens, maxNewTokens: 1, stopOnEntry: true });
  await events.next(of(s.id, EventKind.EVENT_KIND_STOPPED));
  const r = await client.setDataBreakpoints({ sessionId: s.id, breakpoints: [{ id: 5, tensor: "hidden", condition: "layer == 6 and max(abs(hidden)) > 0" }] });
  assert.equal(r.breakpoints[0].verified, true);
  await assert.rejects(
    client.setDataBreakpoints({ sessionId: s.id, breakpoints: [{ id: 6, tensor: "hidden", condition: "" }] }),
    (e: DjinnError) => e.code === status.INVALID_ARGUMENT && /data breakpoint 6: needs a condition/.test(e.message),
  );
  await client.continue(s.id);
  const stop = await events.next(of(s.id, EventKind.EVENT_KIND_STOPPED));
  assert.equal(stop.stopReason, StopReason.STOP_REASON_DATA_BREAKPOINT);
  assert.equal(stop.session?.position?.layer, 6);
  assert.deepEqual(stop.session?.hitBreakpointIds, [5]);
  assert.match(stop.text, /^data breakpoint 5: .* became true at layers\.6$/);
  await client.closeSession(s.id);
});
