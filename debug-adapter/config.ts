// Validation of `launch` and `attach` attributes of the `djinn` debug type.
// Every error names the attribute it is about, so the user sees what to fix.
// The reference of these attributes is docs/debug-adapter.md.

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

export class ConfigError extends Error {
  constructor(readonly attribute: string, message: string) {
    super(message);
    this.name = "ConfigError";
  }
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

/** Attributes VS Code or launch.json add to every configuration; accepted and ignored. */
const GENERIC = new Set([
  "type", "request", "name", "presentation", "preLaunchTask", "postDebugTask", "internalConsoleOptions",
  "debugServer", "noDebug", "suppressMultipleSessionWarning", "serverReadyAction", "windows", "linux", "osx",
  "suppressDebugToolbar", "suppressDebugStatusbar", "suppressDebugView", "timeout",
]);

const LAUNCH_ATTRS = [
  "model", "device", "dtype", "prompt", "sessions", "maxNewTokens", "contextTokens", "breakpoints", "vramBudgetGb",
  "hostPoolGb", "server", "token", "caFile", "tlsServerName", "reconnectGraceSeconds", "stopOnEntry", "pythonPath", "outlinePath", "cwd",
  "env", "serverArgs", "trace",
];
const ATTACH_ATTRS = ["server", "token", "caFile", "tlsServerName", "reconnectGraceSeconds", "outlinePath", "cwd", "trace"];

const MODULE_RE = /^(embed_tokens|norm|lm_head|layers\.\d+(\.(attn|mlp))?)$/;
const SERVER_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  const t = typeof v;
  const shown = t === "string" ? JSON.stringify(v) : t === "object" ? "an object" : String(v);
  return t === "object" ? shown : `${shown} (${t === "string" ? "a string" : t === "number" ? "a number" : t === "boolean" ? "a boolean" : t})`;
}

function fail(kind: string, attr: string, expected: string, got: unknown): never {
  throw new ConfigError(attr, `${kind} attribute '${attr}' must be ${expected}; got ${describe(got)}`);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

function checkUnknown(kind: string, raw: Record<string, unknown>, known: string[]): void {
  for (const key of Object.keys(raw)) {
    if (key.startsWith("__") || GENERIC.has(key) || known.includes(key)) continue;
    const near = known
      .map((k) => [k, editDistance(key.toLowerCase(), k.toLowerCase())] as const)
      .filter(([, d]) => d <= 3)
      .sort((x, y) => x[1] - y[1])[0];
    const hint = near ? ` (did you mean '${near[0]}'?)` : "";
    throw new ConfigError(key, `unknown ${kind} attribute '${key}'${hint}; the djinn debug type knows: ${known.join(", ")}`);
  }
}

class Reader {
  constructor(readonly kind: string, readonly raw: Record<string, unknown>) {}

  has(attr: string): boolean {
    return this.raw[attr] !== undefined;
  }

  string(attr: string, opts: { nonEmpty?: boolean } = {}): string | undefined {
    const v = this.raw[attr];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || (opts.nonEmpty && v.trim() === "")) fail(this.kind, attr, opts.nonEmpty ? "a non-empty string" : "a string", v);
    return v;
  }

  bool(attr: string, dflt: boolean): boolean {
    const v = this.raw[attr];
    if (v === undefined) return dflt;
    if (typeof v !== "boolean") fail(this.kind, attr, "true or false", v);
    return v;
  }

  int(attr: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const v = this.raw[attr];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      fail(this.kind, attr, max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in ${min}..${max}`, v);
    }
    return v;
  }

  number(attr: string, min: number, exclusiveMin: boolean): number | undefined {
    const v = this.raw[attr];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || (exclusiveMin ? v <= min : v < min)) {
      fail(this.kind, attr, `a number ${exclusiveMin ? "greater than" : "of at least"} ${min}`, v);
    }
    return v;
  }

  oneOf<T extends string>(attr: string, values: readonly T[], dflt: T): T {
    const v = this.raw[attr];
    if (v === undefined) return dflt;
    if (typeof v !== "string" || !values.includes(v as T)) fail(this.kind, attr, `one of ${values.map((x) => `"${x}"`).join(", ")}`, v);
    return v as T;
  }

  server(attr: string): string | undefined {
    const v = this.string(attr, { nonEmpty: true });
    if (v === undefined) return undefined;
    const m = SERVER_RE.exec(v.trim());
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) fail(this.kind, attr, 'an address "host:port" (e.g. "127.0.0.1:5556")', v);
    return v.trim();
  }
}

function asObject(kind: string, raw: unknown): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError("(arguments)", `${kind} arguments must be an object; got ${describe(raw)}`);
  return raw as Record<string, unknown>;
}

function prompts(r: Reader): PromptSpec[] {
  const v = r.raw.prompt;
  if (v === undefined) return [{ text: DEFAULT_PROMPT }];
  if (typeof v === "string") return [{ text: v }];
  const expected = "a string, or a list of prompts (each a string or a list of token ids)";
  if (!Array.isArray(v) || v.length === 0) fail(r.kind, "prompt", expected, v);
  return v.map((p, i) => {
    if (typeof p === "string") return { text: p };
    if (Array.isArray(p) && p.length > 0 && p.every((t) => typeof t === "number" && Number.isInteger(t) && t >= 0)) {
      return { tokens: p as number[] };
    }
    throw new ConfigError("prompt", `${r.kind} attribute 'prompt' item ${i} must be a string or a non-empty list of token ids (integers >= 0); got ${describe(p)}`);
  });
}

function launchBreakpoints(r: Reader): LaunchBreakpoint[] {
  const v = r.raw.breakpoints;
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail(r.kind, "breakpoints", 'a list of layer numbers or module names (e.g. [10, 20, "layers.30.mlp"])', v);
  return v.map((b, i) => {
    if (typeof b === "number" && Number.isInteger(b) && b >= 0) return b;
    if (typeof b === "string" && MODULE_RE.test(b.trim())) return b.trim();
    throw new ConfigError("breakpoints", `${r.kind} attribute 'breakpoints' item ${i} must be a layer number (integer >= 0) or a module name such as "layers.10", "layers.10.attn", "layers.10.mlp"; got ${describe(b)}`);
  });
}

export function parseLaunch(input: unknown): LaunchConfig {
  const raw = asObject("launch", input);
  checkUnknown("launch", raw, LAUNCH_ATTRS);
  const r = new Reader("launch", raw);
  const server = r.server("server");
  const model = r.string("model", { nonEmpty: true });
  if (!server && !model) {
    throw new ConfigError("model", "launch attribute 'model' is required unless 'server' names a running Djinn server: a named config (tiny-40l, llama-2-7b, llama-2-13b) or a checkpoint folder");
  }
  let ps = prompts(r);
  const sessions = r.int("sessions", 1, 10_000) ?? ps.length;
  if (raw.prompt === undefined) ps = DEFAULT_PROMPTS.slice(0, Math.min(sessions, DEFAULT_PROMPTS.length)).map((text) => ({ text }));
  if (sessions < ps.length) {
    throw new ConfigError("sessions", `launch attribute 'sessions' (${sessions}) is smaller than the number of prompts (${ps.length}); each prompt gets a session`);
  }
  let budget: number | string | undefined;
  const b = raw.vramBudgetGb;
  if (typeof b === "string") {
    if (!/^auto:\d+(\.\d+)?$/.test(b.trim())) fail("launch", "vramBudgetGb", 'a number of GB or "auto:FRACTION"', b);
    budget = b.trim();
  } else {
    budget = r.number("vramBudgetGb", 0, true);
  }
  let env: Record<string, string> | undefined;
  if (raw.env !== undefined) {
    const e = raw.env;
    if (typeof e !== "object" || e === null || Array.isArray(e) || !Object.values(e).every((x) => typeof x === "string")) {
      fail("launch", "env", "an object of string values", e);
    }
    env = e as Record<string, string>;
  }
  let serverArgs: string[] = [];
  if (raw.serverArgs !== undefined) {
    const a = raw.serverArgs;
    if (!Array.isArray(a) || !a.every((x) => typeof x === "string")) fail("launch", "serverArgs", "a list of strings", a);
    serverArgs = a as string[];
  }
  const cfg: LaunchConfig = {
    request: "launch",
    model,
    device: r.oneOf("device", ["auto", "cpu", "cuda"] as const, "auto"),
    dtype: r.has("dtype") ? r.oneOf("dtype", ["auto", "bfloat16", "float16", "float32"] as const, "auto") : undefined,
    prompts: ps,
    sessions,
    maxNewTokens: r.int("maxNewTokens", 1, 100_000) ?? DEFAULT_MAX_NEW_TOKENS,
    contextTokens: r.int("contextTokens", 1, 1 << 20),
    breakpoints: launchBreakpoints(r),
    vramBudgetGb: budget,
    hostPoolGb: r.number("hostPoolGb", 0, false),
    server,
    token: r.string("token"),
    caFile: r.string("caFile", { nonEmpty: true }),
    tlsServerName: r.string("tlsServerName", { nonEmpty: true }),
    reconnectGraceSeconds: r.number("reconnectGraceSeconds", 0, false) ?? DEFAULT_RECONNECT_GRACE_SECONDS,
    stopOnEntry: r.bool("stopOnEntry", false),
    pythonPath: r.string("pythonPath", { nonEmpty: true }),
    outlinePath: r.string("outlinePath", { nonEmpty: true }),
    cwd: r.string("cwd", { nonEmpty: true }),
    env,
    serverArgs,
    trace: r.bool("trace", false),
  };
  if (!server) {
    for (const remote of ["caFile", "tlsServerName"]) {
      if (r.has(remote)) {
        throw new ConfigError(remote, `launch attribute '${remote}' is for TLS to a running server named by 'server'; a local server is reached without TLS`);
      }
    }
  }
  if (server) {
    for (const local of ["device", "dtype", "vramBudgetGb", "hostPoolGb", "pythonPath", "env", "serverArgs"]) {
      if (r.has(local)) {
        throw new ConfigError(local, `launch attribute '${local}' configures a local server, but 'server' (${server}) names a running one; remove one of them`);
      }
    }
  }
  return cfg;
}

export function parseAttach(input: unknown): AttachConfig {
  const raw = asObject("attach", input);
  checkUnknown("attach", raw, ATTACH_ATTRS);
  const r = new Reader("attach", raw);
  const server = r.server("server");
  if (!server) throw new ConfigError("server", 'attach attribute \'server\' is required: the address "host:port" of a running Djinn server');
  return {
    request: "attach",
    server,
    token: r.string("token"),
    caFile: r.string("caFile", { nonEmpty: true }),
    tlsServerName: r.string("tlsServerName", { nonEmpty: true }),
    reconnectGraceSeconds: r.number("reconnectGraceSeconds", 0, false) ?? DEFAULT_RECONNECT_GRACE_SECONDS,
    outlinePath: r.string("outlinePath", { nonEmpty: true }),
    cwd: r.string("cwd", { nonEmpty: true }),
    trace: r.bool("trace", false),
  };
}
