// The short stdout summary of a run.
import type { Exp3Results } from "./results";

const f1 = (x: number) => x.toFixed(x !== 0 && Math.abs(x) < 1 ? 3 : 1);

export function summaryLines(r: Exp3Results, resultsPath: string): string[] {
  const n = r.num_sessions_requested;
  const lines = [
    `Exp 3 memory pressure: ${r.status.toUpperCase()}`,
    `  sessions ${r.num_sessions_spawned}/${n} spawned, ${r.num_sessions_finished}/${n} finished, ${r.outputs_match}/${n} outputs identical to the reference`,
    `  peak ${r.peak_sessions_alive} sessions alive, ${r.peak_sessions_paused} paused at once`,
    `  budget ${f1(r.budget_gb)} GB; peak accounted ${f1(r.peaks.accounted_gb)} GB, ` +
      (String(r.hardware?.device ?? "").startsWith("cuda") ? `NVML ${f1(r.peaks.nvml_gb)} GB, allocator ${f1(r.peaks.allocator_gb)} GB` : "NVML / allocator n/a (CPU)"),
    `  swaps: ${r.swap_count.out} out, ${r.swap_count.in} in; mean ${f1(r.swap_latency_ms_stats.out_mean)} ms out / ${f1(r.swap_latency_ms_stats.in_mean)} ms in; ${f1(r.swap_bandwidth_gbps.out_mean)} / ${f1(r.swap_bandwidth_gbps.in_mean)} GB/s`,
    `  elapsed ${r.total_elapsed_seconds.toFixed(1)} s; results: ${resultsPath}`,
  ];
  for (const reason of r.reasons) lines.push(`  FAILED: ${reason}`);
  const b = r.baseline;
  if (b) lines.push(baselineLine(r, b));
  return lines;
}

export function baselineLine(r: Exp3Results, b: Record<string, unknown>): string {
  if (b.error) return `  baseline: not available (${String(b.error).split("\n")[0]})`;
  const num = (k: string) => (typeof b[k] === "number" ? (b[k] as number) : NaN);
  const oom = b.oom_at_session == null ? "no OOM" : `OOM at session ${b.oom_at_session}`;
  return (
    `  baseline (eager, KV held while paused): ${b.sessions_fit}/${b.sessions_requested} sessions fit, ${oom}, ` +
    `${f1(num("vram_held_while_paused_gb"))} GB held while paused, allocator peak ${f1(num("peak_allocator_gb"))} GB` +
    `  |  djinn: ${r.num_sessions_finished}/${r.num_sessions_requested} finished, accounted peak ${f1(r.peaks.accounted_gb)} GB`
  );
}
