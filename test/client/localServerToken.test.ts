// The one token rule of a local server (client/localServer.ts), against real servers on the
// CPU: it requires the token it was started with or none, never a DJINN_TOKEN inherited from
// the environment of whoever starts it, and LocalServer.token is what its clients send.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { DjinnClient, startLocalServer, type LocalServer } from "../../client";

const started: LocalServer[] = [];
const clients: DjinnClient[] = [];
const inherited = process.env.DJINN_TOKEN;

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(started.map((s) => s.stop()));
  if (inherited === undefined) delete process.env.DJINN_TOKEN;
  else process.env.DJINN_TOKEN = inherited;
});

async function start(token?: string): Promise<LocalServer> {
  const s = await startLocalServer({ model: "tiny-40l", device: "cpu", budgetGb: 0.05, startTimeoutMs: 180_000, token });
  started.push(s);
  return s;
}

function client(s: LocalServer, token?: string): DjinnClient {
  const c = new DjinnClient(s.address, { token });
  clients.push(c);
  return c;
}

test("a DJINN_TOKEN in the environment is not inherited: a server started without a token lets a client without one in", { timeout: 200_000 }, async () => {
  process.env.DJINN_TOKEN = "a-token-meant-for-another-server";
  const s = await start();
  assert.equal(s.token, undefined);
  const info = await client(s, s.token).getInfo();
  assert.equal(info.model?.name, "tiny-40l");
});

test("a server started with a token requires exactly it and reports it; a client without it is refused with a message", { timeout: 200_000 }, async () => {
  process.env.DJINN_TOKEN = "not-this-one";
  const s = await start("s3cret");
  assert.equal(s.token, "s3cret");
  assert.equal((await client(s, s.token).getInfo()).model?.name, "tiny-40l");
  await assert.rejects(client(s).getInfo(), (e: Error & { code?: number }) => {
    assert.equal(e.code, 16, `UNAUTHENTICATED, got ${e.code}: ${e.message}`);
    return true;
  });
  await assert.rejects(client(s, "not-this-one").getInfo(), (e: Error & { code?: number }) => e.code === 16);
});

test("a start cancelled while the model loads rejects at once with kind 'cancelled' (the server is stopped, not waited for)", { timeout: 60_000 }, async () => {
  const abort = new AbortController();
  const t0 = Date.now();
  const starting = startLocalServer({ model: "tiny-40l", device: "cpu", budgetGb: 0.05, startTimeoutMs: 180_000, signal: abort.signal });
  setTimeout(() => abort.abort(), 300);
  await assert.rejects(starting, (e: any) => e.kind === "cancelled" && /cancelled/.test(e.message));
  assert.ok(Date.now() - t0 < 10_000, "the rejection waited for the model to load");
});
