// Exp 3, the memory-pressure test: N sessions with layer breakpoints created at
// once, continued one at a time after a think time so that most are paused at
// the peak, then a one-at-a-time reference run without breakpoints to check
// that every output is identical. Every number comes from the server.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DjinnError, SessionState, StopPoint, type DjinnClient, type SessionInfo } from "../client";
import { runBaseline } from "./baseline";
import { connect, validate, type Connection } from "./connect";
import { ContinueQueue } from "./continueQueue";
import { environment } from "./environment";
import { memoryPlotSvg } from "./memoryPlot";
import type { Exp3Args, Exp3Options } from "./options";
import { jitter, mulberry32, promptTokens } from "./random";
import { Recorder, isTerminal, stopKey } from "./recorder";
import { buildResults, type Exp3Results } from "./results";

export interface Exp3Hooks {
  log(line: string): void;
  progress(done: number, total: number, message: string): void;
  isCancelled(): boolean;
}

export const RESULTS_FILE = "memory_pressure_results.json";
export const PLOT_FILE = "memory_pressure_plot.svg";

const POLL_MS = 2000;
const FIRST_SAMPLE_TIMEOUT_MS = 15_000;
const RECONTINUE_AFTER_MS = 5000;
/** How long the gathering phase waits without any event before it gives up on the stragglers. */
const GATHER_IDLE_MS = 3000;

/** Ends the run early (cancel, server gone, stall); the results say why. */
class Abort extends Error {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runExp3(args: Exp3Args, hooksIn: Partial<Exp3Hooks> = {}): Promise<Exp3Results> {
  const hooks: Exp3Hooks = { log: () => {}, progress: () => {}, isCancelled: () => false, ...hooksIn };
  const startedAt = new Date();
  const conn = await connect(args, hooks.log);
  const run = new Exp3Run(conn, hooks);
  try {
    return await run.execute(startedAt);
  } finally {
    await run.shutdown();
  }
}

class Exp3Run {
  private readonly opts: Exp3Options;
  private readonly client: DjinnClient;
  private readonly rec = new Recorder();
  private readonly queue = new ContinueQueue();
  private readonly rand: () => number;
  /** Our debug sessions: id -> prompt index. */
  private readonly ours = new Map<number, number>();
  private readonly debugIds: Array<number | undefined> = [];
  private readonly referenceTokens: Array<number[] | undefined> = [];
  private readonly createErrors: Array<{ index: number; code: string; message: string }> = [];
  private readonly runErrors: string[] = [];
  private readonly continued = new Map<number, { key: string; at: number }>();
  private readonly phases: Record<string, number> = {};
  private prompts: number[][] = [];
  private creating = true;
  private fatal?: string;
  private shuttingDown = false;
  private stopStreams: Array<() => void> = [];
  private lastProgressReport = 0;
  private gather?: { released: string; sessions_waiting: number; t: number };

  constructor(private readonly conn: Connection, private readonly hooks: Exp3Hooks) {
    this.opts = conn.opts;
    this.client = conn.client;
    this.rand = mulberry32((conn.opts.seed ^ 0x5bd1e995) >>> 0);
    const server = conn.server;
    server?.process.once("close", (code, signal) => {
      if (this.shuttingDown) return;
      const tail = server.recentStderr().slice(-10).join("\n");
      this.fatal = `the Djinn server exited during the run (code ${code}, signal ${signal})${tail ? `; its last words:\n${tail}` : ""}`;
    });
  }

  async execute(startedAt: Date): Promise<Exp3Results> {
    const { opts, hooks } = this;
    const info = this.conn.info;
    validate(opts, info);
    const t0 = Date.now();
    this.phases.server_start = (t0 - startedAt.getTime()) / 1000;
    const vocab = info.model?.vocabSize ?? 0;
    this.prompts = Array.from({ length: opts.sessions }, (_, i) => promptTokens(opts.seed + i, opts.context - opts.newTokens, vocab));
    hooks.log(
      `Exp 3: ${opts.sessions} sessions x ${opts.context} tokens of ${info.model?.name} on ${info.deviceName || info.device}, ` +
        `budget ${((info.memory?.budgetBytes ?? 0) / 1e9).toFixed(3)} GB, breakpoints ${opts.breakpoints.join(",")}`,
    );

    let cancelled = false;
    try {
      await this.subscribe();
      const t1 = Date.now();
      await this.createSessions();
      await this.debugRun();
      this.phases.debug_run = (Date.now() - t1) / 1000;
      await this.closeDebugSessions();
      const t2 = Date.now();
      await this.referenceRun();
      this.phases.reference_run = (Date.now() - t2) / 1000;
    } catch (e) {
      if (!(e instanceof Abort) && !(e instanceof DjinnError)) throw e;
      cancelled = hooks.isCancelled();
      // An RPC error is often the first sign of a crashed server: give its exit a moment to be seen.
      if (e instanceof DjinnError && this.conn.server) await sleep(300);
      const reason = this.fatal && !(e instanceof Abort) ? `${e.message} (${this.fatal})` : e.message;
      if (!cancelled) this.runErrors.push(reason);
      hooks.log(`run ended early: ${reason}`);
      await this.closeDebugSessions();
    }
    await this.shutdown();

    let baseline: Record<string, unknown> | undefined;
    if (opts.baseline && !cancelled) {
      const t3 = Date.now();
      hooks.log("running the eager baseline (djinn.baselines.eager_pressure)");
      baseline = await runBaseline({
        python: opts.python,
        model: opts.model,
        sessions: opts.sessions,
        context: opts.context,
        newTokens: opts.newTokens,
        budgetGb: (info.memory?.budgetBytes ?? 0) / 1e9,
        breakpoints: opts.breakpoints,
        device: info.device.startsWith("cuda") ? "cuda" : "cpu",
        outDir: opts.outDir,
        log: hooks.log,
        isCancelled: hooks.isCancelled,
      });
      this.phases.baseline = (Date.now() - t3) / 1000;
    }

    const results = buildResults({
      opts,
      info,
      rec: this.rec,
      debugIds: this.debugIds,
      referenceTokens: this.referenceTokens,
      createErrors: this.createErrors,
      runErrors: this.runErrors,
      cancelled,
      elapsedSeconds: (Date.now() - startedAt.getTime()) / 1000,
      phasesSeconds: this.phases,
      startedAt: startedAt.toISOString(),
      serverAddress: this.conn.address,
      startedLocally: !!this.conn.server,
      environment: environment(opts.gitDirs),
    });
    if (baseline) results.baseline = baseline;
    if (this.gather) results.first_stop_gathering = this.gather;
    await this.writeFiles(results);
    return results;
  }

  /** Idempotent: stops the streams, closes the channel, stops a local server. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const stop of this.stopStreams) stop();
    this.client.close();
    await this.conn.server?.stop();
  }

  // ------------------------------------------------------------- streams

  private async subscribe(): Promise<void> {
    const events = this.client.events({ sinceSeq: 0 });
    events.on("event", (e) => {
      const stop = this.rec.onEvent(e);
      if (stop && (this.creating || this.ours.has(e.sessionId))) this.queue.push(e.sessionId, Date.now() + jitter(this.rand, this.opts.thinkMs));
      if (this.rec.session(e.sessionId).ended) this.queue.remove(e.sessionId);
    });
    events.on("error", (err) => (this.fatal ??= `events stream failed: ${err.message}`));
    events.on("end", () => {
      if (!this.shuttingDown) this.fatal ??= "the server ended the events stream";
    });
    const telemetry = this.client.telemetry({ intervalMs: this.opts.telemetryMs });
    // Without telemetry the budget cannot be checked: losing it ends the run.
    telemetry.on("error", (err) => (this.fatal ??= `telemetry stream failed: ${err.message}`));
    telemetry.on("end", () => {
      if (!this.shuttingDown) this.fatal ??= "the server ended the telemetry stream";
    });
    this.stopStreams.push(() => events.cancel(), () => telemetry.cancel());

    // The first sample shows both streams are live before any session exists.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Abort(`no telemetry sample within ${FIRST_SAMPLE_TIMEOUT_MS} ms`)), FIRST_SAMPLE_TIMEOUT_MS);
      telemetry.on("sample", (s) => {
        this.rec.onSample(s);
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // ------------------------------------------------------------ sessions

  private async createSessions(): Promise<void> {
    const { opts } = this;
    this.hooks.progress(0, 2 * opts.sessions, `creating ${opts.sessions} sessions`);
    const breakpoints = opts.breakpoints.map((layer) => ({ id: layer, layer, point: StopPoint.STOP_POINT_LAYER }));
    const settled = await Promise.allSettled(
      this.prompts.map((promptTokens, i) =>
        this.client.createSession({ promptTokens, maxNewTokens: opts.newTokens, context: opts.context, breakpoints, label: `exp3 #${i}` }),
      ),
    );
    settled.forEach((r, index) => {
      if (r.status === "fulfilled") {
        this.debugIds[index] = r.value.id;
        this.ours.set(r.value.id, index);
        return;
      }
      const e = r.reason instanceof DjinnError ? r.reason : new DjinnError(2, String(r.reason));
      this.debugIds[index] = undefined;
      this.createErrors.push({ index, code: e.codeName, message: e.details });
    });
    this.creating = false;
    this.hooks.log(`created ${this.ours.size}/${opts.sessions} sessions${this.createErrors.length ? ` (${this.createErrors[0].code}: ${this.createErrors[0].message})` : ""}`);
  }

  private pendingCount(): number {
    let n = 0;
    for (const id of this.ours.keys()) if (!this.rec.session(id).ended) n++;
    return n;
  }

  private checkAbort(): void {
    if (this.hooks.isCancelled()) throw new Abort("cancelled");
    if (this.fatal) throw new Abort(this.fatal);
    const idle = Date.now() - this.rec.lastProgressAt;
    if (idle > this.opts.stallTimeoutS * 1000) throw new Abort(`stalled: no event for ${Math.round(idle / 1000)} s`);
  }

  /**
   * Continues one paused session per think-time tick, oldest stop first, until all ended.
   * Nobody is continued before every session reached its first breakpoint, so at
   * the peak all N hold KV at once and the server has to swap to fit them.
   */
  private async debugRun(): Promise<void> {
    let lastPoll = Date.now();
    let gathering = true;
    while (this.pendingCount() > 0) {
      this.checkAbort();
      await sleep(Math.max(1, jitter(this.rand, this.opts.thinkMs)));
      if (gathering) gathering = !this.firstStopsGathered();
      const id = gathering ? undefined : this.queue.popReady(Date.now());
      if (id !== undefined) await this.continueOne(id);
      if (Date.now() - lastPoll >= POLL_MS) {
        await this.reconcile();
        lastPoll = Date.now();
      }
      this.reportProgress(this.ours.size - this.pendingCount(), "debug run");
    }
  }

  /** True once every session stopped (or ended) once, or nothing happened for a while (the rest wait for VRAM). */
  private firstStopsGathered(): boolean {
    const waiting = [...this.ours.keys()].filter((id) => {
      const r = this.rec.session(id);
      return r.stops.length === 0 && !r.ended;
    }).length;
    const t = this.rec.latest ? Math.round(this.rec.rel(this.rec.latest.time) * 1000) / 1000 : 0;
    if (waiting === 0) {
      this.gather = { released: "all_stopped", sessions_waiting: 0, t };
      this.hooks.log(`all ${this.ours.size} sessions reached their first breakpoint; continuing them one at a time`);
      return true;
    }
    const idleMs = Date.now() - this.rec.lastProgressAt;
    if (idleMs > Math.max(GATHER_IDLE_MS, 40 * this.opts.thinkMs)) {
      this.gather = { released: "no_progress", sessions_waiting: waiting, t };
      this.hooks.log(`${waiting} sessions have not reached a breakpoint after ${idleMs} ms without events; continuing the paused ones`);
      return true;
    }
    return false;
  }

  private async continueOne(id: number): Promise<void> {
    if (!this.ours.has(id)) {
      // A stop that arrived before CreateSession returned: keep it until we know whose it is.
      if (this.creating) this.queue.push(id, Date.now());
      return;
    }
    const rec = this.rec.session(id);
    if (rec.ended) return;
    try {
      await this.client.continue(id);
      this.continued.set(id, { key: rec.lastStopKey ?? "?", at: Date.now() });
    } catch (e) {
      const err = e as DjinnError;
      if (err.codeName === "FAILED_PRECONDITION" || err.codeName === "NOT_FOUND") {
        // Not paused any more (finished, failed, closed): the snapshot says what happened.
        const info = await this.client.getSession(id).catch(() => undefined);
        if (info) this.rec.onSnapshot(info, this.serverNow());
        else this.rec.onSnapshot({ id, state: SessionState.SESSION_STATE_FAILED, error: err.message } as SessionInfo, this.serverNow());
        this.hooks.log(`continue(${id}) refused: ${err.message}`);
        return;
      }
      throw e;
    }
  }

  /** Catches up with the server's view, in case an event was missed. */
  private async reconcile(): Promise<void> {
    const sessions = await this.client.listSessions();
    for (const info of sessions) {
      if (!this.ours.has(info.id)) continue;
      const stop = this.rec.onSnapshot(info, this.serverNow());
      if (stop) {
        this.hooks.log(`session ${info.id}: stop at layer ${stop.layer} found by polling (event missed)`);
        this.queue.push(info.id, Date.now());
      }
      const c = this.continued.get(info.id);
      if (info.state === SessionState.SESSION_STATE_PAUSED && c && c.key === stopKey(info) && Date.now() - c.at > RECONTINUE_AFTER_MS && !this.queue.has(info.id)) {
        this.hooks.log(`session ${info.id} still paused at ${c.key} ${RECONTINUE_AFTER_MS} ms after Continue: continuing again`);
        this.continued.delete(info.id);
        this.queue.push(info.id, Date.now());
      }
      if (this.rec.session(info.id).ended) this.queue.remove(info.id);
    }
  }

  private serverNow(): number {
    return this.rec.latest?.time ?? Date.now() / 1000;
  }

  /** Progress over 2N steps: N debug sessions finished, then N reference runs done. */
  private reportProgress(phaseDone: number, phase: "debug run" | "reference run"): void {
    if (Date.now() - this.lastProgressReport < 500) return;
    this.lastProgressReport = Date.now();
    const n = this.opts.sessions;
    const last = this.rec.telemetry[this.rec.telemetry.length - 1];
    const detail = last ? `; ${last.sessions_paused} paused, ${last.swap_outs} swap-outs, ${last.accounted_gb.toFixed(3)} GB accounted` : "";
    const done = phase === "debug run" ? phaseDone : n + phaseDone;
    this.hooks.progress(done, 2 * n, `${phase}: ${phaseDone}/${n} ${phase === "debug run" ? "finished" : "done"}${detail}`);
  }

  /** Reads each debug session's output (when its FINISHED snapshot had none) and frees it. */
  private async closeDebugSessions(): Promise<void> {
    for (const id of this.ours.keys()) {
      const rec = this.rec.session(id);
      try {
        if (rec.ended === "finished" && !rec.generatedTokens) rec.generatedTokens = (await this.client.getSession(id)).generatedTokens;
        const info = await this.client.closeSession(id);
        if (!rec.ended) this.rec.onSnapshot(info, this.serverNow());
      } catch {
        // Already closed or the server is gone: nothing left to free.
      }
    }
  }

  // ------------------------------------------------------------ reference

  /** Each prompt alone, no breakpoints: the outputs the debug run must reproduce. */
  private async referenceRun(): Promise<void> {
    this.rec.phase = "reference";
    const { opts } = this;
    let done = 0;
    for (let index = 0; index < opts.sessions; index++) {
      if (this.debugIds[index] === undefined) continue;
      this.checkAbort();
      const s = await this.client.createSession({ promptTokens: this.prompts[index], maxNewTokens: opts.newTokens, context: opts.context, label: `exp3 reference #${index}` });
      const info = await this.waitForEnd(s.id).catch(async (e) => {
        await this.client.closeSession(s.id).catch(() => undefined);
        throw e;
      });
      if (info.state === SessionState.SESSION_STATE_FINISHED) this.referenceTokens[index] = info.generatedTokens;
      else this.runErrors.push(`reference session for prompt ${index} ended ${SessionState[info.state]}: ${info.error}`);
      await this.client.closeSession(s.id).catch(() => undefined);
      done++;
      this.reportProgress(done, "reference run");
    }
  }

  private async waitForEnd(id: number): Promise<SessionInfo> {
    let lastPoll = Date.now();
    for (;;) {
      this.checkAbort();
      if (this.rec.session(id).ended) return this.client.getSession(id);
      if (Date.now() - lastPoll >= 1000) {
        lastPoll = Date.now();
        const info = await this.client.getSession(id);
        if (isTerminal(info.state)) return info;
        // No breakpoints were set, but a stop (a pause from elsewhere) must not hang the run.
        if (info.state === SessionState.SESSION_STATE_PAUSED) await this.client.continue(id);
      }
      await sleep(10);
    }
  }

  // --------------------------------------------------------------- output

  private async writeFiles(results: Exp3Results): Promise<void> {
    const dir = this.opts.outDir;
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, RESULTS_FILE), JSON.stringify(results, null, 1) + "\n");
    const debugSwaps = new Set(results.sessions.map((s) => s.session_id));
    const swaps = this.rec.swaps.filter((s) => debugSwaps.has(s.session_id));
    const svg = memoryPlotSvg({
      title: `Exp 3 memory pressure: ${results.status.toUpperCase()}`,
      subtitle:
        `${results.model.name} (${results.model.dtype}) on ${results.hardware.device_name || results.hardware.device}: ` +
        `${results.num_sessions_spawned}/${results.num_sessions_requested} sessions x ${results.context} tokens, breakpoints ${results.breakpoints.join(",")}, ` +
        `${results.swap_count.out} swap-outs, ${results.swap_count.in} swap-ins`,
      budgetGb: results.budget_gb,
      telemetry: results.telemetry.filter((p) => p.phase === "debug"),
      swapOutTimes: swaps.filter((s) => s.direction === "out").map((s) => s.t),
      swapInTimes: swaps.filter((s) => s.direction === "in").map((s) => s.t),
    });
    await writeFile(join(dir, PLOT_FILE), svg);
  }
}
