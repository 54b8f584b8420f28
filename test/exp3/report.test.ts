// The Exp 3 report and the facts it shows, without a server: no measured-looking 0 where a
// CPU has no NVML, the hardware named once, the commit read from git (with a dirty flag),
// a distinct title per run.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { environment, gitInfo } from "../../exp3/environment";
import type { Exp3Results } from "../../exp3/results";
import { summaryLines } from "../../exp3/summary";
import { commitText, hardwareText, NO_NVML, reportHtml, reportTitle } from "../../src/exp3ReportHtml";

function results(over: Partial<Exp3Results> = {}): Exp3Results {
  return {
    status: "success", reasons: [], num_sessions_requested: 4, num_sessions_spawned: 4, num_sessions_finished: 4, peak_sessions_alive: 4, peak_sessions_paused: 3,
    budget_gb: 0.031, weights_gb: 0.03, workspace_gb: 0, kv_bytes_per_token: 20480, kv_demand_gb: 0.004, host_pool_gb: 2,
    peaks: { accounted_gb: 0.031, nvml_gb: 0, allocator_gb: 0, allocator_reserved_gb: 0 },
    swap_count: { out: 24, in: 24 }, swap_bytes: { out: 2.4e7, in: 2.4e7 },
    swap_latency_ms_stats: { out_mean: 2.42, in_mean: 5.81, out_p50: 0.47, in_p50: 2.41, out_p95: 6.52, in_p95: 16.4 },
    swap_bandwidth_gbps: { out_mean: 4.36, in_mean: 4.06, out_p50: 4, in_p50: 4 },
    outputs_match: 4, outputs_compared: 4, total_elapsed_seconds: 8.4, phases_seconds: { debug_run: 3.7 },
    hardware: { device: "cpu", device_name: "AMD EPYC", device_total_gb: 0, host_cpu: "AMD EPYC", host_cpu_cores: 2 },
    model: { name: "tiny-40l", dtype: "float32", n_layers: 40, dim: 128 },
    server: { address: "127.0.0.1:1", started_locally: true, swap_policy: "pressure" }, context: 48, new_tokens: 2, breakpoints: [10, 20, 30],
    git_commit: "b4ab683c332fa87efa20f91d5109aaf9cac74b10", git_dirty: false, started_at: "2026-11-28T19:20:14.928Z",
    sessions: [], vram_progression: [], vram_stats: { min_gb: 0, avg_gb: 0, max_gb: 0 }, swapping_active: true, swap_latencies_ms: [], swap_out_ms: [], swap_in_ms: [],
    budget_bytes: 31e6, peaks_bytes: { accounted: 31e6, nvml: 0, allocator: 0, allocator_reserved: 0 }, think_ms: 25, seed: 1, command_line: [], telemetry: [],
    events_summary: { counts: {}, stops_total: 0, stops_found_by_polling: 0, create_errors: [] },
    ...over,
  } as Exp3Results;
}
const files = { resultsFile: "/r.json", plotFile: "/p.svg", svg: "" };

test("report on a CPU: NVML / allocator say n/a, never a 0 that looks measured; the summary too", () => {
  const r = results({ baseline: { sessions_fit: 2, sessions_requested: 4, oom_at_session: 3, vram_held_while_paused_gb: 0.03, peak_allocator_gb: 0.03, budget_gb: 0.031, elapsed_seconds: 2, budget_enforced_by: "accounting" } });
  const html = reportHtml(r, files);
  assert.ok(html.includes(NO_NVML), "n/a on the CPU");
  assert.doesNotMatch(html, /0\.000 GB \/ 0\.000 GB/);
  assert.doesNotMatch(html, /allocator peak/, "no allocator row in the side-by-side table on a CPU");
  const line = summaryLines(r, "/r.json").join("\n");
  assert.match(line, /NVML \/ allocator n\/a \(CPU\)/);
  assert.doesNotMatch(line, /NVML 0/);
});

test("report on a GPU: NVML and allocator figures, the allocator row of the baseline", () => {
  const r = results({
    hardware: { device: "cuda:0", device_name: "NVIDIA H200", device_total_gb: 150.1, host_cpu: "AMD EPYC 9654 96-Core Processor", host_cpu_cores: 16 },
    peaks: { accounted_gb: 78.7, nvml_gb: 77.4, allocator_gb: 75.6, allocator_reserved_gb: 76 },
    baseline: { sessions_fit: 24, sessions_requested: 50, oom_at_session: 25, vram_held_while_paused_gb: 67.2, peak_allocator_gb: 70, budget_gb: 80, elapsed_seconds: 19 },
  });
  const html = reportHtml(r, files);
  assert.match(html, /77\.400 GB \/ 75\.600 GB/);
  assert.match(html, /allocator peak/);
  assert.ok(html.includes("GPU NVIDIA H200, 150 GB · CPU AMD EPYC 9654 96-Core Processor (16 cores)"), "GPU and CPU named");
  assert.match(summaryLines(r, "/r.json").join("\n"), /NVML 77\.4 GB, allocator 75\.6 GB/);
});

test("hardware: the CPU model once with its core count (also from the older 'MODEL x N' field)", () => {
  assert.equal(hardwareText({ device: "cpu", device_name: "AMD EPYC", host_cpu: "AMD EPYC", host_cpu_cores: 2 }), "CPU AMD EPYC (2 cores), no GPU");
  assert.equal(hardwareText({ device: "cpu", device_name: "AMD EPYC", host_cpu: "AMD EPYC x 2" }), "CPU AMD EPYC (2 cores), no GPU");
  assert.equal(hardwareText({ device: "cpu", device_name: "Intel Xeon", host_cpu: "AMD EPYC", host_cpu_cores: 8 }), "CPU Intel Xeon (server) · AMD EPYC (8 cores) (this machine)");
  assert.equal(hardwareText({ device: "cuda:0", device_name: "NVIDIA H200", host_cpu: "AMD EPYC x 16" }), "GPU NVIDIA H200 · CPU AMD EPYC (16 cores)");
  const html = reportHtml(results(), files);
  assert.doesNotMatch(html, /AMD EPYC · AMD EPYC/);
  assert.match(html, /CPU AMD EPYC \(2 cores\), no GPU/);
});

test("titles differ between runs: status, start time, sessions; the page title is the same", () => {
  const a = results({ started_at: "2026-11-28T19:20:14.928Z" });
  const b = results({ started_at: "2026-11-28T19:31:02.000Z", num_sessions_requested: 8 });
  assert.match(reportTitle(a), /^Exp 3 report · SUCCESS · \d\d:\d\d:\d\d · 4 sessions$/);
  assert.notEqual(reportTitle(a), reportTitle(b));
  const t = new Date(b.started_at);
  assert.ok(reportTitle(b).includes(`${String(t.getHours()).padStart(2, "0")}:31:02`), reportTitle(b));
  assert.ok(reportHtml(a, files).includes(`<title>${reportTitle(a)}</title>`));
});

test("commit line: HEAD with a dirty flag; 'unknown' says why", () => {
  assert.equal(commitText({ git_commit: "abc", git_dirty: true, git_root: "/src/djinn" }), "abc + uncommitted changes (/src/djinn)");
  assert.equal(commitText({ git_commit: "abc", git_dirty: false }), "abc");
  assert.match(commitText({ git_commit: "unknown" }), /^unknown \(not a git checkout/);
});

test("environment: the commit from git, with a dirty flag; unknown outside a checkout or without git", () => {
  const git = (cwd: string, ...args: string[]) => execFileSync("git", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  const tmp = mkdtempSync(join(os.tmpdir(), "exp3-env-"));
  const saved = process.env.DJINN_COMMIT;
  delete process.env.DJINN_COMMIT;
  try {
    // a Djinn checkout: the proto marker tracked
    const repo = join(tmp, "djinn");
    mkdirSync(join(repo, "proto/djinn/v1"), { recursive: true });
    mkdirSync(join(repo, "dist"));
    writeFileSync(join(repo, "proto/djinn/v1/djinn.proto"), "syntax = 'proto3';\n");
    git(repo, "init", "-q");
    git(repo, "add", "proto");
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x");
    const head = git(repo, "rev-parse", "HEAD");
    assert.deepEqual(gitInfo([join(repo, "dist")]), { commit: head, dirty: false, root: git(repo, "rev-parse", "--show-toplevel") });
    writeFileSync(join(repo, "proto/djinn/v1/djinn.proto"), "syntax = 'proto3'; // edited\n");
    assert.equal(gitInfo([repo]).dirty, true);
    // the same tree copied without .git (an installed extension), git missing
    const copy = join(tmp, "copy");
    mkdirSync(join(copy, "proto/djinn/v1"), { recursive: true });
    writeFileSync(join(copy, "proto/djinn/v1/djinn.proto"), "x\n");
    assert.deepEqual(gitInfo([copy], "git", ""), { commit: "unknown" });
    assert.deepEqual(gitInfo([repo], join(tmp, "no-such-git"), ""), { commit: "unknown" });
    // ... unless the bundle knows the commit it was built from (esbuild.mjs defines it)
    const built = "0123456789abcdef0123456789abcdef01234567";
    assert.deepEqual(gitInfo([copy], "git", built + "+dirty"), { commit: built, dirty: true });
    assert.deepEqual(gitInfo([copy], "git", built), { commit: built, dirty: false });
    // a copy inside an unrelated repository does not take that repository's commit
    const outer = join(tmp, "outer");
    mkdirSync(join(outer, "ext/proto/djinn/v1"), { recursive: true });
    writeFileSync(join(outer, "README"), "x\n");
    writeFileSync(join(outer, "ext/proto/djinn/v1/djinn.proto"), "x\n");
    git(outer, "init", "-q");
    git(outer, "add", "README");
    git(outer, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x");
    assert.deepEqual(gitInfo([join(outer, "ext")], "git", ""), { commit: "unknown" });
    // the first checkout of the list wins; $DJINN_COMMIT when there is none
    assert.equal(gitInfo([copy, repo]).commit, head);
    process.env.DJINN_COMMIT = "from-env";
    assert.deepEqual(gitInfo([copy]), { commit: "from-env" });
  } finally {
    if (saved === undefined) delete process.env.DJINN_COMMIT;
    else process.env.DJINN_COMMIT = saved;
    rmSync(tmp, { recursive: true, force: true });
  }
  // this repository: its HEAD; the CPU named once with the core count
  const env = environment();
  assert.equal(env.gitCommit, git(process.cwd(), "rev-parse", "HEAD"));
  assert.equal(typeof env.gitDirty, "boolean");
  assert.equal(env.hostCpuCores, os.cpus().length);
  assert.doesNotMatch(env.hostCpu, / x \d+$/);
});
