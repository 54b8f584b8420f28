// One server per window: F5 uses the server started from the palette (no second server
// process), a differing budget asks (the question is stubbed through servers.ask: a modal
// dialog cannot be clicked from the extension host), a launch configuration with a model
// starts the window's server when none runs and leaves it running when the debug session
// ends; the VRAM panel keeps one history per server address; a reload stops the local
// server and the next activation offers "Start Again".
import * as assert from "node:assert";
import * as vscode from "vscode";
import { startLocalServer, type LocalServer } from "../../client";
import type { DebugServer } from "../../src/debugTracker";
import type { ServerAnswer, ServerQuestion } from "../../src/serverManager";
import { api, waitFor } from "./helpers";

interface Output {
  category?: string;
  output: string;
}

describe("Djinn extension: one server per window", function () {
  this.timeout(240_000);
  const folder = () => vscode.workspace.workspaceFolders![0];
  const asked: ServerQuestion[] = [];
  let answer: ServerAnswer;
  let savedAsk: ((q: ServerQuestion) => Thenable<ServerAnswer>) | undefined;
  const outputs = new Map<string, Output[]>();
  let tracker: vscode.Disposable | undefined;
  let other: LocalServer | undefined;

  before(async () => {
    const a = await api();
    await a.servers.stop();
    savedAsk = a.servers.ask;
    a.servers.ask = async (q) => (asked.push(q), answer);
    tracker = vscode.debug.registerDebugAdapterTrackerFactory("djinn", {
      createDebugAdapterTracker: (s) => ({
        onDidSendMessage: (m: { type: string; event?: string; body?: Output }) => {
          if (m.type === "event" && m.event === "output" && m.body) outputs.set(s.id, [...(outputs.get(s.id) ?? []), m.body]);
        },
      }),
    });
  });

  after(async () => {
    const a = await api();
    if (savedAsk) a.servers.ask = savedAsk;
    tracker?.dispose();
    await other?.stop();
    // the next suites start their own window's server
    await a.servers.stop();
  });

  /** Starts a debug session and waits until its adapter said where its server is. */
  async function debug(config: vscode.DebugConfiguration): Promise<{ session: vscode.DebugSession; server: DebugServer }> {
    const a = await api();
    const started = new Promise<vscode.DebugSession>((r) => {
      const d = vscode.debug.onDidStartDebugSession((s) => s.type === "djinn" && s.name === config.name && (d.dispose(), r(s)));
    });
    assert.ok(await vscode.debug.startDebugging(folder(), config), "startDebugging");
    const session = await started;
    const server = await waitFor("the session's server", () => a.tracker.servers.get(session.id), 120_000);
    return { session, server };
  }

  async function end(session: vscode.DebugSession): Promise<void> {
    const ended = new Promise<void>((r) => {
      const d = vscode.debug.onDidTerminateDebugSession((s) => s.id === session.id && (d.dispose(), r()));
    });
    await vscode.debug.stopDebugging(session);
    await Promise.race([ended, new Promise((r) => setTimeout(r, 15_000))]);
  }

  it("a debug session without 'server' uses the server started from the palette: the same address, no second server process", async () => {
    const a = await api();
    const address = await vscode.commands.executeCommand<string>("djinn.startServer");
    assert.match(String(address), /^127\.0\.0\.1:\d+$/);
    const pid = a.servers.current!.local!.process.pid;
    // a new launch.json's attach entry points at it
    const initial = (await a.configProvider.provideDebugConfigurations(folder())) as vscode.DebugConfiguration[];
    assert.deepStrictEqual(initial.filter((c) => c.request === "attach").map((c) => c.server), [address]);
    const { session, server } = await debug({ type: "djinn", request: "launch", name: "Djinn: the window's server", model: "tiny-40l", sessions: 1, maxNewTokens: 1, stopOnEntry: true });
    assert.strictEqual(server.address, address, "the palette's server");
    assert.strictEqual(server.local, false, "the adapter started no server of its own");
    assert.strictEqual(asked.length, 0, "nothing differs: no question");
    assert.strictEqual(session.configuration.server, address);
    assert.strictEqual(session.configuration.pythonPath, undefined, "no local-server attributes with a server");
    await waitFor("the status bar on the same server", () => a.monitor.status.state === "live" && a.monitor.target?.address === address, 20_000);
    await end(session);
    assert.strictEqual(a.servers.current?.address, address, "still the window's server");
    assert.strictEqual(a.servers.current!.local!.process.pid, pid, "the same process");
    assert.strictEqual(a.servers.current!.local!.process.exitCode, null, "still running");
    await waitFor("the monitor back on the palette's source", () => a.monitor.target?.id === "palette" && a.monitor.target.address === address, 10_000);
  });

  it("a differing budget asks: Cancel aborts the launch, 'use' keeps the running server, 'restart' restarts it with the wanted budget on the same address", async () => {
    const a = await api();
    const address = a.servers.current!.address;
    const pid = a.servers.current!.local!.process.pid;
    const config = () => ({ type: "djinn", request: "launch", name: "Djinn: 8 GB", model: "tiny-40l", vramBudgetGb: 8, sessions: 1 });
    const resolve = async () => {
      const c = await a.configProvider.resolveDebugConfiguration(folder(), config());
      return a.configProvider.resolveDebugConfigurationWithSubstitutedVariables(folder(), c!);
    };

    answer = undefined;
    assert.strictEqual(await resolve(), undefined, "cancelled: no launch");
    assert.strictEqual(asked.length, 1);
    const q = asked[0];
    assert.match(q.use, /^Use the running server \(tiny-40l, [\d.]+ GB budget\)$/);
    assert.strictEqual(q.restart, "Restart it with 8 GB");
    assert.match(q.message, /debug configuration 'Djinn: 8 GB' wants budget 8 GB/);
    assert.strictEqual(a.servers.current!.local!.process.pid, pid, "untouched");

    answer = "use";
    const used = (await resolve())!;
    assert.strictEqual(used.server, address);
    assert.strictEqual(used.vramBudgetGb, undefined);
    assert.strictEqual(used.model, undefined, "the adapter connects to the server as it is");
    assert.strictEqual(a.servers.current!.local!.process.pid, pid);

    answer = "restart";
    const restarted = (await resolve())!;
    assert.strictEqual(asked.length, 3);
    assert.strictEqual(restarted.server, address, "the same address (the same port)");
    assert.notStrictEqual(a.servers.current!.local!.process.pid, pid, "a new process");
    assert.strictEqual(Number(a.servers.current!.info.memory!.budgetBytes), 8e9);
    // now it fits: no question
    answer = undefined;
    assert.strictEqual((await resolve())!.server, address);
    assert.strictEqual(asked.length, 3);
  });

  it("with no server running, a launch configuration with a model starts the window's server (no DJINN_READY in the Debug Console); ending the debug session leaves it running; Djinn: Stop Local Server stops it", async () => {
    const a = await api();
    await a.servers.stop();
    const { session, server } = await debug({ type: "djinn", request: "launch", name: "Djinn: tiny-4l", model: "tiny-4l", device: "cpu", sessions: 1, maxNewTokens: 1, stopOnEntry: true, trace: true });
    const srv = a.servers.current;
    assert.ok(srv, "the window's server");
    assert.strictEqual(srv!.kind, "local");
    assert.strictEqual(srv!.info.model?.name, "tiny-4l");
    assert.strictEqual(server.address, srv!.address);
    assert.strictEqual(server.local, false);
    const out = outputs.get(session.id) ?? [];
    assert.ok(!out.some((o) => o.output.includes("DJINN_READY")), `no DJINN_READY line: ${out.map((o) => `[${o.category}] ${o.output}`).join("")}`);
    await end(session);
    assert.strictEqual(a.servers.current, srv, "still running after the debug session");
    assert.strictEqual(srv!.local!.process.exitCode, null);
    await vscode.commands.executeCommand("djinn.stopServer");
    assert.strictEqual(a.servers.current, undefined);
    await waitFor("the process gone", () => srv!.local!.process.exitCode !== null || srv!.local!.process.signalCode !== null, 10_000);
  });

  it("the VRAM panel keeps one history per server address: another server shown in between does not reset it, coming back shows it", async () => {
    const a = await api();
    const address = await vscode.commands.executeCommand<string>("djinn.startServer");
    await vscode.commands.executeCommand("djinn.showVramPanel");
    await waitFor("samples of the window's server", () => a.monitor.target?.address === address && a.monitor.samples.length > 3, 30_000);
    const first = a.monitor.samples[0];
    const kept = a.monitor.samples.length;
    other = await startLocalServer({ model: "tiny-4l", device: "cpu", startTimeoutMs: 120_000 });
    a.monitor.offer({ id: "test:other", address: other.address, label: "another server" });
    await waitFor("samples of the other server", () => a.monitor.target?.address === other!.address && a.monitor.status.state === "live" && a.monitor.samples.length > 2, 30_000);
    assert.notStrictEqual(a.monitor.samples[0], first);
    assert.strictEqual(a.monitor.historyOf(address)!.samples[0], first, "the first server's history is kept");
    a.monitor.withdraw("test:other");
    await waitFor("back on the window's server", () => a.monitor.target?.address === address && a.monitor.status.state === "live", 20_000);
    assert.strictEqual(a.monitor.samples[0], first, "the same history");
    assert.ok(a.monitor.samples.length >= kept);
    await waitFor("the panel shows it", () => (a.vram.lastRendered?.points ?? 0) >= kept && a.vram.lastRendered?.status === "live", 15_000);
    await other.stop();
    other = undefined;
  });

  it("a window reload stops the local server; the next activation says so and offers 'Start Again' (the same settings, the same address)", async () => {
    const a = await api();
    const srv = (await a.servers.ensureServer({ model: "tiny-4l", budgetGb: 0.5 }, "the reload test", { onDiffer: "restart" }))!;
    assert.strictEqual(a.servers.remembered?.address, srv.address, "remembered in workspaceState");
    const before = a.notices.recent.length;
    await a.servers.shutdownForReload();
    assert.ok(srv.local!.process.exitCode !== null || srv.local!.process.signalCode !== null, "stopped with the window");
    await new Promise((r) => setTimeout(r, 500));
    assert.deepStrictEqual(a.notices.recent.slice(before).map((x) => x.message), [], "no crash message");
    const n = await a.servers.checkAfterReload();
    assert.ok(n, "a message at the next activation");
    assert.match(n!.message, /the local server \(tiny-4l at 127\.0\.0\.1:\d+\) stopped when the window was reloaded or closed/);
    assert.deepStrictEqual(n!.actions, ["Start Again"]);
    n!.choose("Start Again");
    const again = await waitFor("started again", () => a.servers.current, 120_000);
    assert.strictEqual(again.address, srv.address, "the same address");
    assert.strictEqual(again.info.model?.name, "tiny-4l");
    assert.strictEqual(Number(again.info.memory!.budgetBytes), 0.5e9, "the same settings");
    // stopped on purpose: nothing to say at the next activation
    await a.servers.stop();
    assert.strictEqual(a.servers.remembered, undefined);
    assert.strictEqual(await a.servers.checkAfterReload(), undefined);
  });
});
