// A server stream (Events, Telemetry) that stays subscribed through hiccups: when the stream
// fails, ends, or the server says this subscriber LAGGED, it subscribes again (after a backoff
// of 0.2 s doubling to 5 s) with since_seq = the last event seq it saw, so nothing retained
// is missed. It tells its owner:
//   'message'      every message (a LAGGED marker is consumed, not passed on; one whose seq is
//                  the since_seq asked means those events are gone: it resumes from the latest)
//   'connected'    the first subscription is up
//   'reconnected'  a later one is up; `lagged` (events were lost: re-read ListSessions) and
//                  `restarted` (the server's seqs went backwards: it is a new process)
//   'down'         once, after it has failed for longer than downAfterMs (default 10 s)
//   'up'           back after 'down'
//   'failure'      each failed attempt (for logs)
// No `vscode`, no grpc types: `open` returns any DjinnStream, so the logic is tested with fakes.
import { EventEmitter } from "node:events";
import type { DjinnClient } from "./djinnClient";
import { EventKind, type Event, type ServerInfo, type TelemetrySample } from "./generated/djinn/v1/djinn";
import type { DjinnStream } from "./stream";

export interface ReconnectInfo {
  /** events were not delivered (LAGGED, or nothing to resume from): re-read the state (ListSessions) */
  lagged: boolean;
  /** the server's latest seq is below ours: a new server process (its sessions are new too) */
  restarted: boolean;
  /** since_seq of the new subscription */
  sinceSeq: number;
  /** how long there was no subscription (0 after a LAGGED re-subscription) */
  downMs: number;
}

export interface DownInfo {
  /** the last failure */
  error: string;
  /** how long it has been failing */
  sinceMs: number;
}

export type ResilientStreamEvents<T> = {
  message: [T];
  connected: [];
  reconnected: [ReconnectInfo];
  down: [DownInfo];
  up: [{ downMs: number }];
  failure: [{ error: string; attempt: number; retryInMs: number }];
};

export type ResilientState = "idle" | "connecting" | "up" | "retrying" | "down" | "stopped";

export interface ResilientTiming {
  /** 'down' after failing this long; default 10 000 */
  downAfterMs?: number;
  /** first retry delay; default 200, doubled per failed attempt */
  initialBackoffMs?: number;
  /** default 5000 */
  maxBackoffMs?: number;
  /** a subscription that lived this long resets the backoff; default 2000 */
  stableMs?: number;
  /** a probe that takes longer fails; default 5000 */
  probeTimeoutMs?: number;
}

export interface ResilientOptions<T> extends ResilientTiming {
  /** Opens one subscription. */
  open: (sinceSeq: number) => DjinnStream<T, string>;
  /** The stream's message event name ("event", "sample"). */
  messageEvent: string;
  /** A message's seq (events); seqs only grow within one server process. */
  seqOf?: (m: T) => number;
  /** For a LAGGED marker: the seq to resume from; undefined for ordinary messages. */
  lagOf?: (m: T) => number | undefined;
  /**
   * Before each subscription: resolves once the server answers (with its latest event seq when
   * known); a rejection is a failed attempt. Without it a subscription counts as up at its
   * first message.
   */
  probe?: () => Promise<number | undefined | { latest: number; restarted: boolean }>;
  /** since_seq of the first subscription; default: the probe's latest seq (only what comes after), else 0. */
  sinceSeq?: number | ((latest: number) => number);
}

export class ResilientStream<T> extends EventEmitter<ResilientStreamEvents<T>> {
  /** the last seq seen (or resumed from) */
  lastSeq = 0;
  private current?: DjinnStream<T, string>;
  private timer?: NodeJS.Timeout;
  private downTimer?: NodeJS.Timeout;
  private failingSince?: number;
  private attempts = 0;
  private everUp = false;
  private isUp = false;
  private isDown = false;
  private connecting = false;
  private stopped = false;
  private started = false;
  private lagPending = false;
  /** LAGGED at the very seq asked for: those events are gone; resume from the server's latest */
  private skipToLatest = false;
  private restartPending = false;
  private lastError = "";
  private readonly t: Required<ResilientTiming>;

  constructor(private readonly o: ResilientOptions<T>) {
    super();
    this.t = {
      downAfterMs: o.downAfterMs ?? 10_000,
      initialBackoffMs: o.initialBackoffMs ?? 200,
      maxBackoffMs: o.maxBackoffMs ?? 5_000,
      stableMs: o.stableMs ?? 2_000,
      probeTimeoutMs: o.probeTimeoutMs ?? 5_000,
    };
  }

  get state(): ResilientState {
    if (this.stopped) return "stopped";
    if (!this.started) return "idle";
    if (this.isUp) return "up";
    if (this.isDown) return "down";
    return this.everUp || this.failingSince !== undefined ? "retrying" : "connecting";
  }

  /** The last failure's message ("" when none). */
  get error(): string {
    return this.lastError;
  }

  /** Subscribes (attach listeners first). */
  start(): this {
    if (this.started || this.stopped) return this;
    this.started = true;
    void this.connect();
    return this;
  }

  /** Raises lastSeq (e.g. to GetInfo's event_seq, known to be reflected in a ListSessions read after it). */
  advanceTo(seq: number): void {
    if (seq > this.lastSeq) this.lastSeq = seq;
  }

  /** Skips the backoff wait: tries now (a "Reconnect" button). */
  retryNow(): void {
    if (this.stopped || !this.started || this.current || this.connecting) return;
    clearTimeout(this.timer);
    this.attempts = 0;
    void this.connect();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.isUp = false;
    clearTimeout(this.timer);
    clearTimeout(this.downTimer);
    const s = this.current;
    this.current = undefined;
    s?.cancel();
  }

  private async connect(): Promise<void> {
    if (this.stopped || this.current || this.connecting) return;
    this.connecting = true;
    let latest: number | undefined;
    let newProcess = false;
    try {
      if (this.o.probe) {
        const p = await withTimeout(this.o.probe(), this.t.probeTimeoutMs, "the server did not answer");
        if (typeof p === "object") ({ latest, restarted: newProcess } = p);
        else latest = p;
      }
    } catch (e) {
      this.connecting = false;
      if (!this.stopped) this.fail(errorText(e));
      return;
    }
    this.connecting = false;
    if (this.stopped) return;
    let since: number;
    if (!this.everUp && this.lastSeq === 0) {
      const s = this.o.sinceSeq;
      since = typeof s === "function" ? s(latest ?? 0) : s ?? latest ?? 0;
      this.lastSeq = since;
    } else {
      if (newProcess || (latest !== undefined && latest < this.lastSeq)) {
        // a new server process (another server_id, or its seqs started again)
        this.restartPending = true;
        this.lastSeq = latest ?? 0;
      }
      // Nothing to resume from: whatever happened meanwhile is unknown.
      if (this.lastSeq === 0 && this.o.seqOf) this.lagPending = true;
      if (this.skipToLatest) {
        // Asking again for what is no longer retained would only be told LAGGED again.
        this.skipToLatest = false;
        this.lastSeq = latest ?? 0;
      }
      since = this.lastSeq;
    }
    let stream: DjinnStream<T, string>;
    try {
      stream = this.o.open(since);
    } catch (e) {
      this.fail(errorText(e));
      return;
    }
    this.current = stream;
    const openedAt = Date.now();
    let confirmed = false;
    let streamError = "";
    const confirm = () => {
      if (confirmed || stream !== this.current) return;
      confirmed = true;
      this.onUp(since);
    };
    stream.on(this.o.messageEvent, (m: T) => {
      if (stream !== this.current) return;
      const lag = this.o.lagOf?.(m);
      if (lag !== undefined) {
        confirm();
        if (lag <= since) this.skipToLatest = true;
        this.lastSeq = lag;
        this.lagPending = true;
        this.current = undefined;
        this.isUp = false;
        stream.cancel();
        this.schedule(this.backoff());
        return;
      }
      confirm();
      const seq = this.o.seqOf?.(m);
      if (seq !== undefined && seq > this.lastSeq) this.lastSeq = seq;
      this.attempts = 0;
      this.emit("message", m);
    });
    stream.on("error", (e: Error) => (streamError = errorText(e)));
    stream.on("end", () => {
      if (stream !== this.current) return;
      this.current = undefined;
      this.isUp = false;
      if (this.stopped) return;
      if (Date.now() - openedAt >= this.t.stableMs) this.attempts = 0;
      this.fail(streamError || `the ${this.o.messageEvent} stream ended`);
    });
    if (this.o.probe) confirm();
  }

  private onUp(sinceSeq: number): void {
    const downMs = this.failingSince !== undefined ? Date.now() - this.failingSince : 0;
    const wasDown = this.isDown;
    clearTimeout(this.downTimer);
    this.failingSince = undefined;
    this.isDown = false;
    this.isUp = true;
    const info: ReconnectInfo = { lagged: this.lagPending || this.restartPending, restarted: this.restartPending, sinceSeq, downMs };
    this.lagPending = false;
    this.restartPending = false;
    if (!this.everUp) {
      this.everUp = true;
      this.emit("connected");
      if (info.lagged) this.emit("reconnected", info);
    } else {
      this.emit("reconnected", info);
    }
    if (wasDown) this.emit("up", { downMs });
  }

  private fail(error: string): void {
    this.lastError = error;
    if (this.failingSince === undefined) {
      this.failingSince = Date.now();
      clearTimeout(this.downTimer);
      this.downTimer = setTimeout(() => {
        if (this.stopped || this.failingSince === undefined || this.isDown) return;
        this.isDown = true;
        this.emit("down", { error: this.lastError, sinceMs: Date.now() - this.failingSince });
      }, this.t.downAfterMs);
      this.downTimer.unref?.();
    }
    const delay = this.backoff();
    this.emit("failure", { error, attempt: this.attempts, retryInMs: delay });
    this.schedule(delay);
  }

  private backoff(): number {
    const d = Math.min(this.t.maxBackoffMs, this.t.initialBackoffMs * 2 ** Math.min(this.attempts, 30));
    this.attempts++;
    return d;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.connect(), ms);
  }
}

function errorText(e: unknown): string {
  const d = e as { details?: string; message?: string };
  return (d && typeof d.details === "string" && d.details) || d?.message || String(e);
}

function withTimeout<V>(p: Promise<V>, ms: number, what: string): Promise<V> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });
}

export interface ResilientEventsOptions extends ResilientTiming {
  /** since_seq of the first subscription (default: only events after GetInfo's event_seq). */
  sinceSeq?: number | ((latest: number) => number);
  /** only this session's events */
  sessionId?: number;
  /** each GetInfo answer of the probe (before every subscription) */
  onInfo?: (info: ServerInfo) => void;
}

/** The Events stream of `client`, kept alive. Call start() after attaching listeners. */
export function resilientEvents(client: DjinnClient, o: ResilientEventsOptions = {}): ResilientStream<Event> {
  const probeTimeoutMs = o.probeTimeoutMs ?? 5_000;
  let serverId = "";
  return new ResilientStream<Event>({
    ...o,
    open: (sinceSeq) => client.events({ sinceSeq, sessionId: o.sessionId ?? 0 }),
    messageEvent: "event",
    seqOf: (e) => e.seq,
    lagOf: (e) => (e.kind === EventKind.EVENT_KIND_LAGGED ? e.seq : undefined),
    probe: async () => {
      const info = await client.getInfo(probeTimeoutMs);
      o.onInfo?.(info);
      const restarted = !!serverId && !!info.serverId && info.serverId !== serverId;
      serverId = info.serverId || serverId;
      return { latest: info.eventSeq, restarted };
    },
  });
}

export interface ResilientTelemetryOptions extends ResilientTiming {
  intervalMs?: number;
}

/** The Telemetry stream of `client`, kept alive (up at each subscription's first sample). */
export function resilientTelemetry(client: DjinnClient, o: ResilientTelemetryOptions = {}): ResilientStream<TelemetrySample> {
  return new ResilientStream<TelemetrySample>({
    ...o,
    open: () => client.telemetry({ intervalMs: o.intervalMs ?? 100 }),
    messageEvent: "sample",
  });
}
