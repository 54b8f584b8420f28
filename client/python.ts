// Which Python runs the server, and the environment it needs to import `djinn`.
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import { repoRoot } from "./repoRoot";

/** explicit, else $DJINN_PYTHON, else <repo>/.venv/bin/python when present, else python3. */
export function resolvePython(explicit?: string): string {
  if (explicit) return explicit;
  if (process.env.DJINN_PYTHON) return process.env.DJINN_PYTHON;
  const venv = join(repoRoot(), ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** process.env plus extra, with <repo>/server first on PYTHONPATH and unbuffered output. */
export function serverEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  const serverDir = join(repoRoot(), "server");
  env.PYTHONPATH = env.PYTHONPATH ? `${serverDir}${delimiter}${env.PYTHONPATH}` : serverDir;
  env.PYTHONUNBUFFERED = "1";
  return env;
}
