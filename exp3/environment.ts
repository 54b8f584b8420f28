// Facts about where a run happened, for the results file.
import { execFileSync } from "node:child_process";
import * as os from "node:os";
import { repoRoot } from "../client/repoRoot";

export function gitCommit(): string {
  try {
    const out = execFileSync("git", ["rev-parse", "HEAD"], { cwd: repoRoot(), encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    if (/^[0-9a-f]{40}$/.test(out)) return out;
  } catch {
    // Not a git checkout (a copied tree, an installed extension): fall back to the environment.
  }
  return process.env.DJINN_COMMIT?.trim() || "unknown";
}

export function environment() {
  return {
    gitCommit: gitCommit(),
    nodeVersion: process.version,
    hostCpu: `${os.cpus()[0]?.model ?? "unknown"} x ${os.cpus().length}`,
    hostMemoryGb: Math.round((os.totalmem() / 1e9) * 10) / 10,
    platform: `${os.platform()} ${os.release()}`,
  };
}
