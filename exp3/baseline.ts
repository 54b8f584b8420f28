// Runs the PyTorch-eager baseline (djinn.baselines.eager_pressure): the same
// workload with paused sessions' KV kept on the GPU, to show where it runs out.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { resolvePython, serverEnv } from "../client/python";
import { repoRoot } from "../client/repoRoot";

export interface BaselineArgs {
  python?: string;
  model: string;
  sessions: number;
  context: number;
  newTokens: number;
  budgetGb: number;
  breakpoints: number[];
  device: string;
  outDir: string;
  log: (line: string) => void;
  isCancelled: () => boolean;
}

export function baselineCommand(a: BaselineArgs): string[] {
  return [
    "-m", "djinn.baselines.eager_pressure",
    "--model", a.model,
    "--sessions", String(a.sessions),
    "--context", String(a.context),
    "--new-tokens", String(a.newTokens),
    "--budget-gb", String(a.budgetGb),
    "--breakpoints", a.breakpoints.join(","),
    "--device", a.device,
    "--json-out", join(a.outDir, "baseline_results.json"),
  ];
}

/** The baseline's JSON, or {error} when it is missing or fails: never throws. */
export async function runBaseline(a: BaselineArgs): Promise<Record<string, unknown>> {
  const python = resolvePython(a.python);
  const args = baselineCommand(a);
  const tail: string[] = [];
  const started = Date.now();
  const code = await new Promise<number | string>((resolve) => {
    const child = spawn(python, args, { cwd: repoRoot(), env: serverEnv(), stdio: ["ignore", "pipe", "pipe"] });
    const onData = (buf: Buffer) =>
      buf.toString().split("\n").filter(Boolean).forEach((line) => {
        a.log(`[baseline] ${line}`);
        tail.push(line);
        if (tail.length > 20) tail.shift();
      });
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const poll = setInterval(() => a.isCancelled() && child.kill("SIGTERM"), 500);
    child.on("error", (e) => {
      clearInterval(poll);
      resolve(e.message);
    });
    child.on("close", (c, signal) => {
      clearInterval(poll);
      resolve(c ?? `signal ${signal}`);
    });
  });
  const seconds = (Date.now() - started) / 1000;
  const command = [python, ...args].join(" ");
  if (code !== 0) return { error: `baseline exited with ${code}: ${tail.slice(-5).join(" | ")}`, command, seconds };
  try {
    const parsed = JSON.parse(await readFile(join(a.outDir, "baseline_results.json"), "utf8"));
    return { ...parsed, command, seconds };
  } catch (e) {
    return { error: `cannot read baseline_results.json: ${(e as Error).message}`, command, seconds };
  }
}
