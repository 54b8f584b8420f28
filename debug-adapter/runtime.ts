// The Djinn runtime of the debug adapter: talks to the server through the client library,
// keeps the state of the sessions it shows (one DAP thread each) and emits plain, typed
// events. No DAP types here (session.ts translates), no `vscode` import.
import { EventEmitter } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import {
  DjinnClient,
  DjinnError,
  EventKind,
  resilientEvents,
  KvLocation,
  READY_PREFIX,
  readyLine,
  SessionState,
  StepKind,
  StopPoint,
  StopReason,
  startLocalServer,
  type Breakpoint,
  type DimSlice,
  type CompleteResponse,
  type DataBreakpoint,
  type DetachResult,
  type EvaluateResponse,
  type Event,
  type FetchedTensor,
  type ReconnectInfo,
  type ResilientStream,
  type LocalServer,
  type ServerInfo,
  type SessionInfo,
  type TensorSummary,
  type TokenProb,
  type Traps,
} from "../client";
import { currentSignal } from "./cancel";
import { sessionLabel, type AttachConfig, type LaunchConfig, type PromptSpec } from "./config";

export { StopPoint, StopReason, SessionState, KvLocation, StepKind };

/**
 * Swapped out: its KV is not on the device (the host pool, the server's disk, or moving out or
 * between them). A continue or a look at its tensors brings it back first.
 */
export function offDevice(k: KvLocation): boolean {
  return (
    k === KvLocation.KV_LOCATION_HOST ||
    k === KvLocation.KV_LOCATION_MOVING_OUT ||
    k === KvLocation.KV_LOCATION_DISK ||
    k === KvLocation.KV_LOCATION_MOVING_TO_DISK ||
    k === KvLocation.KV_LOCATION_MOVING_FROM_DISK
  );
}
export type { SessionInfo, TensorSummary, ServerInfo, DimSlice, TokenProb };

/** A breakpoint as the server knows it: an id chosen by the adapter, a stop point, conditions. */
export interface RtBreakpoint {
  id: number;
  layer: number;
  point: StopPoint;
  condition?: string;
  hitCondition?: string;
  /** a logpoint: the server prints this (DAP logMessage syntax) instead of stopping */
  logMessage?: string;
}

/** A data breakpoint as the server knows it: stop where `condition` over `tensor` becomes true. */
export interface RtDataBreakpoint {
  id: number;
  tensor: string;
  condition: string;
  hitCondition?: string;
}

export interface RtTraps {
  nan: boolean;
  inf: boolean;
  /** factor; 0 = off */
  normSpike: number;
}

export interface BpStatus {
  id: number;
  verified: boolean;
  message?: string;
}

export interface RtSession {
  id: number;
  info: SessionInfo;
  /** created by this adapter (launch); closed on terminate */
  owned: boolean;
  /** increases at every stop and resume: references into a stop are valid for one epoch */
  epoch: number;
  /** why it stopped last (while paused) */
  stop?: { reason: StopReason; text: string; hitIds: number[]; time: number };
  ended: boolean;
  endText?: string;
  /** the cached ListTensors answer of this stop */
  tensors?: Promise<TensorSummary[]>;
  /** changes whenever anything about the session changes (guards reconciliation) */
  gen: number;
  lastEventAt: number;
  /** resumes this adapter asked for whose RESUMED event has not come yet */
  expectResumes: number;
  /** the epoch (stop) for which this adapter last sent Prefetch: at most one per stop */
  prefetchEpoch?: number;
}

export interface StoppedEvt {
  sessionId: number;
  reason: StopReason;
  text: string;
  hitIds: number[];
}

export type RuntimeEvents = {
  stopped: [StoppedEvt];
  resumed: [{ sessionId: number; byUs: boolean }];
  sessionStarted: [{ sessionId: number }];
  sessionEnded: [{ sessionId: number; state: SessionState; text: string }];
  /** `index`: tokens generated so far, this one included; `max`: the session's max new tokens */
  token: [{ sessionId: number; token: number; text: string; generated: string; index: number; max: number }];
  swap: [{ sessionId: number; direction: "out" | "in"; bytes: number; ms: number }];
  /** a swapped session's state moved between the host pool and the server's disk tier */
  spill: [{ sessionId: number; direction: "to disk" | "from disk"; bytes: number; ms: number }];
  /** `load`: the local server loading the model (a launch can be cancelled meanwhile); `swapin`: KV coming back */
  progressStart: [{ id: string; kind: "load" | "swapin"; title: string; message?: string }];
  progressEnd: [{ id: string; message?: string }];
  /** stdout: routine information (plain in VS Code); console: worth a look (VS Code shows it as a warning) */
  log: [{ text: string; category: "stdout" | "console" | "stderr" | "important" }];
  /** every session this launch created has ended; `why` when it was not their own doing (the device failed) */
  allEnded: [{ why?: string }];
  serverLost: [{ message: string }];
  /** the event stream is back after a hiccup (threads were reconciled with ListSessions when it lagged) */
  reconnected: [ReconnectInfo];
  sessionChanged: [{ sessionId: number }];
  /** a logpoint printed `text` (formatted on the server) at the session's stop point */
  logpoint: [{ sessionId: number; breakpointId: number; text: string }];
};

export const SESSION_ENDED = new Set([SessionState.SESSION_STATE_FINISHED, SessionState.SESSION_STATE_CLOSED, SessionState.SESSION_STATE_FAILED]);

export function sessionEnded(info: SessionInfo): boolean {
  return SESSION_ENDED.has(info.state);
}

const BP_ERROR = /(?<!data )breakpoint (\d+): (.*)$/s;
const DATA_BP_ERROR = /data breakpoint (\d+): (.*)$/s;
const RECONCILE_MS = 1000;
/** Detach and closing calls on the way out: never hold a disconnect up for long. */
const DETACH_DEADLINE_MS = 5000;

/** How to reach a server: token, TLS, how long its event stream may be down before it counts as lost. */
export interface ConnectOptions {
  token?: string;
  caFile?: string;
  tlsServerName?: string;
  /** seconds; default 10 */
  reconnectGraceSeconds?: number;
}

export class DjinnRuntime extends EventEmitter<RuntimeEvents> {
  client?: DjinnClient;
  info?: ServerInfo;
  mode?: "launch" | "attach";
  localServer?: LocalServer;
  readonly sessions = new Map<number, RtSession>();
  /** the breakpoints and traps the editor and the launch configuration want, in every session */
  private desired: RtBreakpoint[] = [];
  /** the data breakpoints the editor wants, in every session (those the server refused are left out) */
  private desiredData: RtDataBreakpoint[] = [];
  /** data breakpoints were sent once: later sessions (attach) get the set too, even when empty */
  private dataPushed = false;
  private traps: RtTraps = { nan: false, inf: false, normSpike: 0 };
  /** attach: breakpoints are pushed only once the editor has set any */
  private pushBreakpoints = true;
  private events?: ResilientStream<Event>;
  /** events up to this seq are reflected in the last ListSessions read (resync): skipped */
  private ignoreUpTo = 0;
  private resyncing?: Promise<void>;
  private resyncAgain = false;
  private detached = false;
  /** the device failed (DEVICE_FAILED): the server's message */
  deviceError?: string;
  private queue: Promise<unknown> = Promise.resolve();
  private reconcileTimer?: NodeJS.Timeout;
  private progressSeq = 0;
  private swapProgress = new Map<number, string>();
  private disposed = false;
  private creating = false;
  /** restart is closing this launch's sessions to create them again: their end is not the launch's */
  private restarting = false;
  /** events of sessions not tracked yet, kept while sessions are being created or listed (replayed by track) */
  private early?: Map<number, Event[]>;

  // ------------------------------------------------------------------ start

  private launchAbort?: AbortController;

  /** A cancelled launch: a local server still loading its model is stopped now. */
  cancelLaunch(): void {
    this.launchAbort?.abort();
  }

  /** Starts a local server (or connects to `server`), subscribes to events, reads GetInfo. */
  async launch(cfg: LaunchConfig): Promise<ServerInfo> {
    this.mode = "launch";
    let address = cfg.server;
    if (!address) {
      const id = this.newProgressId("load");
      this.emit("progressStart", { id, kind: "load", title: `Starting Djinn (${cfg.model} on ${cfg.device})`, message: "loading the model" });
      try {
        // the client library's token rule: the server requires cfg.token or none, never an inherited DJINN_TOKEN
        this.launchAbort = new AbortController();
        this.localServer = await startLocalServer({
          signal: this.launchAbort.signal,
          token: cfg.token,
          model: cfg.model!,
          device: cfg.device,
          dtype: cfg.dtype,
          python: cfg.pythonPath,
          budgetGb: cfg.vramBudgetGb,
          hostPoolGb: cfg.hostPoolGb,
          maxContext: cfg.contextTokens,
          extraArgs: cfg.serverArgs,
          env: cfg.env,
          startTimeoutMs: 900_000,
          // Server output is not an error: the ready line becomes one plain line; trace lines are plain output too.
          onLog: (line) => {
            if (line.startsWith(READY_PREFIX)) {
              let text = line;
              try {
                text = readyLine(JSON.parse(line.slice(READY_PREFIX.length)));
              } catch {
                /* keep the raw line */
              }
              this.emit("log", { text, category: "stdout" });
            } else if (cfg.trace && !line.startsWith("Djinn serving")) this.emit("log", { text: line, category: "stdout" });
          },
        });
      } finally {
        this.emit("progressEnd", { id });
      }
      if (this.disposed) {
        // the debug session ended while the model was loading
        await this.localServer.stop();
        this.localServer = undefined;
        throw new DjinnError(1, "the debug session ended while the server was starting");
      }
      address = this.localServer.address;
      this.localServer.process.once("exit", (code, signal) => {
        if (!this.disposed) this.lost(`the local Djinn server exited (code ${code}, signal ${signal})`);
      });
    }
    // A local server is plain gRPC on 127.0.0.1; TLS only to a running server.
    const info = await this.connect(address, cfg.server ? cfg : { token: cfg.token, reconnectGraceSeconds: cfg.reconnectGraceSeconds });
    if (cfg.server && cfg.model && info.model && info.model.name !== cfg.model) {
      throw new DjinnError(9, `the server at ${cfg.server} runs model '${info.model.name}', not '${cfg.model}' (launch attribute 'model')`);
    }
    return info;
  }

  async attach(cfg: AttachConfig): Promise<ServerInfo> {
    this.mode = "attach";
    this.pushBreakpoints = false;
    const info = await this.connect(cfg.server, cfg);
    this.early = new Map();
    try {
      for (const s of await this.client!.listSessions()) {
        if (sessionEnded(s)) continue;
        this.track(s, false);
      }
    } finally {
      this.early = undefined;
    }
    return info;
  }

  private async connect(address: string, o: ConnectOptions): Promise<ServerInfo> {
    const client = new DjinnClient(address, { token: o.token, tls: o.caFile || o.tlsServerName ? { caFile: o.caFile, serverName: o.tlsServerName } : undefined });
    this.client = client;
    await client.waitForReady(Number(process.env.DJINN_CONNECT_TIMEOUT_MS) || 15_000);
    this.info = await client.getInfo();
    // Events after GetInfo's event_seq, kept subscribed through hiccups (re-subscribing with since_seq).
    const graceMs = (o.reconnectGraceSeconds ?? 10) * 1000;
    const events = resilientEvents(client, { sinceSeq: this.info.eventSeq, downAfterMs: graceMs });
    this.events = events;
    let reported = false;
    events.on("message", (e) => this.onEvent(e));
    events.on("failure", ({ error }) => {
      if (reported || this.disposed) return;
      reported = true;
      this.emit("log", { text: `djinn: the event stream of ${address} failed (${error}); reconnecting (the server counts as lost after ${graceMs / 1000} s)`, category: "console" });
    });
    events.on("reconnected", (r) => {
      if (this.disposed) return;
      reported = false;
      this.emit("log", { text: `djinn: reconnected to ${address} after ${(r.downMs / 1000).toFixed(1)} s${r.restarted ? " (a new server process)" : r.lagged ? " (events were missed: re-reading the sessions)" : ""}`, category: "console" });
      if (r.lagged) void this.resync(r.restarted).catch((e) => this.emit("log", { text: `djinn: could not re-read the sessions: ${(e as Error).message}`, category: "stderr" }));
      this.emit("reconnected", r);
    });
    events.on("down", ({ error, sinceMs }) => this.lost(`the Djinn server at ${address} has not answered for ${(sinceMs / 1000).toFixed(0)} s (${error})`));
    await new Promise<void>((resolve, reject) => {
      const ok = () => (events.off("failure", bad), resolve());
      const bad = ({ error }: { error: string }) => (events.off("connected", ok), events.stop(), reject(new DjinnError(14, `cannot subscribe to the events of ${address}: ${error}`)));
      events.once("connected", ok);
      events.once("failure", bad);
      events.start();
    });
    this.reconcileTimer = setInterval(() => void this.reconcile(), RECONCILE_MS);
    this.reconcileTimer.unref();
    return this.info;
  }

  /**
   * After events were missed (LAGGED, or a new server process): ListSessions is the truth.
   * Known sessions take its state (threads come back where they are), missing ones end,
   * attach picks up sessions it did not know; events already reflected in it are skipped.
   */
  private resync(restarted: boolean): Promise<void> {
    if (this.resyncing) {
      this.resyncAgain = true;
      return this.resyncing;
    }
    const run = async () => {
      do {
        this.resyncAgain = false;
        const client = this.client;
        if (!client || this.disposed) return;
        const info = await client.getInfo();
        const list = await client.listSessions();
        if (this.disposed) return;
        this.info = { ...info, modules: info.modules.length ? info.modules : this.info?.modules ?? [] };
        const byId = new Map(list.map((x) => [x.id, x]));
        for (const s of this.list()) {
          const cur = restarted ? undefined : byId.get(s.id);
          if (!cur) {
            s.info = { ...s.info, state: SessionState.SESSION_STATE_CLOSED };
            this.end(s, restarted ? "the server restarted" : "closed while the connection was down");
          } else {
            this.apply(s, cur);
          }
        }
        if (this.mode === "attach") {
          let added = false;
          for (const cur of list) {
            if (sessionEnded(cur) || this.sessions.has(cur.id)) continue;
            const t = this.track(cur, false);
            added = true;
            if (t.stop) this.emit("stopped", { sessionId: t.id, reason: t.stop.reason, text: "", hitIds: t.stop.hitIds });
          }
          if (added) void this.serial(() => this.pushAll()).catch(() => undefined);
        }
        this.ignoreUpTo = Math.max(this.ignoreUpTo, info.eventSeq);
        restarted = false;
      } while (this.resyncAgain);
    };
    this.resyncing = run().finally(() => (this.resyncing = undefined));
    return this.resyncing;
  }

  /** A session's state read from the server (ListSessions / GetSession) replaces what we believed. */
  private apply(s: RtSession, cur: SessionInfo): void {
    if (sessionEnded(cur)) {
      s.info = cur;
      this.end(s, cur.error || cur.generatedText);
    } else if (cur.state === SessionState.SESSION_STATE_PAUSED) {
      if (s.info.state === SessionState.SESSION_STATE_PAUSED && samePlace(s.info, cur) && s.stop) {
        s.info = cur;
        this.emit("sessionChanged", { sessionId: s.id });
      } else {
        this.stopped(s, cur, cur.stopReason, "");
      }
    } else if (s.info.state === SessionState.SESSION_STATE_PAUSED) {
      this.markResumed(s, cur, false);
    } else {
      s.info = cur;
      s.gen++;
      this.emit("sessionChanged", { sessionId: s.id });
    }
  }

  private lost(message: string): void {
    if (this.disposed) return;
    this.disposed = true;
    this.emit("serverLost", { message });
  }

  get nLayers(): number {
    return this.info?.model?.nLayers ?? 0;
  }

  /** Writes `text` to `path` (creating folders). */
  writeFile(path: string, text: string): void {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }

  // ------------------------------------------------------------- sessions

  private track(info: SessionInfo, owned: boolean): RtSession {
    let s = this.sessions.get(info.id);
    if (!s) {
      s = { id: info.id, info, owned, epoch: 0, ended: sessionEnded(info), gen: 0, lastEventAt: Date.now(), expectResumes: 0 };
      this.sessions.set(info.id, s);
      if (info.state === SessionState.SESSION_STATE_PAUSED) {
        s.stop = { reason: info.stopReason, text: "", hitIds: info.hitBreakpointIds, time: Date.now() };
      }
      this.emit("sessionStarted", { sessionId: info.id });
      // events that came before the session was known (its stop may race CreateSession's answer)
      const early = this.early?.get(info.id);
      if (early) {
        this.early!.delete(info.id);
        for (const e of early) this.onEvent(e);
      }
    }
    return s;
  }

  get(sessionId: number): RtSession {
    const s = this.sessions.get(sessionId);
    if (!s) throw new DjinnError(5, `no session ${sessionId} in this debug session (threads are sessions)`);
    return s;
  }

  /** Sessions shown as threads, in id order. */
  list(): RtSession[] {
    return [...this.sessions.values()].filter((s) => !s.ended).sort((a, b) => a.id - b.id);
  }

  /** Creates the launch configuration's sessions with the current breakpoints. Returns the server's verdicts. */
  createSessions(cfg: LaunchConfig): Promise<Map<number, BpStatus>> {
    return this.serial(async () => {
      this.creating = true;
      this.early = new Map();
      try {
        const statuses = new Map<number, BpStatus>();
        let bps = [...this.desired];
        let data = [...this.desiredData];
        for (let i = 0; i < cfg.sessions; i++) {
          const p: PromptSpec = cfg.prompts[i % cfg.prompts.length];
          for (;;) {
            try {
              const info = await this.client!.createSession({
                ...("text" in p ? { prompt: p.text } : { promptTokens: p.tokens }),
                maxNewTokens: cfg.maxNewTokens,
                context: cfg.contextTokens ?? 0,
                breakpoints: bps.map(toWire),
                dataBreakpoints: data.map(toWireData),
                traps: this.wireTraps(),
                stopOnEntry: cfg.stopOnEntry,
                timeTravel: cfg.timeTravel,
                label: sessionLabel(i, cfg.sessions, cfg.prompts.length),
              });
              this.track(info, true);
              break;
            } catch (e) {
              const err = e as DjinnError;
              // a refused breakpoint (or data breakpoint) is left out and reported unverified; the rest go on
              const dm = err.code === 3 ? DATA_BP_ERROR.exec(err.details ?? "") : null;
              if (dm && data.some((b) => b.id === Number(dm[1]))) {
                statuses.set(Number(dm[1]), { id: Number(dm[1]), verified: false, message: dm[2] });
                data = data.filter((b) => b.id !== Number(dm[1]));
                continue;
              }
              const m = err.code === 3 ? BP_ERROR.exec(err.details ?? "") : null;
              const id = m ? Number(m[1]) : NaN;
              if (!m || !bps.some((b) => b.id === id)) throw e;
              statuses.set(id, { id, verified: false, message: m[2] });
              bps = bps.filter((b) => b.id !== id);
            }
          }
        }
        for (const b of bps) statuses.set(b.id, { id: b.id, verified: true });
        for (const b of data) statuses.set(b.id, { id: b.id, verified: true });
        return statuses;
      } finally {
        this.creating = false;
        this.early = undefined;
      }
    });
  }

  /**
   * Restart of a launch: the server and its model stay; the sessions this launch created are
   * closed (their threads end) and created again from `cfg`, with the current breakpoints.
   */
  async restartSessions(cfg: LaunchConfig): Promise<Map<number, BpStatus>> {
    if (!this.client) throw new DjinnError(9, "nothing to restart: the launch has not connected to a server");
    this.restarting = true;
    try {
      const mine = this.list().filter((s) => s.owned);
      await Promise.all(
        mine.map(async (s) => {
          try {
            await this.client!.closeSession(s.id);
          } catch (e) {
            if ((e as DjinnError).code !== 5) throw e; // gone already
          }
          s.info = { ...s.info, state: SessionState.SESSION_STATE_CLOSED };
          this.end(s, "restarted");
        }),
      );
      return await this.createSessions(cfg);
    } finally {
      this.restarting = false;
    }
  }

  /**
   * Replaces the breakpoints and traps of every session this adapter drives. Returns the
   * server's verdict per breakpoint id, or undefined when there is no session to ask yet.
   */
  setBreakpoints(bps: RtBreakpoint[], traps: RtTraps, explicit = true): Promise<Map<number, BpStatus> | undefined> {
    this.desired = bps;
    this.traps = traps;
    if (explicit && (bps.length > 0 || traps.nan || traps.inf || traps.normSpike > 0)) this.pushBreakpoints = true;
    return this.serial(() => this.push());
  }

  private async push(): Promise<Map<number, BpStatus> | undefined> {
    if (!this.client || !this.pushBreakpoints) return undefined;
    const targets = this.list();
    if (targets.length === 0) return undefined;
    const req = { breakpoints: this.desired.map(toWire), traps: this.wireTraps() };
    const answers = await Promise.all(
      targets.map((s) =>
        this.client!.setBreakpoints({ sessionId: s.id, ...req }).catch((e: DjinnError) => {
          if (e.code === 5) return undefined; // closed meanwhile
          throw e;
        }),
      ),
    );
    const first = answers.find((a) => a !== undefined);
    if (!first) return undefined;
    return new Map(first.breakpoints.map((b) => [b.id, { id: b.id, verified: b.verified, message: b.message || undefined }]));
  }

  /**
   * Replaces the data breakpoints of every session this adapter drives. The server refuses a
   * set as a whole (INVALID_ARGUMENT naming the first bad one): each refused one is left out,
   * with its reason, and the rest sent again. Returns the verdicts, or undefined when there is
   * no session to ask yet.
   */
  setDataBreakpoints(list: RtDataBreakpoint[]): Promise<Map<number, BpStatus> | undefined> {
    this.desiredData = list;
    return this.serial(() => this.pushData());
  }

  private async pushData(): Promise<Map<number, BpStatus> | undefined> {
    const targets = this.list();
    if (!this.client || targets.length === 0) return undefined;
    if (this.desiredData.length === 0 && !this.dataPushed) return undefined;
    this.dataPushed = true;
    const statuses = new Map<number, BpStatus>();
    let data = [...this.desiredData];
    let answered = false;
    for (const s of targets) {
      for (;;) {
        try {
          const r = await this.client.setDataBreakpoints({ sessionId: s.id, breakpoints: data.map(toWireData) });
          if (!answered) for (const b of r.breakpoints) statuses.set(b.id, { id: b.id, verified: b.verified, message: b.message || undefined });
          answered = true;
          break;
        } catch (e) {
          const err = e as DjinnError;
          if (err.code === 5) break; // closed meanwhile
          if (err.code !== 3) throw e;
          const m = DATA_BP_ERROR.exec(err.details ?? "");
          const id = m ? Number(m[1]) : NaN;
          if (m && data.some((b) => b.id === id)) {
            statuses.set(id, { id, verified: false, message: m[2] });
            data = data.filter((b) => b.id !== id);
            continue;
          }
          // refused as a whole (e.g. too many): none of them is set
          for (const b of data) statuses.set(b.id, { id: b.id, verified: false, message: err.details || err.message });
          data = [];
        }
      }
    }
    // what the server refused stays out of later sessions' sets (their checks do not depend on the session)
    this.desiredData = data;
    return answered || statuses.size ? statuses : undefined;
  }

  /** Breakpoints and data breakpoints, for sessions that appeared (attach). */
  private async pushAll(): Promise<void> {
    await this.push();
    await this.pushData();
  }

  /**
   * Completions of the word before `column` (1-based, 0 = the end) from the server: names at
   * the session's stop (0: no session), scalars, functions with their signatures.
   */
  complete(sessionId: number, text: string, column: number): Promise<CompleteResponse> {
    if (!this.client) throw new DjinnError(9, "not connected to a Djinn server yet");
    return this.client.complete({ sessionId, text, column });
  }

  private wireTraps(): Traps {
    return { nan: this.traps.nan, inf: this.traps.inf, normSpike: this.traps.normSpike };
  }

  /** Runs tasks that touch the breakpoint sets one at a time (creation and pushes never interleave). */
  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ------------------------------------------------------ execution control

  async continue(sessionId: number): Promise<void> {
    await this.resume(sessionId, () => this.client!.continue(sessionId));
  }

  async step(sessionId: number, kind: StepKind): Promise<void> {
    await this.resume(sessionId, () => this.client!.step({ sessionId, kind }));
  }

  private async resume(sessionId: number, call: () => Promise<SessionInfo>): Promise<void> {
    const s = this.get(sessionId);
    const swapped = offDevice(s.info.kvLocation);
    const epoch = s.epoch;
    s.expectResumes++;
    let info: SessionInfo;
    try {
      info = await call();
    } catch (e) {
      s.expectResumes--;
      throw e;
    }
    // Its RESUMED event (and even the next STOPPED) may have come already; if not, it runs from now on.
    if (s.epoch === epoch && s.info.state === SessionState.SESSION_STATE_PAUSED) this.markResumed(s, info, true);
    if (swapped && s.info.state === SessionState.SESSION_STATE_RUNNING) this.startSwapProgress(s, "resuming");
  }

  private markResumed(s: RtSession, info: SessionInfo | undefined, byUs: boolean): void {
    if (info && info.state !== SessionState.SESSION_STATE_PAUSED) s.info = { ...info, state: SessionState.SESSION_STATE_RUNNING };
    else s.info = { ...s.info, state: SessionState.SESSION_STATE_RUNNING };
    s.epoch++;
    s.gen++;
    s.stop = undefined;
    s.tensors = undefined;
    this.emit("resumed", { sessionId: s.id, byUs });
  }

  /**
   * The user looks at this paused thread (its stack or scopes): if its KV is on the host, ask the
   * server to start bringing it back now (Prefetch), so that a continue does not wait for the
   * copy. At most once per stop; not under the server's eager swap policy (it keeps paused
   * sessions off the device on purpose). Fire and forget: a failure goes to `onError` only.
   */
  prefetch(sessionId: number, onError: (e: Error) => void): void {
    const s = this.sessions.get(sessionId);
    if (!s || s.ended || !s.stop || !this.client || this.disposed || s.info.state !== SessionState.SESSION_STATE_PAUSED) return;
    if (!offDevice(s.info.kvLocation)) return;
    if (s.prefetchEpoch === s.epoch || this.info?.swapPolicy === "eager") return;
    s.prefetchEpoch = s.epoch;
    this.client.prefetch(sessionId).catch(onError);
  }

  async pause(sessionId: number): Promise<void> {
    const s = this.get(sessionId);
    if (s.info.state === SessionState.SESSION_STATE_PAUSED) return;
    await this.client!.pause(sessionId);
  }

  // --------------------------------------------------------------- tensors

  private async paused<T>(sessionId: number, what: string, fn: (s: RtSession) => Promise<T>): Promise<T> {
    const s = this.get(sessionId);
    if (s.info.state !== SessionState.SESSION_STATE_PAUSED) {
      throw new DjinnError(9, `session ${sessionId} is ${stateName(s.info.state)}: ${what} exist only while it is paused`);
    }
    if (offDevice(s.info.kvLocation)) {
      this.startSwapProgress(s, what);
    }
    try {
      return await fn(s);
    } finally {
      this.endSwapProgress(s.id);
    }
  }

  /** ListTensors of the current stop (cached until the session resumes or a tensor is written). */
  listTensors(sessionId: number): Promise<TensorSummary[]> {
    return this.paused(sessionId, "tensors", (s) => {
      if (!s.tensors) {
        const p = this.client!.listTensors(sessionId).then((l) => l.tensors);
        s.tensors = p;
        p.catch(() => {
          if (s.tensors === p) s.tensors = undefined;
        });
      }
      return s.tensors;
    });
  }

  tensorSummary(sessionId: number, name: string, slice: DimSlice[] = []): Promise<TensorSummary> {
    return this.paused(sessionId, "tensors", async () => {
      const t = await this.client!.getTensor({ sessionId, name, slice, summaryOnly: true }, currentSignal());
      if (!t.summary) throw new DjinnError(13, `GetTensor(${name}) returned no summary`);
      return { ...t.summary, shape: t.summary.shape.length ? t.summary.shape : t.sliceShape };
    });
  }

  fetch(sessionId: number, name: string, slice: DimSlice[]): Promise<FetchedTensor> {
    return this.paused(sessionId, "tensors", () => this.client!.getTensor({ sessionId, name, slice }, currentSignal()));
  }

  write(
    sessionId: number,
    name: string,
    slice: DimSlice[],
    value: { scalar: number; add: boolean } | { data: Buffer; dtype: string; shape: number[] },
  ): Promise<TensorSummary> {
    return this.paused(sessionId, "tensors", async (s) => {
      const req =
        "scalar" in value
          ? { sessionId, name, slice, hasScalar: true, scalar: value.scalar, mode: value.add ? 2 : 1 }
          : { sessionId, name, slice, data: value.data, dtype: value.dtype, shape: value.shape, mode: 1 };
      const out = await this.client!.setTensor(req);
      s.tensors = undefined;
      s.gen++;
      return out;
    });
  }

  evaluate(sessionId: number, expression: string): Promise<EvaluateResponse> {
    return this.paused(sessionId, "expressions", async (s) => {
      const r = await this.client!.evaluate({ sessionId, expression }, currentSignal());
      if (r.isTensor) s.tensors = undefined; // a new $N is in the catalog
      return r;
    });
  }

  logitLens(sessionId: number, topK: number, position?: number): Promise<TokenProb[]> {
    return this.paused(sessionId, "the logit lens", async () => (await this.client!.logitLens({ sessionId, topK, position })).top);
  }

  // --------------------------------------------------------------- progress

  private newProgressId(kind: string): string {
    return `djinn-${kind}-${++this.progressSeq}`;
  }

  private startSwapProgress(s: RtSession, why: string): void {
    if (this.swapProgress.has(s.id)) return;
    const id = this.newProgressId("swapin");
    this.swapProgress.set(s.id, id);
    const gb = (s.info.kvBytes / 1e9).toFixed(3);
    this.emit("progressStart", { id, kind: "swapin", title: `Bringing session ${s.id} back to the device`, message: `${gb} GB of KV from host memory (${why})` });
  }

  private endSwapProgress(sessionId: number, message?: string): void {
    const id = this.swapProgress.get(sessionId);
    if (!id) return;
    this.swapProgress.delete(sessionId);
    this.emit("progressEnd", { id, message });
  }

  // ----------------------------------------------------------------- events

  private onEvent(e: Event): void {
    if (e.seq > 0 && e.seq <= this.ignoreUpTo) return; // reflected in the last ListSessions read
    if (e.kind === EventKind.EVENT_KIND_DEVICE_FAILED) return this.deviceFailed(e.text);
    const s = this.sessions.get(e.sessionId);
    if (!s) {
      if (this.early) {
        const list = this.early.get(e.sessionId) ?? [];
        if (list.length < 10_000) list.push(e);
        this.early.set(e.sessionId, list);
        return;
      }
      if (e.kind === EventKind.EVENT_KIND_CREATED && this.mode === "attach" && e.session && !this.creating) {
        this.track(e.session, false);
        void this.serial(() => this.pushAll()).catch(() => undefined);
      }
      return;
    }
    s.lastEventAt = Date.now();
    const info = e.session;
    switch (e.kind) {
      case EventKind.EVENT_KIND_STOPPED: {
        if (!info) return;
        if (s.info.state === SessionState.SESSION_STATE_PAUSED && samePlace(s.info, info) && s.stop) return; // already known
        this.stopped(s, info, e.stopReason, e.text);
        return;
      }
      case EventKind.EVENT_KIND_RESUMED: {
        const byUs = s.expectResumes > 0;
        if (byUs) s.expectResumes--;
        if (s.info.state === SessionState.SESSION_STATE_PAUSED) this.markResumed(s, info, byUs);
        return;
      }
      case EventKind.EVENT_KIND_SWAP_OUT:
      case EventKind.EVENT_KIND_SWAP_IN: {
        if (info) s.info = { ...s.info, kvLocation: info.kvLocation, lastSwapInMs: info.lastSwapInMs, lastSwapOutMs: info.lastSwapOutMs, swapIns: info.swapIns, swapOuts: info.swapOuts };
        const direction = e.kind === EventKind.EVENT_KIND_SWAP_IN ? "in" : "out";
        if (direction === "in") this.endSwapProgress(s.id, `${(e.bytes / 1e6).toFixed(1)} MB in ${e.ms.toFixed(2)} ms`);
        this.emit("swap", { sessionId: s.id, direction, bytes: e.bytes, ms: e.ms });
        this.emit("sessionChanged", { sessionId: s.id });
        return;
      }
      case EventKind.EVENT_KIND_SPILL: {
        if (info) s.info = { ...s.info, kvLocation: info.kvLocation };
        this.emit("spill", { sessionId: s.id, direction: /from/.test(e.text) ? "from disk" : "to disk", bytes: e.bytes, ms: e.ms });
        this.emit("sessionChanged", { sessionId: s.id });
        return;
      }
      case EventKind.EVENT_KIND_TOKEN: {
        if (info) s.info = { ...info, state: s.info.state === SessionState.SESSION_STATE_PAUSED ? s.info.state : info.state };
        this.emit("token", { sessionId: s.id, token: e.token, text: e.text, generated: info?.generatedText ?? "", index: s.info.generatedTokens.length, max: s.info.maxNewTokens });
        return;
      }
      case EventKind.EVENT_KIND_FINISHED:
      case EventKind.EVENT_KIND_CLOSED:
      case EventKind.EVENT_KIND_ERROR: {
        if (info) s.info = info;
        if (e.kind === EventKind.EVENT_KIND_ERROR && info && info.state !== SessionState.SESSION_STATE_FAILED) {
          this.emit("log", { text: `s${s.id}: ${e.text}`, category: "stderr" });
          return;
        }
        // The server fails every session before it says DEVICE_FAILED: the first one tells.
        const failure = info?.error || e.text;
        if (e.kind === EventKind.EVENT_KIND_ERROR && /^device failed\b/.test(failure)) return this.deviceFailed(failure);
        this.end(s, e.text);
        return;
      }
      case EventKind.EVENT_KIND_WAITING:
        this.emit("log", { text: `s${s.id}: ${e.text}`, category: "console" });
        return;
      case EventKind.EVENT_KIND_OUTPUT:
        this.emit("logpoint", { sessionId: s.id, breakpointId: e.breakpointId, text: e.text });
        return;
      default:
        return;
    }
  }

  /**
   * The server's device failed (DEVICE_FAILED, or the first session that failed with "device
   * failed: ..."): said once, loudly; every session failed with it; the server exits.
   */
  private deviceFailed(text: string): void {
    if (this.deviceError !== undefined) return;
    const why = (text || "the device failed").replace(/^device failed:\s*/, "");
    this.deviceError = why;
    this.emit("log", { text: `djinn: the device of the Djinn server failed: ${why}. Its sessions failed; the server takes no more work and exits.`, category: "important" });
    for (const s of this.list()) {
      s.info = { ...s.info, state: SessionState.SESSION_STATE_FAILED, error: why };
      this.end(s, why);
    }
  }

  private stopped(s: RtSession, info: SessionInfo, reason: StopReason, text: string): void {
    s.info = info;
    s.epoch++;
    s.gen++;
    s.tensors = undefined;
    s.stop = { reason, text, hitIds: info.hitBreakpointIds, time: Date.now() };
    this.endSwapProgress(s.id);
    this.emit("stopped", { sessionId: s.id, reason, text, hitIds: info.hitBreakpointIds });
  }

  private end(s: RtSession, text: string): void {
    if (s.ended) return;
    s.ended = true;
    s.endText = text;
    s.epoch++;
    s.stop = undefined;
    s.tensors = undefined;
    this.endSwapProgress(s.id);
    this.emit("sessionEnded", { sessionId: s.id, state: s.info.state, text });
    if (this.mode === "launch" && !this.creating && !this.restarting && [...this.sessions.values()].every((x) => !x.owned || x.ended)) {
      this.emit("allEnded", { why: this.deviceError !== undefined ? `the server's device failed: ${this.deviceError}` : undefined });
    }
  }

  /** A safety net for events missed around subscription: sessions believed running are checked once a second. */
  private async reconcile(): Promise<void> {
    if (!this.client || this.disposed) return;
    const now = Date.now();
    const stale = this.list().filter((s) => s.info.state === SessionState.SESSION_STATE_RUNNING && now - s.lastEventAt > RECONCILE_MS);
    for (const s of stale) {
      const gen = s.gen;
      let info: SessionInfo;
      try {
        info = await this.client.getSession(s.id);
      } catch (e) {
        if ((e as DjinnError).code === 5 && gen === s.gen) {
          s.info = { ...s.info, state: SessionState.SESSION_STATE_CLOSED };
          this.end(s, "closed");
        }
        continue;
      }
      if (gen !== s.gen || s.ended || Date.now() - s.lastEventAt < RECONCILE_MS) continue;
      if (info.state === SessionState.SESSION_STATE_PAUSED) this.stopped(s, info, info.stopReason, "");
      else if (sessionEnded(info)) {
        s.info = info;
        this.end(s, info.error || info.generatedText);
      }
    }
  }

  // -------------------------------------------------------------- teardown

  /**
   * This adapter leaves the server: Detach removes its breakpoints from every session and, with
   * `terminate`, closes the sessions it created (the server never closes anyone else's). A
   * server without Detach gets the old behaviour: with `terminate`, the adapter closes what it
   * created (launch) or every session it shows (attach). Once per runtime; never throws.
   */
  async detach(terminate: boolean): Promise<DetachResult | undefined> {
    if (!this.client || this.detached) return undefined;
    this.detached = true;
    const live = [...this.sessions.values()].filter((s) => !s.ended);
    const fallback = (this.mode === "launch" ? live.filter((s) => s.owned) : live).map((s) => s.id);
    try {
      return await this.client.detach({ terminate, fallbackSessionIds: fallback, deadlineMs: DETACH_DEADLINE_MS });
    } catch (e) {
      this.emit("log", { text: `djinn: detaching from ${this.client.address} failed: ${(e as Error).message}`, category: "stderr" });
      return undefined;
    }
  }

  /** Stops everything this runtime started: the event stream, the connection, a local server. */
  async dispose(): Promise<void> {
    this.disposed = true;
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.events?.stop();
    this.client?.close();
    for (const id of [...this.swapProgress.keys()]) this.endSwapProgress(id);
    const server = this.localServer;
    this.localServer = undefined;
    if (server) await server.stop();
  }
}

function toWire(b: RtBreakpoint): Breakpoint {
  return { id: b.id, layer: b.layer, point: b.point, condition: b.condition ?? "", hitCondition: b.hitCondition ?? "", logMessage: b.logMessage ?? "" };
}

function toWireData(b: RtDataBreakpoint): DataBreakpoint {
  return { id: b.id, tensor: b.tensor, condition: b.condition, hitCondition: b.hitCondition ?? "" };
}

function samePlace(a: SessionInfo, b: SessionInfo): boolean {
  const p = a.position, q = b.position;
  return !!p && !!q && p.layer === q.layer && p.point === q.point && p.tokenIndex === q.tokenIndex && a.generatedTokens.length === b.generatedTokens.length;
}

export function stateName(state: SessionState): string {
  switch (state) {
    case SessionState.SESSION_STATE_CREATED:
      return "created";
    case SessionState.SESSION_STATE_RUNNING:
      return "running";
    case SessionState.SESSION_STATE_PAUSED:
      return "paused";
    case SessionState.SESSION_STATE_FINISHED:
      return "finished";
    case SessionState.SESSION_STATE_CLOSED:
      return "closed";
    case SessionState.SESSION_STATE_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}
