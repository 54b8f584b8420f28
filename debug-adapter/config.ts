// `launch` and `attach` attributes of the `djinn` debug type: checked against package.json's
// schema (schema.ts, with ajv), then the rules a schema cannot say (one attribute excludes
// another, `model` unless `server`, enough sessions for the prompts) and the defaults.
// Every error names the attribute it is about. Reference: docs/debug-adapter.md.
import { checkAttributes, ConfigError } from "./schema";

export { ConfigError } from "./schema";

export type Device = "auto" | "cpu" | "cuda";

/** One session's prompt: text (tokenised by the server) or token ids. */
export type PromptSpec = { text: string } | { tokens: number[] };

/** A breakpoint from the `breakpoints` attribute: a layer number or a module name. */
export type LaunchBreakpoint = number | string;

/**
 * The label of the i-th of `sessions` sessions made from `prompts` prompts (used in turn):
 * `prompt 2`, and `prompt 1, copy 3` when prompts repeat; none for a single session.
 */
export function sessionLabel(i: number, sessions: number, prompts: number): string {
  if (sessions <= 1) return "";
  const p = prompts > 0 ? prompts : 1;
  const label = `prompt ${(i % p) + 1}`;
  return sessions > p ? `${label}, copy ${Math.floor(i / p) + 1}` : label;
}

export interface LaunchConfig {
  request: "launch";
  model?: string;
  device: Device;
  dtype?: string;
  prompts: PromptSpec[];
  sessions: number;
  maxNewTokens: number;
  contextTokens?: number;
  breakpoints: LaunchBreakpoint[];
  vramBudgetGb?: number | string;
  hostPoolGb?: number;
  server?: string;
  token?: string;
  /** TLS to `server`: the CA file that verifies it (and the name its certificate was issued for) */
  caFile?: string;
  tlsServerName?: string;
  /** how long the event stream may be down before the server counts as lost (seconds) */
  reconnectGraceSeconds: number;
  stopOnEntry: boolean;
  /** keep each pass's stop points: step back, reverse continue, restart frame (docs/time-travel.md) */
  timeTravel: boolean;
  pythonPath?: string;
  outlinePath?: string;
  cwd?: string;
  env?: Record<string, string>;
  serverArgs: string[];
  trace: boolean;
}

export interface AttachConfig {
  request: "attach";
  server: string;
  token?: string;
  caFile?: string;
  tlsServerName?: string;
  reconnectGraceSeconds: number;
  outlinePath?: string;
  cwd?: string;
  trace: boolean;
}

export const DEFAULT_PROMPT = "Hello, Djinn.";
/**
 * Prompts of sessions a launch creates without `prompt`: session k gets the k-th (in turn past
 * the end), so the threads of `sessions: 4` differ (the first is DEFAULT_PROMPT).
 */
export const DEFAULT_PROMPTS: readonly string[] = [
  DEFAULT_PROMPT,
  "The quick brown fox",
  "Once upon a time",
  "The capital of France is",
  "def fibonacci(n):",
  "To be, or not to be",
  "In the beginning",
  "2 + 2 =",
];
export const DEFAULT_MAX_NEW_TOKENS = 8;
export const DEFAULT_RECONNECT_GRACE_SECONDS = 10;

function asObject(kind: string, raw: unknown): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError("(arguments)", `${kind} arguments must be an object; got ${Array.isArray(raw) ? "a list" : typeof raw}`);
  return raw as Record<string, unknown>;
}

/** Strings that must say something (the schema allows ""). */
const NON_EMPTY = ["model", "server", "caFile", "tlsServerName", "pythonPath", "outlinePath", "cwd"];

function checkNonEmpty(kind: string, raw: Record<string, unknown>): void {
  for (const attr of NON_EMPTY) {
    if (typeof raw[attr] === "string" && (raw[attr] as string).trim() === "") {
      throw new ConfigError(attr, `${kind} attribute '${attr}' must be a non-empty string; got ""`);
    }
  }
}

function serverAddress(kind: string, v: unknown): string | undefined {
  if (typeof v !== "string") return undefined;
  const port = Number(v.trim().slice(v.trim().lastIndexOf(":") + 1));
  if (!(port >= 1 && port <= 65535)) throw new ConfigError("server", `${kind} attribute 'server' must be an address "host:port" with a port in 1..65535; got ${JSON.stringify(v)}`);
  return v.trim();
}

function prompts(raw: Record<string, unknown>): PromptSpec[] {
  const v = raw.prompt;
  if (v === undefined) return [{ text: DEFAULT_PROMPT }];
  if (typeof v === "string") return [{ text: v }];
  const list = v as Array<string | number[]>;
  if (list.length === 0) throw new ConfigError("prompt", "launch attribute 'prompt' must be a string, or a list of prompts (each a string or a list of token ids); got an empty list");
  return list.map((p, i) => {
    if (typeof p === "string") return { text: p };
    if (p.length === 0) throw new ConfigError("prompt", `launch attribute 'prompt' item ${i} must be a string or a non-empty list of token ids; got an empty list`);
    return { tokens: p };
  });
}

export function parseLaunch(input: unknown): LaunchConfig {
  const raw = asObject("launch", input);
  checkAttributes("launch", raw);
  checkNonEmpty("launch", raw);
  const server = serverAddress("launch", raw.server);
  const model = raw.model as string | undefined;
  if (!server && !model) {
    throw new ConfigError("model", "launch attribute 'model' is required unless 'server' names a running Djinn server: smollm2-135m, a named config (tiny-40l, llama-2-7b, llama-2-13b), a .gguf file or a checkpoint folder");
  }
  let ps = prompts(raw);
  const sessions = (raw.sessions as number | undefined) ?? ps.length;
  if (raw.prompt === undefined) ps = DEFAULT_PROMPTS.slice(0, Math.min(sessions, DEFAULT_PROMPTS.length)).map((text) => ({ text }));
  if (sessions < ps.length) {
    throw new ConfigError("sessions", `launch attribute 'sessions' (${sessions}) is smaller than the number of prompts (${ps.length}); each prompt gets a session`);
  }
  const has = (attr: string) => raw[attr] !== undefined;
  if (!server) {
    for (const remote of ["caFile", "tlsServerName"]) {
      if (has(remote)) {
        throw new ConfigError(remote, `launch attribute '${remote}' is for TLS to a running server named by 'server'; a local server is reached without TLS`);
      }
    }
  } else {
    for (const local of ["device", "dtype", "vramBudgetGb", "hostPoolGb", "pythonPath", "env", "serverArgs"]) {
      if (has(local)) {
        throw new ConfigError(local, `launch attribute '${local}' configures a local server, but 'server' (${server}) names a running one; remove one of them`);
      }
    }
  }
  const budget = raw.vramBudgetGb;
  return {
    request: "launch",
    model,
    device: (raw.device as Device | undefined) ?? "auto",
    dtype: raw.dtype as string | undefined,
    prompts: ps,
    sessions,
    maxNewTokens: (raw.maxNewTokens as number | undefined) ?? DEFAULT_MAX_NEW_TOKENS,
    contextTokens: raw.contextTokens as number | undefined,
    breakpoints: ((raw.breakpoints as LaunchBreakpoint[] | undefined) ?? []).map((b) => (typeof b === "string" ? b.trim() : b)),
    vramBudgetGb: typeof budget === "string" ? budget.trim() : (budget as number | undefined),
    hostPoolGb: raw.hostPoolGb as number | undefined,
    server,
    token: raw.token as string | undefined,
    caFile: raw.caFile as string | undefined,
    tlsServerName: raw.tlsServerName as string | undefined,
    reconnectGraceSeconds: (raw.reconnectGraceSeconds as number | undefined) ?? DEFAULT_RECONNECT_GRACE_SECONDS,
    stopOnEntry: (raw.stopOnEntry as boolean | undefined) ?? false,
    timeTravel: (raw.timeTravel as boolean | undefined) ?? false,
    pythonPath: raw.pythonPath as string | undefined,
    outlinePath: raw.outlinePath as string | undefined,
    cwd: raw.cwd as string | undefined,
    env: raw.env as Record<string, string> | undefined,
    serverArgs: (raw.serverArgs as string[] | undefined) ?? [],
    trace: (raw.trace as boolean | undefined) ?? false,
  };
}

export function parseAttach(input: unknown): AttachConfig {
  const raw = asObject("attach", input);
  checkAttributes("attach", raw);
  checkNonEmpty("attach", raw);
  const server = serverAddress("attach", raw.server);
  if (!server) throw new ConfigError("server", 'attach attribute \'server\' is required: the address "host:port" of a running Djinn server');
  return {
    request: "attach",
    server,
    token: raw.token as string | undefined,
    caFile: raw.caFile as string | undefined,
    tlsServerName: raw.tlsServerName as string | undefined,
    reconnectGraceSeconds: (raw.reconnectGraceSeconds as number | undefined) ?? DEFAULT_RECONNECT_GRACE_SECONDS,
    outlinePath: raw.outlinePath as string | undefined,
    cwd: raw.cwd as string | undefined,
    trace: (raw.trace as boolean | undefined) ?? false,
  };
}
