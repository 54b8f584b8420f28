// The live view of one Djinn server for the VRAM panel and the status bar: subscribes to
// the Telemetry and Events streams of the server that matters now and keeps a bounded
// history per server address. Several sources may offer a server (a local server started
// from the palette, a connection, a debug session's own server, an Exp 3 run); the one
// offered last is shown, and when it goes away the previous one still alive takes over.
// The streams are resilient (client/resilientStream.ts): through a hiccup they re-subscribe
// with backoff and the same history goes on; after the grace time the server is shown as
// gone, with a "Reconnect" notification, and the retrying continues.
import * as vscode from "vscode";
import {
  DjinnClient,
  EventKind,
  KvLocation,
  SessionState,
  StopPoint,
  resilientEvents,
  resilientTelemetry,
  type Event,
  type ResilientStream,
  type ResilientTiming,
  type ServerInfo,
  type TelemetrySample,
} from "../client";
import type { Notices } from "./notices";

export type { Sample, SwapMark } from "../media/shared/vramMessages";
import type { Sample, SwapMark } from "../media/shared/vramMessages";

export interface Target {
  /** unique per source, e.g. "local", "connection", "debug:<id>", "exp3" */
  id: string;
  address: string;
  token?: string;
  /** TLS: the CA file that verifies the server (remote servers only) */
  caFile?: string;
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
const REPLAY_EVENTS = 5000;
const MAX_HISTORIES = 8;
const IDLE_MESSAGE = "No Djinn server: start one (Djinn: Start Local Server), connect to one, or start debugging.";

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
  [KvLocation.KV_LOCATION_DISK]: "disk",
  [KvLocation.KV_LOCATION_MOVING_TO_DISK]: "moving-to-disk",
  [KvLocation.KV_LOCATION_MOVING_FROM_DISK]: "moving-from-disk",
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
    // only a server with a disk tier (--spill-gb) sends a size: the panel shows a disk row then
    ...(s.spillBytes > 0
      ? { spill: { size: s.spillBytes, used: s.spillUsedBytes, outs: s.spillsOut, ins: s.spillsIn, writeGbps: s.spillWriteGbPerS, readGbps: s.spillReadGbPerS } }
      : {}),
    sessions: s.sessions.map((m) => [m.sessionId, STATE_NAMES[m.state] ?? "?", KV_NAMES[m.kvLocation] ?? "?", m.layer, POINT_NAMES[m.point] ?? ""]),
  };
}

/** One server address's history: kept across disconnections, server restarts and target switches. */
export interface History {
  address: string;
  samples: Sample[];
  swaps: SwapMark[];
  /** the last event seq seen from this address (resume point) */
  lastSeq: number;
}

export class Monitor implements vscode.Disposable {
  private readonly targets: Target[] = [];
  private client?: DjinnClient;
  private current?: Target;
  private streams: Array<ResilientStream<unknown>> = [];
  private generation = 0;
  private readonly histories = new Map<string, History>();
  private history: History = { address: "", samples: [], swaps: [], lastSeq: 0 };
  /** the device error a server reported (telemetry or DEVICE_FAILED), by address */
  private readonly deviceErrors = new Map<string, string>();
  /** targets whose loss the source reports itself (a local server that exited): no "Reconnect" notice */
  private readonly quiet = new Set<string>();
  status: MonitorStatus = { state: "idle", message: IDLE_MESSAGE };
  serverInfo?: ServerInfo;

  private readonly sampleEmitter = new vscode.EventEmitter<Sample>();
  private readonly swapEmitter = new vscode.EventEmitter<SwapMark>();
  private readonly statusEmitter = new vscode.EventEmitter<MonitorStatus>();
  private readonly eventEmitter = new vscode.EventEmitter<Event>();
  private readonly historyEmitter = new vscode.EventEmitter<History>();
  readonly onSample = this.sampleEmitter.event;
  readonly onSwap = this.swapEmitter.event;
  readonly onStatus = this.statusEmitter.event;
  readonly onEvent = this.eventEmitter.event;
  /** The history shown changed (another address): redraw from it. */
  readonly onHistory = this.historyEmitter.event;

  constructor(
    private readonly intervalMs: () => number,
    private readonly log: (line: string) => void,
    private readonly notices?: Notices,
    private readonly timing: ResilientTiming = {},
  ) {}

  /** The samples of the server shown now (its address's history). */
  get samples(): Sample[] {
    return this.history.samples;
  }

  get swaps(): SwapMark[] {
    return this.history.swaps;
  }

  /** The history of an address, if it was ever shown. */
  historyOf(address: string): History | undefined {
    return this.histories.get(address);
  }

  /** The device error the server at `address` reported (its telemetry's device_error, or a DEVICE_FAILED event). */
  deviceError(address: string): string | undefined {
    return this.deviceErrors.get(address);
  }

  /** Shows `t` now (replacing an earlier offer from the same source). */
  offer(t: Target): void {
    const i = this.targets.findIndex((x) => x.id === t.id);
    if (i >= 0) this.targets.splice(i, 1);
    this.targets.push(t);
    this.quiet.delete(t.id);
    this.follow();
  }

  /** The source is gone: show the previous one, or keep the history with `idleMessage`. */
  withdraw(id: string, idleMessage?: string): void {
    const i = this.targets.findIndex((x) => x.id === id);
    if (i < 0) return;
    this.targets.splice(i, 1);
    this.quiet.delete(id);
    this.follow(idleMessage);
  }

  has(id: string): boolean {
    return this.targets.some((t) => t.id === id);
  }

  get target(): Target | undefined {
    return this.current;
  }

  /**
   * The source knows its server is gone (its process exited): say so now rather than after the
   * grace time, and leave the notification to the source. The streams keep trying (a restart on
   * the same address continues the same history).
   */
  markLost(id: string, why: string): void {
    this.quiet.add(id);
    const source = this.targets.find((x) => x.id === id);
    if (!this.current || (this.current.id !== id && this.current.address !== source?.address)) return;
    this.log(`monitor: ${this.current.label} at ${this.current.address} is gone: ${why}`);
    this.setStatus({ state: "gone", target: this.current, info: this.status.info, message: goneMessage(this.current, why) });
  }

  /** Tries again now instead of at the next backoff step ("Reconnect"). */
  reconnectNow(): void {
    const t = this.current;
    if (!t) return;
    if (this.streams.length === 0) {
      void this.connect(t, ++this.generation);
      return;
    }
    this.log(`monitor: reconnecting to ${t.address} now`);
    for (const s of this.streams) s.retryNow();
  }

  private follow(idleMessage?: string): void {
    const want = this.targets[this.targets.length - 1];
    const same = (x: Target, y: Target) => x.address === y.address && x.token === y.token && x.caFile === y.caFile;
    if (want && this.current && same(want, this.current) && this.streams.length > 0) {
      // The same server (another source offering it, e.g. a debug session on the window's
      // server): keep the streams and the history, only the label changes.
      const was = this.current;
      this.current = want;
      if (this.status.state === "gone") this.reconnectNow();
      else if (was.id !== want.id || was.label !== want.label) this.setStatus({ ...this.status, target: want, message: this.status.message.replace(was.label, want.label) });
      return;
    }
    this.generation++;
    this.disconnect();
    this.current = want;
    if (!want) {
      // The history stays (the panel keeps showing the last run) until another server is shown.
      this.setStatus({ state: "idle", message: idleMessage ?? IDLE_MESSAGE });
      return;
    }
    this.useHistory(want.address);
    void this.connect(want, this.generation);
  }

  private useHistory(address: string): void {
    let h = this.histories.get(address);
    if (!h) {
      h = { address, samples: [], swaps: [], lastSeq: 0 };
      this.histories.set(address, h);
      // a bounded number of servers remembered
      if (this.histories.size > MAX_HISTORIES) {
        const oldest = [...this.histories.keys()].find((a) => a !== address);
        if (oldest !== undefined) this.histories.delete(oldest);
      }
    }
    if (h === this.history) return;
    this.history = h;
    this.historyEmitter.fire(h);
  }

  private disconnect(): void {
    for (const s of this.streams.splice(0)) s.stop();
    this.client?.close();
    this.client = undefined;
    this.serverInfo = undefined;
  }

  private async connect(t: Target, gen: number): Promise<void> {
    this.setStatus({ state: "connecting", target: t, message: `Connecting to ${t.label} at ${t.address}…` });
    let client: DjinnClient;
    try {
      client = new DjinnClient(t.address, { token: t.token, caFile: t.caFile, deadlineMs: 15_000 });
    } catch (e) {
      this.setStatus({ state: "gone", target: t, message: goneMessage(t, (e as Error).message) });
      return;
    }
    this.client = client;
    const h = this.history;
    let info: ServerInfo | undefined;
    const telemetry = resilientTelemetry(client, { intervalMs: this.intervalMs(), ...this.timing });
    const events = resilientEvents(client, {
      ...this.timing,
      // Continue this address's history where it stopped; a new one replays the recent past
      // (swaps before the panel was opened); seq 1 is the first event.
      sinceSeq: (latest) => (h.lastSeq > 0 && h.lastSeq <= latest ? h.lastSeq : Math.max(1, latest - REPLAY_EVENTS)),
      onInfo: (i) => {
        if (gen !== this.generation) return;
        info = i;
        this.serverInfo = i;
        if (i.deviceError) this.deviceErrors.set(t.address, i.deviceError);
        if (sampled) live();
      },
    });
    let sampled = false;
    this.streams = [telemetry as ResilientStream<unknown>, events as ResilientStream<unknown>];
    // live once samples flow and GetInfo (the events stream's probe) has answered
    const live = () => {
      // the target shown may have been relabelled since (another source of the same server)
      const cur = this.current ?? t;
      if (this.status.state === "live" && this.status.target === cur) return;
      if (!info) return;
      this.setStatus({ state: "live", target: cur, info: infoOf(info), message: `${cur.label}: ${info.model?.name} on ${info.deviceName || info.device} at ${t.address}` });
    };
    telemetry.on("message", (s) => {
      if (gen !== this.generation) return;
      if (s.deviceError) this.deviceErrors.set(t.address, s.deviceError);
      const c = compactSample(s);
      h.samples.push(c);
      if (h.samples.length > MAX_SAMPLES) h.samples.splice(0, h.samples.length - MAX_SAMPLES);
      sampled = true;
      live();
      this.sampleEmitter.fire(c);
    });
    events.on("message", (e) => {
      if (gen !== this.generation) return;
      if (e.seq <= h.lastSeq) return; // already in this history (a replay that overlaps)
      h.lastSeq = e.seq;
      if (e.kind === EventKind.EVENT_KIND_DEVICE_FAILED) {
        this.deviceErrors.set(t.address, e.text || "the device failed");
        this.log(`monitor: the device of ${t.address} failed: ${e.text}`);
      }
      this.eventEmitter.fire(e);
      if (e.kind !== EventKind.EVENT_KIND_SWAP_OUT && e.kind !== EventKind.EVENT_KIND_SWAP_IN) return;
      const m: SwapMark = { t: e.time, dir: e.kind === EventKind.EVENT_KIND_SWAP_OUT ? "out" : "in", sessionId: e.sessionId, bytes: e.bytes, ms: e.ms, gbps: e.gbps };
      h.swaps.push(m);
      if (h.swaps.length > MAX_SWAPS) h.swaps.splice(0, h.swaps.length - MAX_SWAPS);
      this.swapEmitter.fire(m);
    });
    events.on("reconnected", (r) => {
      if (gen !== this.generation) return;
      if (r.restarted) {
        // a new server process on the same address: its seqs start again; the history goes on
        h.lastSeq = r.sinceSeq;
        this.log(`monitor: ${t.address} is a new server process; the history continues`);
      }
    });
    let failures = 0;
    for (const s of [telemetry, events] as Array<ResilientStream<unknown>>) {
      s.on("failure", ({ error, retryInMs }) => {
        if (gen !== this.generation) return;
        if (failures++ === 0) this.log(`monitor: lost ${t.address} (${error}); retrying in ${retryInMs} ms`);
      });
      s.on("down", ({ error }) => {
        if (gen !== this.generation || this.status.state === "gone") return;
        this.lostAt(this.current ?? t, error);
      });
      s.on("up", () => {
        if (gen !== this.generation) return;
        failures = 0;
        this.log(`monitor: ${t.address} is back`);
      });
    }
    telemetry.start();
    events.start();
  }

  private lostAt(t: Target, why: string): void {
    this.log(`monitor: ${t.label} at ${t.address} is gone: ${why}`);
    this.setStatus({ state: "gone", target: t, info: this.status.info, message: goneMessage(t, why) });
    if (this.isQuiet(t) || !this.notices) return;
    const reconnect = "Reconnect";
    this.notices.show("warning", `Djinn: lost the connection to ${t.label} at ${t.address} (${why}). Its history is kept; reconnecting automatically.`, [reconnect, "Show Log"], (a) => {
      if (a === reconnect) this.reconnectNow();
      else void vscode.commands.executeCommand("djinn.showLog");
    });
  }

  /** The loss of this server is reported by a source of it (a local server that exited). */
  private isQuiet(t: Target): boolean {
    if (this.quiet.has(t.id)) return true;
    return this.targets.some((x) => x.address === t.address && this.quiet.has(x.id));
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
    this.historyEmitter.dispose();
  }
}

function goneMessage(t: Target, why: string): string {
  return `The Djinn server at ${t.address} (${t.label}) is gone: ${why}. The history is kept; reconnecting automatically.`;
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
