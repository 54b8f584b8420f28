// Records what the server reports during an Exp 3 run: telemetry samples,
// events, per-session stops and swaps. Every number here comes from the server.
import { EventKind, KvLocation, SessionState, type Event, type SessionInfo, type TelemetrySample } from "../client";
import { toGb } from "../client/format";
import { eventName, kvName, stateName } from "./names";

export type Phase = "debug" | "reference";

/** One telemetry sample, reduced to what the results and the plot need (GB = 1e9 B). */
export interface TelemetryPoint {
  t: number;
  phase: Phase;
  accounted_gb: number;
  nvml_used_gb: number;
  allocator_gb: number;
  allocator_reserved_gb: number;
  resident_kv_gb: number;
  swapped_kv_gb: number;
  host_pool_used_gb: number;
  budget_gb: number;
  swap_outs: number;
  swap_ins: number;
  sessions_alive: number;
  sessions_paused: number;
  kv_on_device: number;
  kv_on_host: number;
}

export interface ProgressSample {
  t: number;
  event: string;
  accounted_gb: number;
  nvml_used_gb: number;
  allocator_gb: number;
  state: string;
  kv_location: string;
  layer: number;
  token_index: number;
}

export interface StopRecord {
  t: number;
  layer: number;
  point: number;
  token_index: number;
  kv_location: string;
  accounted_gb: number;
  nvml_used_gb: number;
  allocator_gb: number;
  /** "event" normally; "poll" when found by ListSessions (the event was missed). */
  source: "event" | "poll";
}

export interface SwapRecord {
  t: number;
  session_id: number;
  direction: "out" | "in";
  bytes: number;
  ms: number;
  gbps: number;
}

export interface SessionRecord {
  id: number;
  stops: StopRecord[];
  samples: ProgressSample[];
  lastStopKey?: string;
  ended?: "finished" | "failed" | "closed";
  error?: string;
  generatedTokens?: number[];
}

export interface Peaks {
  accountedBytes: number;
  nvmlBytes: number;
  allocatorBytes: number;
  allocatorReservedBytes: number;
}

const ALIVE = new Set([SessionState.SESSION_STATE_CREATED, SessionState.SESSION_STATE_RUNNING, SessionState.SESSION_STATE_PAUSED]);
const TERMINAL = new Set([SessionState.SESSION_STATE_FINISHED, SessionState.SESSION_STATE_FAILED, SessionState.SESSION_STATE_CLOSED]);

export function isTerminal(s: SessionState): boolean {
  return TERMINAL.has(s);
}

/** Identifies one pause point of a session, to tell a new stop from one already seen. */
export function stopKey(info: SessionInfo): string {
  const p = info.position;
  return p ? `${p.phase}/${p.tokenIndex}/${p.layer}/${p.point}` : "?";
}

export class Recorder {
  /** Server time (unix s) of the first telemetry sample: t = 0 of every series. */
  t0 = 0;
  phase: Phase = "debug";
  readonly telemetry: TelemetryPoint[] = [];
  readonly sessions = new Map<number, SessionRecord>();
  readonly swaps: SwapRecord[] = [];
  readonly eventCounts: Record<string, number> = {};
  readonly peaks: Peaks = { accountedBytes: 0, nvmlBytes: 0, allocatorBytes: 0, allocatorReservedBytes: 0 };
  latest?: TelemetrySample;
  /** Date.now() of the last event or state change: the stall watchdog reads it. */
  lastProgressAt = Date.now();

  rel(time: number): number {
    if (!this.t0) this.t0 = time;
    return time - this.t0;
  }

  session(id: number): SessionRecord {
    let r = this.sessions.get(id);
    if (!r) {
      r = { id, stops: [], samples: [] };
      this.sessions.set(id, r);
    }
    return r;
  }

  onSample(s: TelemetrySample): void {
    if (!this.t0) this.t0 = s.time;
    this.latest = s;
    const p = this.peaks;
    p.accountedBytes = Math.max(p.accountedBytes, s.accountedBytes, s.accountedPeakBytes);
    p.nvmlBytes = Math.max(p.nvmlBytes, s.nvmlUsedBytes, s.nvmlPeakBytes);
    p.allocatorBytes = Math.max(p.allocatorBytes, s.allocatorAllocatedBytes, s.allocatorPeakBytes);
    p.allocatorReservedBytes = Math.max(p.allocatorReservedBytes, s.allocatorReservedBytes);
    let alive = 0;
    let paused = 0;
    let onDevice = 0;
    let onHost = 0;
    for (const m of s.sessions) {
      if (ALIVE.has(m.state)) alive++;
      if (m.state === SessionState.SESSION_STATE_PAUSED) paused++;
      if (m.kvLocation === KvLocation.KV_LOCATION_DEVICE) onDevice++;
      if (m.kvLocation === KvLocation.KV_LOCATION_HOST) onHost++;
    }
    this.telemetry.push({
      t: this.rel(s.time),
      phase: this.phase,
      accounted_gb: toGb(s.accountedBytes),
      nvml_used_gb: toGb(s.nvmlUsedBytes),
      allocator_gb: toGb(s.allocatorAllocatedBytes),
      allocator_reserved_gb: toGb(s.allocatorReservedBytes),
      resident_kv_gb: toGb(s.residentKvBytes),
      swapped_kv_gb: toGb(s.swappedKvBytes),
      host_pool_used_gb: toGb(s.hostPoolUsedBytes),
      budget_gb: toGb(s.budgetBytes),
      swap_outs: s.swapOuts,
      swap_ins: s.swapIns,
      sessions_alive: alive,
      sessions_paused: paused,
      kv_on_device: onDevice,
      kv_on_host: onHost,
    });
  }

  /** Records one event; returns the new stop when it is one (not seen before). */
  onEvent(e: Event): StopRecord | undefined {
    const kind = eventName(e.kind);
    this.eventCounts[kind] = (this.eventCounts[kind] ?? 0) + 1;
    this.lastProgressAt = Date.now();
    if (!e.sessionId) return undefined;
    const rec = this.session(e.sessionId);
    const info = e.session;
    if (info && kind !== "TOKEN") rec.samples.push(this.progressSample(e.time, kind, info));

    switch (e.kind) {
      case EventKind.EVENT_KIND_STOPPED:
        return info ? this.addStop(rec, info, e.time, "event") : undefined;
      case EventKind.EVENT_KIND_SWAP_OUT:
      case EventKind.EVENT_KIND_SWAP_IN:
        this.swaps.push({
          t: this.rel(e.time),
          session_id: e.sessionId,
          direction: e.kind === EventKind.EVENT_KIND_SWAP_OUT ? "out" : "in",
          bytes: e.bytes,
          ms: e.ms,
          gbps: e.gbps,
        });
        return undefined;
      case EventKind.EVENT_KIND_FINISHED:
        this.end(rec, "finished", info);
        return undefined;
      case EventKind.EVENT_KIND_ERROR:
        // An ERROR event about a session that then is FAILED ends it; others are only counted.
        if (!info || info.state === SessionState.SESSION_STATE_FAILED) this.end(rec, "failed", info, e.text);
        return undefined;
      case EventKind.EVENT_KIND_CLOSED:
        this.end(rec, "closed", info);
        return undefined;
      default:
        return undefined;
    }
  }

  /** Applies a polled snapshot (ListSessions/GetSession); returns a stop the events missed. */
  onSnapshot(info: SessionInfo, now: number): StopRecord | undefined {
    const rec = this.session(info.id);
    if (info.state === SessionState.SESSION_STATE_FINISHED) this.end(rec, "finished", info);
    else if (info.state === SessionState.SESSION_STATE_FAILED) this.end(rec, "failed", info, info.error);
    else if (info.state === SessionState.SESSION_STATE_CLOSED) this.end(rec, "closed", info);
    else if (info.state === SessionState.SESSION_STATE_PAUSED) return this.addStop(rec, info, now, "poll");
    return undefined;
  }

  private addStop(rec: SessionRecord, info: SessionInfo, time: number, source: "event" | "poll"): StopRecord | undefined {
    const key = stopKey(info);
    if (rec.ended || rec.lastStopKey === key) return undefined;
    rec.lastStopKey = key;
    this.lastProgressAt = Date.now();
    const s = this.latest;
    const stop: StopRecord = {
      t: this.rel(time),
      layer: info.position?.layer ?? -1,
      point: info.position?.point ?? 0,
      token_index: info.position?.tokenIndex ?? 0,
      kv_location: kvName(info.kvLocation),
      accounted_gb: s ? toGb(s.accountedBytes) : 0,
      nvml_used_gb: s ? toGb(s.nvmlUsedBytes) : 0,
      allocator_gb: s ? toGb(s.allocatorAllocatedBytes) : 0,
      source,
    };
    rec.stops.push(stop);
    return stop;
  }

  private end(rec: SessionRecord, how: "finished" | "failed" | "closed", info?: SessionInfo, error?: string): void {
    if (rec.ended) return;
    rec.ended = how;
    this.lastProgressAt = Date.now();
    if (info?.generatedTokens?.length) rec.generatedTokens = info.generatedTokens;
    if (how === "failed") rec.error = error || info?.error || "failed";
  }

  private progressSample(time: number, kind: string, info: SessionInfo): ProgressSample {
    const s = this.latest;
    return {
      t: this.rel(time),
      event: kind,
      accounted_gb: s ? toGb(s.accountedBytes) : 0,
      nvml_used_gb: s ? toGb(s.nvmlUsedBytes) : 0,
      allocator_gb: s ? toGb(s.allocatorAllocatedBytes) : 0,
      state: stateName(info.state),
      kv_location: kvName(info.kvLocation),
      layer: info.position?.layer ?? -1,
      token_index: info.position?.tokenIndex ?? 0,
    };
  }
}
