// Facts about where a run happened, for the results file.
import { execFileSync } from "node:child_process";
import * as os from "node:os";
import { findRootFrom } from "../client/repoRoot";

export interface GitInfo {
  /** the 40-hex HEAD, $DJINN_COMMIT, the commit the bundle was built from, or "unknown" */
  commit: string;
  /** uncommitted changes to tracked files (absent when no checkout was found) */
  dirty?: boolean;
  /** the checkout it was read from */
  root?: string;
}

const MARKER = "proto/djinn/v1/djinn.proto";
/** The commit the bundle was built from (esbuild.mjs defines it; "" when built outside a checkout). */
declare const __DJINN_BUILD_COMMIT__: string | undefined;
const BUILT_FROM = typeof __DJINN_BUILD_COMMIT__ === "string" ? __DJINN_BUILD_COMMIT__ : "";

/**
 * The commit of the Djinn code: the first of `dirs` whose Djinn root (the folder holding
 * proto/djinn/v1/djinn.proto, at or above it) is tracked in a git checkout. A folder that
 * is inside some other repository (an installed extension under a versioned home) does not
 * count: the marker must be tracked there.
 */
export function gitInfo(dirs: Array<string | undefined>, git = "git", builtFrom = BUILT_FROM): GitInfo {
  const seen = new Set<string>();
  for (const dir of dirs) {
    const root = dir ? findRootFrom(dir) : undefined;
    if (!root || seen.has(root)) continue;
    seen.add(root);
    const run = (args: string[]) => execFileSync(git, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 10_000 }).trim();
    try {
      run(["ls-files", "--error-unmatch", "--", MARKER]);
      const head = run(["rev-parse", "HEAD"]);
      if (!/^[0-9a-f]{40}$/.test(head)) continue;
      const dirty = run(["status", "--porcelain", "--untracked-files=no"]).length > 0;
      const top = run(["rev-parse", "--show-toplevel"]);
      return { commit: head, dirty, root: top || root };
    } catch {
      // Not a checkout (a copied tree, an installed extension), or git is missing: the next one.
    }
  }
  // Outside a checkout: $DJINN_COMMIT, else the commit this bundle was built from.
  const env = process.env.DJINN_COMMIT?.trim();
  if (env) return { commit: env };
  if (builtFrom) return { commit: builtFrom.replace(/\+dirty$/, ""), dirty: builtFrom.endsWith("+dirty") };
  return { commit: "unknown" };
}

export interface Environment {
  gitCommit: string;
  gitDirty?: boolean;
  gitRoot?: string;
  nodeVersion: string;
  /** the CPU model, once */
  hostCpu: string;
  hostCpuCores: number;
  hostMemoryGb: number;
  platform: string;
}

/** `gitDirs`: more places to look for the checkout after this code's own (the workspace). */
export function environment(gitDirs: Array<string | undefined> = []): Environment {
  const git = gitInfo([__dirname, ...gitDirs]);
  const cpus = os.cpus();
  return {
    gitCommit: git.commit,
    ...(git.dirty !== undefined ? { gitDirty: git.dirty } : {}),
    ...(git.root ? { gitRoot: git.root } : {}),
    nodeVersion: process.version,
    hostCpu: (cpus[0]?.model ?? "").replace(/\s+/g, " ").trim() || "unknown",
    hostCpuCores: cpus.length,
    hostMemoryGb: Math.round((os.totalmem() / 1e9) * 10) / 10,
    platform: `${os.platform()} ${os.release()}`,
  };
}
