// The palette's server commands against a real local server: start, the status bar and the
// VRAM panel live, the outline generated from it, a clear message when it is gone, stop.
import * as assert from "node:assert";
import * as vscode from "vscode";
import { api, waitFor } from "./helpers";

describe("Djinn extension: local server from the palette", function () {
  this.timeout(120_000);

  after(async () => {
    const a = await api();
    await a.servers.stop();
  });

  it("Djinn: Start Local Server starts one; the status bar shows VRAM used / budget", async () => {
    const a = await api();
    const address = await vscode.commands.executeCommand<string>("djinn.startServer");
    assert.match(String(address), /^127\.0\.0\.1:\d+$/);
    assert.strictEqual(a.servers.current?.kind, "local");
    await waitFor("live telemetry", () => a.monitor.status.state === "live" && a.monitor.samples.length > 0, 30_000);
    await waitFor("the status bar", () => /Djinn tiny-40l · VRAM [\d.]+\/[\d.]+ GB/.test(a.statusBar.text), 10_000);
  });

  it("offers the running server to configurations without a model, and as dynamic configurations", async () => {
    const a = await api();
    const folder = vscode.workspace.workspaceFolders![0];
    const c = (await a.configProvider.resolveDebugConfiguration(folder, { type: "djinn", request: "launch", name: "x" }))!;
    assert.strictEqual(c.server, a.servers.current!.address);
    assert.strictEqual(c.pythonPath, undefined, "no local-server attributes with a server");
    const dyn = (await a.dynamicProvider.provideDebugConfigurations(folder)) as vscode.DebugConfiguration[];
    assert.ok(dyn.some((d) => d.request === "attach" && d.server === a.servers.current!.address));
  });

  it("Djinn: Open Model Outline writes the outline of the server's model", async () => {
    const editor = await vscode.commands.executeCommand<vscode.TextEditor>("djinn.openOutline");
    assert.ok(editor, "an editor");
    assert.strictEqual(editor!.document.languageId, "djinn-model");
    const text = editor!.document.getText();
    assert.match(text, /^# Djinn model outline · tiny-40l · 40 layers/);
    assert.match(text, /^layers\.39\s/m);
  });

  it("the VRAM panel renders the samples, and says clearly when the server is gone", async () => {
    const a = await api();
    await vscode.commands.executeCommand("djinn.showVramPanel");
    await waitFor("the chart", () => a.vram.lastRendered && a.vram.lastRendered.points > 0 && a.vram.lastRendered.status === "live", 30_000);
    a.servers.current!.local!.process.kill("SIGKILL");
    await waitFor("'gone'", () => a.monitor.status.state === "gone", 20_000);
    assert.match(a.monitor.status.message, /is gone/);
    await waitFor("the panel's gone banner", () => a.vram.lastRendered?.status === "gone", 10_000);
    assert.match(a.statusBar.text, /server gone/);
  });

  it("Djinn: Stop Local Server forgets it; the status bar says there is no server", async () => {
    const a = await api();
    await vscode.commands.executeCommand("djinn.stopServer");
    assert.strictEqual(a.servers.current, undefined);
    await waitFor("idle", () => a.monitor.status.state === "idle", 5_000);
  });
});
