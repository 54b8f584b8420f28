import * as assert from "node:assert";
import * as vscode from "vscode";
import { api, EXTENSION_ID, waitFor } from "./helpers";

describe("Djinn extension: activation", () => {
  it("is installed and activates, exporting its API", async () => {
    const a = await api();
    assert.ok(vscode.extensions.getExtension(EXTENSION_ID)?.isActive);
    assert.ok(a.monitor && a.servers && a.vram && a.tensors && a.exp3 && a.configProvider);
    assert.ok(["native", "typescript"].includes(a.codecBackend), `codec backend ${a.codecBackend}`);
  });

  it("shows the status-bar item from startup, before any Djinn command: 'Djinn: no server', a click offers to start or connect", async () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    assert.ok(pkg.activationEvents.includes("onStartupFinished"), "activated at startup, not by the first command");
    const a = await api();
    assert.strictEqual(a.monitor.status.state, "idle");
    assert.ok(a.statusBar.visible, "shown");
    assert.match(a.statusBar.text, /Djinn: no server/);
    assert.strictEqual(a.statusBar.command, "djinn.statusMenu");
    assert.ok((await vscode.commands.getCommands(true)).includes("djinn.statusMenu"));
  });

  it("registers every command of package.json under the Djinn category", async () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const declared: Array<{ command: string; category: string }> = pkg.contributes.commands;
    const all = new Set(await vscode.commands.getCommands(true));
    for (const id of ["djinn.runExp3", "djinn.showVramPanel", "djinn.openOutline", "djinn.viewTensor", "djinn.startServer", "djinn.stopServer", "djinn.connectServer"]) {
      assert.ok(declared.some((c) => c.command === id && c.category === "Djinn"), `${id} declared under Djinn`);
    }
    for (const c of declared) assert.ok(all.has(c.command), `${c.command} registered`);
  });

  it("contributes the djinn debugger, the djinn-model language with breakpoints, and the settings", async () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const dbg = pkg.contributes.debuggers.find((d: { type: string }) => d.type === "djinn");
    assert.ok(dbg, "debugger djinn");
    for (const attr of ["model", "device", "prompt", "sessions", "maxNewTokens", "contextTokens", "breakpoints", "vramBudgetGb", "hostPoolGb", "server", "token", "stopOnEntry", "pythonPath", "outlinePath"]) {
      assert.ok(dbg.configurationAttributes.launch.properties[attr]?.description, `launch attribute ${attr} described`);
    }
    assert.deepStrictEqual(dbg.configurationAttributes.launch.properties.device.enum, ["auto", "cpu", "cuda"]);
    assert.ok(pkg.contributes.breakpoints.some((b: { language: string }) => b.language === "djinn-model"));
    assert.ok((await vscode.languages.getLanguages()).includes("djinn-model"));
    const cfg = vscode.workspace.getConfiguration("djinn");
    for (const key of ["server.address", "server.token", "server.pythonPath", "defaultModel", "vramBudgetGb", "hostPoolGb"]) assert.notStrictEqual(cfg.inspect(key)?.defaultValue, undefined, `setting djinn.${key}`);
  });

  it("opens *.djinn files as djinn-model and shows a status-bar item", async () => {
    const [uri] = await vscode.workspace.findFiles("*.djinn");
    const doc = await vscode.workspace.openTextDocument(uri);
    assert.strictEqual(doc.languageId, "djinn-model");
    const a = await api();
    await waitFor("the status bar item", () => a.statusBar.text.includes("Djinn"));
  });
});
