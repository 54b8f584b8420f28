// The results file: the seed's fields plus ours, and the success criteria.
import type { ServerInfo } from "../client";
import { toGb } from "../client/format";
import type { Environment } from "./environment";
import type { Exp3Options } from "./options";
import type { Peaks, ProgressSample, Recorder, SessionRecord, TelemetryPoint } from "./recorder";
import { downsampleMax, mean, minMaxAvg, percentile, round } from "./stats";

export interface SessionOutcome {
  index: number;
  session_id: number;
  stops: number;
  swap_outs: number;
  swap_ins: number;
  ended: string;
  error?: string;
  generated_tokens: number[];
  reference_tokens?: number[];
  output_matches: boolean;
}

export interface Exp3Results {
  status: "success" | "failure";
  reasons: string[];
  num_sessions_requested: number;
  num_sessions_spawned: number;
  num_sessions_finished: number;
  peak_sessions_alive: number;
  peak_sessions_paused: number;
  vram_progression: Array<{ session_id: number; samples: ProgressSample[] }>;
  vram_stats: { min_gb: number; avg_gb: number; max_gb: number };
  swapping_active: boolean;
  swap_latencies_ms: number[];
  swap_out_ms: number[];
  swap_in_ms: number[];
  total_elapsed_seconds: number;
  budget_gb: number;
  weights_gb: number;
  workspace_gb: number;
  kv_bytes_per_token: number;
  kv_demand_gb: number;
  host_pool_gb: number;
  peaks: { accounted_gb: number; nvml_gb: number; allocator_gb: number; allocator_reserved_gb: number };
  /** Exact figures behind budget_gb and peaks (the success check compares these). */
  budget_bytes: number;
  peaks_bytes: { accounted: number; nvml: number; allocator: number; allocator_reserved: number };
  swap_count: { out: number; in: number };
  swap_bytes: { out: number; in: number };
  swap_bandwidth_gbps: { out_mean: number; in_mean: number; out_p50: number; in_p50: number };
  swap_latency_ms_stats: { out_mean: number; in_mean: number; out_p50: number; in_p50: number; out_p95: number; in_p95: number };
  outputs_match: number;
  outputs_compared: number;
  hardware: Record<string, unknown>;
  model: Record<string, unknown>;
  server: Record<string, unknown>;
  context: number;
  new_tokens: number;
  breakpoints: number[];
  think_ms: number;
  seed: number;
  git_commit: string;
  /** uncommitted changes to tracked files when the run started (absent: no checkout found) */
  git_dirty?: boolean;
  /** the checkout git_commit was read from */
  git_root?: string;
  command_line: string[];
  started_at: string;
  phases_seconds: Record<string, number>;
  telemetry: TelemetryPoint[];
  events_summary: { counts: Record<string, number>; stops_total: number; stops_found_by_polling: number; create_errors: Array<{ index: number; code: string; message: string }> };
  sessions: SessionOutcome[];
  cancelled?: boolean;
  /** When continuing began: once all sessions stopped once, or after a pause without events. */
  first_stop_gathering?: { released: string; sessions_waiting: number; t: number };
  baseline?: Record<string, unknown>;
}

export interface ResultInputs {
  opts: Exp3Options;
  info: ServerInfo;
  rec: Recorder;
  /** Debug sessions by prompt index (undefined where CreateSession failed). */
  debugIds: Array<number | undefined>;
  referenceTokens: Array<number[] | undefined>;
  createErrors: Array<{ index: number; code: string; message: string }>;
  runErrors: string[];
  cancelled: boolean;
  elapsedSeconds: number;
  phasesSeconds: Record<string, number>;
  startedAt: string;
  serverAddress: string;
  startedLocally: boolean;
  environment: Environment;
}

const sameTokens = (a?: number[], b?: number[]) => !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);

export function buildResults(x: ResultInputs): Exp3Results {
  const { opts, info, rec } = x;
  const mem = info.memory;
  const budgetBytes = mem?.budgetBytes ?? 0;
  const isGpu = info.device.startsWith("cuda");
  const debugSet = new Set(x.debugIds.filter((id): id is number => id !== undefined));

  const sessions: SessionOutcome[] = [];
  x.debugIds.forEach((id, index) => {
    if (id === undefined) return;
    const r: SessionRecord = rec.session(id);
    const swapsOf = (dir: "out" | "in") => rec.swaps.filter((s) => s.session_id === id && s.direction === dir).length;
    const generated = r.generatedTokens ?? [];
    sessions.push({
      index,
      session_id: id,
      stops: r.stops.length,
      swap_outs: swapsOf("out"),
      swap_ins: swapsOf("in"),
      ended: r.ended ?? "unfinished",
      ...(r.error ? { error: r.error } : {}),
      generated_tokens: generated,
      reference_tokens: x.referenceTokens[index],
      output_matches: r.ended === "finished" && sameTokens(generated, x.referenceTokens[index]),
    });
  });

  const swaps = rec.swaps.filter((s) => debugSet.has(s.session_id));
  const outs = swaps.filter((s) => s.direction === "out");
  const ins = swaps.filter((s) => s.direction === "in");
  const debugTelemetry = rec.telemetry.filter((p) => p.phase === "debug");
  const accounted = minMaxAvg(debugTelemetry.map((p) => p.accounted_gb));
  const peaks: Peaks = rec.peaks;
  // All requested sessions' full-context KV, from the server's measured bytes per token.
  const kvDemandBytes = opts.sessions * opts.context * (mem?.kvBytesPerToken ?? 0);

  const spawned = sessions.length;
  const finished = sessions.filter((s) => s.ended === "finished").length;
  const compared = sessions.filter((s) => s.reference_tokens !== undefined && s.ended === "finished").length;
  const matched = sessions.filter((s) => s.output_matches).length;

  const results: Exp3Results = {
    status: "failure",
    reasons: [],
    num_sessions_requested: opts.sessions,
    num_sessions_spawned: spawned,
    num_sessions_finished: finished,
    peak_sessions_alive: Math.max(0, ...debugTelemetry.map((p) => p.sessions_alive)),
    peak_sessions_paused: Math.max(0, ...debugTelemetry.map((p) => p.sessions_paused)),
    vram_progression: sessions.map((s) => ({ session_id: s.session_id, samples: rec.session(s.session_id).samples.map(roundSample) })),
    vram_stats: { min_gb: round(accounted.min, 4), avg_gb: round(accounted.avg, 4), max_gb: round(accounted.max, 4) },
    swapping_active: swaps.length > 0,
    swap_latencies_ms: swaps.map((s) => round(s.ms, 3)),
    swap_out_ms: outs.map((s) => round(s.ms, 3)),
    swap_in_ms: ins.map((s) => round(s.ms, 3)),
    total_elapsed_seconds: round(x.elapsedSeconds, 3),
    budget_gb: round(toGb(budgetBytes), 4),
    weights_gb: round(toGb(mem?.weightsBytes ?? 0), 4),
    workspace_gb: round(toGb(mem?.workspaceBytes ?? 0), 4),
    kv_bytes_per_token: mem?.kvBytesPerToken ?? 0,
    kv_demand_gb: round(toGb(kvDemandBytes), 4),
    host_pool_gb: round(toGb(mem?.hostPoolBytes ?? 0), 4),
    peaks: {
      accounted_gb: round(toGb(peaks.accountedBytes), 4),
      nvml_gb: round(toGb(peaks.nvmlBytes), 4),
      allocator_gb: round(toGb(peaks.allocatorBytes), 4),
      allocator_reserved_gb: round(toGb(peaks.allocatorReservedBytes), 4),
    },
    budget_bytes: budgetBytes,
    peaks_bytes: { accounted: peaks.accountedBytes, nvml: peaks.nvmlBytes, allocator: peaks.allocatorBytes, allocator_reserved: peaks.allocatorReservedBytes },
    swap_count: { out: outs.length, in: ins.length },
    swap_bytes: { out: outs.reduce((a, s) => a + s.bytes, 0), in: ins.reduce((a, s) => a + s.bytes, 0) },
    swap_bandwidth_gbps: {
      out_mean: round(mean(outs.map((s) => s.gbps)), 3),
      in_mean: round(mean(ins.map((s) => s.gbps)), 3),
      out_p50: round(percentile(outs.map((s) => s.gbps), 50), 3),
      in_p50: round(percentile(ins.map((s) => s.gbps), 50), 3),
    },
    swap_latency_ms_stats: {
      out_mean: round(mean(outs.map((s) => s.ms)), 3),
      in_mean: round(mean(ins.map((s) => s.ms)), 3),
      out_p50: round(percentile(outs.map((s) => s.ms), 50), 3),
      in_p50: round(percentile(ins.map((s) => s.ms), 50), 3),
      out_p95: round(percentile(outs.map((s) => s.ms), 95), 3),
      in_p95: round(percentile(ins.map((s) => s.ms), 95), 3),
    },
    outputs_match: matched,
    outputs_compared: compared,
    hardware: {
      device: info.device,
      device_name: info.deviceName,
      device_total_gb: round(toGb(mem?.deviceTotalBytes ?? 0), 3),
      torch_version: info.torchVersion,
      node_version: x.environment.nodeVersion,
      host_cpu: x.environment.hostCpu,
      host_cpu_cores: x.environment.hostCpuCores,
      host_memory_gb: x.environment.hostMemoryGb,
      platform: x.environment.platform,
    },
    model: modelFields(info),
    server: {
      address: x.serverAddress,
      started_locally: x.startedLocally,
      version: info.serverVersion,
      swap_policy: info.swapPolicy,
      allocator_capped: mem?.allocatorCapped ?? false,
      startup_seconds: info.startupSeconds,
      budget_flag: String(opts.budgetGb),
    },
    context: opts.context,
    new_tokens: opts.newTokens,
    breakpoints: opts.breakpoints,
    think_ms: opts.thinkMs,
    seed: opts.seed,
    git_commit: x.environment.gitCommit,
    ...(x.environment.gitDirty !== undefined ? { git_dirty: x.environment.gitDirty } : {}),
    ...(x.environment.gitRoot ? { git_root: x.environment.gitRoot } : {}),
    command_line: opts.commandLine ?? [],
    started_at: x.startedAt,
    phases_seconds: Object.fromEntries(Object.entries(x.phasesSeconds).map(([k, v]) => [k, round(v, 3)])),
    telemetry: downsampleMax(rec.telemetry, 1500, (p) => p.accounted_gb).map(roundPoint),
    events_summary: {
      counts: rec.eventCounts,
      stops_total: sessions.reduce((a, s) => a + s.stops, 0),
      stops_found_by_polling: sessions.reduce((a, s) => a + rec.session(s.session_id).stops.filter((t) => t.source === "poll").length, 0),
      create_errors: x.createErrors,
    },
    sessions,
    ...(x.cancelled ? { cancelled: true } : {}),
  };
  results.reasons = failureReasons(results, isGpu, x.runErrors);
  results.status = results.reasons.length === 0 ? "success" : "failure";
  return results;
}

/** Why a run is not a success; empty means success. */
export function failureReasons(r: Exp3Results, isGpu: boolean, runErrors: string[] = []): string[] {
  const reasons = [...runErrors];
  const n = r.num_sessions_requested;
  if (r.cancelled) reasons.push("cancelled");
  if (r.num_sessions_spawned < n) reasons.push(`only ${r.num_sessions_spawned}/${n} sessions spawned`);
  if (r.num_sessions_finished < n) reasons.push(`only ${r.num_sessions_finished}/${n} sessions finished`);
  if (r.outputs_match < n) reasons.push(`only ${r.outputs_match}/${n} outputs identical to the reference`);
  // Bytes when present (exact), else the rounded GB figures.
  const budget = r.budget_bytes ?? r.budget_gb;
  const peak = r.peaks_bytes ?? { accounted: r.peaks.accounted_gb, nvml: r.peaks.nvml_gb, allocator: r.peaks.allocator_gb };
  const over = (what: string, value: number) => `${what} peak ${value} ${r.budget_bytes ? "B" : "GB"} > budget ${budget}`;
  if (!(budget > 0)) reasons.push("the server reported no VRAM budget");
  if (peak.accounted > budget) reasons.push(over("accounted", peak.accounted));
  if (isGpu && peak.nvml > budget) reasons.push(over("NVML", peak.nvml));
  if (isGpu && peak.allocator > budget) reasons.push(over("allocator", peak.allocator));
  return reasons;
}

/** GetInfo's model config in the file's snake_case, plus the dtype. */
function modelFields(info: ServerInfo): Record<string, unknown> {
  const m = info.model;
  return {
    name: m?.name ?? "",
    n_layers: m?.nLayers ?? 0,
    dim: m?.dim ?? 0,
    n_heads: m?.nHeads ?? 0,
    n_kv_heads: m?.nKvHeads ?? 0,
    head_dim: m?.headDim ?? 0,
    intermediate_size: m?.intermediateSize ?? 0,
    vocab_size: m?.vocabSize ?? 0,
    max_context: m?.maxContext ?? 0,
    dtype: info.dtype,
  };
}

function roundSample(s: ProgressSample): ProgressSample {
  return { ...s, t: round(s.t, 3), accounted_gb: round(s.accounted_gb, 4), nvml_used_gb: round(s.nvml_used_gb, 4), allocator_gb: round(s.allocator_gb, 4) };
}

function roundPoint(p: TelemetryPoint): TelemetryPoint {
  const out = { ...p };
  for (const [k, v] of Object.entries(out)) if (typeof v === "number" && k.endsWith("_gb")) (out as any)[k] = round(v, 4);
  out.t = round(p.t, 3);
  return out;
}
