// Exp 3 options from a workspace exp3.yaml (snake_case or camelCase keys), checked with
// messages that name the key. No `vscode` import (unit-tested).
import { parse } from "yaml";
import type { Exp3Args } from "../exp3/options";

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
