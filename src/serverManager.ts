// The palette's server: a local Djinn server started by the extension (Djinn: Start Local
// Server) or a connection to a running one (Djinn: Connect to Server), offered to the
// monitor (VRAM panel, status bar) and to debug configurations that name no model. When the
// local server exits on its own (a crash, or exit code 3 after a device failure) an error
// message says why and offers "Restart Server": the same settings on the same port, so the
// VRAM panel's history of that address goes on.
import * as vscode from "vscode";
import { DjinnClient, startLocalServer, type LocalServer, type ServerInfo } from "../client";
import type { Monitor } from "./monitor";
import type { Notices } from "./notices";
import { resolveServerPython } from "./python";
import { isAutoBudget, settings } from "./settings";

export type ServerKind = "local" | "remote";

export interface PaletteServer {
  kind: ServerKind;
  address: string;
  token?: string;
  caFile?: string;
  info: ServerInfo;
  local?: LocalServer;
}

export interface LocalOverrides {
  model?: string;
  device?: "auto" | "cpu" | "cuda";
  budgetGb?: number | string;
  hostPoolGb?: number;
  maxContext?: number;
  /** 0 / absent: any free port */
  port?: number;
  /** extra server flags (tests: --test-fault-injection) */
  extraArgs?: string[];
}

/** How the local server ended without being asked to. */
export interface LocalExit {
  address: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** the device error it reported, else its last stderr lines */
  cause: string;
  message: string;
  at: number;
}

/** Why a server process ended, in one line: its device error, else the telling lines of its stderr. */
export function exitCause(stderr: string[], deviceError: string | undefined, code: number | null, signal: string | null): string {
  if (deviceError) return `the device failed: ${deviceError}`;
  const lines = stderr.map((l) => l.trim()).filter(Boolean);
  const telling = lines.filter((l) => /device failed|error|exception|traceback|killed|out of memory|cuda/i.test(l) && !/^\s*File "/.test(l));
  const pick = (telling.length ? telling : lines).slice(-2).join(" · ");
  const fallback = signal ? `killed by ${signal}` : `exit code ${code}`;
  const text = pick || fallback;
  return text.length > 400 ? `${text.slice(0, 397)}…` : text;
}
export class ServerManager implements vscode.Disposable {
  private server?: PaletteServer;
  private starting?: Promise<PaletteServer>;
  /** what the last local server was started with (Restart Server starts the same) */
  private lastLocal?: { overrides: LocalOverrides; port: number };
  /** the last time the local server ended on its own (tests read it) */
  lastExit?: LocalExit;
  private readonly changed = new vscode.EventEmitter<PaletteServer | undefined>();
  readonly onDidChange = this.changed.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly monitor: Monitor,
    private readonly out: vscode.OutputChannel,
    private readonly notices: Notices,
  ) {}

  get current(): PaletteServer | undefined {
    return this.server;
  }

  get isStarting(): boolean {
    return !!this.starting;
  }

  /** Starts a local server with the settings (or `overrides`); resolves when it is ready. */
  async startLocal(overrides: LocalOverrides = {}): Promise<PaletteServer> {
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
        port: overrides.port,
        extraArgs: overrides.extraArgs,
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
      this.lastLocal = { overrides: { ...overrides, port: undefined }, port: Number(server.address.slice(server.address.lastIndexOf(":") + 1)) };
      await this.replace(server);
      // 'close', not 'exit': by then its last stderr lines have been read.
      server.local!.process.once("close", (code, signal) => {
        if (this.server !== server) return; // stopped or replaced on purpose
        this.server = undefined;
        void this.setContext();
        this.changed.fire(undefined);
        this.exitedOnItsOwn(server, code, signal);
      });
      return server;
    } finally {
      this.starting = undefined;
    }
  }

  /** The local server ended without being asked to: say why and offer to restart it. */
  private exitedOnItsOwn(server: PaletteServer, code: number | null, signal: NodeJS.Signals | null): void {
    const cause = exitCause(server.local!.recentStderr(), this.monitor.deviceError(server.address), code, signal);
    const how = signal ? `was killed (${signal})` : `exited with code ${code}`;
    const message = `Djinn: the local server at ${server.address} ${how}: ${cause}`;
    this.lastExit = { address: server.address, code, signal, cause, message, at: Date.now() };
    this.out.appendLine(`[server] ${message.slice("Djinn: ".length)}`);
    // The monitor keeps the target (and its history) and says "gone" now; this message is the notice.
    this.monitor.markLost("palette", `the local server ${how}`);
    const restart = "Restart Server";
    const showLog = "Show Log";
    this.notices.show(code === 0 && !signal ? "warning" : "error", message, [restart, showLog], (a) => {
      if (a === showLog) return this.out.show();
      if (a === restart) return this.restart().catch((e) => void this.notices.show("error", `Djinn: the local server did not restart: ${(e as Error).message.split("\n")[0]}`, []));
      return undefined;
    });
  }

  /**
   * Starts the local server again with the settings it had, on the same port when it is free
   * (the monitor's history of that address goes on), else on any port.
   */
  async restart(): Promise<PaletteServer> {
    const last = this.lastLocal;
    if (this.server?.kind === "local") {
      const old = this.server;
      this.server = undefined;
      await old.local!.stop();
    }
    const overrides = last?.overrides ?? {};
    this.out.appendLine(`[server] restarting the local Djinn server${last ? ` on port ${last.port}` : ""}`);
    try {
      return await this.startLocal({ ...overrides, port: last?.port });
    } catch (e) {
      if (!last?.port || !/bind|address already in use|port/i.test((e as Error).message)) throw e;
      this.out.appendLine(`[server] port ${last.port} is taken; starting on another one`);
      return this.startLocal(overrides);
    }
  }

  /** A local server was started (and may be restarted) in this window. */
  get canRestart(): boolean {
    return !!this.lastLocal;
  }

  /** Connects to a running server (checks it answers GetInfo). */
  async connect(address: string, token?: string, caFile?: string): Promise<PaletteServer> {
    const client = new DjinnClient(address, { token, caFile });
    try {
      await client.waitForReady(10_000);
      const info = await client.getInfo();
      const server: PaletteServer = { kind: "remote", address, token, caFile, info };
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
    this.monitor.offer({ id: "palette", address: server.address, token: server.token, caFile: server.caFile, label: server.kind === "local" ? "local server" : "connected server" });
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
