// A real debug session against a real Djinn server on the CPU: a gutter breakpoint on the
// outline line of layers.10, four sessions (threads) stopping there, variables, the
// tensor viewer and the VRAM panel rendering data.
import * as assert from "node:assert";
import { appendFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as vscode from "vscode";
import { api, waitFor, workspaceDir } from "./helpers";

const CONFIG = "Djinn: 4 sessions of tiny-40l";
const DAP_LOG = join(process.env.RESULTS || tmpdir(), "dap.log");
const dap = (dir: string, m: unknown) => appendFileSync(DAP_LOG, `${new Date().toISOString()} ${dir} ${JSON.stringify(m).slice(0, 600)}\n`);

describe("Djinn extension: a debug session", function () {
  this.timeout(180_000);
  let session: vscode.DebugSession | undefined;
  const stopped = new Map<number, number>();
  let tracker: vscode.Disposable | undefined;

  before(async () => {
    await api();
    tracker = vscode.debug.registerDebugAdapterTrackerFactory("djinn", {
      createDebugAdapterTracker: () => ({
        // The DAP traffic goes to $RESULTS/dap.log for diagnosis.
        onWillReceiveMessage: (m: unknown) => dap("->", m),
        onDidSendMessage: (m: { type: string; event?: string; body?: { threadId?: number } }) => {
          dap("<-", m);
          if (m.type === "event" && m.event === "stopped" && m.body?.threadId !== undefined) stopped.set(m.body.threadId, (stopped.get(m.body.threadId) ?? 0) + 1);
        },
      }),
    });
  });

  after(async () => {
    tracker?.dispose();
    vscode.debug.removeBreakpoints(vscode.debug.breakpoints);
    if (session) {
      const ended = new Promise<void>((r) => {
        const d = vscode.debug.onDidTerminateDebugSession((s) => s.id === session!.id && (d.dispose(), r()));
      });
      await vscode.debug.stopDebugging(session);
      await Promise.race([ended, new Promise((r) => setTimeout(r, 15_000))]);
    }
  });

  it("stops all four sessions at a breakpoint set on the outline line of layers.10", async () => {
    const outline = join(workspaceDir(), "tiny-40l.djinn");
    const line = readFileSync(outline, "utf8").split("\n").findIndex((l) => /^layers\.10\s/.test(l));
    assert.ok(line > 0, "layers.10 in the outline");
    vscode.debug.addBreakpoints([new vscode.SourceBreakpoint(new vscode.Location(vscode.Uri.file(outline), new vscode.Position(line, 0)))]);
    const started = new Promise<vscode.DebugSession>((r) => {
      const d = vscode.debug.onDidStartDebugSession((s) => s.type === "djinn" && (d.dispose(), r(s)));
    });
    assert.ok(await vscode.debug.startDebugging(vscode.workspace.workspaceFolders![0], CONFIG), "startDebugging");
    session = await started;
    await waitFor("4 sessions stopped", () => stopped.size >= 4, 120_000);
  });

  it("reports four threads and layers.10 on top of each stack", async () => {
    const r = await session!.customRequest("threads");
    assert.strictEqual(r.threads.length, 4, JSON.stringify(r.threads));
    for (const t of r.threads) {
      assert.match(t.name, /^s\d+ · L10 · /);
      const st = await session!.customRequest("stackTrace", { threadId: t.id });
      assert.match(st.stackFrames[0].name, /^layers\.10\b/);
      assert.ok(String(st.stackFrames[0].source?.path ?? "").endsWith("tiny-40l.djinn"));
    }
  });

  it("shows the activations as variables with dtype and shape", async () => {
    const threadId = [...stopped.keys()][0];
    const st = await session!.customRequest("stackTrace", { threadId });
    const scopes = await session!.customRequest("scopes", { frameId: st.stackFrames[0].id });
    const acts = scopes.scopes.find((s: { name: string }) => s.name === "Activations");
    assert.ok(acts, JSON.stringify(scopes.scopes.map((s: { name: string }) => s.name)));
    const vars = await session!.customRequest("variables", { variablesReference: acts.variablesReference });
    const hidden = vars.variables.find((v: { name: string }) => v.name === "hidden");
    assert.ok(hidden, JSON.stringify(vars.variables.map((v: { name: string }) => v.name)));
    assert.match(hidden.value, /^(f32|float32)\[/);
    assert.ok(hidden.variablesReference > 0, "expandable");
    const rows = await session!.customRequest("variables", { variablesReference: hidden.variablesReference });
    assert.ok(rows.variables.length > 0);
  });

  it("opens the tensor viewer, which renders a heatmap of the slice", async () => {
    const a = await api();
    const threadId = [...stopped.keys()][0];
    const viewer = await vscode.commands.executeCommand<{ title: string; lastRendered?: { rows: number; cols: number; nonBlank: boolean } }>("djinn.viewTensor", { session, threadId, expression: "hidden" });
    assert.ok(viewer, "a viewer");
    const r = await waitFor("the heatmap", () => (viewer!.lastRendered?.nonBlank ? viewer!.lastRendered : undefined), 30_000);
    assert.ok(r.rows > 0 && r.cols === 128, `rendered ${r.rows} x ${r.cols}`);
    assert.ok(a.tensors.open.length >= 1);
  });

  it("opens the VRAM panel, live from the debug session's server", async () => {
    const a = await api();
    await vscode.commands.executeCommand("djinn.showVramPanel");
    await waitFor("telemetry from the debug session's server", () => a.monitor.status.state === "live" && a.monitor.target?.id.startsWith("debug:"), 30_000);
    const r = await waitFor("the VRAM chart", () => (a.vram.lastRendered && a.vram.lastRendered.points > 0 && a.vram.lastRendered.sessions === 4 ? a.vram.lastRendered : undefined), 30_000);
    assert.strictEqual(r.status, "live");
    assert.match(a.statusBar.text, /VRAM .*GB/);
  });

  it("continues every session to the end", async () => {
    const done = new Promise<void>((r) => {
      const d = vscode.debug.onDidTerminateDebugSession((s) => s.id === session!.id && (d.dispose(), r()));
    });
    vscode.debug.removeBreakpoints(vscode.debug.breakpoints);
    const r = await session!.customRequest("threads");
    // a continue without singleThread takes every paused thread along (as VS Code's Continue does)
    const c = await session!.customRequest("continue", { threadId: r.threads[0].id });
    assert.strictEqual(c?.allThreadsContinued, true, JSON.stringify(c));
    await Promise.race([done, new Promise((_, rej) => setTimeout(() => rej(new Error("the debug session did not end")), 60_000))]);
    session = undefined;
  });
});
