// Issue 11 (extension hygiene and the outline's language features), in the extension host:
// document symbols and hovers of *.djinn outlines; the server token in the secret storage
// (Djinn: Set Server Token; the deprecated setting, its notice and the move); the tensor
// viewer's serializer (a viewer restored after a reload reads its tensor from a real server);
// and, in a real debug session on the CPU: View Tensor's "Expression…" InputBox, Continue
// All / Pause All, the inline norms at the stopped layer and the hover's values.
import * as assert from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as vscode from "vscode";
import { DjinnClient, SessionState, startLocalServer, StopPoint, type LocalServer } from "../../client";
import { EXPRESSION_LABEL } from "../../src/viewTensorCommand";
import { api, EXTENSION_ID, waitFor, workspaceDir } from "./helpers";

const outlinePath = () => join(workspaceDir(), "tiny-40l.djinn");
const lineOf = (name: string) => readFileSync(outlinePath(), "utf8").split("\n").findIndex((l) => new RegExp(`^\\s*${name.replace(/\./g, "\\.")}\\s`).test(l));
const hoverText = (hs: vscode.Hover[]) => hs.flatMap((h) => h.contents.map((c) => (typeof c === "string" ? c : (c as vscode.MarkdownString).value))).join("\n");

describe("Djinn extension: the model outline's symbols and hovers", function () {
  this.timeout(30_000);

  it("gives document symbols for the Outline view and breadcrumbs: layers with their attention and MLP inside", async () => {
    const uri = vscode.Uri.file(outlinePath());
    await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(uri));
    const symbols = await waitFor("the symbols", async () => {
      const s = await vscode.commands.executeCommand<vscode.DocumentSymbol[]>("vscode.executeDocumentSymbolProvider", uri);
      return s?.length ? s : undefined;
    });
    const names = symbols.map((s) => s.name);
    assert.deepStrictEqual(names, ["embed_tokens", ...Array.from({ length: 40 }, (_, i) => `layers.${i}`), "norm", "lm_head"]);
    const l10 = symbols.find((s) => s.name === "layers.10")!;
    assert.strictEqual(l10.kind, vscode.SymbolKind.Module);
    assert.match(l10.detail, /layer · [\d,]+ params/);
    assert.deepStrictEqual(l10.children.map((c) => c.name), ["layers.10.attn", "layers.10.mlp"]);
    assert.strictEqual(l10.selectionRange.start.line, lineOf("layers.10"));
    assert.ok(l10.range.contains(l10.children[1].range), "the layer's range covers its MLP line (breadcrumbs follow the cursor)");
    assert.strictEqual(l10.children[0].selectionRange.start.character, 2, "the name's own range, after the indent");
  });

  it("hovers on a module name: what it is and where a breakpoint there stops", async () => {
    const uri = vscode.Uri.file(outlinePath());
    const at = (name: string, col: number) => vscode.commands.executeCommand<vscode.Hover[]>("vscode.executeHoverProvider", uri, new vscode.Position(lineOf(name), col));
    const layer = hoverText(await at("layers.10", 3));
    assert.match(layer, /\*\*layers\.10\*\* · layer · [\d,]+ params/);
    assert.match(layer, /stops before layer 10 \(its input\)/);
    assert.match(hoverText(await at("layers.10.mlp", 4)), /stops after the MLP of layer 10/);
    assert.match(hoverText(await at("lm_head", 1)), /not a stop point|after the last layer|lm_head/);
    assert.strictEqual(hoverText(await at("layers.10", 30)).includes("layers.10**"), false, "not on the comment");
  });
});

describe("Djinn extension: the server token in the secret storage", function () {
  this.timeout(30_000);

  after(async () => {
    const { servers } = await api();
    await servers.tokens.set("");
    await vscode.workspace.getConfiguration("djinn").update("server.token", undefined, vscode.ConfigurationTarget.Workspace);
  });

  it("Djinn: Set Server Token stores it in the secret storage, never in settings; debug configurations get it resolved", async () => {
    const { servers, configProvider } = await api();
    assert.strictEqual(await vscode.commands.executeCommand("djinn.setServerToken", { token: "t0ken-in-the-keychain" }), "set");
    assert.deepStrictEqual(await servers.tokens.resolve(), { token: "t0ken-in-the-keychain", source: "secret" });
    const inspected = vscode.workspace.getConfiguration("djinn").inspect("server.token");
    assert.strictEqual(inspected?.globalValue ?? inspected?.workspaceValue ?? inspected?.workspaceFolderValue, undefined, "no setting written");
    const folder = vscode.workspace.workspaceFolders![0];
    const cfg = await configProvider.resolveDebugConfiguration(folder, { type: "djinn", request: "attach", name: "token test", server: "127.0.0.1:9" });
    assert.strictEqual(cfg?.token, "t0ken-in-the-keychain", "the adapter gets it in the resolved configuration");
    const launch = await configProvider.resolveDebugConfiguration(folder, { type: "djinn", request: "launch", name: "token test", server: "127.0.0.1:9" });
    assert.strictEqual(launch?.token, "t0ken-in-the-keychain");
    assert.strictEqual(await vscode.commands.executeCommand("djinn.setServerToken", { token: "" }), "cleared");
    assert.strictEqual((await servers.tokens.resolve()).source === "secret", false);
  });

  it("still reads the deprecated plain setting, says so once, and moves it to the secret storage on request", async () => {
    const { servers, notices } = await api();
    const c = () => vscode.workspace.getConfiguration("djinn");
    await c().update("server.token", "old-plain-token", vscode.ConfigurationTarget.Workspace);
    assert.deepStrictEqual(await servers.tokens.resolve(), { token: "old-plain-token", source: "setting" });
    const notice = await waitFor("the deprecation notice", () => notices.find(/djinn\.server\.token.*plain text.*deprecated/));
    assert.deepStrictEqual(notice.actions, ["Move to Secret Storage"]);
    notice.choose("Move to Secret Storage");
    await waitFor("the setting moved", async () => c().inspect("server.token")?.workspaceValue === undefined && (await servers.tokens.resolve()).source === "secret");
    assert.deepStrictEqual(await servers.tokens.resolve(), { token: "old-plain-token", source: "secret" });
  });
});

describe("Djinn extension: the tensor viewer after a reload (its serializer)", function () {
  this.timeout(120_000);
  let server: LocalServer | undefined;
  let client: DjinnClient | undefined;
  const panels: vscode.WebviewPanel[] = [];

  after(async () => {
    for (const p of panels) p.dispose();
    client?.close();
    await server?.stop();
  });

  it("registers a serializer for djinn.tensor and activates on it", () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    assert.ok(pkg.activationEvents.includes("onWebviewPanel:djinn.tensor"));
    // VS Code refuses a second serializer for a view type: the extension's is there
    assert.throws(() => vscode.window.registerWebviewPanelSerializer("djinn.tensor", { deserializeWebviewPanel: async () => undefined }), /already registered/);
  });

  it("a viewer without a saved tensor says so instead of a blank page", async () => {
    const { tensors } = await api();
    const panel = vscode.window.createWebviewPanel("djinn.tensor", "Tensor ?", vscode.ViewColumn.Active, {});
    panels.push(panel);
    assert.strictEqual(await tensors.restore(panel, undefined), undefined);
    assert.match(panel.webview.html, /kept no tensor to show/);
  });

  it("a restored viewer reads its saved tensor from the server, where the session is still paused", async () => {
    const { tensors } = await api();
    server = await startLocalServer({ model: "tiny-40l", device: "cpu", budgetGb: 0.05, startTimeoutMs: 180_000 });
    client = new DjinnClient(server.address, { token: server.token });
    const s = await client.createSession({ promptTokens: [5, 6, 7, 8, 9, 10], maxNewTokens: 1, breakpoints: [{ id: 1, layer: 3, point: StopPoint.STOP_POINT_LAYER }] });
    await waitFor("the session paused at layer 3", async () => (await client!.listSessions()).find((x) => x.id === s.id)?.state === SessionState.SESSION_STATE_PAUSED, 60_000, 200);
    const panel = vscode.window.createWebviewPanel("djinn.tensor", "Tensor hidden", vscode.ViewColumn.Active, {});
    panels.push(panel);
    const saved = { threadId: s.id, name: "hidden", prefix: [], expression: "hidden", debugSession: "before the reload", address: server.address };
    // the slice it showed before the reload: one row (token 4) of hidden
    const shape = (await client.getTensorSummary(s.id, "hidden")).shape;
    const index = shape.map((_, d) => (d === shape.length - 2 ? 4 : 0));
    const v = await tensors.restore(panel, { view: { rowDim: -1, colDim: shape.length - 1, index }, restore: saved });
    assert.ok(v, "a viewer");
    assert.strictEqual(v!.title, `Tensor hidden · session ${s.id}`);
    assert.strictEqual(v!.ref.session, undefined, "no debug session yet");
    const r = await waitFor("the heatmap", () => (v!.lastRendered?.nonBlank ? v!.lastRendered : undefined), 30_000);
    assert.deepStrictEqual([r.rows, r.cols], [1, 128], "the saved slice, not the default one");

    // an attach to that server stops in the session (it is paused there): the debug session takes the viewer over
    const started = new Promise<vscode.DebugSession>((res) => {
      const d = vscode.debug.onDidStartDebugSession((x) => x.type === "djinn" && (d.dispose(), res(x)));
    });
    assert.ok(await vscode.debug.startDebugging(vscode.workspace.workspaceFolders![0], { type: "djinn", request: "attach", name: "attach after the reload", server: server.address }));
    const attached = await started;
    try {
      await waitFor("the viewer taken over by the attach", () => v!.ref.session?.id === attached.id, 30_000);
    } finally {
      await vscode.debug.stopDebugging(attached);
    }
  });
});

describe("Djinn extension: Continue All, View Tensor's Expression…, inline norms (a real debug session)", function () {
  this.timeout(180_000);
  let session: vscode.DebugSession | undefined;
  const stops: Array<{ threadId: number }> = [];
  let tracker: vscode.Disposable | undefined;
  /** The first line of the Logit lens scope of a thread's top frame (it names the position). */
  const lensHead = async (threadId: number): Promise<string> => {
    const top = (await session!.customRequest("stackTrace", { threadId })).stackFrames[0];
    const scopes = (await session!.customRequest("scopes", { frameId: top.id })).scopes as Array<{ name: string; variablesReference: number }>;
    const lens = scopes.find((x) => x.name === "Logit lens")!;
    const rows = (await session!.customRequest("variables", { variablesReference: lens.variablesReference })).variables as Array<{ value: string }>;
    return rows[0].value;
  };

  before(async () => {
    const { servers } = await api();
    servers.ask = async () => "use"; // the window's server of the earlier suites will do
    tracker = vscode.debug.registerDebugAdapterTrackerFactory("djinn", {
      createDebugAdapterTracker: () => ({
        onDidSendMessage: (m: { type: string; event?: string; body?: { threadId?: number } }) => {
          if (m.type === "event" && m.event === "stopped" && m.body?.threadId !== undefined) stops.push({ threadId: m.body.threadId });
        },
      }),
    });
    const started = new Promise<vscode.DebugSession>((r) => {
      const d = vscode.debug.onDidStartDebugSession((s) => s.type === "djinn" && (d.dispose(), r(s)));
    });
    const ok = await vscode.debug.startDebugging(vscode.workspace.workspaceFolders![0], {
      type: "djinn",
      request: "launch",
      name: "Djinn: issue 11 checks",
      model: "tiny-40l",
      device: "cpu",
      sessions: 2,
      prompt: ["Continue all of us", "Pause all of us"],
      maxNewTokens: 2,
      contextTokens: 32,
      breakpoints: [10],
      outlinePath: outlinePath(),
    });
    assert.ok(ok, "startDebugging");
    session = await started;
    await waitFor("two sessions stopped at layers.10", () => new Set(stops.map((s) => s.threadId)).size >= 2, 120_000);
  });

  after(async () => {
    tracker?.dispose();
    const a = await api();
    a.viewTensorPrompts.pick = (items, options) => vscode.window.showQuickPick(items, options);
    a.viewTensorPrompts.input = (options) => vscode.window.showInputBox(options);
    if (session) {
      const ended = new Promise<void>((r) => {
        const d = vscode.debug.onDidTerminateDebugSession((s) => s.id === session!.id && (d.dispose(), r()));
      });
      await vscode.debug.stopDebugging(session);
      await Promise.race([ended, new Promise((r) => setTimeout(r, 15_000))]);
    }
    await vscode.commands.executeCommand("workbench.action.closeAllEditors");
  });

  it("View Tensor's picker ends with Expression…, whose InputBox refuses an empty expression and views a typed one", async () => {
    const a = await api();
    const threadId = stops[0].threadId;
    let offered: string[] = [];
    let refusal: string | undefined;
    let accepted: string | undefined;
    a.viewTensorPrompts.pick = async (items) => {
      offered = items.map((i) => i.label);
      return items.find((i) => i.label === EXPRESSION_LABEL);
    };
    a.viewTensorPrompts.input = async (options) => {
      refusal = (await options.validateInput?.("  ")) as string | undefined;
      accepted = (await options.validateInput?.("hidden * 2")) as string | undefined;
      return "hidden * 2";
    };
    const viewer = await vscode.commands.executeCommand<{ title: string; lastRendered?: { rows: number; cols: number; nonBlank: boolean } }>("djinn.viewTensor", { session, threadId });
    assert.ok(offered.includes("hidden"), `the stop's tensors offered: ${offered.join(", ")}`);
    assert.strictEqual(offered[offered.length - 1], EXPRESSION_LABEL, "Expression… last");
    assert.match(refusal ?? "", /Type an expression/, "empty refused with a message");
    assert.strictEqual(accepted, undefined);
    assert.ok(viewer, "a viewer of the typed expression");
    assert.match(viewer!.title, /^Tensor \$\d+ · session \d+$/, "the evaluated result ($N) is viewed");
    const r = await waitFor("its heatmap", () => (viewer!.lastRendered?.nonBlank ? viewer!.lastRendered : undefined), 30_000);
    assert.strictEqual(r.cols, 128);
  });

  it("a typed scalar expression is refused as not a tensor", async () => {
    const a = await api();
    a.viewTensorPrompts.pick = async (items) => items.find((i) => i.label === EXPRESSION_LABEL);
    a.viewTensorPrompts.input = async () => "norm(hidden)";
    assert.strictEqual(await vscode.commands.executeCommand("djinn.viewTensor", { session, threadId: stops[0].threadId }), undefined);
  });

  it("shows the norms of the stopped layer's tensors as inline values, and in the hover of that layer", async () => {
    const threadId = stops[0].threadId;
    const st = await session!.customRequest("stackTrace", { threadId });
    const top = st.stackFrames[0];
    assert.match(top.name, /^layers\.10\b/);
    const uri = vscode.Uri.file(outlinePath());
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc);
    const line = top.line - 1;
    const values = await vscode.commands.executeCommand<vscode.InlineValue[]>("vscode.executeInlineValueProvider", uri, new vscode.Range(0, 0, doc.lineCount - 1, 0), {
      frameId: top.id,
      stoppedLocation: new vscode.Range(line, 0, line, 0),
    });
    const text = (values ?? []).map((v) => (v as vscode.InlineValueText).text).join(" ");
    const m = /‖hidden‖ ([\d.e+-]+)/.exec(text);
    assert.ok(m, `inline norms on the stopped line: ${JSON.stringify(values)}`);
    const direct = await session!.customRequest("evaluate", { expression: "norm(hidden)", frameId: top.id, context: "watch" });
    assert.ok(Math.abs(Number(m![1]) - Number(direct.result)) <= 1e-3 * Math.abs(Number(direct.result)), `${m![1]} vs ${direct.result}`);
    // the hover on the stopped layer adds them when the stopped frame is the focused one
    await waitFor("a djinn frame focused", () => vscode.debug.activeStackItem instanceof vscode.DebugStackFrame && vscode.debug.activeStackItem.session.id === session!.id, 15_000);
    const hover = await waitFor("the hover's norms", async () => {
      const t = hoverText(await vscode.commands.executeCommand<vscode.Hover[]>("vscode.executeHoverProvider", uri, new vscode.Position(lineOf("layers.10"), 3)));
      return /‖hidden‖/.test(t) ? t : undefined;
    }, 15_000);
    assert.match(hover, /At the stop of session \d+ \(layers\.10\): ‖hidden‖ /);
  });

  it("Continue All resumes every paused session in one request; they stop again at the next pass; Pause All answers too", async () => {
    const pkg = vscode.extensions.getExtension(EXTENSION_ID)!.packageJSON;
    const menus = pkg.contributes.menus;
    for (const id of ["djinn.continueAll", "djinn.pauseAll"]) {
      assert.ok(menus["view/title"].some((m: { command: string; when: string }) => m.command === id && /view == workbench\.debug\.callStackView/.test(m.when)), `${id} in the Call Stack's toolbar`);
      assert.ok(menus["debug/toolBar"].some((m: { command: string }) => m.command === id), `${id} in the debug toolbar`);
      assert.ok(pkg.contributes.commands.some((c: { command: string; category: string }) => c.command === id && c.category === "Djinn"), `${id} in the palette`);
    }
    // two viewers of Evaluate results of this stop: one of a typed expression, one of a bare $N
    type Viewer = { title: string; lastRendered?: { nonBlank: boolean; at: number }; lastNotice?: { type: string; message: string } };
    const threadId = stops[0].threadId;
    const typed = await vscode.commands.executeCommand<Viewer>("djinn.viewTensor", { session, threadId, expression: "hidden * 2" });
    assert.ok(typed, "a viewer of hidden * 2");
    const firstTitle = typed!.title;
    const result = /^Tensor (\$\d+)/.exec(firstTitle)![1];
    const bare = await vscode.commands.executeCommand<Viewer>("djinn.viewTensor", { session, threadId, expression: result });
    assert.ok(bare && bare !== typed, `a viewer of ${result} itself`);
    await waitFor("both render", () => typed!.lastRendered?.nonBlank && bare!.lastRendered?.nonBlank, 30_000);
    const renderedAt = typed!.lastRendered!.at;
    const lensBefore = await lensHead(threadId);

    const before = stops.length;
    const threads = await vscode.commands.executeCommand<number>("djinn.continueAll", { session });
    assert.strictEqual(threads, 2, "both sessions continued");
    await waitFor("both stopped again (the decode pass)", () => new Set(stops.slice(before).map((s) => s.threadId)).size >= 2, 60_000);
    // the typed expression is evaluated again at the new stop: a new $N, rendered; never "no tensor"
    await waitFor("the typed viewer re-evaluated", () => typed!.title !== firstTitle && (typed!.lastRendered?.at ?? 0) > renderedAt, 30_000);
    assert.match(typed!.title, /^Tensor \$\d+ · session \d+$/);
    assert.strictEqual(typed!.lastNotice?.type, "note", JSON.stringify(typed!.lastNotice));
    assert.match(typed!.lastNotice!.message, /'hidden \* 2' evaluated again at the new stop/);
    // the bare $N keeps its values and says they were the previous stop's
    await waitFor("the bare viewer's notice", () => bare!.lastNotice?.type === "stale" && /previous stop/.test(bare!.lastNotice.message), 15_000);
    assert.match(bare!.lastNotice!.message, new RegExp(`^\\${result} was a result of session ${threadId}'s previous stop`));
    assert.doesNotMatch(bare!.lastNotice!.message, /no tensor/);
    // the logit lens of the new stop is the decode pass's, not the old one
    const lensAfter = await lensHead(threadId);
    assert.notStrictEqual(lensAfter, lensBefore, `the lens moved on: ${lensAfter}`);
    await vscode.commands.executeCommand("workbench.action.closeAllEditors");
    const paused = await vscode.commands.executeCommand<number>("djinn.pauseAll", { session });
    assert.strictEqual(typeof paused, "number", "pauseAll answers how many it paused");
  });
});

describe("Djinn extension: issue 11's pure pieces", () => {
  it("the Expression… box refuses an empty expression and unbalanced brackets, takes the rest", async () => {
    const { validateExpression } = await import("../../src/viewTensorCommand");
    assert.match(validateExpression("") ?? "", /Type an expression/);
    assert.match(validateExpression("   ") ?? "", /Type an expression/);
    assert.match(validateExpression("softmax(hidden[0]") ?? "", /not closed/);
    assert.match(validateExpression("hidden]") ?? "", /closing bracket/);
    for (const ok of ["hidden", "hidden[0, -1]", "hidden * 2", "softmax(attn_scores[0, 3])", "$1"]) assert.strictEqual(validateExpression(ok), undefined, ok);
  });

  it("outline entries are the module lines (comments and blanks skipped); where each stops, in words", async () => {
    const { outlineEntries, stopsWhere, normsText } = await import("../../src/outlineLanguage");
    const e = outlineEntries("# Djinn model outline · x\n\nembed_tokens   # embedding · 10 params\nlayers.0   # layer · 5 params\n  layers.0.attn  # attention\nnorm\n");
    assert.deepStrictEqual(e.map((x) => [x.name, x.line, x.start, x.detail]), [
      ["embed_tokens", 2, 0, "embedding · 10 params"],
      ["layers.0", 3, 0, "layer · 5 params"],
      ["layers.0.attn", 4, 2, "attention"],
      ["norm", 5, 0, ""],
    ]);
    assert.match(stopsWhere("embed_tokens"), /before layers\.0/);
    assert.match(stopsWhere("layers.3.attn"), /after the attention of layer 3/);
    assert.strictEqual(normsText([{ name: "hidden", norm: "11.31" }, { name: "attn_out", norm: "3.2" }]), "‖hidden‖ 11.31 · ‖attn_out‖ 3.2");
  });
});
