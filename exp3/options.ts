// Exp 3 options: command-line parsing and the GPU / CPU defaults.

import { parseArgs as utilParseArgs } from "node:util";

export type Device = "auto" | "cpu" | "cuda";

export interface Exp3Options {
  sessions: number;
  model: string;
  context: number;
  /** GB (1e9 B), or "auto:FRACTION" (the server sizes it from its own measurements). */
  budgetGb: number | string;
  hostPoolGb?: number;
  newTokens: number;
  breakpoints: number[];
  thinkMs: number;
  outDir: string;
  /** host:port of a running server; when absent a local server is started. */
  server?: string;
  token?: string;
  /** PEM CA of a --server that serves TLS; tlsServerName overrides the name checked in its certificate. */
  caFile?: string;
  tlsServerName?: string;
  baseline: boolean;
  device: Device;
  python?: string;
  seed: number;
  dtype?: string;
  swapPolicy?: "pressure" | "eager";
  telemetryMs: number;
  /** Fail the run when nothing happens for this long. */
  stallTimeoutS: number;
  /** Recorded in the results file. */
  commandLine?: string[];
  /** Where else to look for the git checkout whose commit is recorded (after this code's own: the workspace). */
  gitDirs?: string[];
}

/** What the user said; everything else comes from defaultsFor(). */
export type Exp3Args = Partial<Exp3Options>;

export const GPU_DEFAULTS = {
  model: "llama-2-13b",
  context: 2048,
  budgetGb: 80 as number | string,
  hostPoolGb: 96 as number | undefined,
  sessions: 50,
  newTokens: 4,
};

export const CPU_DEFAULTS = {
  model: "tiny-40l",
  context: 256,
  // Weights + workspace + a third of all sessions' KV: demand exceeds the budget, so it must swap.
  budgetGb: "auto:0.33" as number | string,
  hostPoolGb: undefined as number | undefined,
  sessions: 50,
  newTokens: 3,
};

export function defaultsFor(gpu: boolean, args: Exp3Args): Exp3Options {
  const d = gpu ? GPU_DEFAULTS : CPU_DEFAULTS;
  return {
    sessions: args.sessions ?? d.sessions,
    model: args.model ?? d.model,
    context: args.context ?? d.context,
    budgetGb: args.budgetGb ?? d.budgetGb,
    hostPoolGb: args.hostPoolGb ?? d.hostPoolGb,
    newTokens: args.newTokens ?? d.newTokens,
    breakpoints: args.breakpoints ?? [10, 20, 30],
    thinkMs: args.thinkMs ?? 25,
    outDir: args.outDir ?? "out/exp3",
    server: args.server,
    token: args.token,
    caFile: args.caFile,
    tlsServerName: args.tlsServerName,
    baseline: args.baseline ?? false,
    device: args.device ?? "auto",
    python: args.python,
    seed: args.seed ?? 1234,
    dtype: args.dtype,
    swapPolicy: args.swapPolicy,
    telemetryMs: args.telemetryMs ?? 100,
    stallTimeoutS: args.stallTimeoutS ?? 300,
    commandLine: args.commandLine,
    gitDirs: args.gitDirs,
  };
}

export const USAGE = `Usage: node dist/exp3.js [options]   (Exp 3: N paused sessions under a VRAM budget)
  --sessions N          sessions created at once (default 50)
  --model M             named config or checkpoint folder (GPU: llama-2-13b, CPU: tiny-40l)
  --context C           KV capacity per session in tokens (GPU 2048, CPU 256)
  --budget-gb X         VRAM budget in GB, or auto:FRACTION (GPU 80, CPU auto:0.33)
  --host-pool-gb Y      pinned host pool for swapped KV (GPU 96)
  --new-tokens K        tokens generated per session (GPU 4, CPU 3)
  --breakpoints L,L,..  layer breakpoints (default 10,20,30)
  --think-ms T          pause before each continue (default 25, jittered)
  --out DIR             results folder (default out/exp3)
  --server HOST:PORT    use a running server instead of starting one
  --token T             x-djinn-token for --server (default $DJINN_TOKEN); a local
                        server then requires it too (it never reads $DJINN_TOKEN)
  --ca-file F           TLS: the PEM CA (or self-signed certificate) of --server
  --tls-server-name N   TLS: the name to check in --server's certificate (default: its host)
  --baseline            also run the PyTorch-eager baseline afterwards
  --device D            auto | cpu | cuda (default auto)
  --python P            python for the local server and the baseline
  --seed S              prompt and jitter seed (default 1234)
  --dtype D             model dtype passed to the server
  --swap-policy P       pressure | eager
  --telemetry-ms T      telemetry interval (default 100)
  --stall-timeout-s S   give up when nothing happens for S seconds (default 300)`;

export class UsageError extends Error {}

type Kind = "int" | "number" | "string" | "budget" | "list" | "device" | "policy" | "flag";
const FLAGS: Record<string, [keyof Exp3Options, Kind]> = {
  sessions: ["sessions", "int"],
  model: ["model", "string"],
  context: ["context", "int"],
  "budget-gb": ["budgetGb", "budget"],
  "host-pool-gb": ["hostPoolGb", "number"],
  "new-tokens": ["newTokens", "int"],
  breakpoints: ["breakpoints", "list"],
  "think-ms": ["thinkMs", "number"],
  out: ["outDir", "string"],
  server: ["server", "string"],
  token: ["token", "string"],
  "ca-file": ["caFile", "string"],
  "tls-server-name": ["tlsServerName", "string"],
  baseline: ["baseline", "flag"],
  device: ["device", "device"],
  python: ["python", "string"],
  seed: ["seed", "int"],
  dtype: ["dtype", "string"],
  "swap-policy": ["swapPolicy", "policy"],
  "telemetry-ms": ["telemetryMs", "number"],
  "stall-timeout-s": ["stallTimeoutS", "number"],
};

function convert(flag: string, kind: Kind, raw: string): unknown {
  const bad = (what: string) => new UsageError(`--${flag}: expected ${what}, got '${raw}'`);
  switch (kind) {
    case "int": {
      if (!/^\d+$/.test(raw)) throw bad("a non-negative integer");
      return Number(raw);
    }
    case "number": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n) || n < 0) throw bad("a non-negative number");
      return n;
    }
    case "budget": {
      if (/^auto:(0?\.\d+|1(\.0*)?|0)$/.test(raw)) return raw;
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n) || n <= 0) throw bad("GB > 0 or auto:FRACTION (0..1)");
      return n;
    }
    case "list": {
      if (!/^\d+(,\d+)*$/.test(raw)) throw bad("comma-separated layer numbers");
      return raw.split(",").map(Number);
    }
    case "device":
      if (!["auto", "cpu", "cuda"].includes(raw)) throw bad("auto, cpu or cuda");
      return raw;
    case "policy":
      if (!["pressure", "eager"].includes(raw)) throw bad("pressure or eager");
      return raw;
    default:
      return raw;
  }
}

/** Parses `--flag value` / `--flag=value` with node:util's parseArgs (strict: unknown flags, a
 *  missing value, a value given to a switch and stray words are refused); each value is then
 *  checked by convert(). Returns null for --help. Throws UsageError. */
export function parseArgs(argv: string[]): Exp3Args | null {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = { help: { type: "boolean", short: "h" } };
  for (const [name, [, kind]] of Object.entries(FLAGS)) options[name] = { type: kind === "flag" ? "boolean" : "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = utilParseArgs({ args: argv, options, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return null;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || name === "help") continue;
    const [key, kind] = FLAGS[name];
    out[key] = kind === "flag" ? true : convert(name, kind, value as string);
  }
  return out as Exp3Args;
}
