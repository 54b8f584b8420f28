// A local Exp 3 run with DJINN_TOKEN set in the environment (a token for some remote server):
// its own server does not inherit it (client/localServer.ts), so the run gets in and succeeds.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { runExp3 } from "../../exp3/driver";

test("exp3: a local run works with DJINN_TOKEN set in the environment", { timeout: 300_000 }, async () => {
  const before = process.env.DJINN_TOKEN;
  process.env.DJINN_TOKEN = "a-token-of-a-remote-server";
  try {
    const outDir = await mkdtemp(join(tmpdir(), "exp3-token-"));
    const log: string[] = [];
    const results = await runExp3(
      { sessions: 2, model: "tiny-40l", device: "cpu", context: 32, newTokens: 1, thinkMs: 1, budgetGb: "auto:0.9", breakpoints: [10], outDir, seed: 3 },
      { log: (l) => log.push(l) },
    );
    assert.equal(results.status, "success", `reasons: ${results.reasons.join("; ")}\n${log.slice(-20).join("\n")}`);
    assert.equal(results.num_sessions_spawned, 2);
  } finally {
    if (before === undefined) delete process.env.DJINN_TOKEN;
    else process.env.DJINN_TOKEN = before;
  }
});
