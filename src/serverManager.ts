// The window's server: one per window, shared by the palette (Djinn: Start Local Server /
// Connect to Server), debug sessions (a launch configuration with a model and no `server`
// gets this server's address; the extension starts it when none runs) and Exp 3. It is a
// local Djinn server started by the extension or a connection to a running one, offered to
// the monitor (VRAM panel, status bar). `ensureServer` is how a consumer asks for it: it
// returns the running server when it fits, asks when it differs (model, budget, ...), or
// starts one. When the local server exits on its own (a crash, or exit code 3 after a device
// failure) an error message says why and offers "Restart Server": the same settings on the
// same port, so the VRAM panel's history of that address goes on. When it does not start
// because of its Python (not found, too old, lacking torch / grpcio / ...), the message says
// so and offers "Set Up Python Environment" and "Select Python Interpreter". A window reload
// stops it; the next activation says so and offers "Start Again".
import { basename } from "node:path";
import * as vscode from "vscode";
import { DjinnClient, formatGb, LocalServerStartError, READY_PREFIX, readyLine, startLocalServer, type LocalServer, type ServerInfo } from "../client";
import type { Monitor } from "./monitor";
import type { Notice, Notices } from "./notices";
import { describeProbe, MIN_PYTHON, probePython, PythonEnvironments, resolveServerPython, tooOld, versionText } from "./python";
import { isAutoBudget, settings, type Device } from "./settings";
import { TokenStore } from "./tokenStore";

export type ServerKind = "local" | "remote";

/** What a consumer wants of the window's server; absent fields: anything (or the settings, when one is started). */
export interface WantedServer {
  /** named config (tiny-40l, llama-2-13b, ...) or checkpoint folder */
  model?: string;
  device?: Device;
  dtype?: string;
  /** GB (1e9 B) or "auto:FRACTION" */
  budgetGb?: number | string;
  hostPoolGb?: number;
  /** the longest context a session will ask for (a local server's --max-context) */
  maxContext?: number;
  /** with an auto budget: how many sessions it is planned for (default djinn.plan.sessions) */
  planSessions?: number;
  pythonPath?: string;
  env?: Record<string, string>;
  /** extra server flags (launch.json's serverArgs; tests: --test-fault-injection) */
  extraArgs?: string[];
}

export interface LocalOverrides extends WantedServer {
  /** 0 / absent: any free port */
  port?: number;
}

/** What a local server was started with (all resolved). */
export interface StartedWith {
  model: string;
  device: Device;
  dtype?: string;
  budgetGb: number | string;
  hostPoolGb: number;
  maxContext: number;
  python: string;
  env?: Record<string, string>;
  extraArgs: string[];
}

export interface PaletteServer {
  kind: ServerKind;
  address: string;
  token?: string;
  caFile?: string;
  info: ServerInfo;
  local?: LocalServer;
  /** local: what it was started with */
  started?: StartedWith;
}

/** The question ensureServer asks when the running server differs from what is wanted. */
export interface ServerQuestion {
  /** who wants it ("debug configuration 'Djinn: tiny-40l'", "Exp 3") */
  why: string;
  server: PaletteServer;
  wanted: WantedServer;
  /** one line each: "budget 8 GB (it has 0.045 GB)" */
  differences: string[];
  message: string;
  /** the button labels: "Use the running server (tiny-40l, 0.045 GB budget)", "Restart it with 8 GB" */
  use: string;
  restart: string;
}
export type ServerAnswer = "use" | "restart" | undefined;

export interface EnsureOptions {
  /** when the running server differs: ask (default), use it anyway, or restart it as wanted */
  onDiffer?: "ask" | "use" | "restart";
  /** a progress notification while a server starts (default true) */
  progress?: boolean;
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

/** The local server that a reload (or closing the window) stopped: in workspaceState. */
export interface RememberedServer {
  address: string;
  port: number;
  model: string;
  overrides: LocalOverrides;
  at: number;
}
const REMEMBER_KEY = "djinn.windowServer";
/** A remembered server older than this is forgotten without a word (the window was closed for long). */
const REMEMBER_MS = 12 * 3600_000;

export const SET_UP_PYTHON = "Set Up Python Environment";
export const SELECT_PYTHON = "Select Python Interpreter";
export const START_AGAIN = "Start Again";

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

const budgetText = (b: number | string) => (typeof b === "number" ? `${b} GB` : b);
const sameList = (a: string[] = [], b: string[] = []) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The model a server runs, as a person names it. */
function modelOf(s: PaletteServer): string {
  return s.info.model?.name ?? s.started?.model ?? "?";
}

/** What differs between the running server and what is wanted, one line each (empty: it fits). */
export function serverDifferences(s: PaletteServer, w: WantedServer): string[] {
  const out: string[] = [];
  const info = s.info;
  const st = s.started;
  if (w.model !== undefined) {
    const name = info.model?.name;
    const bare = basename(w.model.replace(/[\\/]+$/, ""));
    if (!(w.model === st?.model || w.model === name || bare === name)) out.push(`model ${w.model} (it runs ${modelOf(s)})`);
  }
  if (w.device && w.device !== "auto" && !info.device.startsWith(w.device)) out.push(`device ${w.device} (it runs on ${info.device})`);
  if (w.dtype && w.dtype !== "auto" && info.dtype && info.dtype !== w.dtype) out.push(`dtype ${w.dtype} (it has ${info.dtype})`);
  const budgetBytes = info.memory?.budgetBytes ?? 0;
  if (typeof w.budgetGb === "number") {
    if (Math.abs(w.budgetGb * 1e9 - budgetBytes) > Math.max(1e6, 0.005 * budgetBytes)) out.push(`budget ${w.budgetGb} GB (it has ${formatGb(budgetBytes)} GB)`);
  } else if (isAutoBudget(w.budgetGb) && st && st.budgetGb !== w.budgetGb) {
    out.push(`budget ${w.budgetGb} (it has ${formatGb(budgetBytes)} GB${typeof st.budgetGb === "string" ? `, ${st.budgetGb}` : ""})`);
  }
  if (w.hostPoolGb !== undefined) {
    const pool = info.memory?.hostPoolBytes ?? 0;
    if (Math.abs(w.hostPoolGb * 1e9 - pool) > Math.max(2e6, 0.01 * pool)) out.push(`host pool ${w.hostPoolGb} GB (it has ${formatGb(pool)} GB)`);
  }
  if (st && w.maxContext !== undefined && w.maxContext > st.maxContext) out.push(`context ${w.maxContext} tokens (it allows ${st.maxContext})`);
  if (st && w.extraArgs !== undefined && !sameList(st.extraArgs, w.extraArgs)) out.push(`server flags ${w.extraArgs.join(" ") || "(none)"} (it has ${st.extraArgs.join(" ") || "none"})`);
  if (st && w.env !== undefined && Object.entries(w.env).some(([k, v]) => st.env?.[k] !== v)) out.push(`environment ${Object.keys(w.env).join(", ")}`);
  return out;
}

/** The running server's side of the question: "tiny-40l, 0.045 GB budget" */
function describeRunning(s: PaletteServer): string {
  const b = s.info.memory?.budgetBytes;
  return `${modelOf(s)}${b ? `, ${formatGb(b)} GB budget` : ""}`;
}

/** What a restart would change, short: "8 GB", "llama-2-7b, 8 GB", "tiny-4l" */
function describeWanted(s: PaletteServer, w: WantedServer, differences: string[]): string {
  const parts: string[] = [];
  const has = (what: string) => differences.some((d) => d.startsWith(what));
  if (has("model")) parts.push(w.model!);
  if (has("device")) parts.push(`on ${w.device}`);
  if (has("dtype")) parts.push(w.dtype!);
  if (has("budget")) parts.push(budgetText(w.budgetGb!));
  if (has("host pool")) parts.push(`a ${w.hostPoolGb} GB host pool`);
  if (has("context")) parts.push(`${w.maxContext} tokens of context`);
  if (has("server flags")) parts.push(w.extraArgs!.join(" ") || "no extra flags");
  if (has("environment")) parts.push("its environment");
  void s;
  return parts.join(", ") || "these settings";
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
  /** Set Up Python Environment, Select Python Interpreter (tests replace its pickers and runner) */
  readonly python: PythonEnvironments;
  /** the server token (secret storage, then the deprecated setting, then $DJINN_TOKEN) */
  readonly tokens: TokenStore;
  /**
   * Asks when the running server differs from what a consumer wants (a modal message; the
   * extension-host tests replace it, since a modal dialog cannot be clicked there).
   */
  ask: (q: ServerQuestion) => Thenable<ServerAnswer> = async (q) => {
    const a = await vscode.window.showWarningMessage(q.message, { modal: true, detail: q.differences.map((d) => `• ${d}`).join("\n") }, q.use, q.restart);
    return a === q.use ? "use" : a === q.restart ? "restart" : undefined;
  };

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly monitor: Monitor,
    private readonly out: vscode.OutputChannel,
    private readonly notices: Notices,
  ) {
    this.python = new PythonEnvironments(context, out);
    this.tokens = new TokenStore(context.secrets, notices, (line) => out.appendLine(`[token] ${line}`));
  }

  get current(): PaletteServer | undefined {
    return this.server;
  }

  get isStarting(): boolean {
    return !!this.starting;
  }

  /**
   * The window's server for `why`, as wanted: the running one when it fits (or when it
   * differs and the person chooses to use it), else a local server started (or restarted) with
   * `wanted` over the settings. Resolves undefined when the person cancels; rejects when a
   * server does not start (after the message with its cause and the Python buttons).
   */
  async ensureServer(wanted: WantedServer, why: string, opts: EnsureOptions = {}): Promise<PaletteServer | undefined> {
    if (this.starting) {
      try {
        await this.starting;
      } catch {
        /* it failed: start as wanted below */
      }
    }
    const running = this.server;
    if (running) {
      const differences = serverDifferences(running, wanted);
      if (differences.length === 0) return running;
      let answer: ServerAnswer = opts.onDiffer === "use" ? "use" : opts.onDiffer === "restart" ? "restart" : undefined;
      if (!opts.onDiffer || opts.onDiffer === "ask") {
        const what = running.kind === "local" ? "the window's local server" : "the connected server";
        const restart = running.kind === "local" ? `Restart it with ${describeWanted(running, wanted, differences)}` : `Start a local server with ${describeWanted(running, wanted, differences)}`;
        const q: ServerQuestion = {
          why,
          server: running,
          wanted,
          differences,
          message: `Djinn: ${why} wants ${differences.map((d) => d.replace(/ \(.*\)$/, "")).join(", ")}, but ${what} at ${running.address} runs ${describeRunning(running)}.`,
          use: `Use the running server (${describeRunning(running)})`,
          restart,
        };
        this.out.appendLine(`[server] ${why}: the running server differs (${differences.join("; ")}): asking`);
        answer = await this.ask(q);
      }
      this.out.appendLine(`[server] ${why}: ${answer === "use" ? `using the running server at ${running.address}` : answer === "restart" ? "restarting the server as wanted" : "cancelled"}`);
      if (answer === "use") return running;
      if (answer !== "restart") return undefined;
      const port = running.kind === "local" ? portOf(running.address) : undefined;
      return this.startWithProgress(`restarting the local server (${wanted.model ?? modelOf(running)})`, opts, () => this.startReplacing(wanted, port));
    }
    return this.startWithProgress(`starting a local server (${wanted.model ?? settings().defaultModel}) for ${why}`, opts, () => this.startLocal(wanted));
  }

  private startWithProgress(title: string, opts: EnsureOptions, fn: () => Promise<PaletteServer>): Promise<PaletteServer> {
    if (opts.progress === false) return fn();
    return Promise.resolve(vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: ${title}` }, fn));
  }

  /** Stops the running local server and starts one with `wanted`, on `port` when it is free. */
  private async startReplacing(wanted: LocalOverrides, port?: number): Promise<PaletteServer> {
    if (this.server?.kind === "local") {
      const old = this.server;
      this.server = undefined;
      this.out.appendLine(`[server] stopping the local Djinn server at ${old.address}`);
      await old.local!.stop();
    }
    try {
      return await this.startLocal({ ...wanted, port });
    } catch (e) {
      if (!port || !/bind|address already in use|cannot listen|port/i.test((e as Error).message)) throw e;
      this.out.appendLine(`[server] port ${port} is taken; starting on another one`);
      return this.startLocal({ ...wanted, port: undefined });
    }
  }

  /** Starts a local server with the settings (or `overrides`); resolves when it is ready. */
  async startLocal(overrides: LocalOverrides = {}): Promise<PaletteServer> {
    if (this.starting) return this.starting;
    if (this.server?.kind === "local") return this.server;
    const s = settings();
    const started: StartedWith = {
      model: overrides.model ?? s.defaultModel,
      device: overrides.device ?? s.device,
      dtype: overrides.dtype,
      budgetGb: overrides.budgetGb ?? s.vramBudgetGb,
      hostPoolGb: overrides.hostPoolGb ?? s.hostPoolGb,
      maxContext: overrides.maxContext ?? s.planContext,
      python: overrides.pythonPath || resolveServerPython(this.context),
      env: overrides.env,
      extraArgs: overrides.extraArgs ?? [],
    };
    this.out.appendLine(
      `[server] starting a local Djinn server: ${started.model} on ${started.device}, budget ${budgetText(started.budgetGb)}, host pool ${started.hostPoolGb} GB, python ${started.python}`,
    );
    this.starting = (async () => {
      const token = await this.tokens.get();
      const local = await startLocalServer({
        python: started.python,
        model: started.model,
        device: started.device,
        dtype: started.dtype,
        budgetGb: started.budgetGb,
        ...(isAutoBudget(started.budgetGb) ? { planSessions: overrides.planSessions ?? s.planSessions, planContext: started.maxContext } : {}),
        hostPoolGb: started.hostPoolGb,
        maxContext: started.maxContext,
        port: overrides.port,
        extraArgs: started.extraArgs,
        // the window's token (Djinn: Set Server Token), or none: the client library's one token rule
        token,
        env: started.env,
        onLog: (line) => this.out.appendLine(line.startsWith(READY_PREFIX) ? `[server] ${readyOf(line)}` : `[server] ${line}`),
      });
      const client = new DjinnClient(local.address, { token: local.token });
      try {
        await client.waitForReady(30_000);
        const info = await client.getInfo();
        return { kind: "local" as const, address: local.address, token: local.token, info, local, started };
      } catch (e) {
        await local.stop();
        throw e;
      } finally {
        client.close();
      }
    })();
    try {
      const server = await this.starting;
      this.lastLocal = { overrides: { ...overrides, port: undefined }, port: portOf(server.address) };
      // remembered before it becomes current: a stop() right after the start must find the record to forget
      await this.remember(server, overrides);
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
    } catch (e) {
      if (e instanceof LocalServerStartError) this.out.appendLine(`[server] did not start: ${e.message}`);
      throw e;
    } finally {
      this.starting = undefined;
    }
  }

  /**
   * Says why a local server did not start. When its Python is the cause (not found, too old,
   * lacking a package the server imports) the message names it and offers "Set Up Python
   * Environment" and "Select Python Interpreter"; after either, "Start Again" runs `retry`.
   */
  async reportStartFailure(e: unknown, retry?: () => unknown): Promise<Notice> {
    const err = e as Error;
    const showLog = "Show Log";
    if (!(err instanceof LocalServerStartError)) {
      return this.notices.show("error", `Djinn: the local server did not start: ${String(err?.message ?? err).split("\n")[0]}`, [showLog], (a) => a === showLog && this.out.show());
    }
    let kind = err.kind;
    let cause = err.cause;
    let detail = "";
    if (kind !== "python-not-found") {
      // what this Python is and lacks (a quick probe; imports nothing)
      const p = await probePython(err.python);
      if (p.version && tooOld(p.version)) {
        kind = "python-too-old";
        detail = `${err.python} is Python ${versionText(p.version)}; the server needs ${MIN_PYTHON.join(".")} or newer.`;
      } else if (p.version && p.missing.length && (kind === "missing-module" || kind === "exited")) {
        kind = "missing-module";
        detail = `${err.python} (Python ${versionText(p.version)}) lacks ${p.missing.join(", ")}, which the server needs.`;
      } else if (kind === "python-too-old") {
        kind = "exited"; // a SyntaxError of a recent Python: the server's own problem
      } else if (kind === "missing-module") {
        detail = `${err.python}: ${describeProbe(p)}.`;
      }
    } else {
      cause = `Python not found: ${err.python}`;
      detail = `Set djinn.server.pythonPath to a Python ${MIN_PYTHON.join(".")}+ with torch, grpcio, protobuf and numpy, or let Djinn make one.`;
    }
    const message = `Djinn: the local server could not start: ${cause}.${detail ? ` ${detail}` : ""}`;
    this.out.appendLine(`[server] ${message.slice("Djinn: ".length)}`);
    if (kind !== "python-not-found" && kind !== "missing-module" && kind !== "python-too-old") {
      return this.notices.show("error", message, [showLog], (a) => a === showLog && this.out.show());
    }
    return this.notices.show("error", message, [SET_UP_PYTHON, SELECT_PYTHON, showLog], async (a) => {
      if (a === showLog) return this.out.show();
      const py = a === SET_UP_PYTHON ? await this.python.setup() : await this.python.select();
      if (!py) return undefined;
      this.offerStartAgain(`Djinn: local servers will run with ${py}.`, retry);
      return undefined;
    });
  }

  private offerStartAgain(message: string, retry?: () => unknown): Notice {
    return this.notices.show("info", message, retry ? [START_AGAIN] : [], (a) => {
      if (a === START_AGAIN && retry) return retry();
      return undefined;
    });
  }

  /** The local server ended without being asked to: say why and offer to restart it. */
  private exitedOnItsOwn(server: PaletteServer, code: number | null, signal: NodeJS.Signals | null): void {
    const cause = exitCause(server.local!.recentStderr(), this.monitor.deviceError(server.address), code, signal);
    const how = signal ? `was killed (${signal})` : `exited with code ${code}`;
    const message = `Djinn: the local server at ${server.address} ${how}: ${cause}`;
    this.lastExit = { address: server.address, code, signal, cause, message, at: Date.now() };
    void this.forget();
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
    const overrides = last?.overrides ?? {};
    this.out.appendLine(`[server] restarting the local Djinn server${last ? ` on port ${last.port}` : ""}`);
    return this.startReplacing(overrides, last?.port);
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
      await this.forget();
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
    await this.forget();
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

  // ------------------------------------------------------------------ reloads

  /** The local server this window runs, remembered until it is stopped on purpose or exits on its own. */
  get remembered(): RememberedServer | undefined {
    return this.context.workspaceState.get<RememberedServer>(REMEMBER_KEY);
  }

  private async remember(server: PaletteServer, overrides: LocalOverrides): Promise<void> {
    const { port: _port, ...rest } = overrides;
    void _port;
    const r: RememberedServer = { address: server.address, port: portOf(server.address), model: modelOf(server), overrides: rest, at: Date.now() };
    await this.context.workspaceState.update(REMEMBER_KEY, r);
  }

  private async forget(): Promise<void> {
    if (this.remembered) await this.context.workspaceState.update(REMEMBER_KEY, undefined);
  }

  /**
   * At activation: a local server that was running when the window was reloaded (or closed)
   * was stopped with it. Say so, and offer "Start Again" (the same settings, on the same port
   * when it is free, so debug configurations and the VRAM panel's history stay valid).
   */
  async checkAfterReload(): Promise<Notice | undefined> {
    const r = this.remembered;
    if (!r) return undefined;
    await this.forget();
    if (Date.now() - r.at > REMEMBER_MS || this.server || this.starting) return undefined;
    this.out.appendLine(`[server] the local server at ${r.address} (${r.model}) stopped when the window was reloaded or closed`);
    return this.notices.show("info", `Djinn: the local server (${r.model} at ${r.address}) stopped when the window was reloaded or closed.`, [START_AGAIN], (a) => {
      if (a !== START_AGAIN) return undefined;
      this.lastLocal = { overrides: r.overrides, port: r.port };
      return vscode.window
        .withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: starting the local server again (${r.model})` }, () => this.startReplacing(r.overrides, r.port))
        .then(undefined, (e) => this.reportStartFailure(e, () => this.startReplacing(r.overrides, r.port)));
    });
  }

  /** What a reload does to the local server: stops it, keeping the record for the next activation. */
  async shutdownForReload(): Promise<void> {
    const local = this.server?.local;
    this.server = undefined;
    if (local) this.monitor.markLost("palette", "stopped with the window");
    await local?.stop();
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
    // the record stays: the next activation says that the reload stopped this server
    const local = this.server?.local;
    this.server = undefined;
    void local?.stop();
    this.changed.dispose();
    this.tokens.dispose();
  }
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

function readyOf(line: string): string {
  try {
    return readyLine(JSON.parse(line.slice(READY_PREFIX.length)));
  } catch {
    return line;
  }
}
