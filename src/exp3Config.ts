// Exp 3 options from a workspace exp3.yaml (snake_case or camelCase keys), checked with
// messages that name the key; the picker's choices, pre-selecting what fits this machine.
// No `vscode` import (unit-tested).
import { execFile } from "node:child_process";
import { parse } from "yaml";
import type { ServerInfo } from "../client";
import type { Exp3Args } from "../exp3/options";
import { REAL_MODEL } from "./defaultModel";

export const EXP3_FILE = "exp3.yaml";

export class Exp3ConfigError extends Error {}

type Kind = "int" | "number" | "string" | "budget" | "layers" | "bool" | "device" | "policy";
const KEYS: Record<string, [keyof Exp3Args | "out", Kind]> = {
  sessions: ["sessions", "int"],
  model: ["model", "string"],
  context: ["context", "int"],
  budget_gb: ["budgetGb", "budget"],
  budget: ["budgetGb", "budget"],
  host_pool_gb: ["hostPoolGb", "number"],
  new_tokens: ["newTokens", "int"],
  breakpoints: ["breakpoints", "layers"],
  think_ms: ["thinkMs", "number"],
  out: ["out", "string"],
  server: ["server", "string"],
  token: ["token", "string"],
  baseline: ["baseline", "bool"],
  device: ["device", "device"],
  python: ["python", "string"],
  seed: ["seed", "int"],
  dtype: ["dtype", "string"],
  swap_policy: ["swapPolicy", "policy"],
  telemetry_ms: ["telemetryMs", "number"],
  stall_timeout_s: ["stallTimeoutS", "number"],
};

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase()).replace(/-/g, "_");

export interface Exp3File {
  args: Exp3Args;
  /** the `out` key: results folder relative to the workspace */
  out?: string;
}

export function parseExp3Yaml(text: string): Exp3File {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    throw new Exp3ConfigError(`${EXP3_FILE} is not valid YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return { args: {} };
  if (typeof doc !== "object" || Array.isArray(doc)) throw new Exp3ConfigError(`${EXP3_FILE} must be a mapping of options (sessions: 50, model: llama-2-13b, ...)`);
  const args: Record<string, unknown> = {};
  let out: string | undefined;
  for (const [rawKey, value] of Object.entries(doc as Record<string, unknown>)) {
    const key = snake(rawKey);
    const spec = KEYS[key];
    if (!spec) throw new Exp3ConfigError(`${EXP3_FILE}: unknown key '${rawKey}'; known keys: ${Object.keys(KEYS).join(", ")}`);
    const [field, kind] = spec;
    const bad = (what: string) => new Exp3ConfigError(`${EXP3_FILE}: '${rawKey}' must be ${what}; got ${JSON.stringify(value)}`);
    let v: unknown;
    switch (kind) {
      case "int":
        if (typeof value !== "number" || !Number.isInteger(value) || value < 0) throw bad("a non-negative integer");
        v = value;
        break;
      case "number":
        if (typeof value !== "number" || !Number.isFinite(value) || value < 0) throw bad("a non-negative number");
        v = value;
        break;
      case "string":
        if (typeof value !== "string" || !value.trim()) throw bad("a non-empty string");
        v = value.trim();
        break;
      case "budget":
        if (typeof value === "number" && value > 0) v = value;
        else if (typeof value === "string" && /^auto:(0?\.\d+|1(\.0*)?|0)$/.test(value.trim())) v = value.trim();
        else if (typeof value === "string" && /^\d+(\.\d+)?$/.test(value.trim()) && Number(value) > 0) v = Number(value);
        else throw bad("GB > 0 or auto:FRACTION (0..1)");
        break;
      case "layers": {
        const list = typeof value === "string" ? value.split(",").map((x) => Number(x.trim())) : value;
        if (!Array.isArray(list) || list.length === 0 || !list.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0)) throw bad("a list of layer numbers, e.g. [10, 20, 30]");
        v = list;
        break;
      }
      case "bool":
        if (typeof value !== "boolean") throw bad("true or false");
        v = value;
        break;
      case "device":
        if (!["auto", "cpu", "cuda"].includes(String(value))) throw bad("auto, cpu or cuda");
        v = value;
        break;
      case "policy":
        if (!["pressure", "eager"].includes(String(value))) throw bad("pressure or eager");
        v = value;
        break;
    }
    if (field === "out") out = v as string;
    else args[field] = v;
  }
  return { args: args as Exp3Args, out };
}

/** One line describing a run's options (the output channel, the progress title). */
export function describeArgs(a: Exp3Args): string {
  const parts = [
    `${a.sessions ?? "default"} sessions`,
    a.model ? `of ${a.model}` : "",
    a.context ? `× ${a.context} tokens` : "",
    a.breakpoints ? `breakpoints ${a.breakpoints.join(",")}` : "",
    a.budgetGb !== undefined ? `budget ${a.budgetGb}${typeof a.budgetGb === "number" ? " GB" : ""}` : "",
    a.server ? `on ${a.server}` : a.device ? `device ${a.device}` : "",
    a.baseline ? "with the eager baseline" : "",
  ];
  return parts.filter(Boolean).join(", ");
}

// ------------------------------------------------------------------ the picker

/** What Exp 3 can run on here: a CUDA GPU or the CPU, and how that was found out. */
export interface Machine {
  gpu: boolean;
  /** "the running server's device cuda:0", "djinn.server.device is cpu", "nvidia-smi -L: NVIDIA H200", ... */
  why: string;
  gpuName?: string;
}

/** The GPUs `nvidia-smi -L` lists ("NVIDIA H200"), [] when it lists none, undefined when it cannot run. */
export function listNvidiaGpus(timeoutMs = 3000): Promise<string[] | undefined> {
  return new Promise((resolve) => {
    execFile("nvidia-smi", ["-L"], { timeout: timeoutMs, encoding: "utf8" }, (err, stdout) => {
      if (err) return resolve(undefined);
      resolve(
        stdout
          .split("\n")
          .map((l) => /^GPU \d+: (.*?)(?: \(UUID:.*)?$/.exec(l.trim())?.[1])
          .filter((x): x is string => !!x),
      );
    });
  });
}

/**
 * Cheaply, whether this machine runs Exp 3 on a GPU: the running server's device when one
 * runs, else the djinn.server.device setting when it names one, else whether `nvidia-smi -L`
 * lists a GPU (no torch start-up: that probe costs seconds).
 */
export async function detectMachine(o: { serverDevice?: string; serverDeviceName?: string; deviceSetting?: string; listGpus?: () => Promise<string[] | undefined> }): Promise<Machine> {
  if (o.serverDevice) {
    const gpu = o.serverDevice.startsWith("cuda");
    return { gpu, why: `the running server's device is ${o.serverDevice}${o.serverDeviceName ? ` (${o.serverDeviceName})` : ""}`, ...(gpu && o.serverDeviceName ? { gpuName: o.serverDeviceName } : {}) };
  }
  if (o.deviceSetting === "cpu" || o.deviceSetting === "cuda") return { gpu: o.deviceSetting === "cuda", why: `djinn.server.device is ${o.deviceSetting}` };
  const gpus = await (o.listGpus ?? listNvidiaGpus)();
  if (gpus === undefined) return { gpu: false, why: "no CUDA GPU: nvidia-smi is not there" };
  if (gpus.length === 0) return { gpu: false, why: "no CUDA GPU: nvidia-smi -L lists none" };
  return { gpu: true, why: `nvidia-smi -L: ${gpus[0]}${gpus.length > 1 ? ` and ${gpus.length - 1} more` : ""}`, gpuName: gpus[0] };
}

/** The window's running server, as the picker offers it. */
export interface RunningServer {
  address: string;
  token?: string;
  caFile?: string;
  info: Pick<ServerInfo, "device" | "deviceName" | "model" | "memory">;
}

export type Exp3ChoiceId = "window" | "address" | "gpu" | "cpu" | "quick" | "custom";

export interface Exp3Choice {
  id: Exp3ChoiceId;
  label: string;
  description: string;
  detail?: string;
  args?: Exp3Args;
  custom?: boolean;
}

/** The defaults of "Custom…": the full experiment on a GPU, a few sessions of a tiny model on a CPU. */
export interface CustomDefaults {
  sessions: number;
  model: string;
  context: number;
  breakpoints: number[];
  budget: string;
  device: "cpu" | "cuda";
}

const isLlama = (model: string) => /^llama/i.test(model);

export function customDefaults(m: Machine, defaultModel = "tiny-40l"): CustomDefaults {
  if (m.gpu) {
    // smollm2-135m's 30 layers lack Exp 3's layers.30: the 40-layer model, as before it was the default
    const model = !defaultModel ? "llama-2-13b" : defaultModel === REAL_MODEL ? "tiny-40l" : defaultModel;
    return { sessions: 50, model, context: isLlama(model) ? 2048 : 256, breakpoints: [10, 20, 30], budget: isLlama(model) ? "80" : "auto:0.33", device: "cuda" };
  }
  // A llama-2 named config is tens of GB: far too much for a CPU run; smollm2-135m (the CPU
  // default of debugging) has 30 layers: Exp 3's breakpoints 10/20/30 need tiny-40l's 40.
  const model = defaultModel && !isLlama(defaultModel) && defaultModel !== REAL_MODEL ? defaultModel : "tiny-40l";
  return { sessions: 8, model, context: 128, breakpoints: [10, 20, 30], budget: "auto:0.33", device: "cpu" };
}

const gb = (bytes?: number) => (bytes ? `${(bytes / 1e9).toFixed(bytes < 1e9 ? 3 : 1)} GB` : "?");

/**
 * The Exp 3 picker's items, the pre-selected one first: the window's running server when
 * there is one (Exp 3 then runs there), else the run that fits this machine (the CPU run on
 * a CPU, the full experiment on a GPU); the run that does not fit comes after, with a word.
 */
export function exp3Choices(m: Machine, o: { running?: RunningServer; address?: string; token?: string; defaultModel?: string } = {}): { items: Exp3Choice[]; active: Exp3Choice; custom: CustomDefaults } {
  const items: Exp3Choice[] = [];
  const r = o.running;
  if (r) {
    const gpu = r.info.device.startsWith("cuda");
    const maxContext = r.info.model?.maxContext || 0;
    const context = Math.min(gpu ? 2048 : 256, maxContext || Infinity);
    const sessions = gpu ? 50 : 8;
    items.push({
      id: "window",
      label: `$(server-process) This window's server: ${r.address}`,
      description: `${sessions} sessions × ${context} tokens of ${r.info.model?.name ?? "its model"} on ${r.info.deviceName || r.info.device}, its budget ${gb(r.info.memory?.budgetBytes)}`,
      detail: "Exp 3 runs on the server the VRAM panel and debug sessions use; the other choices start a server of their own",
      args: { server: r.address, token: r.token, caFile: r.caFile, sessions, context },
    });
  }
  if (o.address && o.address !== r?.address) {
    items.push({ id: "address", label: `$(remote) On ${o.address}`, description: "djinn.server.address: the running server's model and budget; 50 sessions", args: { server: o.address, token: o.token || undefined, sessions: 50 } });
  }
  const gpuRun: Exp3Choice = {
    id: "gpu",
    label: "$(server-environment) GPU: the full Exp 3",
    description: "50 × llama-2-13b, 2048 tokens, breakpoints 10/20/30, 80 GB budget",
    ...(m.gpu ? { detail: `fits this machine (${m.why})` } : { detail: `needs a CUDA GPU; this machine has none (${m.why.replace(/^no CUDA GPU: /, "")})` }),
    args: { sessions: 50, model: "llama-2-13b", context: 2048, breakpoints: [10, 20, 30], budgetGb: 80, hostPoolGb: 96, device: "cuda" },
  };
  const cpuRun: Exp3Choice = {
    id: "cpu",
    label: "$(vm) CPU: the same pressure, small model",
    description: "50 × tiny-40l, 256 tokens, budget holds a third of the KV",
    ...(m.gpu ? {} : { detail: `fits this machine (${m.why})` }),
    args: { sessions: 50, model: "tiny-40l", context: 256, breakpoints: [10, 20, 30], budgetGb: "auto:0.33", device: "cpu" },
  };
  const quick: Exp3Choice = {
    id: "quick",
    label: "$(zap) Quick check",
    description: "4 × tiny-40l, 64 tokens on the CPU (about 20 s)",
    args: { sessions: 4, model: "tiny-40l", context: 64, breakpoints: [10, 20, 30], budgetGb: "auto:0.33", device: "cpu" },
  };
  const custom = customDefaults(m, o.defaultModel);
  const customItem: Exp3Choice = {
    id: "custom",
    label: "$(edit) Custom…",
    description: `sessions, model, context, breakpoints, budget (from ${custom.sessions} × ${custom.model}, ${custom.context} tokens on the ${m.gpu ? "GPU" : "CPU"})`,
    custom: true,
  };
  items.push(...(m.gpu ? [gpuRun, cpuRun, quick] : [cpuRun, quick, gpuRun]), customItem);
  return { items, active: items[0], custom };
}
