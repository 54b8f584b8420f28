// Shared by the extension-host tests: the extension's API, waiting, the test workspace.
import * as vscode from "vscode";
import type { DjinnApi } from "../../src/extension";

export const EXTENSION_ID = "djinn.djinn-debugger";

export async function api(): Promise<DjinnApi> {
  const ext = vscode.extensions.getExtension<DjinnApi>(EXTENSION_ID);
  if (!ext) throw new Error(`extension ${EXTENSION_ID} is not installed`);
  return ext.isActive ? ext.exports : ext.activate();
}

export function workspaceDir(): string {
  const f = vscode.workspace.workspaceFolders?.[0];
  if (!f) throw new Error("the tests need the test workspace (test/fixtures/ws) open");
  return f.uri.fsPath;
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
