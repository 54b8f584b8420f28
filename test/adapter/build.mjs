// Stand-alone bundling of the adapter (dist/debugAdapter.js), its tests (out/test/adapter/)
// and its benchmark (out/bench/adapter/), with esbuild.mjs's options:
//   node test/adapter/build.mjs && node --test --test-concurrency=1 out/test/adapter/
import * as esbuild from "esbuild";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const common = { bundle: true, platform: "node", target: "node20", format: "cjs", sourcemap: true, external: ["*.node", "vscode"], logLevel: "warning" };
// the adapter itself, as esbuild.mjs bundles it (the tests drive dist/debugAdapter.js)
await esbuild.build({ ...common, entryPoints: [{ in: "debug-adapter/main.ts", out: "debugAdapter" }], outdir: "dist" });
const tests = readdirSync("test/adapter").filter((f) => f.endsWith(".test.ts")).map((f) => ({ in: join("test/adapter", f), out: f.replace(/\.ts$/, "") }));
await esbuild.build({ ...common, entryPoints: tests, outdir: "out/test/adapter" });
if (existsSync("bench/adapter/stop-latency.ts")) await esbuild.build({ ...common, entryPoints: [{ in: "bench/adapter/stop-latency.ts", out: "stop-latency" }], outdir: "out/bench/adapter" });
