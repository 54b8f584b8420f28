// Integration test: a small Exp 3 run on the CPU against a real local server.
import assert from "node:assert/strict";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { PLOT_FILE, RESULTS_FILE, runExp3 } from "../../exp3/driver";

test("exp3: 6 sessions under an auto budget swap and match the reference", { timeout: 600_000 }, async () => {
  const outDir = await mkdtemp(join(tmpdir(), "exp3-"));
  const log: string[] = [];
  const results = await runExp3(
    { sessions: 6, model: "tiny-40l", device: "cpu", context: 64, newTokens: 2, thinkMs: 5, budgetGb: "auto:0.33", breakpoints: [10, 20, 30], outDir, seed: 5 },
    { log: (l) => log.push(l) },
  );
  const why = `reasons: ${results.reasons.join("; ")}\nlog tail:\n${log.slice(-30).join("\n")}`;
  assert.equal(results.status, "success", why);
  assert.equal(results.num_sessions_spawned, 6);
  assert.equal(results.outputs_match, 6);
  assert.ok(results.swap_count.out > 0, `no swap-out: ${why}`);
  assert.ok(results.swap_count.in > 0, `no swap-in: ${why}`);
  assert.ok(results.swapping_active);
  assert.equal(results.swap_latencies_ms.length, results.swap_count.out + results.swap_count.in);
  assert.ok(results.peaks.accounted_gb <= results.budget_gb);
  assert.ok(results.budget_gb > results.weights_gb);
  // 3 breakpoints x (prefill + 1 decode pass) per session.
  assert.ok(results.sessions.every((s) => s.stops === 6), JSON.stringify(results.sessions.map((s) => s.stops)));
  assert.equal(results.vram_progression.length, 6);
  assert.ok(results.telemetry.length > 0);

  const json = JSON.parse(await readFile(join(outDir, RESULTS_FILE), "utf8"));
  assert.equal(json.status, "success");
  for (const key of ["num_sessions_requested", "num_sessions_spawned", "vram_progression", "vram_stats", "swapping_active", "swap_latencies_ms", "total_elapsed_seconds"]) {
    assert.ok(key in json, key);
  }
  const svg = await readFile(join(outDir, PLOT_FILE), "utf8");
  assert.match(svg, /^<svg /);
  assert.ok(svg.includes("budget") && svg.includes("swap-out"));
});

test("exp3: cancelling closes the sessions, stops the server and reports it", { timeout: 300_000 }, async () => {
  const outDir = await mkdtemp(join(tmpdir(), "exp3-cancel-"));
  let stops = 0;
  const results = await runExp3(
    { sessions: 4, model: "tiny-40l", device: "cpu", context: 64, newTokens: 2, thinkMs: 5, budgetGb: "auto:0.5", breakpoints: [10, 20, 30], outDir },
    { log: (l) => (stops += l.includes("first breakpoint") ? 1 : 0), isCancelled: () => stops > 0 },
  );
  assert.equal(results.status, "failure");
  assert.equal(results.cancelled, true);
  assert.ok(results.reasons.includes("cancelled"), results.reasons.join("; "));
  const json = JSON.parse(await readFile(join(outDir, RESULTS_FILE), "utf8"));
  assert.equal(json.cancelled, true);
});
