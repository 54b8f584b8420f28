// The live view of one Djinn server for the VRAM panel and the status bar: subscribes to
// the Telemetry and Events streams of the server that matters now and keeps a bounded
// history. Several sources may offer a server (a local server started from the palette, a
// connection, a debug session's own server, an Exp 3 run); the one offered last is shown,
// and when it goes away the previous one still alive takes over.
import * as vscode from "vscode";
import { DjinnClient, EventKind, KvLocation, SessionState, StopPoint, type Event, type ServerInfo, type TelemetrySample } from "../client";

export type { Sample, SwapMark } from "../media/shared/vramMessages";
import type { Sample, SwapMark } from "../media/shared/vramMessages";

export interface Target {
  /** unique per source, e.g. "local", "connection", "debug:<id>", "exp3" */
  id: string;
  address: string;
  token?: string;
  label: string;
}

export type MonitorState = "idle" | "connecting" | "live" | "gone";

export interface MonitorStatus {
  state: MonitorState;
  target?: Target;
  info?: { model: string; device: string; deviceName: string; dtype: string; layers: number; budget: number };
  message: string;
}

const MAX_SAMPLES = 6000;
const MAX_SWAPS = 4000;
const RETRY_MS = 3000;
const REPLAY_EVENTS = 5000;

export const STATE_NAMES: Record<number, string> = {
  [SessionState.SESSION_STATE_CREATED]: "created",
  [SessionState.SESSION_STATE_RUNNING]: "running",
  [SessionState.SESSION_STATE_PAUSED]: "paused",
  [SessionState.SESSION_STATE_FINISHED]: "finished",
  [SessionState.SESSION_STATE_CLOSED]: "closed",
  [SessionState.SESSION_STATE_FAILED]: "failed",
};
export const KV_NAMES: Record<number, string> = {
  [KvLocation.KV_LOCATION_NONE]: "none",
  [KvLocation.KV_LOCATION_DEVICE]: "device",
  [KvLocation.KV_LOCATION_HOST]: "host",
  [KvLocation.KV_LOCATION_MOVING_OUT]: "moving-out",
  [KvLocation.KV_LOCATION_MOVING_IN]: "moving-in",
};
const POINT_NAMES: Record<number, string> = { [StopPoint.STOP_POINT_ATTN]: "attn", [StopPoint.STOP_POINT_MLP]: "mlp" };

export function compactSample(s: TelemetrySample): Sample {
  return {
    t: s.time,
    budget: s.budgetBytes,
    weights: s.weightsBytes,
    workspace: s.workspaceBytes,
    residentKv: s.residentKvBytes,
    swappedKv: s.swappedKvBytes,
    accounted: s.accountedBytes,
    nvml: s.nvmlUsedBytes,
    allocReserved: s.allocatorReservedBytes,
    hostPoolUsed: s.hostPoolUsedBytes,
    hostPool: s.hostPoolBytes,
    swapOuts: s.swapOuts,
    swapIns: s.swapIns,
    sessions: s.sessions.map((m) => [m.sessionId, STATE_NAMES[m.state] ?? "?", KV_NAMES[m.kvLocation] ?? "?", m.layer, POINT_NAMES[m.point] ?? ""]),
  };
}

export class Monitor implements vscode.Disposable {
  private readonly targets: Target[] = [];
  private client?: DjinnClient;
  private current?: Target;
  private stopStreams: Array<() => void> = [];
  private retryTimer?: NodeJS.Timeout;
  private generation = 0;
  samples: Sample[] = [];
  swaps: SwapMark[] = [];
  status: MonitorStatus = { state: "idle", message: "No Djinn server: start one (Djinn: Start Local Server), connect to one, or start debugging." };
  serverInfo?: ServerInfo;

  private readonly sampleEmitter = new vscode.EventEmitter<Sample>();
  private readonly swapEmitter = new vscode.EventEmitter<SwapMark>();
  private readonly statusEmitter = new vscode.EventEmitter<MonitorStatus>();
  private readonly eventEmitter = new vscode.EventEmitter<Event>();
  readonly onSample = this.sampleEmitter.event;
  readonly onSwap = this.swapEmitter.event;
  readonly onStatus = this.statusEmitter.event;
  readonly onEvent = this.eventEmitter.event;

  constructor(private readonly intervalMs: () => number, private readonly log: (line: string) => void) {}

  /** Shows `t` now (replacing an earlier offer from the same source). */
  offer(t: Target): void {
    const i = this.targets.findIndex((x) => x.id === t.id);
    if (i >= 0) this.targets.splice(i, 1);
    this.targets.push(t);
    this.follow();
  }

  /** The source is gone: show the previous one, or keep the history with `idleMessage`. */
  withdraw(id: string, idleMessage?: string): void {
    const i = this.targets.findIndex((x) => x.id === id);
    if (i < 0) return;
    this.targets.splice(i, 1);
    this.follow(idleMessage);
  }

  has(id: string): boolean {
    return this.targets.some((t) => t.id === id);
  }

  get target(): Target | undefined {
    return this.current;
  }

  private follow(idleMessage?: string): void {
    const want = this.targets[this.targets.length - 1];
    if (want && this.current && want.id === this.current.id && want.address === this.current.address && this.status.state !== "gone") return;
    this.generation++;
    this.disconnect();
    this.current = want;
    if (!want) {
      // The history stays (the panel keeps showing the last run) until another server is shown.
      this.setStatus({ state: "idle", message: idleMessage ?? "No Djinn server: start one (Djinn: Start Local Server), connect to one, or start debugging." });
      return;
    }
    this.samples = [];
    this.swaps = [];
    void this.connect(want, ++this.generation);
  }

  private disconnect(): void {
    clearTimeout(this.retryTimer);
    for (const stop of this.stopStreams.splice(0)) stop();
    this.client?.close();
    this.client = undefined;
    this.serverInfo = undefined;
  }

  private async connect(t: Target, gen: number): Promise<void> {
    this.setStatus({ state: "connecting", target: t, message: `Connecting to ${t.label} at ${t.address}…` });
    const client = new DjinnClient(t.address, { token: t.token, deadlineMs: 15_000 });
    this.client = client;
    try {
      await client.waitForReady(10_000);
      const info = await client.getInfo();
      if (gen !== this.generation) return client.close();
      this.serverInfo = info;
      const telemetry = client.telemetry({ intervalMs: this.intervalMs() });
      // Replay the recent past too (swaps before the panel was opened); seq 1 is the first event.
      const events = client.events({ sinceSeq: Math.max(1, (info.eventSeq ?? 0) - REPLAY_EVENTS) });
      this.stopStreams.push(() => telemetry.cancel(), () => events.cancel());
      let first = true;
      telemetry.on("sample", (s) => {
        if (gen !== this.generation) return;
        const c = compactSample(s);
        this.samples.push(c);
        if (this.samples.length > MAX_SAMPLES) this.samples.splice(0, this.samples.length - MAX_SAMPLES);
        if (first) {
          first = false;
          this.setStatus({ state: "live", target: t, info: infoOf(info), message: `${t.label}: ${info.model?.name} on ${info.deviceName || info.device} at ${t.address}` });
        }
        this.sampleEmitter.fire(c);
      });
      events.on("event", (e) => {
        if (gen !== this.generation) return;
        this.eventEmitter.fire(e);
        if (e.kind !== EventKind.EVENT_KIND_SWAP_OUT && e.kind !== EventKind.EVENT_KIND_SWAP_IN) return;
        const m: SwapMark = { t: e.time, dir: e.kind === EventKind.EVENT_KIND_SWAP_OUT ? "out" : "in", sessionId: e.sessionId, bytes: e.bytes, ms: e.ms, gbps: e.gbps };
        this.swaps.push(m);
        if (this.swaps.length > MAX_SWAPS) this.swaps.splice(0, this.swaps.length - MAX_SWAPS);
        this.swapEmitter.fire(m);
      });
      const lost = (why: string) => {
        if (gen !== this.generation) return;
        this.generation++;
        this.disconnect();
        this.lostAt(t, why);
      };
      telemetry.on("error", (e) => lost(e.details || e.message));
      telemetry.on("end", () => lost("the server ended the telemetry stream"));
      events.on("error", (e) => lost(e.details || e.message));
    } catch (e) {
      client.close();
      if (gen !== this.generation) return;
      this.lostAt(t, e instanceof Error ? e.message : String(e));
    }
  }

  private lostAt(t: Target, why: string): void {
    this.log(`monitor: ${t.label} at ${t.address} is gone: ${why}`);
    this.setStatus({ state: "gone", target: t, message: `The Djinn server at ${t.address} (${t.label}) is gone: ${why}` });
    // Keep trying while the source still offers it (a restarted remote server comes back).
    const gen = this.generation;
    this.retryTimer = setTimeout(() => {
      if (gen !== this.generation || this.current?.id !== t.id || !this.targets.includes(t)) return;
      void this.connect(t, ++this.generation);
    }, RETRY_MS);
  }

  private setStatus(s: MonitorStatus): void {
    this.status = s;
    this.statusEmitter.fire(s);
  }

  dispose(): void {
    this.generation++;
    this.disconnect();
    this.sampleEmitter.dispose();
    this.swapEmitter.dispose();
    this.statusEmitter.dispose();
    this.eventEmitter.dispose();
  }
}

function infoOf(info: ServerInfo): MonitorStatus["info"] {
  return {
    model: info.model?.name ?? "?",
    device: info.device,
    deviceName: info.deviceName,
    dtype: info.dtype,
    layers: info.model?.nLayers ?? 0,
    budget: info.memory?.budgetBytes ?? 0,
  };
}
