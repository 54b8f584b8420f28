// Bundles the Node entry points into dist/ and, with --tests, every test/**/*.test.ts
// into out/test/ (one self-contained CommonJS file each, run by `node --test`).
// Usage: node esbuild.mjs [--tests] [--watch] [--minify]
import * as esbuild from "esbuild";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

// Add new entry points here: { in: source, out: path under dist/ without .js }.
// Entries whose source does not exist yet are skipped, so others can add theirs later.
export const entryPoints = [
  { in: "exp3/cli.ts", out: "exp3" },
  { in: "src/extension.ts", out: "extension" },
  { in: "debug-adapter/main.ts", out: "debugAdapter" },
];

// The test folders this bundler knows about; each *.test.ts under them becomes out/test/...js.
const testRoots = ["test/client", "test/exp3", "test/unit"];

const args = new Set(process.argv.slice(2));

const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  sourcemap: true,
  // Native addons are loaded at run time; `vscode` is provided by the editor.
  external: ["*.node", "vscode"],
  logLevel: "info",
  minify: args.has("--minify"),
};

function findTests(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return findTests(path);
    return name.endsWith(".test.ts") ? [path] : [];
  });
}

function buildOptions() {
  if (args.has("--tests")) {
    const tests = testRoots.flatMap(findTests);
    return {
      ...common,
      entryPoints: tests.map((t) => ({ in: t, out: relative("test", t).replace(/\.ts$/, "") })),
      outdir: "out/test",
      logLevel: "warning",
    };
  }
  return {
    ...common,
    entryPoints: entryPoints.filter((e) => existsSync(e.in)),
    outdir: "dist",
  };
}

const options = buildOptions();
if (args.has("--watch")) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
