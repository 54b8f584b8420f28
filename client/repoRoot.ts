// Finds the repository (or installed extension) root: the folder holding
// proto/djinn/v1/djinn.proto. Works from client/ (sources), dist/ and out/ (bundles).
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";

const MARKER = join("proto", "djinn", "v1", "djinn.proto");

export function findRootFrom(start: string): string | undefined {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, MARKER))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** The root above this file (or $DJINN_ROOT); throws when there is none. */
export function repoRoot(): string {
  const root = process.env.DJINN_ROOT || findRootFrom(__dirname) || findRootFrom(process.cwd());
  if (!root) throw new Error(`cannot find ${MARKER} above ${__dirname} or ${process.cwd()}; set DJINN_ROOT`);
  return root;
}
