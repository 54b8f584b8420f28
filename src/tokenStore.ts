// The server token (x-djinn-token): kept in VS Code's SecretStorage (the OS keychain on the
// desktop), set with "Djinn: Set Server Token", never written to settings. Where it is read:
// the secret, else the deprecated plain setting djinn.server.token (a notice offers to move
// it), else $DJINN_TOKEN. Debug sessions get it in their resolved configuration (memory
// only), local servers through their environment (client/localServer.ts).
import * as vscode from "vscode";
import type { Notices } from "./notices";

export const TOKEN_SECRET_KEY = "djinn.server.token";
export const TOKEN_SETTING = "server.token";
export const MOVE_TO_SECRET = "Move to Secret Storage";

export type TokenSource = "secret" | "setting" | "environment" | "none";

export class TokenStore implements vscode.Disposable {
  private warned = false;
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChange = this.changed.event;
  private readonly sub: vscode.Disposable;

  constructor(private readonly secrets: vscode.SecretStorage, private readonly notices: Notices, private readonly log: (line: string) => void) {
    this.sub = secrets.onDidChange((e) => e.key === TOKEN_SECRET_KEY && this.changed.fire());
  }

  /** The token and where it came from; the plain setting brings the deprecation notice (once per window). */
  async resolve(): Promise<{ token: string; source: TokenSource }> {
    const secret = ((await this.secrets.get(TOKEN_SECRET_KEY)) ?? "").trim();
    if (secret) return { token: secret, source: "secret" };
    const setting = plainSetting();
    if (setting) {
      this.deprecationNotice();
      return { token: setting, source: "setting" };
    }
    const env = (process.env.DJINN_TOKEN ?? "").trim();
    return env ? { token: env, source: "environment" } : { token: "", source: "none" };
  }

  /** The token to send, or undefined for none. */
  async get(): Promise<string | undefined> {
    return (await this.resolve()).token || undefined;
  }

  /** Stores the token in the secret storage ("" deletes it). */
  async set(token: string): Promise<void> {
    const t = token.trim();
    if (t) await this.secrets.store(TOKEN_SECRET_KEY, t);
    else await this.secrets.delete(TOKEN_SECRET_KEY);
    this.log(t ? "the server token is set (secret storage)" : "the server token is cleared (secret storage)");
  }

  /** The plain setting's value into the secret storage, and the setting removed wherever it is set. */
  async moveSettingToSecret(): Promise<boolean> {
    const value = plainSetting();
    if (!value) return false;
    await this.set(value);
    const c = vscode.workspace.getConfiguration("djinn");
    const where = c.inspect<string>(TOKEN_SETTING);
    if (where?.globalValue !== undefined) await c.update(TOKEN_SETTING, undefined, vscode.ConfigurationTarget.Global);
    if (where?.workspaceValue !== undefined) await c.update(TOKEN_SETTING, undefined, vscode.ConfigurationTarget.Workspace);
    for (const f of vscode.workspace.workspaceFolders ?? []) {
      const fc = vscode.workspace.getConfiguration("djinn", f.uri);
      if (fc.inspect<string>(TOKEN_SETTING)?.workspaceFolderValue !== undefined) await fc.update(TOKEN_SETTING, undefined, vscode.ConfigurationTarget.WorkspaceFolder);
    }
    this.log("moved the server token from the setting djinn.server.token to the secret storage");
    return true;
  }

  private deprecationNotice(): void {
    if (this.warned) return;
    this.warned = true;
    this.notices.show(
      "warning",
      "Djinn: the server token is read from the setting djinn.server.token, which keeps it as plain text in settings.json (deprecated). Keep it in VS Code's secret storage instead (Djinn: Set Server Token).",
      [MOVE_TO_SECRET],
      (a) => a === MOVE_TO_SECRET && this.moveSettingToSecret(),
    );
  }

  dispose(): void {
    this.sub.dispose();
    this.changed.dispose();
  }
}

function plainSetting(): string {
  return (vscode.workspace.getConfiguration("djinn").get<string>(TOKEN_SETTING) ?? "").trim();
}

/** "Djinn: Set Server Token": a password box; empty clears it. Resolves with what was done. */
export async function setServerTokenCommand(tokens: TokenStore, arg?: { token?: string }): Promise<"set" | "cleared" | undefined> {
  const token =
    arg?.token ??
    (await vscode.window.showInputBox({
      title: "Djinn: server token",
      prompt: "The token of the Djinn server (its --token or --tokens-file entry), kept in VS Code's secret storage. Empty: no token.",
      password: true,
      ignoreFocusOut: true,
    }));
  if (token === undefined) return undefined;
  await tokens.set(token);
  const done = token.trim() ? "set" : "cleared";
  void vscode.window.showInformationMessage(done === "set" ? "Djinn: the server token is stored in VS Code's secret storage." : "Djinn: the server token is cleared.");
  return done;
}
