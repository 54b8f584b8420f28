// Benchmark: time from a breakpoint hit on the server to what VS Code shows at a stop —
// the `stopped` event, then stackTrace + scopes + the first page of variables (the
// Activations scope) — through the real adapter (dist/debugAdapter.js over stdio) on
// loopback, against a CPU tiny-40l Djinn server. p50/p95 over many stops.
//
//   node test/adapter/build.mjs && node out/bench/adapter/stop-latency.js [--stops 400] [--out DIR]
//
// The hit time is the server's own STOPPED event timestamp (time.time() in the server
// process, same machine and clock as this one). Two server swap policies are measured:
// `pressure` (the paused session's KV stays resident) and `eager` (every stop swaps the
// session out, so the variables request brings it back first).
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { DebugClient } from "@vscode/debugadapter-testsupport";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { DjinnClient, EventKind, repoRoot, startLocalServer, type Event } from "../../client";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const STOPS = Number(opt("stops", "400"));
const WARMUP = Number(opt("warmup", "20"));
const OUT = opt("out", join(repoRoot(), "bench", "results"));
const TARGET_P95_MS = 50;
const LAYERS = [0, 5, 10, 15, 20, 25, 30, 35];

const now = () => performance.timeOrigin + performance.now();

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

function stats(xs: number[]) {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const r = (v: number) => Math.round(v * 1000) / 1000;
  return { p50: r(pct(xs, 50)), p95: r(pct(xs, 95)), p99: r(pct(xs, 99)), mean: r(mean), max: r(Math.max(...xs)), min: r(Math.min(...xs)) };
}

interface Sample {
  hitToStopped: number;
  stackTrace: number;
  scopes: number;
  variables: number;
  stoppedToDone: number;
  hitToDone: number;
}

async function run(policy: "pressure" | "eager"): Promise<{ samples: Sample[]; server: Record<string, unknown> }> {
  const server = await startLocalServer({ model: "tiny-40l", device: "cpu", swapPolicy: policy, startTimeoutMs: 180_000 });
  const client = new DjinnClient(server.address);
  const serverStops: Event[] = [];
  const stopWaiters: Array<(e: Event) => void> = [];
  const stream = client.events({ sinceSeq: 0 });
  stream.on("event", (e) => {
    if (e.kind !== EventKind.EVENT_KIND_STOPPED) return;
    const w = stopWaiters.shift();
    if (w) w(e);
    else serverStops.push(e);
  });
  const nextServerStop = () => new Promise<Event>((resolve) => {
    const e = serverStops.shift();
    if (e) resolve(e);
    else stopWaiters.push(resolve);
  });
  await client.getInfo();

  const dc = new DebugClient("node", join(repoRoot(), "dist", "debugAdapter.js"), "djinn");
  dc.defaultTimeout = 60_000;
  await dc.start();
  const dapStops: Array<{ e: DebugProtocol.StoppedEvent; t: number }> = [];
  const dapWaiters: Array<(x: { e: DebugProtocol.StoppedEvent; t: number }) => void> = [];
  dc.on("stopped", (e: DebugProtocol.StoppedEvent) => {
    const x = { e, t: now() };
    const w = dapWaiters.shift();
    if (w) w(x);
    else dapStops.push(x);
  });
  const nextDapStop = () => new Promise<{ e: DebugProtocol.StoppedEvent; t: number }>((resolve) => {
    const x = dapStops.shift();
    if (x) resolve(x);
    else dapWaiters.push(resolve);
  });

  const passes = Math.ceil((STOPS + WARMUP) / LAYERS.length) + 1;
  await dc.initializeRequest({ adapterID: "djinn", pathFormat: "path", linesStartAt1: true, columnsStartAt1: true, supportsProgressReporting: true, supportsVariableType: true, supportsMemoryReferences: true });
  const launched = dc.launchRequest({ server: server.address, prompt: [Array.from({ length: 32 }, (_, i) => 3 + ((i * 37) % 500))], maxNewTokens: passes, breakpoints: LAYERS } as DebugProtocol.LaunchRequestArguments);
  await dc.configurationDoneRequest();
  await launched;

  const samples: Sample[] = [];
  for (let k = 0; k < STOPS + WARMUP; k++) {
    const [{ e, t: tStopped }, hit] = await Promise.all([nextDapStop(), nextServerStop()]);
    const threadId = e.body.threadId!;
    const t0 = now();
    const st = await dc.stackTraceRequest({ threadId, startFrame: 0, levels: 20 });
    const t1 = now();
    const sc = await dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
    const t2 = now();
    const vs = await dc.variablesRequest({ variablesReference: sc.body.scopes[0].variablesReference });
    const t3 = now();
    if (!vs.body.variables.some((v) => v.name === "hidden")) throw new Error("no hidden in the first page of variables");
    const tHit = hit.time * 1000;
    if (k >= WARMUP) {
      samples.push({ hitToStopped: tStopped - tHit, stackTrace: t1 - t0, scopes: t2 - t1, variables: t3 - t2, stoppedToDone: t3 - tStopped, hitToDone: t3 - tHit });
    }
    await dc.continueRequest({ threadId });
  }
  const info = await client.getInfo();
  await dc.stop();
  stream.cancel();
  client.close();
  await server.stop();
  return { samples, server: { model: info.model?.name, device: info.device, deviceName: info.deviceName, dtype: info.dtype, swapPolicy: policy, torch: info.torchVersion } };
}

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { cwd: repoRoot(), encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

/** Whether the adapter's sources differ from the commit (then the commit does not describe what ran). */
function uncommitted(): boolean {
  try {
    return execFileSync("git", ["status", "--porcelain", "debug-adapter", "client"], { cwd: repoRoot(), encoding: "utf8" }).trim() !== "";
  } catch {
    return true;
  }
}

async function main() {
  const results: Record<string, unknown> = {};
  const rows: string[] = [];
  const head = "policy    component        p50 ms   p95 ms   p99 ms   max ms";
  for (const policy of ["pressure", "eager"] as const) {
    const { samples, server } = await run(policy);
    const comp = {
      hitToDone: stats(samples.map((s) => s.hitToDone)),
      hitToStopped: stats(samples.map((s) => s.hitToStopped)),
      stackTrace: stats(samples.map((s) => s.stackTrace)),
      scopes: stats(samples.map((s) => s.scopes)),
      variables: stats(samples.map((s) => s.variables)),
      stoppedToDone: stats(samples.map((s) => s.stoppedToDone)),
    };
    results[policy] = { n: samples.length, server, ...comp, meetsTarget: comp.hitToDone.p95 < TARGET_P95_MS };
    for (const [name, s] of Object.entries(comp)) {
      rows.push(`${policy.padEnd(10)}${name.padEnd(15)}${s.p50.toFixed(2).padStart(8)} ${s.p95.toFixed(2).padStart(8)} ${s.p99.toFixed(2).padStart(8)} ${s.max.toFixed(2).padStart(8)}`);
    }
  }
  console.log(head);
  for (const r of rows) console.log(r);
  const date = new Date().toISOString().slice(0, 10);
  const out = {
    benchmark: "adapter-stop-latency",
    description: "breakpoint hit on the server (its STOPPED event time) -> DAP stopped event -> stackTrace -> scopes -> variables of the first scope (Activations), through dist/debugAdapter.js over stdio, loopback gRPC, CPU tiny-40l",
    date: new Date().toISOString(),
    target: { metric: "hitToDone.p95", ms: TARGET_P95_MS },
    stops: STOPS,
    warmup: WARMUP,
    breakpointLayers: LAYERS,
    command: `node ${process.argv.slice(1).map((a) => a.replace(repoRoot() + "/", "")).join(" ")}`,
    node: process.version,
    cpu: cpus()[0]?.model ?? "unknown",
    cpuCount: cpus().length,
    platform: `${process.platform} ${process.arch}`,
    gitCommit: gitCommit(),
    adapterUncommitted: uncommitted(),
    results,
  };
  mkdirSync(OUT, { recursive: true });
  const file = join(OUT, `adapter-stop-latency-${date}.json`);
  writeFileSync(file, JSON.stringify(out, null, 2) + "\n");
  console.log(`wrote ${file}`);
  const ok = Object.values(results).every((r) => (r as { meetsTarget: boolean }).meetsTarget);
  console.log(ok ? `p95 hit -> stopped + stackTrace + scopes + variables under ${TARGET_P95_MS} ms` : `p95 over ${TARGET_P95_MS} ms`);
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
