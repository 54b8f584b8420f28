// The palette's server commands against a real local server: start, the status bar and the
// VRAM panel live, the outline generated from it, a clear message when it is gone, the exit
// message with "Restart Server" (a kill, a device failure), stop; a connected server that
// goes away (the "Reconnect" offer, the kept history) and comes back on the same address.
import * as assert from "node:assert";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import * as vscode from "vscode";
import { DjinnClient, SessionState, startLocalServer, type LocalServer } from "../../client";
import { api, EXTENSION_ID, waitFor } from "./helpers";

/** The server's command line knows a flag (features that land on the server side first). */
function serverHas(flag: string): boolean {
  const root = vscode.extensions.getExtension(EXTENSION_ID)!.extensionPath;
  try {
    return readFileSync(join(root, "server", "djinn", "server", "server_main.py"), "utf8").includes(flag);
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

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

  it("the killed server: an error message with the cause and 'Restart Server'; the restart continues the VRAM history on the same address", async () => {
    const a = await api();
    const exit = await waitFor("the exit message", () => a.notices.find(/local server at .* was killed/), 10_000);
    assert.strictEqual(exit.level, "error");
    assert.deepStrictEqual(exit.actions, ["Restart Server", "Show Log"]);
    assert.match(exit.message, /SIGKILL/);
    assert.strictEqual(a.servers.lastExit?.signal, "SIGKILL");
    const address = a.servers.lastExit!.address;
    assert.strictEqual(a.monitor.status.state, "gone");
    const kept = a.monitor.samples.length;
    const first = a.monitor.samples[0];
    assert.ok(kept > 0, "the history is kept while the server is gone");
    assert.ok((a.vram.lastRendered?.points ?? 0) > 0, "the panel still shows it");
    exit.choose("Restart Server");
    await waitFor("restarted", () => a.servers.current?.kind === "local", 90_000);
    assert.strictEqual(a.servers.current!.address, address, "the same settings, the same port");
    await waitFor("live again", () => a.monitor.status.state === "live" && a.monitor.samples.length > kept, 30_000);
    assert.strictEqual(a.monitor.samples[0], first, "the same history goes on");
    await waitFor("the panel live again", () => a.vram.lastRendered?.status === "live" && a.vram.lastRendered.points > kept, 10_000);
    assert.match(a.statusBar.text, /VRAM/);
  });

  it("a device failure: the server exits with code 3 and the message says the device failed", async function () {
    const a = await api();
    if (!serverHas("--test-fault-injection")) this.skip();
    await a.servers.stop();
    const srv = await a.servers.startLocal({ model: "tiny-4l", extraArgs: ["--test-fault-injection"] });
    const client = new DjinnClient(srv.address, { token: srv.token });
    try {
      const s = await client.createSession({ promptTokens: [5, 6, 7], maxNewTokens: 2, stopOnEntry: true });
      await waitFor("paused", async () => (await client.getSession(s.id)).state === SessionState.SESSION_STATE_PAUSED, 20_000);
      await client.evaluate({ sessionId: s.id, expression: "__device_fault__" }).catch(() => undefined);
    } finally {
      client.close();
    }
    const exit = await waitFor("the exit message", () => a.notices.find(/exited with code 3/), 30_000);
    assert.strictEqual(exit.level, "error");
    assert.match(exit.message, /device failed/);
    assert.ok(exit.actions.includes("Restart Server"));
    assert.strictEqual(a.servers.lastExit?.code, 3);
    exit.choose(undefined);
  });

  it("Djinn: Stop Local Server forgets it; the status bar says there is no server", async () => {
    const a = await api();
    await vscode.commands.executeCommand("djinn.stopServer");
    assert.strictEqual(a.servers.current, undefined);
    await waitFor("idle", () => a.monitor.status.state === "idle", 5_000);
  });
});

describe("Djinn extension: a connected server that goes away and comes back", function () {
  this.timeout(180_000);
  let srv: LocalServer | undefined;

  after(async () => {
    const a = await api();
    await a.servers.stop();
    await srv?.stop();
  });

  it("gone: the status bar and the panel say so, the history is kept, a notification offers 'Reconnect'; back: the same history goes on", async () => {
    const a = await api();
    const port = await freePort();
    srv = await startLocalServer({ model: "tiny-4l", device: "cpu", port, startTimeoutMs: 120_000 });
    const address = await vscode.commands.executeCommand<string>("djinn.connectServer", { address: srv.address, token: "" });
    assert.strictEqual(address, `127.0.0.1:${port}`);
    await vscode.commands.executeCommand("djinn.showVramPanel");
    await waitFor("live", () => a.monitor.status.state === "live" && a.monitor.target?.address === address && a.monitor.samples.length > 5, 30_000);
    await waitFor("the panel live", () => a.vram.lastRendered?.status === "live", 10_000);
    const before = a.notices.recent.length;
    srv.process.kill("SIGKILL");
    await srv.stop();
    await waitFor("gone", () => a.monitor.status.state === "gone", 40_000);
    const kept = a.monitor.samples.length;
    const first = a.monitor.samples[0];
    assert.ok(kept > 5);
    assert.match(a.statusBar.text, /server gone/);
    await waitFor("the panel's gone banner", () => a.vram.lastRendered?.status === "gone", 10_000);
    assert.ok(a.vram.lastRendered!.points >= Math.min(kept, 3000), "the panel keeps the history");
    const offer = a.notices.recent.slice(before).find((n) => /lost the connection to connected server/.test(n.message));
    assert.ok(offer, `a notification; got ${a.notices.recent.slice(before).map((n) => n.message).join(" | ")}`);
    assert.ok(offer!.actions.includes("Reconnect"));
    assert.strictEqual(a.servers.lastExit?.address === address, false, "a remote server's end is not the local server's exit");
    // the server comes back on the same address; "Reconnect" does not wait for the next backoff step
    srv = await startLocalServer({ model: "tiny-4l", device: "cpu", port, startTimeoutMs: 120_000 });
    offer!.choose("Reconnect");
    await waitFor("live again", () => a.monitor.status.state === "live" && a.monitor.samples.length > kept, 30_000);
    assert.strictEqual(a.monitor.samples[0], first, "the same history goes on");
    assert.strictEqual(a.monitor.historyOf(address)!.samples, a.monitor.samples);
    await waitFor("the panel live again", () => a.vram.lastRendered?.status === "live" && a.vram.lastRendered.points > Math.min(kept, 2999), 10_000);
  });
});
