// Exp 3 from the palette's command at small N (the workspace's exp3.yaml: 4 sessions of
// tiny-40l on the CPU): the same driver as the command line, results in the workspace. With
// no window server it starts its own; with one running (and fitting) it runs there; one that
// differs is asked about (servers.ask, stubbed: a modal dialog cannot be clicked here).
import * as assert from "node:assert";
import { existsSync, readFileSync } from "node:fs";
import * as vscode from "vscode";
import { DjinnClient } from "../../client";
import type { ServerQuestion } from "../../src/serverManager";
import { api, workspaceDir } from "./helpers";

type Result = { status: string; resultsFile: string; plotFile: string; reportFile: string; outDir: string };

describe("Djinn extension: Exp 3 from the palette", function () {
  this.timeout(240_000);

  it("runs at small N and writes a results file whose status is success, the plot and the report", async () => {
    const { servers } = await api();
    await servers.stop(); // none runs: Exp 3 starts a server of its own, as it always did
    const r = await vscode.commands.executeCommand<Result>("djinn.runExp3");
    assert.ok(r, "the command returned a result");
    assert.ok(r!.outDir.startsWith(workspaceDir()), `results in the workspace: ${r!.outDir}`);
    const results = JSON.parse(readFileSync(r!.resultsFile, "utf8"));
    assert.strictEqual(results.status, "success", JSON.stringify(results.reasons));
    assert.strictEqual(results.num_sessions_requested, 4);
    assert.strictEqual(results.num_sessions_finished, 4);
    assert.strictEqual(results.outputs_match, 4);
    assert.ok(results.swapping_active, "the budget made it swap");
    assert.strictEqual(results.server.started_locally, true);
    // the extension runs from this repository's checkout: its commit, not "unknown"
    assert.match(results.git_commit, /^[0-9a-f]{40}$/);
    assert.strictEqual(typeof results.git_dirty, "boolean");
    assert.ok(results.hardware.host_cpu_cores > 0);
    assert.ok(existsSync(r!.plotFile) && readFileSync(r!.plotFile, "utf8").startsWith("<svg"));
    const html = readFileSync(r!.reportFile, "utf8");
    assert.match(html, /SUCCESS/);
    assert.match(html, /n\/a \(CPU: no NVML/);
    assert.match(html, /<title>Exp 3 report · SUCCESS · \d\d:\d\d:\d\d · 4 sessions<\/title>/);
  });

  it("runs on the window's running server (--server; ensureServer finds it fits, no question); the server goes on", async () => {
    const { servers } = await api();
    const s = await servers.startLocal({ model: "tiny-40l", device: "cpu", budgetGb: "auto:0.33", maxContext: 64 });
    try {
      const r = await vscode.commands.executeCommand<Result>("djinn.runExp3", { noReport: true });
      assert.ok(r, "the command returned a result");
      const results = JSON.parse(readFileSync(r!.resultsFile, "utf8"));
      assert.strictEqual(results.server.address, s.address, "the window's server");
      assert.strictEqual(results.server.started_locally, false);
      assert.strictEqual(results.status, "success", JSON.stringify(results.reasons));
      assert.strictEqual(results.num_sessions_finished, 4);
      assert.strictEqual(servers.current?.address, s.address, "still the window's server");
      const c = new DjinnClient(s.address, { token: s.token });
      try {
        assert.strictEqual((await c.getInfo(10_000)).model?.name, "tiny-40l");
      } finally {
        c.close();
      }
    } finally {
      await servers.stop();
    }
  });

  it("a run that differs from the window's server asks (naming Exp 3 and the difference); Cancel runs nothing", async () => {
    const { servers } = await api();
    const saved = servers.ask;
    const asked: ServerQuestion[] = [];
    servers.ask = async (q) => (asked.push(q), undefined);
    const s = await servers.startLocal({ model: "tiny-40l", device: "cpu", budgetGb: "auto:0.5", maxContext: 64 });
    try {
      const r = await vscode.commands.executeCommand<Result | undefined>("djinn.runExp3", { noReport: true });
      assert.strictEqual(r, undefined, "cancelled: no run");
      assert.strictEqual(asked.length, 1);
      assert.strictEqual(asked[0].why, "Exp 3");
      assert.ok(asked[0].differences.some((d) => d.startsWith("budget auto:0.33")), asked[0].differences.join("; "));
      assert.strictEqual(servers.current?.address, s.address, "the window's server untouched");
    } finally {
      servers.ask = saved;
      await servers.stop();
    }
  });
});
