// Unit tests of ResilientStream with fake streams (no server): resume with since_seq after an
// error or an end, LAGGED, the backoff, 'down' after the grace time, 'up', restart detection,
// retryNow and stop.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { EventKind, ResilientStream, type DjinnError, type DjinnStream, type Event, type ReconnectInfo } from "../../client";

class FakeStream extends EventEmitter implements DjinnStream<Event, "event"> {
  ended = false;
  cancelled = false;
  constructor(readonly sinceSeq: number) {
    super();
  }
  send(seq: number, kind = EventKind.EVENT_KIND_TOKEN): void {
    this.emit("event", { seq, time: 0, kind, sessionId: 1, stopReason: 0, bytes: 0, ms: 0, gbps: 0, token: 0, text: "" } as Event);
  }
  lag(seq: number): void {
    this.send(seq, EventKind.EVENT_KIND_LAGGED);
    this.finish();
  }
  fail(message = "boom"): void {
    if (this.ended) return;
    this.emit("error", { message, details: message, code: 14 } as unknown as DjinnError);
    this.finish();
  }
  finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.emit("end");
  }
  cancel(): void {
    this.cancelled = true;
    setImmediate(() => this.finish());
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, fn: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

interface Harness {
  rs: ResilientStream<Event>;
  opened: FakeStream[];
  seqs: number[];
  reconnects: ReconnectInfo[];
  log: string[];
  probe: { fail: boolean; latest: number; calls: number; restarted?: boolean };
}

function harness(opts: { probe?: boolean; downAfterMs?: number; sinceSeq?: number; stableMs?: number } = {}): Harness {
  const opened: FakeStream[] = [];
  const probe: Harness["probe"] = { fail: false, latest: 0, calls: 0 };
  const rs = new ResilientStream<Event>({
    open: (since) => {
      const s = new FakeStream(since);
      opened.push(s);
      return s;
    },
    messageEvent: "event",
    seqOf: (e) => e.seq,
    lagOf: (e) => (e.kind === EventKind.EVENT_KIND_LAGGED ? e.seq : undefined),
    probe: opts.probe
      ? async () => {
          probe.calls++;
          if (probe.fail) throw new Error("UNAVAILABLE: no connection");
          return probe.restarted === undefined ? probe.latest : { latest: probe.latest, restarted: probe.restarted };
        }
      : undefined,
    sinceSeq: opts.sinceSeq,
    initialBackoffMs: 10,
    maxBackoffMs: 40,
    downAfterMs: opts.downAfterMs ?? 150,
    stableMs: opts.stableMs ?? 10_000,
  });
  const h: Harness = { rs, opened, seqs: [], reconnects: [], log: [], probe };
  rs.on("message", (e) => h.seqs.push(e.seq));
  rs.on("connected", () => h.log.push("connected"));
  rs.on("reconnected", (r) => (h.reconnects.push(r), h.log.push(`reconnected${r.lagged ? " lagged" : ""}${r.restarted ? " restarted" : ""}`)));
  rs.on("down", () => h.log.push("down"));
  rs.on("up", () => h.log.push("up"));
  return h;
}

test("messages pass through; after an error it resubscribes with since_seq = the last seq seen", async () => {
  const h = harness({ sinceSeq: 5 });
  h.rs.start();
  assert.equal(h.opened.length, 1);
  assert.equal(h.opened[0].sinceSeq, 5);
  assert.equal(h.rs.state, "connecting");
  h.opened[0].send(6);
  h.opened[0].send(7);
  assert.deepEqual(h.log, ["connected"]);
  assert.equal(h.rs.state, "up");
  h.opened[0].fail();
  assert.equal(h.rs.state, "retrying");
  await until("a second subscription", () => h.opened.length === 2);
  assert.equal(h.opened[1].sinceSeq, 7);
  h.opened[1].send(8);
  assert.deepEqual(h.seqs, [6, 7, 8]);
  assert.deepEqual(h.log, ["connected", "reconnected"]);
  assert.equal(h.reconnects[0].lagged, false);
  assert.equal(h.reconnects[0].sinceSeq, 7);
  h.rs.stop();
});

test("a normal end of the stream is a hiccup too", async () => {
  const h = harness({ sinceSeq: 1 });
  h.rs.start();
  h.opened[0].send(2);
  h.opened[0].finish();
  await until("resubscribed", () => h.opened.length === 2);
  assert.equal(h.opened[1].sinceSeq, 2);
  h.rs.stop();
});

test("LAGGED: the marker is consumed, it resubscribes with since_seq = the marker's seq and reports lagged", async () => {
  const h = harness({ sinceSeq: 1 });
  h.rs.start();
  h.opened[0].send(2);
  h.opened[0].lag(40);
  await until("resubscribed", () => h.opened.length === 2);
  assert.equal(h.opened[1].sinceSeq, 40);
  h.opened[1].send(41);
  assert.deepEqual(h.seqs, [2, 41]);
  assert.deepEqual(h.log, ["connected", "reconnected lagged"]);
  assert.equal(h.reconnects[0].downMs, 0);
  h.rs.stop();
});

test("LAGGED at the since_seq asked (no longer retained): it resumes from the server's latest, not the same seq again", async () => {
  const h = harness({ sinceSeq: 3, probe: true });
  h.probe.latest = 99;
  h.rs.start();
  await until("subscribed", () => h.opened.length === 1);
  h.opened[0].lag(3);
  await until("resubscribed", () => h.opened.length === 2);
  assert.equal(h.opened[1].sinceSeq, 99);
  h.opened[1].send(100);
  assert.deepEqual(h.log, ["connected", "reconnected lagged"]);
  await sleep(50);
  assert.equal(h.opened.length, 2, "no loop of LAGGED re-subscriptions");
  h.rs.stop();
});

test("backoff doubles up to the maximum; 'down' once after the grace time, 'up' when back", async () => {
  const h = harness({ probe: true, downAfterMs: 120 });
  const delays: number[] = [];
  h.rs.on("failure", (f) => delays.push(f.retryInMs));
  h.probe.latest = 10;
  h.rs.start();
  await until("connected", () => h.opened.length === 1);
  assert.equal(h.opened[0].sinceSeq, 10, "the first subscription starts at the probe's latest seq");
  assert.equal(h.rs.state, "up", "with a probe, up as soon as it answered");
  h.probe.fail = true;
  h.opened[0].fail("connection reset");
  await until("down", () => h.log.includes("down"), 3000);
  assert.equal(h.rs.state, "down");
  assert.deepEqual(delays.slice(0, 4), [10, 20, 40, 40]);
  assert.ok(h.probe.calls >= 4);
  assert.equal(h.log.filter((x) => x === "down").length, 1);
  await sleep(100);
  assert.equal(h.log.filter((x) => x === "down").length, 1, "'down' only once per outage");
  h.probe.fail = false;
  await until("up", () => h.log.includes("up"), 2000);
  assert.deepEqual(h.log, ["connected", "down", "reconnected", "up"]);
  assert.equal(h.opened.length, 2);
  assert.equal(h.opened[1].sinceSeq, 10);
  assert.ok(h.reconnects[0].downMs >= 120);
  h.rs.stop();
});

test("a hiccup shorter than the grace time: no 'down'", async () => {
  const h = harness({ probe: true, downAfterMs: 300 });
  h.probe.latest = 5;
  h.rs.start();
  await until("connected", () => h.opened.length === 1);
  h.probe.fail = true;
  h.opened[0].fail();
  await sleep(60);
  h.probe.fail = false;
  await until("reconnected", () => h.log.includes("reconnected"));
  await sleep(350);
  assert.deepEqual(h.log, ["connected", "reconnected"]);
  h.rs.stop();
});

test("a server whose latest seq is below ours restarted: lagged and restarted", async () => {
  const h = harness({ probe: true });
  h.probe.latest = 0;
  h.rs.start();
  await until("connected", () => h.opened.length === 1);
  h.opened[0].send(50);
  h.probe.latest = 3;
  h.opened[0].fail();
  await until("resubscribed", () => h.opened.length === 2);
  assert.equal(h.opened[1].sinceSeq, 3);
  assert.deepEqual(h.log, ["connected", "reconnected lagged restarted"]);
  h.rs.stop();
});

test("another server_id with a higher seq is a restart too: lagged and restarted, resumed from its latest", async () => {
  const h = harness({ probe: true });
  h.probe.latest = 0;
  h.rs.start();
  await until("connected", () => h.opened.length === 1);
  h.opened[0].send(50);
  Object.assign(h.probe, { latest: 900, restarted: true });
  h.opened[0].fail();
  await until("resubscribed", () => h.opened.length === 2);
  assert.equal(h.opened[1].sinceSeq, 900);
  assert.deepEqual(h.log, ["connected", "reconnected lagged restarted"]);
  h.rs.stop();
});

test("nothing to resume from (seq 0): the reconnection says lagged, so the owner re-reads", async () => {
  const h = harness({ probe: true });
  h.rs.start();
  await until("connected", () => h.opened.length === 1);
  h.opened[0].fail();
  await until("resubscribed", () => h.opened.length === 2);
  assert.deepEqual(h.log, ["connected", "reconnected lagged"]);
  h.rs.stop();
});

test("advanceTo raises the resume point; retryNow skips the wait; stop ends it for good", async () => {
  const opened: FakeStream[] = [];
  const rs = new ResilientStream<Event>({
    open: (since) => {
      const s = new FakeStream(since);
      opened.push(s);
      return s;
    },
    messageEvent: "event",
    seqOf: (e) => e.seq,
    sinceSeq: 1,
    initialBackoffMs: 60_000,
    maxBackoffMs: 60_000,
  });
  rs.start();
  rs.advanceTo(30);
  rs.advanceTo(20);
  assert.equal(rs.lastSeq, 30);
  opened[0].fail();
  await sleep(20);
  assert.equal(opened.length, 1, "waiting for the (long) backoff");
  rs.retryNow();
  await until("retried", () => opened.length === 2);
  assert.equal(opened[1].sinceSeq, 30);
  rs.stop();
  assert.equal(rs.state, "stopped");
  assert.ok(opened[1].cancelled);
  await sleep(30);
  assert.equal(opened.length, 2);
});

test("a stream that opens and dies at once keeps backing off (no tight loop)", async () => {
  const h = harness({ sinceSeq: 1, downAfterMs: 10_000 });
  h.rs.start();
  const t0 = Date.now();
  while (Date.now() - t0 < 200) {
    const last = h.opened[h.opened.length - 1];
    if (!last.ended) last.fail();
    await sleep(1);
  }
  // 10 + 20 + 40 + 40 + ... ms: about 6 attempts in 200 ms, never dozens
  assert.ok(h.opened.length <= 9, `${h.opened.length} subscriptions in 200 ms`);
  h.rs.stop();
});
