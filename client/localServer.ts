// Starts a Djinn server as a child process and waits for its `DJINN_READY {json}` line.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { resolvePython, serverEnv } from "./python";
import { repoRoot } from "./repoRoot";

export { repoRoot } from "./repoRoot";
export { resolvePython } from "./python";

export interface LocalServerOptions {
  /** Default: $DJINN_PYTHON, else <repo>/.venv/bin/python if it exists, else python3. */
  python?: string;
  model: string;
  device?: "auto" | "cpu" | "cuda";
  dtype?: string;
  /** GB (1e9 bytes), or "auto:FRACTION" together with planSessions/planContext. */
  budgetGb?: number | string;
  planSessions?: number;
  planContext?: number;
  hostPoolGb?: number;
  maxContext?: number;
  swapPolicy?: "pressure" | "eager";
  /** 0 (default): the server picks a free port and reports it in DJINN_READY. */
  port?: number;
  extraArgs?: string[];
  cwd?: string;
  /**
   * The token the server requires (x-djinn-token), or none. The one token rule of a local
   * server: it requires exactly this token; a DJINN_TOKEN in the starter's environment (or in
   * `env`) is never inherited, so a client that sends `LocalServer.token` always gets in.
   */
  token?: string;
  env?: Record<string, string>;
  onLog?: (line: string) => void;
  /** Default 600 s: a 13B model plus a pinned host pool takes a while. */
  startTimeoutMs?: number;
  /** Aborting it while the server loads stops the server and rejects with kind "cancelled". */
  signal?: AbortSignal;
}

export interface LocalServer {
  address: string;
  /** the token it requires (undefined: none): what its clients send */
  token?: string;
  /** The parsed DJINN_READY JSON. */
  ready: any;
  process: ChildProcess;
  /** The last lines the server wrote to stderr (for error reports). */
  recentStderr(): string[];
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. */
  stop(): Promise<void>;
}

export const READY_PREFIX = "DJINN_READY ";

/** Why a server did not get ready: its Python is missing or unusable, or the server itself failed. */
export type StartFailure = "python-not-found" | "missing-module" | "python-too-old" | "exited" | "timeout" | "bad-ready-line" | "cancelled";

/** The rejection of startLocalServer: the command line, the exit, and the telling line of its stderr. */
export class LocalServerStartError extends Error {
  constructor(
    message: string,
    readonly kind: StartFailure,
    /** one line: what went wrong ("ModuleNotFoundError: No module named 'grpc'", "python not found: /x/python") */
    override readonly cause: string,
    readonly python: string,
    readonly args: string[],
    readonly code: number | null,
    readonly signal: string | null,
    readonly stderr: string[],
    /** missing-module: the module Python named */
    readonly missingModule?: string,
  ) {
    super(message);
    this.name = "LocalServerStartError";
  }

  /** The Python, not the server, is the problem: a different interpreter or environment fixes it. */
  get isPythonProblem(): boolean {
    return this.kind === "python-not-found" || this.kind === "missing-module" || this.kind === "python-too-old";
  }
}

/**
 * The telling line of a server's stderr when it ends before it is ready: a missing module, a
 * Python too old for the server's syntax, else the last error-like line (not a traceback frame).
 */
export function startupCause(stderr: string[]): { kind: StartFailure; cause: string; missingModule?: string } {
  const lines = stderr.map((l) => l.trim()).filter(Boolean);
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /(?:ModuleNotFoundError|ImportError): No module named '?([\w.]+)'?/.exec(lines[i]);
    if (m) return { kind: "missing-module", cause: lines[i].slice(m.index), missingModule: m[1] };
  }
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i];
    if (/future feature annotations is not defined|^SyntaxError\b|requires Python|Python 3\.1\d or (newer|later)|unsupported operand type\(s\) for \|/.test(l)) {
      return { kind: "python-too-old", cause: l };
    }
  }
  const telling = lines.filter((l) => /error|exception|refusing|cannot|unknown|invalid|not found|killed|out of memory/i.test(l) && !/^File "/.test(l) && !/^Traceback/.test(l));
  const cause = (telling.length ? telling[telling.length - 1] : lines[lines.length - 1]) ?? "";
  return { kind: "exited", cause: cause.length > 300 ? `${cause.slice(0, 297)}…` : cause };
}

/** The DJINN_READY line as one plain line: "Djinn server ready at 127.0.0.1:5556 (tiny-40l, cpu, budget 0.045 GB)". */
export function readyLine(ready: any, address?: string): string {
  const at = address ?? ready?.address ?? "?";
  const parts = [ready?.model, ready?.device_name && ready?.device !== "cpu" ? `${ready.device} [${ready.device_name}]` : ready?.device].filter(Boolean);
  const budget = typeof ready?.budget_bytes === "number" ? `budget ${formatGb(ready.budget_bytes)} GB` : "";
  return `Djinn server ready at ${at} (${[...parts, budget].filter(Boolean).join(", ")})`;
}

/** Bytes as GB (1e9) with 2–3 significant decimals: 0.045, 1.25, 80.0 */
export function formatGb(bytes: number): string {
  const g = bytes / 1e9;
  return g >= 10 ? g.toFixed(1) : g >= 1 ? g.toFixed(2) : g >= 0.01 ? g.toFixed(3) : g.toPrecision(2);
}
const STDERR_TAIL_LINES = 40;
const KILL_AFTER_MS = 5000;

export function buildServerArgs(o: LocalServerOptions): string[] {
  const args = ["-m", "djinn.server.server_main", "--host", "127.0.0.1", "--port", String(o.port ?? 0)];
  args.push("--device", o.device ?? "auto", "--model", o.model);
  if (o.dtype) args.push("--dtype", o.dtype);
  if (o.budgetGb !== undefined) args.push("--vram-budget-gb", String(o.budgetGb));
  if (o.planSessions !== undefined) args.push("--plan-sessions", String(o.planSessions));
  if (o.planContext !== undefined) args.push("--plan-context", String(o.planContext));
  if (o.hostPoolGb !== undefined) args.push("--host-pool-gb", String(o.hostPoolGb));
  if (o.maxContext !== undefined) args.push("--max-context", String(o.maxContext));
  if (o.swapPolicy) args.push("--swap-policy", o.swapPolicy);
  return args.concat(o.extraArgs ?? []);
}

export function startLocalServer(opts: LocalServerOptions): Promise<LocalServer> {
  const python = resolvePython(opts.python);
  const args = buildServerArgs(opts);
  const log = opts.onLog ?? (() => {});
  const token = opts.token || undefined;
  const child = spawn(python, args, {
    cwd: opts.cwd ?? repoRoot(),
    // the token through the environment, not the command line that `ps` shows
    env: serverEnv({ ...(opts.env ?? {}), DJINN_TOKEN: token ?? "" }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // Never leave a server behind when this process goes away.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));

  const stderrTail: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => {
    stderrTail.push(line);
    if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
    log(line);
  });

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), KILL_AFTER_MS);
    await exited;
    clearTimeout(timer);
  };

  return new Promise<LocalServer>((resolve, reject) => {
    let settled = false;
    const fail = (why: string, found?: { kind: StartFailure; cause: string; missingModule?: string }, code: number | null = null, signal: string | null = null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const f = found ?? startupCause(stderrTail);
      const tail = stderrTail.length ? `\n--- last ${stderrTail.length} lines of stderr ---\n${stderrTail.join("\n")}` : "";
      const cause = f.cause ? `: ${f.cause}` : "";
      reject(new LocalServerStartError(`Djinn server (${python} ${args.join(" ")}) ${why}${cause}${tail}`, f.kind, f.cause, python, args, code, signal, [...stderrTail], f.missingModule));
    };
    // A cancel (DAP cancel, a cancelled progress) during a long model load: stop it now, not once it is up.
    const onAbort = () => {
      fail("was cancelled before it was ready", { kind: "cancelled", cause: "cancelled" });
      void stop();
    };
    if (opts.signal?.aborted) queueMicrotask(onAbort);
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.once("exit", () => opts.signal?.removeEventListener("abort", onAbort));
    const timeoutMs = opts.startTimeoutMs ?? 600_000;
    const timer = setTimeout(() => {
      fail(`was not ready after ${timeoutMs} ms`, { kind: "timeout", cause: `not ready after ${Math.round(timeoutMs / 1000)} s` });
      void stop();
    }, timeoutMs);

    createInterface({ input: child.stdout! }).on("line", (line) => {
      log(line);
      if (settled || !line.startsWith(READY_PREFIX)) return;
      let ready: any;
      try {
        ready = JSON.parse(line.slice(READY_PREFIX.length));
      } catch (e) {
        fail(`printed an unparsable ready line: ${line}`, { kind: "bad-ready-line", cause: `an unparsable ready line: ${line.slice(0, 200)}` });
        void stop();
        return;
      }
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      const address = typeof ready?.address === "string" ? ready.address : `127.0.0.1:${ready?.port ?? opts.port}`;
      resolve({ address, token, ready, process: child, stop, recentStderr: () => [...stderrTail] });
    });
    child.once("error", (e: NodeJS.ErrnoException) => {
      // ENOENT: no such executable; EACCES: not executable
      if (e.code === "ENOENT" || e.code === "EACCES") fail(`could not start: ${e.message}`, { kind: "python-not-found", cause: `python not found: ${python}${e.code === "EACCES" ? " is not executable" : ""}` });
      else fail(`could not start: ${e.message}`, { kind: "exited", cause: e.message });
    });
    // 'close' (not 'exit') so the last stderr lines have been read.
    child.once("close", (code, signal) => fail(`exited before it was ready (code ${code}, signal ${signal})`, undefined, code, signal));
  });
}
