// The palette's server: a local Djinn server started by the extension (Djinn: Start Local
// Server) or a connection to a running one (Djinn: Connect to Server), offered to the
// monitor (VRAM panel, status bar) and to debug configurations that name no model.
import * as vscode from "vscode";
import { DjinnClient, startLocalServer, type LocalServer, type ServerInfo } from "../client";
import type { Monitor } from "./monitor";
import { resolveServerPython } from "./python";
import { isAutoBudget, settings } from "./settings";

export type ServerKind = "local" | "remote";

export interface PaletteServer {
  kind: ServerKind;
  address: string;
  token?: string;
  info: ServerInfo;
  local?: LocalServer;
}

export class ServerManager implements vscode.Disposable {
  private server?: PaletteServer;
  private starting?: Promise<PaletteServer>;
  private readonly changed = new vscode.EventEmitter<PaletteServer | undefined>();
  readonly onDidChange = this.changed.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly monitor: Monitor,
    private readonly out: vscode.OutputChannel,
  ) {}

  get current(): PaletteServer | undefined {
    return this.server;
  }

  get isStarting(): boolean {
    return !!this.starting;
  }

  /** Starts a local server with the settings (or `overrides`); resolves when it is ready. */
  async startLocal(overrides: { model?: string; device?: "auto" | "cpu" | "cuda"; budgetGb?: number | string; hostPoolGb?: number; maxContext?: number } = {}): Promise<PaletteServer> {
    if (this.starting) return this.starting;
    if (this.server?.kind === "local") return this.server;
    const s = settings();
    const model = overrides.model ?? s.defaultModel;
    const budget = overrides.budgetGb ?? s.vramBudgetGb;
    const python = resolveServerPython(this.context);
    this.out.appendLine(`[server] starting a local Djinn server: ${model} on ${overrides.device ?? s.device}, budget ${budget} GB, python ${python}`);
    this.starting = (async () => {
      const local = await startLocalServer({
        python,
        model,
        device: overrides.device ?? s.device,
        budgetGb: budget,
        ...(isAutoBudget(budget) ? { planSessions: s.planSessions, planContext: overrides.maxContext ?? s.planContext } : {}),
        hostPoolGb: overrides.hostPoolGb ?? s.hostPoolGb,
        maxContext: overrides.maxContext ?? s.planContext,
        // The token goes through the environment, not the command line (visible in `ps`).
        env: s.token ? { DJINN_TOKEN: s.token } : undefined,
        onLog: (line) => this.out.appendLine(`[server] ${line}`),
      });
      const client = new DjinnClient(local.address, { token: s.token || undefined });
      try {
        await client.waitForReady(30_000);
        const info = await client.getInfo();
        return { kind: "local" as const, address: local.address, token: s.token || undefined, info, local };
      } catch (e) {
        await local.stop();
        throw e;
      } finally {
        client.close();
      }
    })();
    try {
      const server = await this.starting;
      await this.replace(server);
      server.local!.process.once("exit", (code, signal) => {
        if (this.server !== server) return;
        this.out.appendLine(`[server] the local Djinn server exited (code ${code}, signal ${signal})`);
        this.server = undefined;
        void this.setContext();
        this.changed.fire(undefined);
        // The monitor keeps the target and says "gone" until the user stops it.
      });
      return server;
    } finally {
      this.starting = undefined;
    }
  }

  /** Connects to a running server (checks it answers GetInfo). */
  async connect(address: string, token?: string): Promise<PaletteServer> {
    const client = new DjinnClient(address, { token });
    try {
      await client.waitForReady(10_000);
      const info = await client.getInfo();
      const server: PaletteServer = { kind: "remote", address, token, info };
      await this.replace(server);
      this.out.appendLine(`[server] connected to ${address}: ${info.model?.name} on ${info.deviceName || info.device}`);
      return server;
    } finally {
      client.close();
    }
  }

  /** Stops the local server or forgets the connection. */
  async stop(): Promise<boolean> {
    const s = this.server;
    // A server that died is no longer current, but the monitor still shows it as gone: forget that too.
    const shown = this.monitor.has("palette");
    this.monitor.withdraw("palette");
    if (!s) return shown;
    this.server = undefined;
    if (s.local) {
      this.out.appendLine(`[server] stopping the local Djinn server at ${s.address}`);
      await s.local.stop();
    }
    await this.setContext();
    this.changed.fire(undefined);
    return true;
  }

  private async replace(server: PaletteServer): Promise<void> {
    const old = this.server;
    this.server = server;
    if (old?.local && old.local !== server.local) await old.local.stop();
    this.monitor.offer({ id: "palette", address: server.address, token: server.token, label: server.kind === "local" ? "local server" : "connected server" });
    await this.setContext();
    this.changed.fire(server);
  }

  private async setContext(): Promise<void> {
    await vscode.commands.executeCommand("setContext", "djinn.localServerRunning", this.server?.kind === "local");
    await vscode.commands.executeCommand("setContext", "djinn.connected", !!this.server);
  }

  dispose(): void {
    const local = this.server?.local;
    this.server = undefined;
    void local?.stop();
    this.changed.dispose();
  }
}
