// View Tensor's layout: the first viewer opens beside the active editor, later ones as tabs
// in the same group, so three View Tensors add one editor group, not three splits. A stand-in
// debug session names a server that is not there: the viewers open and say they cannot read
// the tensor, which is all the layout needs.
import * as assert from "node:assert";
import * as vscode from "vscode";
import { viewerColumn, type TensorViewer } from "../../src/tensorViewer";
import { api, waitFor } from "./helpers";

function fakeSession(): vscode.DebugSession {
  return {
    id: "layout-test",
    type: "djinn",
    name: "layout test",
    workspaceFolder: undefined,
    configuration: { type: "djinn", request: "attach", name: "layout test" },
    customRequest: async (command: string) => (command === "djinn/serverInfo" ? { address: "127.0.0.1:9", local: true } : undefined),
    getDebugProtocolBreakpoint: async () => undefined,
  } as unknown as vscode.DebugSession;
}

describe("Djinn extension: View Tensor layout", function () {
  this.timeout(60_000);
  const opened: TensorViewer[] = [];

  after(async () => {
    for (const v of opened) v.dispose();
    await vscode.commands.executeCommand("workbench.action.closeAllEditors");
  });

  it("places a new viewer with the open viewers (the last used), else beside the active editor", () => {
    assert.strictEqual(viewerColumn(undefined, []), vscode.ViewColumn.Beside);
    assert.strictEqual(viewerColumn(undefined, [vscode.ViewColumn.Beside]), vscode.ViewColumn.Beside, "a panel not placed yet is no group");
    assert.strictEqual(viewerColumn(undefined, [vscode.ViewColumn.Two]), vscode.ViewColumn.Two);
    assert.strictEqual(viewerColumn(vscode.ViewColumn.Three, [vscode.ViewColumn.Two, vscode.ViewColumn.Three]), vscode.ViewColumn.Three);
    assert.strictEqual(viewerColumn(vscode.ViewColumn.Four, [vscode.ViewColumn.Two, undefined]), vscode.ViewColumn.Two, "the last used one was closed");
  });

  it("three View Tensors share one editor group; the groups grow by at most one", async () => {
    const { tensors } = await api();
    await vscode.commands.executeCommand("workbench.action.closeAllEditors");
    const doc = await vscode.workspace.openTextDocument({ content: "layers.10\n", language: "plaintext" });
    await vscode.window.showTextDocument(doc, vscode.ViewColumn.One);
    const groupsBefore = vscode.window.tabGroups.all.length;
    const session = fakeSession();
    for (const expression of ["hidden", "attn_out", "k_cache[3]"]) {
      const name = expression.replace(/\[.*$/, "");
      const prefix = expression.includes("[") ? [3] : [];
      opened.push(await tensors.show({ session, threadId: 1, name, prefix, expression }));
    }
    const columns = await waitFor("the viewers placed", () => {
      const c = opened.map((v) => v.column);
      return c.every((x) => x !== undefined && x >= 1) ? c : undefined;
    }, 10_000);
    assert.strictEqual(new Set(columns).size, 1, `one group for all viewers: ${columns.join(", ")}`);
    assert.notStrictEqual(columns[0], vscode.ViewColumn.One, "beside the editor, not over it");
    const groupsAfter = vscode.window.tabGroups.all.length;
    assert.ok(groupsAfter <= groupsBefore + 1, `editor groups ${groupsBefore} -> ${groupsAfter}`);
    const group = vscode.window.tabGroups.all.find((g) => g.viewColumn === columns[0])!;
    const titles = group.tabs.map((t) => t.label);
    for (const v of opened) assert.ok(titles.includes(v.title), `${v.title} is a tab of that group: ${titles.join(" | ")}`);
  });

  it("a viewer moved to another group takes the next ones with it", async () => {
    const { tensors } = await api();
    const last = opened[opened.length - 1];
    const before = last.column!;
    last.reveal();
    await vscode.commands.executeCommand("workbench.action.moveEditorToNextGroup");
    const moved = await waitFor("the viewer moved", () => (last.column !== undefined && last.column !== before ? last.column : undefined), 10_000);
    last.reveal();
    await waitFor("the moved viewer active", () => vscode.window.tabGroups.activeTabGroup.viewColumn === moved, 5_000);
    const v = await tensors.show({ session: fakeSession(), threadId: 1, name: "q", prefix: [], expression: "q" });
    opened.push(v);
    const col = await waitFor("placed", () => (v.column !== undefined && v.column >= 1 ? v.column : undefined), 10_000);
    assert.strictEqual(col, moved);
  });
});
