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
  env?: Record<string, string>;
  onLog?: (line: string) => void;
  /** Default 600 s: a 13B model plus a pinned host pool takes a while. */
  startTimeoutMs?: number;
}

export interface LocalServer {
  address: string;
  /** The parsed DJINN_READY JSON. */
  ready: any;
  process: ChildProcess;
  /** The last lines the server wrote to stderr (for error reports). */
  recentStderr(): string[];
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. */
  stop(): Promise<void>;
}

export const READY_PREFIX = "DJINN_READY ";
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
  const child = spawn(python, args, {
    cwd: opts.cwd ?? repoRoot(),
    env: serverEnv(opts.env),
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
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const tail = stderrTail.length ? `\n--- last ${stderrTail.length} lines of stderr ---\n${stderrTail.join("\n")}` : "";
      reject(new Error(`Djinn server (${python} ${args.join(" ")}) ${why}${tail}`));
    };
    const timeoutMs = opts.startTimeoutMs ?? 600_000;
    const timer = setTimeout(() => {
      fail(`was not ready after ${timeoutMs} ms`);
      void stop();
    }, timeoutMs);

    createInterface({ input: child.stdout! }).on("line", (line) => {
      log(line);
      if (settled || !line.startsWith(READY_PREFIX)) return;
      let ready: any;
      try {
        ready = JSON.parse(line.slice(READY_PREFIX.length));
      } catch (e) {
        fail(`printed an unparsable ready line: ${line}`);
        void stop();
        return;
      }
      settled = true;
      clearTimeout(timer);
      const address = typeof ready?.address === "string" ? ready.address : `127.0.0.1:${ready?.port ?? opts.port}`;
      resolve({ address, ready, process: child, stop, recentStderr: () => [...stderrTail] });
    });
    child.once("error", (e) => fail(`could not start: ${e.message}`));
    // 'close' (not 'exit') so the last stderr lines have been read.
    child.once("close", (code, signal) => fail(`exited before it was ready (code ${code}, signal ${signal})`));
  });
}
