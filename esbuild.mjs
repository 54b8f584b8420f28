// Bundles the Node entry points into dist/ (and the webview scripts of media/ into
// dist/webview/) and, with --tests, every test/**/*.test.ts into out/test/ (one
// self-contained CommonJS file each, run by `node --test`). With --ext-tests, the
// extension-host test suite (test/extension/) into out/ext-test/: it needs `vscode`, so it
// must stay out of out/test/, where `node --test out/test/` would pick it up.
// Usage: node esbuild.mjs [--tests | --ext-tests] [--watch] [--minify]
import * as esbuild from "esbuild";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

// Add new entry points here: { in: source, out: path under dist/ without .js }.
// Entries whose source does not exist yet are skipped, so others can add theirs later.
export const entryPoints = [
  { in: "exp3/cli.ts", out: "exp3" },
  { in: "src/extension.ts", out: "extension" },
  { in: "debug-adapter/main.ts", out: "debugAdapter" },
];

// Webview scripts (browser, IIFE): { in: source, out: path under dist/webview/ without .js }.
// A CSS file they import (e.g. uPlot's) is emitted next to them as <out>.css.
export const webviewEntryPoints = [
  { in: "media/vram/main.ts", out: "vram" },
  { in: "media/tensor/main.ts", out: "tensor" },
];

// The extension-host test suite (mocha inside VS Code / code-server): index.ts (run()),
// *.test.ts and the @vscode/test-electron runner for desktop users.
const extTestRoot = "test/extension";

// The test folders this bundler knows about; each *.test.ts under them becomes out/test/...js.
const testRoots = ["test/client", "test/exp3", "test/unit", "test/adapter"];

const args = new Set(process.argv.slice(2));

// The commit the bundles are built from (with "+dirty" for uncommitted changes): recorded by
// Exp 3 where the code runs outside a checkout (an installed .vsix, a copy on the device).
function buildCommit() {
  try {
    const git = (a) => execFileSync("git", a, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    const head = git(["rev-parse", "HEAD"]);
    return /^[0-9a-f]{40}$/.test(head) ? head + (git(["status", "--porcelain", "--untracked-files=no"]) ? "+dirty" : "") : "";
  } catch {
    return "";
  }
}

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
  define: { __DJINN_BUILD_COMMIT__: JSON.stringify(buildCommit()) },
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
  if (args.has("--ext-tests")) {
    const files = existsSync(extTestRoot)
      ? readdirSync(extTestRoot).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")).map((f) => join(extTestRoot, f))
      : [];
    return {
      ...common,
      // mocha loads reporters and test files with dynamic requires: keep it a plain runtime require.
      external: [...common.external, "mocha", "@vscode/test-electron"],
      entryPoints: files.map((t) => ({ in: t, out: relative(extTestRoot, t).replace(/\.ts$/, "") })),
      outdir: "out/ext-test",
      logLevel: "warning",
    };
  }
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

function webviewOptions() {
  return {
    bundle: true,
    platform: "browser",
    target: "es2022",
    format: "iife",
    sourcemap: true,
    minify: args.has("--minify"),
    logLevel: "info",
    entryPoints: webviewEntryPoints.filter((e) => existsSync(e.in)),
    outdir: "dist/webview",
  };
}

const builds = [buildOptions()];
if (!args.has("--tests") && !args.has("--ext-tests")) builds.push(webviewOptions());
if (args.has("--watch")) {
  for (const options of builds) await (await esbuild.context(options)).watch();
} else {
  await Promise.all(builds.map((options) => esbuild.build(options)));
}
