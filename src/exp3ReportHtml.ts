// The readable Exp 3 report: status, the numbers, the plot, the baseline side by side.
// The same HTML is written next to the results (memory_pressure_report.html) and shown
// in a webview (exp3Report.ts). No `vscode` import.
import type { Exp3Results } from "../exp3/results";

export const REPORT_FILE = "memory_pressure_report.html";

export interface ReportFiles {
  resultsFile: string;
  plotFile: string;
  svg: string;
  reportFile?: string;
  standalone?: boolean;
}

const num = (x: unknown, d = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "–");
const int = (x: unknown) => (typeof x === "number" && Number.isFinite(x) ? String(x) : "–");

function row(label: string, ...cells: string[]): string {
  return `<tr><th>${escapeHtml(label)}</th>${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`;
}

const pad2 = (x: number) => String(x).padStart(2, "0");
const clean = (x: unknown) => (typeof x === "string" ? x.replace(/\s+/g, " ").trim() : "");

/** A CUDA run (NVML and the allocator measure something); on a CPU both are absent, not 0. */
export function isGpuRun(r: Pick<Exp3Results, "hardware">): boolean {
  return String((r.hardware as Record<string, unknown> | undefined)?.device ?? "").startsWith("cuda");
}

/** What the text says where a CPU run has no NVML / allocator figure. */
export const NO_NVML = "n/a (CPU: no NVML, no CUDA allocator)";

/** "peak NVML used / allocator": the two figures on a GPU, n/a on a CPU. */
export function nvmlAllocatorText(r: Pick<Exp3Results, "hardware" | "peaks">): string {
  return isGpuRun(r) ? `${num(r.peaks.nvml_gb)} GB / ${num(r.peaks.allocator_gb)} GB` : NO_NVML;
}

/**
 * The hardware in one line: on a GPU the GPU (and its memory) and the host CPU; on a CPU the
 * CPU model once with its core count (the server's CPU, which is this machine's unless the
 * run used a server elsewhere). Reads the older "MODEL x N" host_cpu too.
 */
export function hardwareText(hwIn: Record<string, unknown> | undefined): string {
  const hw = hwIn ?? {};
  const device = clean(hw.device);
  const legacy = /^(.*) x (\d+)$/.exec(clean(hw.host_cpu));
  const cpuModel = legacy ? clean(legacy[1]) : clean(hw.host_cpu) === "unknown" ? "" : clean(hw.host_cpu);
  const cores = typeof hw.host_cpu_cores === "number" && hw.host_cpu_cores > 0 ? hw.host_cpu_cores : legacy ? Number(legacy[2]) : undefined;
  const withCores = (model: string) => `${model}${cores ? ` (${cores} core${cores === 1 ? "" : "s"})` : ""}`;
  if (device.startsWith("cuda")) {
    const name = clean(hw.device_name) || device;
    const mem = typeof hw.device_total_gb === "number" && hw.device_total_gb > 0 ? `, ${hw.device_total_gb.toFixed(0)} GB` : "";
    return `GPU ${name}${mem}${cpuModel ? ` · CPU ${withCores(cpuModel)}` : ""}`;
  }
  const serverCpu = clean(hw.device_name);
  if (serverCpu && cpuModel && serverCpu !== cpuModel) return `CPU ${serverCpu} (server) · ${withCores(cpuModel)} (this machine)`;
  const model = cpuModel || serverCpu;
  return model ? `CPU ${withCores(model)}, no GPU` : device || "–";
}

/** The commit line: HEAD with a dirty flag, or why it is unknown. */
export function commitText(r: Pick<Exp3Results, "git_commit" | "git_dirty" | "git_root">): string {
  const c = clean(r.git_commit);
  if (!c || c === "unknown") return "unknown (not a git checkout, or git is missing)";
  return `${c}${r.git_dirty ? " + uncommitted changes" : ""}${r.git_root ? ` (${r.git_root})` : ""}`;
}

/** The report's title (tab and page): distinct per run, "Exp 3 report · SUCCESS · 14:02:31 · 8 sessions". */
export function reportTitle(r: Pick<Exp3Results, "status" | "started_at" | "num_sessions_requested">): string {
  const t = new Date(r.started_at);
  const when = Number.isNaN(t.getTime()) ? "" : ` · ${pad2(t.getHours())}:${pad2(t.getMinutes())}:${pad2(t.getSeconds())}`;
  const n = r.num_sessions_requested;
  return `Exp 3 report · ${r.status.toUpperCase()}${when} · ${n} session${n === 1 ? "" : "s"}`;
}

export function reportHtml(r: Exp3Results, f: ReportFiles, webview?: { cspSource: string; nonce: string }): string {
  const n = r.num_sessions_requested;
  const ok = r.status === "success";
  const lat = r.swap_latency_ms_stats;
  const bw = r.swap_bandwidth_gbps;
  const hw = r.hardware as Record<string, unknown>;
  const model = r.model as Record<string, unknown>;
  const b = r.baseline;
  const gpu = isGpuRun(r);
  const plot = f.svg ? `<img class="plot" alt="VRAM over time" src="data:image/svg+xml;base64,${Buffer.from(f.svg).toString("base64")}">` : `<p class="muted">no plot</p>`;

  const numbers = [
    row("sessions spawned / finished", `${r.num_sessions_spawned}/${n} · ${r.num_sessions_finished}/${n}`),
    row("outputs identical to the reference run", `${r.outputs_match}/${n} (${r.outputs_compared} compared)`),
    row("peak sessions alive / paused at once", `${r.peak_sessions_alive} / ${r.peak_sessions_paused}`),
    row("VRAM budget", `${num(r.budget_gb)} GB`),
    row("peak accounted (weights + workspace + resident KV)", `${num(r.peaks.accounted_gb)} GB`),
    row("peak NVML used / allocator", escapeHtml(nvmlAllocatorText(r))),
    row("weights / workspace", `${num(r.weights_gb)} GB / ${num(r.workspace_gb)} GB`),
    row("KV demand of all sessions (full context)", `${num(r.kv_demand_gb)} GB (${r.kv_bytes_per_token.toLocaleString("en-US")} B per token)`),
    row("host pool", `${num(r.host_pool_gb)} GB`),
    row("swaps out / in", `${r.swap_count.out} / ${r.swap_count.in} (${num(r.swap_bytes.out / 1e9)} GB / ${num(r.swap_bytes.in / 1e9)} GB)`),
    row("swap-out ms: mean · p50 · p95", `${num(lat.out_mean, 2)} · ${num(lat.out_p50, 2)} · ${num(lat.out_p95, 2)}`),
    row("swap-in ms: mean · p50 · p95", `${num(lat.in_mean, 2)} · ${num(lat.in_p50, 2)} · ${num(lat.in_p95, 2)}`),
    row("swap bandwidth out / in (mean)", `${num(bw.out_mean, 2)} / ${num(bw.in_mean, 2)} GB/s`),
    row("elapsed", `${num(r.total_elapsed_seconds, 1)} s (${Object.entries(r.phases_seconds).map(([k, v]) => `${escapeHtml(k.replace(/_/g, " "))} ${num(v, 1)} s`).join(", ")})`),
  ].join("\n");

  const setup = [
    row("model", `${escapeHtml(String(model.name))} (${escapeHtml(String(model.dtype ?? ""))}), ${int(model.n_layers)} layers, dim ${int(model.dim)}`),
    row("hardware", escapeHtml(hardwareText(hw))),
    row("context / new tokens", `${r.context} / ${r.new_tokens}`),
    row("breakpoints", r.breakpoints.join(", ")),
    row("server", `${escapeHtml(String(r.server.address))}${r.server.started_locally ? " (started for this run)" : ""}, swap policy ${escapeHtml(String(r.server.swap_policy))}`),
    row("commit", escapeHtml(commitText(r))),
    row("started", escapeHtml(r.started_at)),
  ].join("\n");

  let baseline = "";
  if (b) {
    if (b.error) {
      baseline = `<h2>Baseline</h2><p class="muted">The eager baseline did not run: ${escapeHtml(String(b.error).split("\n")[0])}</p>`;
    } else {
      const oom = b.oom_at_session == null ? "none" : `at session ${b.oom_at_session}`;
      baseline = `<h2>Djinn and the eager baseline, side by side</h2>
<table class="side">
<tr><th></th><th>Djinn (KV swapped to host while paused)</th><th>PyTorch eager (KV held in VRAM while paused)</th></tr>
${row("sessions held at once", `${r.peak_sessions_paused} paused, ${r.num_sessions_finished}/${n} finished`, `${int(b.sessions_fit)}/${int(b.sessions_requested)}`)}
${row("out of memory", "never", escapeHtml(oom))}
${row("VRAM at the peak", `${num(r.peaks.accounted_gb)} GB accounted`, `${num(b.vram_held_while_paused_gb)} GB held while paused`)}
${gpu ? row("allocator peak", `${num(r.peaks.allocator_gb)} GB`, `${num(b.peak_allocator_gb)} GB`) : ""}
${row("budget", `${num(r.budget_gb)} GB`, `${num(b.budget_gb)} GB (${escapeHtml(String(b.budget_enforced_by ?? ""))})`)}
${row("elapsed", `${num(r.total_elapsed_seconds, 1)} s`, `${num(b.elapsed_seconds, 1)} s`)}
</table>`;
    }
  }

  const sessions = r.sessions
    .map((s) => `<tr class="${s.output_matches ? "" : "bad"}"><td>${s.index}</td><td>${s.session_id}</td><td>${escapeHtml(s.ended)}</td><td>${s.stops}</td><td>${s.swap_outs}</td><td>${s.swap_ins}</td><td>${s.output_matches ? "yes" : "no"}</td><td>${escapeHtml(s.generated_tokens.join(", "))}</td></tr>`)
    .join("\n");

  const csp = webview
    ? `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-${webview.nonce}'">`
    : `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">`;
  const actions = webview
    ? `<p class="actions"><button data-cmd="results">Open results JSON</button><button data-cmd="plot">Open plot</button><button data-cmd="folder">Reveal folder</button></p>
<script nonce="${webview.nonce}">const vs = acquireVsCodeApi(); document.querySelectorAll('button[data-cmd]').forEach(b => b.addEventListener('click', () => vs.postMessage({ type: b.dataset.cmd })));</script>`
    : "";
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8">${csp}<title>${escapeHtml(reportTitle(r))}</title>
<style>
body { font-family: var(--vscode-font-family, system-ui, sans-serif); color: var(--vscode-foreground, #222); background: var(--vscode-editor-background, #fff); padding: 8px 20px 30px; max-width: 1200px; }
h1 { font-size: 1.5em; margin: 10px 0 4px; } h2 { font-size: 1.15em; margin: 22px 0 8px; }
.status { display: inline-block; padding: 3px 12px; border-radius: 3px; font-weight: 700; color: #fff; background: ${ok ? "#2e7d32" : "#c62828"}; }
.muted { color: var(--vscode-descriptionForeground, #666); }
table { border-collapse: collapse; } th, td { text-align: left; padding: 3px 14px 3px 0; vertical-align: top; font-variant-numeric: tabular-nums; }
th { font-weight: 600; color: var(--vscode-descriptionForeground, #555); }
table.side td, table.side th { border-bottom: 1px solid var(--vscode-editorWidget-border, #ddd); padding: 4px 14px 4px 0; }
tr.bad td { color: var(--vscode-editorError-foreground, #c62828); }
.plot { width: 100%; max-width: 1100px; background: #fff; border: 1px solid var(--vscode-editorWidget-border, #ddd); margin-top: 6px; }
.reasons li { color: var(--vscode-editorError-foreground, #c62828); }
.grid { display: flex; flex-wrap: wrap; gap: 10px 40px; }
button { color: var(--vscode-button-foreground); background: var(--vscode-button-background); border: none; padding: 4px 12px; margin-right: 8px; cursor: pointer; }
code { font-family: var(--vscode-editor-font-family, monospace); }
</style></head>
<body>
<h1>Exp 3 memory-pressure test <span class="status" id="status">${r.status.toUpperCase()}</span></h1>
<p>${r.num_sessions_finished}/${n} sessions of ${escapeHtml(String(model.name))} × ${r.context} tokens finished under a ${num(r.budget_gb)} GB budget;
${r.outputs_match}/${n} outputs identical to an uninterrupted reference run; at the peak ${r.peak_sessions_paused} sessions were paused at once and ${r.swap_count.out} KV swap-outs kept VRAM at ${num(r.peaks.accounted_gb)} GB.</p>
${r.reasons.length ? `<ul class="reasons">${r.reasons.map((x) => `<li>${escapeHtml(x)}</li>`).join("")}</ul>` : ""}
${r.cancelled ? `<p><b>Cancelled.</b></p>` : ""}
${actions}
<div class="grid">
<div><h2>The numbers (measured on the server)</h2><table>${numbers}</table></div>
<div><h2>Setup</h2><table>${setup}</table></div>
</div>
${baseline}
<h2>VRAM over time</h2>
${plot}
<h2>Files</h2>
<p><code>${escapeHtml(f.resultsFile)}</code><br><code>${escapeHtml(f.plotFile)}</code>${f.reportFile ? `<br><code>${escapeHtml(f.reportFile)}</code>` : ""}</p>
<details><summary>Per session (${r.sessions.length})</summary>
<table><tr><th>#</th><th>session</th><th>ended</th><th>stops</th><th>swap-outs</th><th>swap-ins</th><th>identical</th><th>tokens</th></tr>
${sessions}
</table></details>
</body></html>`;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}
