// The adapter asks the server to prefetch a paused thread whose KV is on the host when the user
// looks at it (its stack or scopes): against a CPU tiny-40l server whose budget holds two of
// three sessions (pressure policy), so one of them is swapped out while all three are paused.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DjinnClient, EventKind, KvLocation, type Event, type LocalServer } from "../../client";
import { newClient, promptTokens, start, stop, testServer, waitFor, type DC, type Stopped } from "./helpers";

let server: LocalServer;
let client: DjinnClient;
let events: Event[];
let dc: DC | undefined;

before(async () => {
  ({ server, client, events } = await testServer(["--vram-budget-gb", "auto:0.25", "--plan-sessions", "10", "--plan-context", "32"]));
});

after(async () => {
  await stop(dc);
  client?.close();
  await server?.stop();
});

const swapIns = (sid: number, since = 0) => events.filter((e) => e.seq > since && e.kind === EventKind.EVENT_KIND_SWAP_IN && e.sessionId === sid);
const prefetched = (sid: number, since = 0) => swapIns(sid, since).filter((e) => e.text.startsWith("prefetch"));

async function threadNames(d: DC): Promise<Map<number, string>> {
  return new Map((await d.threadsRequest()).body.threads.map((t) => [t.id, t.name]));
}

test("looking at a swapped thread's stack prefetches it (once per stop); its continue needs no swap-in", async () => {
  const a = await newClient();
  dc = a.dc;
  const ev = a.ev;
  const prompts = [0, 1, 2].map((i) => promptTokens(40 + i, 24));
  await start(dc, ev, "launch", { server: server.address, prompt: prompts, maxNewTokens: 3, contextTokens: 32, breakpoints: [10] });
  const stops: Stopped[] = [];
  for (let i = 0; i < 3; i++) stops.push(await ev.stopped());
  const ids = stops.map((s) => s.body.threadId);
  // the budget holds two: one paused session went to the host for the third
  const onHost = await waitFor("a thread with its KV on the host", async () => {
    const names = await threadNames(dc!);
    return ids.find((id) => / · host · /.test(names.get(id) ?? ""));
  });
  const resident = ids.filter((id) => id !== onHost);
  const mark = events.length ? events[events.length - 1].seq : 0;

  // a resident thread's stack: nothing to prefetch
  await dc.stackTraceRequest({ threadId: resident[0] });
  // the swapped thread's stack: the adapter sends Prefetch, the server brings it back
  const st = await dc.stackTraceRequest({ threadId: onHost });
  assert.match(st.body.stackFrames[0].name, /^layers\.10 · input$/);
  const sw = await waitFor("the prefetch's SWAP_IN", () => prefetched(onHost, mark)[0]);
  assert.equal(sw.text, "prefetch");
  assert.equal(sw.session?.kvLocation, KvLocation.KV_LOCATION_DEVICE);
  await waitFor("the thread's KV on the device", async () => / · dev · /.test((await threadNames(dc!)).get(onHost) ?? ""));
  // more looks at the same stop send nothing more
  await dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
  await dc.stackTraceRequest({ threadId: onHost });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(prefetched(onHost, mark).length, 1);
  assert.equal(swapIns(onHost, mark).length, 1);
  assert.ok(resident.every((id) => prefetched(id, mark).length === 0), "a resident thread is not prefetched");
  assert.equal((await client.getSession(onHost)).kvLocation, KvLocation.KV_LOCATION_DEVICE);

  // continue it: it runs with no further swap-in
  const before = swapIns(onHost, mark).length;
  await dc.continueRequest({ threadId: onHost, singleThread: true });
  const again = await ev.stopped(onHost);
  assert.equal(again.body.reason, "breakpoint");
  assert.equal(swapIns(onHost, mark).length, before);
  const frames = await dc.stackTraceRequest({ threadId: onHost });
  assert.match(frames.body.stackFrames.map((f) => f.name).join(" | "), /decode of token 1/);
});
