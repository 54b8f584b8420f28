// Exp 3 from the palette's command at small N (the workspace's exp3.yaml: 4 sessions of
// tiny-40l on the CPU): the same driver as the command line, results in the workspace.
import * as assert from "node:assert";
import { existsSync, readFileSync } from "node:fs";
import * as vscode from "vscode";
import { workspaceDir } from "./helpers";

describe("Djinn extension: Exp 3 from the palette", function () {
  this.timeout(240_000);

  it("runs at small N and writes a results file whose status is success, the plot and the report", async () => {
    const r = await vscode.commands.executeCommand<{ status: string; resultsFile: string; plotFile: string; reportFile: string; outDir: string }>("djinn.runExp3");
    assert.ok(r, "the command returned a result");
    assert.ok(r!.outDir.startsWith(workspaceDir()), `results in the workspace: ${r!.outDir}`);
    const results = JSON.parse(readFileSync(r!.resultsFile, "utf8"));
    assert.strictEqual(results.status, "success", JSON.stringify(results.reasons));
    assert.strictEqual(results.num_sessions_requested, 4);
    assert.strictEqual(results.num_sessions_finished, 4);
    assert.strictEqual(results.outputs_match, 4);
    assert.ok(results.swapping_active, "the budget made it swap");
    assert.ok(existsSync(r!.plotFile) && readFileSync(r!.plotFile, "utf8").startsWith("<svg"));
    assert.match(readFileSync(r!.reportFile, "utf8"), /SUCCESS/);
  });
});
