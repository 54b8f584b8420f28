// "Djinn: Open Model Outline": the model's module tree as a *.djinn file (one module per
// line; click the gutter to break there). From the debug session when one runs, else from
// the palette's server, else an outline already in the workspace, else from a local
// server started for the purpose.
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import * as vscode from "vscode";
import type { ServerInfo } from "../client";
import { generateOutline } from "../debug-adapter/outline";
import type { ServerManager } from "./serverManager";
import { settings } from "./settings";

export function outlineText(info: ServerInfo): string {
  const m = info.model!;
  return generateOutline(
    { name: m.name, nLayers: m.nLayers, dim: m.dim, dtype: info.dtype, device: info.device },
    info.modules.map((x) => ({ name: x.name, kind: x.kind, layer: x.layer, numParams: x.numParams })),
  );
}

function outlinePathFor(model: string): string | undefined {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder) return undefined;
  return join(folder.uri.fsPath, `${basename(model.replace(/[\\/]+$/, ""))}.djinn`);
}

async function open(uri: vscode.Uri): Promise<vscode.TextEditor> {
  const doc = await vscode.workspace.openTextDocument(uri);
  if (doc.languageId !== "djinn-model") await vscode.languages.setTextDocumentLanguage(doc, "djinn-model");
  return vscode.window.showTextDocument(doc, { preview: false });
}

async function writeAndOpen(text: string, model: string): Promise<vscode.TextEditor> {
  const path = outlinePathFor(model);
  if (!path) {
    const doc = await vscode.workspace.openTextDocument({ language: "djinn-model", content: text });
    return vscode.window.showTextDocument(doc);
  }
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  return open(vscode.Uri.file(path));
}

export async function openOutline(servers: ServerManager, arg?: { path?: string }): Promise<vscode.TextEditor | undefined> {
  if (arg?.path && existsSync(arg.path)) return open(vscode.Uri.file(arg.path));
  // 1. the active djinn debug session knows its model
  const session = vscode.debug.activeDebugSession;
  if (session?.type === "djinn") {
    try {
      const info = await session.customRequest("djinn/serverInfo");
      const model = String(info?.model ?? "model");
      const path = (session.configuration.outlinePath as string | undefined) ?? outlinePathFor(model);
      const r = await session.customRequest("djinn/outline", path ? { path } : {});
      if (r?.path && existsSync(r.path)) return open(vscode.Uri.file(r.path));
      if (r?.text) return writeAndOpen(r.text, model);
    } catch {
      /* not launched yet: fall through */
    }
  }
  // 2. the palette's server
  const palette = servers.current;
  if (palette?.info.model) return writeAndOpen(outlineText(palette.info), palette.info.model.name);
  // 3. outlines already in the workspace
  const found = await vscode.workspace.findFiles("**/*.djinn", "**/node_modules/**", 50);
  if (found.length === 1) return open(found[0]);
  if (found.length > 1) {
    const pick = await vscode.window.showQuickPick(
      found.map((u) => ({ label: basename(u.fsPath), description: vscode.workspace.asRelativePath(u), uri: u })),
      { title: "Djinn: open which model outline?" },
    );
    return pick ? open(pick.uri) : undefined;
  }
  // 4. start a local server to read the module tree
  const model = settings().defaultModel;
  const start = `Start a local server (${model})`;
  const connect = "Connect to a server…";
  const choice = await vscode.window.showInformationMessage(`Djinn: the outline comes from the model's module tree, which needs a server.`, start, connect);
  if (choice === start) {
    const server = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: starting a local server (${model})` }, () => servers.startLocal());
    return writeAndOpen(outlineText(server.info), server.info.model?.name ?? model);
  }
  if (choice === connect) {
    await vscode.commands.executeCommand("djinn.connectServer");
    if (servers.current) return writeAndOpen(outlineText(servers.current.info), servers.current.info.model?.name ?? "model");
  }
  return undefined;
}
