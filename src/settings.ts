// The djinn.* settings, read fresh each time (they can change while the extension runs).
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import * as vscode from "vscode";
import { builtInDefaultModel } from "./defaultModel";

export type Device = "auto" | "cpu" | "cuda";

export interface DjinnSettings {
  address: string;
  /** absolute path of the CA file for TLS to a running server ("" = plain gRPC) */
  caFile: string;
  pythonPath: string;
  device: Device;
  defaultModel: string;
  vramBudgetGb: number | string;
  hostPoolGb: number;
  planSessions: number;
  planContext: number;
  telemetryIntervalMs: number;
  exp3OutputFolder: string;
  inlineAdapter: boolean;
}

export function settings(): DjinnSettings {
  const c = vscode.workspace.getConfiguration("djinn");
  const budget = c.get<number | string>("vramBudgetGb", "auto:0.33");
  return {
    address: (c.get<string>("server.address") ?? "").trim(),
    // the token is not a setting any more: src/tokenStore.ts (secret storage, then the old setting, then $DJINN_TOKEN)
    caFile: resolvePath((c.get<string>("caFile") ?? "").trim()),
    pythonPath: (c.get<string>("server.pythonPath") ?? "").trim(),
    device: (c.get<string>("server.device") as Device) ?? "auto",
    // package.json's default is smollm2-135m; without its package in the server's Python, tiny-40l
    defaultModel: explicitModel(c) || builtInDefaultModel(),
    vramBudgetGb: typeof budget === "string" && /^\d+(\.\d+)?$/.test(budget.trim()) ? Number(budget) : budget,
    hostPoolGb: c.get<number>("hostPoolGb", 2),
    planSessions: c.get<number>("plan.sessions", 8),
    planContext: c.get<number>("plan.contextTokens", 256),
    telemetryIntervalMs: Math.max(20, c.get<number>("telemetryIntervalMs", 200)),
    exp3OutputFolder: (c.get<string>("exp3.outputFolder") ?? "").trim() || "exp3-results",
    inlineAdapter: c.get<boolean>("debugAdapter.inline", true),
  };
}

/** djinn.defaultModel as the user (or the workspace) set it; "" when it is the default. */
function explicitModel(c: vscode.WorkspaceConfiguration): string {
  const i = c.inspect<string>("defaultModel");
  const set = i?.workspaceFolderValue ?? i?.workspaceValue ?? i?.globalValue;
  return (set ?? "").trim();
}

export const isAutoBudget = (b: number | string | undefined): b is string => typeof b === "string" && b.startsWith("auto:");

/** `~/x`, `${workspaceFolder}/x` and paths relative to the first workspace folder, made absolute. */
export function resolvePath(p: string): string {
  if (!p) return "";
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  let out = p.replace(/\$\{workspaceFolder\}/g, folder ?? "");
  if (out === "~" || out.startsWith("~/")) out = join(homedir(), out.slice(1));
  if (!isAbsolute(out) && folder) out = join(folder, out);
  return out;
}
