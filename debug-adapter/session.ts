// The DAP side of the Djinn debug adapter: translates Debug Adapter Protocol requests into
// runtime calls and runtime events into DAP events. No gRPC here (runtime.ts), no `vscode`
// import: the same class runs as a stdio program (main.ts) and inline in the extension host.
import { existsSync, readFileSync } from "node:fs";
import { basename, isAbsolute, resolve } from "node:path";
import {
  BreakpointEvent,
  ContinuedEvent,
  InitializedEvent,
  InvalidatedEvent,
  LoggingDebugSession,
  OutputEvent,
  ProgressEndEvent,
  ProgressStartEvent,
  Source,
  StoppedEvent,
  TerminatedEvent,
  ThreadEvent,
  logger,
  Logger,
} from "@vscode/debugadapter";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { ConfigError, parseAttach, parseLaunch, type AttachConfig, type LaunchConfig } from "./config";
import { OUTLINE_HEADER, generateOutline, isStopTarget, moduleToStop, parseOutline, type ParsedOutline, type StopTarget } from "./outline";
import {
  DjinnRuntime,
  KvLocation,
  SessionState,
  StepKind,
  StopPoint,
  StopReason,
  stateName,
  type BpStatus,
  type RtBreakpoint,
  type RtSession,
  type RtTraps,
  type ServerInfo,
  type StoppedEvt,
} from "./runtime";
import { VariableError, VariableStore } from "./variables";
import { Phase } from "../client";

/** Error ids of DAP error responses. */
export const ErrorIds = {
  config: 2001,
  launch: 2002,
  attach: 2003,
  noSession: 2004,
  server: 2005,
  variables: 2006,
  badRequest: 2007,
} as const;

const CONFIG_DONE_TIMEOUT_MS = 5000;
const OUTLINE_REF = 1;
const DEFAULT_NORM_SPIKE = 10;
/** frame ids of earlier stops remembered (to answer them with a clear error) */
const OLD_FRAMES_KEPT = 10_000;
/** thread-name refreshes (a `thread` event, reason "started", for a known thread) at most this often */
const THREAD_REFRESH_MS = 250;
/** a refresh names a paused thread only this long after its stopped event (VS Code cancels a stop's handling on a thread event) */
const STOP_SETTLE_MS = 1000;

type BpOrigin = "source" | "function" | "launch";

interface BpEntry {
  id: number;
  origin: BpOrigin;
  key: string;
  target?: StopTarget;
  /** why it cannot be a breakpoint, found without the server */
  error?: string;
  condition?: string;
  hitCondition?: string;
  line?: number;
  source?: DebugProtocol.Source;
  verified: boolean;
  message?: string;
}

class Deferred {
  private done = false;
  private waiters: Array<() => void> = [];
  resolve(): void {
    this.done = true;
    for (const w of this.waiters.splice(0)) w();
  }
  wait(timeoutMs: number): Promise<void> {
    if (this.done) return Promise.resolve();
    return new Promise((res) => {
      const t = setTimeout(res, timeoutMs);
      this.waiters.push(() => (clearTimeout(t), res()));
    });
  }
}

function message(e: unknown): string {
  if (e instanceof ConfigError || e instanceof VariableError) return e.message;
  const d = e as { details?: string; message?: string; codeName?: string };
  if (d && typeof d.details === "string" && d.details) return d.details;
  return d?.message ?? String(e);
}

/** `phase == decode` -> `phase == "decode"` (the server's language wants a string). */
export function normalizeCondition(c: string | undefined): string | undefined {
  if (!c || !c.trim()) return undefined;
  return c.replace(/\b(phase\s*[!=]=\s*)(prefill|decode)\b/g, '$1"$2"');
}

export class DjinnDebugSession extends LoggingDebugSession {
  readonly runtime = new DjinnRuntime();
  private readonly vars = new VariableStore(this.runtime);
  private readonly configDone = new Deferred();
  private clientCaps: DebugProtocol.InitializeRequestArguments = { adapterID: "djinn" };
  private launchCfg?: LaunchConfig;
  private attachCfg?: AttachConfig;
  private info?: ServerInfo;
  private nextBpId = 1;
  private sourceBps = new Map<string, BpEntry[]>();
  private functionBps: BpEntry[] = [];
  private launchBps: BpEntry[] = [];
  private traps: RtTraps = { nan: false, inf: false, normSpike: 0 };
  private outlineText?: string;
  private outlineParsed?: ParsedOutline;
  /** the outline file on disk that stack frames point at (outlinePath, or the last *.djinn with breakpoints) */
  private outlineFile?: { path: string; parsed: ParsedOutline };
  private sessionsCreated = false;
  private terminated = false;
  /** terminate/disconnect is closing the sessions */
  private closing = false;
  private disposing?: Promise<void>;
  private lastStopped?: number;
  /** frame id -> the stop it belongs to; ids are unique per stop, never reused */
  private readonly frames = new Map<number, { sessionId: number; epoch: number }>();
  /** session -> the frame ids of its current stop (index k: module, layer, pass, session) */
  private readonly stopFrames = new Map<number, { epoch: number; ids: number[] }>();
  /** frame ids of earlier stops -> their session (bounded) */
  private readonly oldFrames = new Map<number, number>();
  private nextFrameId = 1;
  /** the thread the user is looking at, as far as requests tell (scopes, evaluate with a frame, resumes) */
  private focusedThread?: number;
  /** threads this client resumed, stepped or paused by a request whose next stop is not announced yet */
  private readonly userDriven = new Set<number>();
  /** thread names as the client last read them (threads request) */
  private readonly shownNames = new Map<number, string>();
  private refreshTimer?: NodeJS.Timeout;
  private lastRefreshAt = 0;
  /** session -> when its last stopped event went out */
  private readonly stoppedAt = new Map<number, number>();
  /** session -> epoch of the stop last announced with a stopped event */
  private readonly announced = new Map<number, number>();
  /** resumes in flight: stopped events of these sessions wait for the request's response */
  private readonly inflight = new Map<number, number>();
  private readonly deferred = new Map<number, Array<() => void>>();

  constructor() {
    super();
    this.setDebuggerLinesStartAt1(true);
    this.setDebuggerColumnsStartAt1(true);
    // A malformed message must not end the adapter (the base class shuts down on any 'error').
    this.removeAllListeners("error");
    this.on("error", (e: DebugProtocol.Event) => {
      const text = String((e as { body?: unknown }).body ?? "");
      if (/^(inStream|outStream) error/.test(text)) this.shutdown();
      else this.sendEvent(new OutputEvent(`djinn: ignored a malformed message (${text})\n`, "stderr"));
    });
    this.wireRuntime();
    this.vars.outline = (module) => {
      const file = this.outlineFile;
      const line = file?.parsed.lineOf.get(module);
      if (file && line !== undefined) return { file: basename(file.path), line };
      const virtual = this.outlineParsed?.lineOf.get(module);
      return virtual !== undefined ? { file: `${this.info?.model?.name ?? "model"}.djinn`, line: virtual } : undefined;
    };
  }

  // ------------------------------------------------------------------ plumbing

  /** Runs an async handler; any failure becomes an error response (the adapter lives on). */
  private handle<R extends DebugProtocol.Response>(response: R, id: number, fn: () => Promise<void> | void): void {
    let p: Promise<void> | void;
    try {
      p = fn();
    } catch (e) {
      this.fail(response, id, e);
      return;
    }
    if (p) p.catch((e) => this.fail(response, id, e));
  }

  private fail(response: DebugProtocol.Response, id: number, e: unknown): void {
    this.sendErrorResponse(response, { id, format: message(e).replace(/[{}]/g, (c) => (c === "{" ? "(" : ")")), showUser: id === ErrorIds.config || id === ErrorIds.launch || id === ErrorIds.attach });
  }

  protected override dispatchRequest(request: DebugProtocol.Request): void {
    // Requests without arguments where arguments are required get a clear error.
    const needsArgs = new Set([
      "launch", "attach", "setBreakpoints", "setFunctionBreakpoints", "setExceptionBreakpoints", "continue", "next", "stepIn",
      "stepOut", "pause", "stackTrace", "scopes", "variables", "setVariable", "setExpression", "evaluate", "source",
      "readMemory", "exceptionInfo", "terminateThreads",
    ]);
    if (needsArgs.has(request.command) && (typeof request.arguments !== "object" || request.arguments === null)) {
      const response = { type: "response", seq: 0, request_seq: request.seq, command: request.command, success: false } as DebugProtocol.Response;
      if (request.command === "launch" || request.command === "attach") {
        request.arguments = {};
      } else {
        this.sendErrorResponse(response, { id: ErrorIds.badRequest, format: `'${request.command}' needs arguments`, showUser: false });
        return;
      }
    }
    super.dispatchRequest(request);
  }

  private send(event: DebugProtocol.Event): void {
    this.sendEvent(event);
  }

  private wireRuntime(): void {
    const rt = this.runtime;
    rt.on("stopped", (e) => {
      this.retireFrames(e.sessionId);
      this.whenSettled(e.sessionId, () => this.onStopped(e));
    });
    rt.on("resumed", ({ sessionId, byUs }) => {
      this.vars.invalidate(sessionId);
      this.retireFrames(sessionId);
      if (!byUs) this.send(new ContinuedEvent(sessionId, false));
      this.scheduleThreadRefresh();
    });
    rt.on("sessionStarted", ({ sessionId }) => this.send(new ThreadEvent("started", sessionId)));
    rt.on("sessionEnded", ({ sessionId, state, text }) => {
      this.vars.invalidate(sessionId);
      this.retireFrames(sessionId);
      this.userDriven.delete(sessionId);
      this.shownNames.delete(sessionId);
      this.stoppedAt.delete(sessionId);
      const s = rt.sessions.get(sessionId);
      this.send(new OutputEvent(`${endLine(sessionId, state, text, s?.info)}\n`, state === SessionState.SESSION_STATE_FAILED ? "stderr" : "stdout", { sessionId, state: stateName(state), text }));
      this.send(new ThreadEvent("exited", sessionId));
    });
    rt.on("token", ({ sessionId, token, text, generated, index, max }) => {
      this.send(new OutputEvent(`${tokenLine(sessionId, token, text, index, max)}\n`, "stdout", { sessionId, token, text, generated, index, max }));
      this.scheduleThreadRefresh();
    });
    rt.on("swap", ({ sessionId, direction, bytes, ms }) => {
      this.send(new OutputEvent(`${swapLine(sessionId, direction, bytes, ms)}\n`, "stdout", { sessionId, swap: direction, bytes, ms }));
      this.scheduleThreadRefresh();
    });
    rt.on("sessionChanged", () => this.scheduleThreadRefresh());
    rt.on("progressStart", ({ id, title, message: m }) => {
      if (this.clientCaps.supportsProgressReporting) this.send(new ProgressStartEvent(id, title, m));
    });
    rt.on("progressEnd", ({ id, message: m }) => {
      if (this.clientCaps.supportsProgressReporting) this.send(new ProgressEndEvent(id, m));
    });
    rt.on("log", ({ text, category }) => this.send(new OutputEvent(text + "\n", category)));
    rt.on("allEnded", ({ why }) => {
      if (this.sessionsCreated) this.terminate(this.closing ? "" : why ?? "every session has finished");
    });
    rt.on("serverLost", ({ message: m }) => {
      this.send(new OutputEvent(`djinn: ${m}\n`, "stderr"));
      this.terminate(m);
    });
  }

  private terminate(why: string): void {
    if (this.terminated) return;
    this.terminated = true;
    if (why) this.send(new OutputEvent(`djinn: ${why}\n`, "console"));
    this.send(new TerminatedEvent());
  }

  private whenSettled(sessionId: number, fn: () => void): void {
    if ((this.inflight.get(sessionId) ?? 0) > 0) {
      const list = this.deferred.get(sessionId) ?? [];
      list.push(fn);
      this.deferred.set(sessionId, list);
    } else {
      fn();
    }
  }

  /** Runs a resume request; its stopped event goes out only after its response. */
  private resumeRequest(response: DebugProtocol.Response, threadId: number, call: () => Promise<void>, body?: object): void {
    this.inflight.set(threadId, (this.inflight.get(threadId) ?? 0) + 1);
    const settle = () => {
      const n = (this.inflight.get(threadId) ?? 1) - 1;
      if (n > 0) this.inflight.set(threadId, n);
      else {
        this.inflight.delete(threadId);
        for (const fn of this.deferred.get(threadId)?.splice(0) ?? []) fn();
        this.deferred.delete(threadId);
      }
    };
    call().then(
      () => {
        if (body) response.body = body;
        this.sendResponse(response);
        settle();
      },
      (e) => {
        this.fail(response, ErrorIds.server, e);
        settle();
      },
    );
  }

  private session(threadId: unknown): RtSession {
    if (typeof threadId !== "number" || !Number.isInteger(threadId)) throw new VariableError(`threadId must be an integer; got ${JSON.stringify(threadId)}`);
    const s = this.runtime.sessions.get(threadId);
    if (!s) throw new VariableError(`no thread ${threadId}: threads are Djinn sessions (${this.runtime.list().map((x) => x.id).join(", ") || "none yet"})`);
    return s;
  }

  /** The session of a frame of its current stop; a frame of an earlier stop is refused, never read at the new one. */
  private sessionOfFrame(frameId: unknown): RtSession {
    if (typeof frameId !== "number" || !Number.isInteger(frameId)) throw new VariableError(`unknown frameId ${JSON.stringify(frameId)}`);
    const f = this.frames.get(frameId);
    const old = f ? (this.runtime.sessions.get(f.sessionId)?.epoch === f.epoch ? undefined : f.sessionId) : this.oldFrames.get(frameId);
    if (old !== undefined) {
      const s = this.runtime.sessions.get(old);
      const now = !s || s.ended ? "it has ended" : s.info.state === SessionState.SESSION_STATE_PAUSED && s.info.position ? `it is paused at ${moduleName(s.info.position.layer, s.info.position.point)} now` : `it is ${stateName(s.info.state)} now`;
      throw new VariableError(`frame ${frameId} is from an earlier stop of session ${old} (${now}): ask for the stack of thread ${old} again`);
    }
    if (!f) throw new VariableError(`unknown frameId ${frameId}`);
    return this.session(f.sessionId);
  }

  /** The id of frame k of a session's current stop (allocated once per stop). */
  private frameId(s: RtSession, k: number): number {
    let cur = this.stopFrames.get(s.id);
    if (!cur || cur.epoch !== s.epoch) {
      this.retireFrames(s.id);
      cur = { epoch: s.epoch, ids: [] };
      this.stopFrames.set(s.id, cur);
    }
    let id = cur.ids[k];
    if (id === undefined) {
      id = this.nextFrameId++;
      cur.ids[k] = id;
      this.frames.set(id, { sessionId: s.id, epoch: s.epoch });
    }
    return id;
  }

  /** The session left the stop its frames belong to: they are remembered only to be refused clearly. */
  private retireFrames(sessionId: number): void {
    const cur = this.stopFrames.get(sessionId);
    if (!cur) return;
    this.stopFrames.delete(sessionId);
    for (const id of cur.ids) {
      if (id === undefined) continue;
      this.frames.delete(id);
      this.oldFrames.set(id, sessionId);
    }
    for (const id of this.oldFrames.keys()) {
      if (this.oldFrames.size <= OLD_FRAMES_KEPT) break;
      this.oldFrames.delete(id);
    }
  }

  /** A look at a paused thread (stack, scopes): its KV starts coming back if it is on the host; errors only with trace. */
  private prefetch(s: RtSession): void {
    this.runtime.prefetch(s.id, (e) => logger.verbose(`djinn: prefetch of s${s.id}: ${message(e)}`));
  }

  /** The user is looking at this thread (a scopes, evaluate-with-frame or resume request of it). */
  private focus(threadId: number): void {
    this.focusedThread = threadId;
  }

  // -------------------------------------------------------------- initialize

  protected override initializeRequest(response: DebugProtocol.InitializeResponse, args: DebugProtocol.InitializeRequestArguments): void {
    this.clientCaps = args ?? { adapterID: "djinn" };
    this.vars.forVsCode = this.clientCaps.clientID === "vscode";
    response.body = {
      ...response.body,
      supportsConfigurationDoneRequest: true,
      supportsFunctionBreakpoints: true,
      supportsConditionalBreakpoints: true,
      supportsHitConditionalBreakpoints: true,
      supportsEvaluateForHovers: true,
      supportsSetVariable: true,
      supportsSetExpression: true,
      supportsReadMemoryRequest: true,
      supportsTerminateRequest: true,
      supportsTerminateThreadsRequest: true,
      supportsExceptionInfoRequest: true,
      supportsExceptionFilterOptions: true,
      supportsSingleThreadExecutionRequests: true,
      supportsDelayedStackTraceLoading: false,
      supportsLoadedSourcesRequest: false,
      supportsValueFormattingOptions: false,
      supportsStepBack: false,
      supportsRestartRequest: false,
      supportsCancelRequest: false,
      supportsBreakpointLocationsRequest: false,
      supportsSteppingGranularity: false,
      exceptionBreakpointFilters: [
        { filter: "nan", label: "NaN", description: "Stop a session where an activation has a NaN", default: false },
        { filter: "inf", label: "Inf", description: "Stop a session where an activation has an Inf", default: false },
        {
          filter: "normSpike",
          label: "Norm spike",
          description: `Stop where ‖hidden‖ grows by more than a factor across one layer (default ${DEFAULT_NORM_SPIKE})`,
          default: false,
          supportsCondition: true,
          conditionDescription: `growth factor, e.g. ${DEFAULT_NORM_SPIKE}`,
        },
      ],
    };
    this.sendResponse(response);
    this.sendEvent(new InitializedEvent());
  }

  protected override configurationDoneRequest(response: DebugProtocol.ConfigurationDoneResponse): void {
    this.configDone.resolve();
    this.sendResponse(response);
  }

  // ----------------------------------------------------------- launch/attach

  protected override launchRequest(response: DebugProtocol.LaunchResponse, args: DebugProtocol.LaunchRequestArguments): void {
    let cfg: LaunchConfig;
    try {
      cfg = parseLaunch(args);
    } catch (e) {
      return this.fail(response, ErrorIds.config, e);
    }
    if (this.launchCfg || this.attachCfg) return this.fail(response, ErrorIds.launch, new Error("this debug session is already launched or attached"));
    this.launchCfg = cfg;
    if (cfg.trace) logger.setup(Logger.LogLevel.Verbose, false);
    this.handle(response, ErrorIds.launch, async () => {
      try {
        const [info] = await Promise.all([this.runtime.launch(cfg), this.configDone.wait(CONFIG_DONE_TIMEOUT_MS)]);
        this.modelKnown(info, cfg.outlinePath, cfg.cwd);
        this.launchBps = cfg.breakpoints.map((b) => this.makeEntry("launch", typeof b === "number" ? `layers.${b}` : b));
        await this.runtime.setBreakpoints(this.union(), this.traps, false);
        const statuses = await this.runtime.createSessions(cfg);
        this.sessionsCreated = true;
        this.applyStatuses(statuses, true);
        // The extension marks the window's server (one per window): say that it outlives this debug session.
        const windows = cfg.server !== undefined && (args as { __djinnWindowServer?: unknown }).__djinnWindowServer === cfg.server;
        const where = this.runtime.localServer
          ? `a local server at ${this.runtime.localServer.address}`
          : windows
            ? `the window's server at ${cfg.server}; it keeps running after this debug session (Djinn: Stop Local Server stops it)`
            : cfg.server;
        this.send(new OutputEvent(`djinn: ${cfg.sessions} session(s) of ${info.model?.name} on ${info.device} (${where})\n`, "stdout"));
        this.sendResponse(response);
        if (this.runtime.list().length === 0 && !this.terminated) this.terminate("every session has finished");
      } catch (e) {
        await this.runtime.detach(true);
        await this.disposeRuntime();
        throw new Error(`Djinn could not launch: ${message(e)}`);
      }
    });
  }

  protected override attachRequest(response: DebugProtocol.AttachResponse, args: DebugProtocol.AttachRequestArguments): void {
    let cfg: AttachConfig;
    try {
      cfg = parseAttach(args);
    } catch (e) {
      return this.fail(response, ErrorIds.config, e);
    }
    if (this.launchCfg || this.attachCfg) return this.fail(response, ErrorIds.attach, new Error("this debug session is already launched or attached"));
    this.attachCfg = cfg;
    if (cfg.trace) logger.setup(Logger.LogLevel.Verbose, false);
    this.handle(response, ErrorIds.attach, async () => {
      try {
        const info = await this.runtime.attach(cfg);
        this.modelKnown(info, cfg.outlinePath, cfg.cwd);
        await this.configDone.wait(CONFIG_DONE_TIMEOUT_MS);
        const statuses = await this.runtime.setBreakpoints(this.union(), this.traps, false);
        this.sessionsCreated = true;
        if (statuses) this.applyStatuses(statuses, true);
        else this.markPendingAsVerifiedLocally();
        this.send(new OutputEvent(`djinn: attached to ${cfg.server} (${info.model?.name} on ${info.device}): ${this.runtime.list().length} session(s)\n`, "stdout"));
        this.sendResponse(response);
        for (const s of this.runtime.list()) {
          if (s.info.state === SessionState.SESSION_STATE_PAUSED && s.stop && this.announced.get(s.id) !== s.epoch) {
            this.onStopped({ sessionId: s.id, reason: s.stop.reason, text: s.stop.text, hitIds: s.stop.hitIds });
          }
        }
      } catch (e) {
        await this.disposeRuntime();
        throw new Error(`Djinn could not attach: ${message(e)}`);
      }
    });
  }

  private modelKnown(info: ServerInfo, outlinePath: string | undefined, cwd: string | undefined): void {
    this.info = info;
    const m = info.model!;
    this.outlineText = generateOutline(
      { name: m.name, nLayers: m.nLayers, dim: m.dim, dtype: info.dtype, device: info.device },
      info.modules.map((x) => ({ name: x.name, kind: x.kind, layer: x.layer, numParams: x.numParams })),
    );
    this.outlineParsed = parseOutline(this.outlineText);
    if (outlinePath) {
      const path = isAbsolute(outlinePath) ? outlinePath : resolve(cwd ?? process.cwd(), outlinePath);
      let text = this.outlineText;
      if (existsSync(path)) {
        const current = readFileSync(path, "utf8");
        if (current.startsWith(OUTLINE_HEADER)) this.runtime.writeFile(path, text);
        else text = current; // a hand-written outline is left as it is
      } else {
        this.runtime.writeFile(path, text);
      }
      this.outlineFile = { path, parsed: parseOutline(text) };
      this.send(new OutputEvent(`djinn: model outline ${path}\n`, "stdout"));
    }
    // Breakpoints set before the model was known: check what can be checked without a session.
    for (const e of this.allEntries()) {
      if (e.target && e.target.layer >= m.nLayers) {
        e.error = `layer ${e.target.layer} does not exist: the model has layers 0..${m.nLayers - 1}`;
        e.target = undefined;
        this.setVerified(e, false, e.error, true);
      }
    }
  }

  // ------------------------------------------------------------ breakpoints

  private allEntries(): BpEntry[] {
    return [...[...this.sourceBps.values()].flat(), ...this.functionBps, ...this.launchBps];
  }

  private union(): RtBreakpoint[] {
    return this.allEntries()
      .filter((e) => e.target)
      .map((e) => ({ id: e.id, layer: e.target!.layer, point: e.target!.point, condition: e.condition, hitCondition: e.hitCondition }));
  }

  private makeEntry(origin: BpOrigin, module: string | undefined, extra: Partial<BpEntry> = {}, previous: BpEntry[] = []): BpEntry {
    const condition = normalizeCondition(extra.condition);
    const hitCondition = extra.hitCondition?.trim() || undefined;
    const key = `${module ?? ""}|${extra.line ?? ""}|${condition ?? ""}|${hitCondition ?? ""}`;
    const old = previous.find((p) => p.key === key);
    const entry: BpEntry = { id: old?.id ?? this.nextBpId++, origin, key, condition, hitCondition, line: extra.line, source: extra.source, verified: false };
    if (module === undefined) {
      entry.error = extra.error ?? "not a module line";
    } else {
      const t = moduleToStop(module, this.info?.model?.nLayers);
      if (isStopTarget(t)) entry.target = t;
      else entry.error = t.error;
    }
    entry.message = entry.error ?? (this.sessionsCreated ? undefined : "pending: verified by the Djinn server once the model is loaded");
    if (old && !entry.error && this.sessionsCreated) {
      entry.verified = old.verified;
      entry.message = old.message;
    }
    return entry;
  }

  private toDap(e: BpEntry): DebugProtocol.Breakpoint {
    const bp: DebugProtocol.Breakpoint = { id: e.id, verified: e.verified };
    if (e.message) bp.message = e.message;
    if (e.line !== undefined) bp.line = e.line;
    if (e.source) bp.source = e.source;
    return bp;
  }

  private setVerified(e: BpEntry, verified: boolean, msg: string | undefined, announce: boolean): void {
    const changed = e.verified !== verified || e.message !== msg;
    e.verified = verified;
    e.message = msg;
    if (changed && announce && e.origin !== "launch") this.send(new BreakpointEvent("changed", this.toDap(e)));
  }

  private applyStatuses(statuses: Map<number, BpStatus> | undefined, announce: boolean): void {
    for (const e of this.allEntries()) {
      if (e.error) {
        this.setVerified(e, false, e.error, announce);
        continue;
      }
      const st = statuses?.get(e.id);
      if (st) this.setVerified(e, st.verified, st.verified ? undefined : st.message, announce);
    }
  }

  /** Attach with no session yet: well-formed breakpoints are accepted, the server checks them per session later. */
  private markPendingAsVerifiedLocally(): void {
    for (const e of this.allEntries()) {
      if (!e.error && !e.verified) this.setVerified(e, true, undefined, true);
    }
  }

  private async pushBreakpoints(): Promise<void> {
    const statuses = await this.runtime.setBreakpoints(this.union(), this.traps);
    if (statuses) this.applyStatuses(statuses, false);
    else if (this.sessionsCreated && this.attachCfg) this.markPendingAsVerifiedLocally();
  }

  private readOutline(source: DebugProtocol.Source): ParsedOutline | undefined {
    if (source.sourceReference === OUTLINE_REF || (!source.path && source.name?.endsWith(".djinn") && this.outlineParsed)) return this.outlineParsed;
    if (!source.path) return undefined;
    if (this.outlineFile && this.outlineFile.path === source.path) {
      try {
        this.outlineFile.parsed = parseOutline(readFileSync(source.path, "utf8"));
      } catch {
        /* keep the last parse */
      }
      return this.outlineFile.parsed;
    }
    try {
      return parseOutline(readFileSync(source.path, "utf8"));
    } catch {
      return undefined;
    }
  }

  protected override setBreakPointsRequest(response: DebugProtocol.SetBreakpointsResponse, args: DebugProtocol.SetBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const source = args.source;
      if (!source || typeof source !== "object") throw new VariableError("setBreakpoints needs a source");
      const key = source.path ?? `ref:${source.sourceReference ?? source.name}`;
      const parsed = this.readOutline(source);
      const previous = this.sourceBps.get(key) ?? [];
      const requested: DebugProtocol.SourceBreakpoint[] = args.breakpoints ?? (args.lines ?? []).map((line) => ({ line }));
      const entries = requested.map((b) => {
        if (typeof b?.line !== "number") return this.makeEntry("source", undefined, { error: "a breakpoint needs a line", source });
        let module: string | undefined;
        let error: string | undefined;
        if (!parsed) error = `cannot read ${source.path ?? source.name ?? "this source"}: gutter breakpoints go in a model outline (*.djinn)`;
        else {
          module = parsed.moduleAt.get(b.line);
          if (!module) error = `line ${b.line} names no module (comment or blank line)`;
        }
        return this.makeEntry("source", module, { line: b.line, condition: b.condition, hitCondition: b.hitCondition, source, error }, previous);
      });
      this.sourceBps.set(key, entries);
      if (source.path && source.path.endsWith(".djinn") && parsed && entries.length) this.outlineFile = { path: source.path, parsed };
      await this.pushBreakpoints();
      response.body = { breakpoints: entries.map((e) => this.toDap(e)) };
      this.sendResponse(response);
    });
  }

  protected override setFunctionBreakPointsRequest(response: DebugProtocol.SetFunctionBreakpointsResponse, args: DebugProtocol.SetFunctionBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const previous = this.functionBps;
      this.functionBps = (args.breakpoints ?? []).map((b) => {
        const name = typeof b?.name === "string" ? b.name.trim() : "";
        const module = /^\d+$/.test(name) ? `layers.${name}` : name || undefined;
        return this.makeEntry("function", module, { condition: b?.condition, hitCondition: b?.hitCondition, error: name ? undefined : "a function breakpoint needs a module name such as layers.10" }, previous);
      });
      await this.pushBreakpoints();
      response.body = { breakpoints: this.functionBps.map((e) => this.toDap(e)) };
      this.sendResponse(response);
    });
  }

  protected override setExceptionBreakPointsRequest(response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const known = ["nan", "inf", "normSpike"];
      const filters = new Map<string, string | undefined>();
      for (const f of args.filters ?? []) filters.set(f, undefined);
      for (const o of args.filterOptions ?? []) filters.set(o.filterId, o.condition);
      const results: DebugProtocol.Breakpoint[] = [];
      const traps: RtTraps = { nan: false, inf: false, normSpike: 0 };
      for (const [f, cond] of filters) {
        if (!known.includes(f)) {
          results.push({ verified: false, message: `unknown exception filter '${f}'; known: ${known.join(", ")}` });
          continue;
        }
        if (f === "nan") traps.nan = true;
        if (f === "inf") traps.inf = true;
        if (f === "normSpike") {
          const factor = cond && cond.trim() ? Number(cond.trim()) : DEFAULT_NORM_SPIKE;
          if (!Number.isFinite(factor) || factor <= 1) {
            results.push({ verified: false, message: `norm spike factor must be a number greater than 1; got '${cond}'` });
            continue;
          }
          traps.normSpike = factor;
        }
        results.push({ verified: true });
      }
      this.traps = traps;
      await this.pushBreakpoints();
      response.body = { breakpoints: results };
      this.sendResponse(response);
    });
  }

  // ---------------------------------------------------------------- threads

  protected override threadsRequest(response: DebugProtocol.ThreadsResponse): void {
    const threads = this.runtime.list().map((s) => ({ id: s.id, name: threadName(s) }));
    for (const t of threads) this.shownNames.set(t.id, t.name);
    response.body = { threads };
    this.sendResponse(response);
  }

  /**
   * VS Code reads thread names only with the threads list, which it re-fetches on a stop or a
   * `thread` event with reason "started" (debounced 100 ms), not on `continued`. When a name the
   * client has shown goes out of date (a resume, a token, a swap), a "started" event for that
   * known thread makes it re-read the list: at most every THREAD_REFRESH_MS, and only when a
   * name it showed changed. VS Code cancels the handling of a thread's stop (its stack, the
   * focus) on any thread event of that thread, so the event names a running thread, or a paused
   * one whose stop is at least STOP_SETTLE_MS old.
   */
  private scheduleThreadRefresh(delayMs = 0): void {
    if (this.refreshTimer || this.terminated || this.shownNames.size === 0) return;
    const wait = Math.max(delayMs, this.lastRefreshAt + THREAD_REFRESH_MS - Date.now(), 20);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.refreshThreads();
    }, wait);
    this.refreshTimer.unref?.();
  }

  private refreshThreads(): void {
    if (this.terminated) return;
    const now = Date.now();
    const stale = this.runtime.list().filter((s) => this.shownNames.has(s.id) && this.shownNames.get(s.id) !== threadName(s));
    if (stale.length === 0) return;
    const settled = (s: RtSession) => s.info.state !== SessionState.SESSION_STATE_PAUSED || now - (this.stoppedAt.get(s.id) ?? 0) >= STOP_SETTLE_MS;
    const pick = stale.find((s) => s.info.state !== SessionState.SESSION_STATE_PAUSED) ?? stale.find(settled);
    if (!pick) {
      const soonest = Math.min(...stale.map((s) => (this.stoppedAt.get(s.id) ?? 0) + STOP_SETTLE_MS - now));
      this.scheduleThreadRefresh(Math.max(soonest, 20));
      return;
    }
    this.lastRefreshAt = now;
    // the client re-reads every name; until it does, these count as shown (no second event)
    for (const s of stale) this.shownNames.set(s.id, threadName(s));
    this.send(new ThreadEvent("started", pick.id));
  }

  private onStopped(e: StoppedEvt): void {
    const s = this.runtime.sessions.get(e.sessionId);
    if (!s || s.ended || s.info.state !== SessionState.SESSION_STATE_PAUSED) return;
    this.lastStopped = e.sessionId;
    const p = s.info.position!;
    const where = moduleName(p.layer, p.point);
    const knownIds = new Set(this.allEntries().filter((x) => x.origin !== "launch").map((x) => x.id));
    const hit = e.hitIds.filter((id) => knownIds.has(id));
    let reason: string;
    let description: string;
    let text: string | undefined;
    switch (e.reason) {
      case StopReason.STOP_REASON_BREAKPOINT: {
        if (e.hitIds.length === 0) {
          // The server reports only this client's breakpoint ids: none means another client's breakpoint.
          reason = "breakpoint";
          description = `Paused at ${where} on a breakpoint of another client`;
          break;
        }
        const fn = hit.length > 0 && hit.every((id) => this.functionBps.some((b) => b.id === id));
        reason = fn ? "function breakpoint" : "breakpoint";
        description = `Paused on breakpoint at ${where}`;
        if (e.text) text = e.text;
        break;
      }
      case StopReason.STOP_REASON_STEP:
        reason = "step";
        description = `Stepped to ${where}`;
        break;
      case StopReason.STOP_REASON_PAUSE:
        reason = "pause";
        description = `Paused at ${where}`;
        break;
      case StopReason.STOP_REASON_ENTRY:
        reason = "entry";
        description = `Paused on entry at ${where}`;
        break;
      case StopReason.STOP_REASON_NAN:
      case StopReason.STOP_REASON_INF:
      case StopReason.STOP_REASON_NORM_SPIKE:
        reason = "exception";
        text = e.reason === StopReason.STOP_REASON_NAN ? "NaN" : e.reason === StopReason.STOP_REASON_INF ? "Inf" : "norm spike";
        description = e.text || `${text} at ${where}`;
        break;
      default:
        reason = "pause";
        description = `Paused at ${where}`;
    }
    const othersPaused = this.runtime.list().some((x) => x.id !== s.id && x.info.state === SessionState.SESSION_STATE_PAUSED);
    // Keep the user where they are when another thread stops, but never on the thread they
    // resumed (or stepped, paused) themselves, nor on the one they are looking at: VS Code would
    // keep showing that thread's previous stop (its old frame and scopes) in VARIABLES.
    const ours = this.userDriven.delete(s.id) || this.focusedThread === s.id;
    const ev = new StoppedEvent(reason, s.id, text) as DebugProtocol.StoppedEvent;
    ev.body.description = description;
    ev.body.allThreadsStopped = false;
    ev.body.preserveFocusHint = reason !== "step" && othersPaused && !ours;
    if (hit.length) ev.body.hitBreakpointIds = hit;
    this.announced.set(s.id, s.epoch);
    this.stoppedAt.set(s.id, Date.now());
    this.send(ev);
  }

  // ------------------------------------------------------------- execution

  protected override continueRequest(response: DebugProtocol.ContinueResponse, args: DebugProtocol.ContinueArguments): void {
    this.handle(response, ErrorIds.server, () => {
      const s = this.session(args.threadId);
      this.focus(s.id);
      this.userDriven.add(s.id);
      this.resumeRequest(response, s.id, () => this.runtime.continue(s.id), { allThreadsContinued: false });
    });
  }

  protected override nextRequest(response: DebugProtocol.NextResponse, args: DebugProtocol.NextArguments): void {
    this.stepRequest(response, args.threadId, StepKind.STEP_KIND_LAYER);
  }

  protected override stepInRequest(response: DebugProtocol.StepInResponse, args: DebugProtocol.StepInArguments): void {
    this.stepRequest(response, args.threadId, StepKind.STEP_KIND_SUBLAYER);
  }

  protected override stepOutRequest(response: DebugProtocol.StepOutResponse, args: DebugProtocol.StepOutArguments): void {
    this.stepRequest(response, args.threadId, StepKind.STEP_KIND_TOKEN);
  }

  private stepRequest(response: DebugProtocol.Response, threadId: number, kind: StepKind): void {
    this.handle(response, ErrorIds.server, () => {
      const s = this.session(threadId);
      this.focus(s.id);
      this.userDriven.add(s.id);
      this.resumeRequest(response, s.id, () => this.runtime.step(s.id, kind));
    });
  }

  protected override pauseRequest(response: DebugProtocol.PauseResponse, args: DebugProtocol.PauseArguments): void {
    this.handle(response, ErrorIds.server, async () => {
      const s = this.session(args.threadId);
      this.focus(s.id);
      if (s.info.state !== SessionState.SESSION_STATE_PAUSED) this.userDriven.add(s.id);
      await this.runtime.pause(s.id);
      this.sendResponse(response);
    });
  }

  protected override terminateThreadsRequest(response: DebugProtocol.TerminateThreadsResponse, args: DebugProtocol.TerminateThreadsArguments): void {
    this.handle(response, ErrorIds.server, async () => {
      const ids = (args.threadIds ?? []).map((id) => this.session(id).id);
      await Promise.all(ids.map((id) => this.runtime.client!.closeSession(id)));
      this.sendResponse(response);
    });
  }

  // ------------------------------------------------------------- stack

  private frameSource(module: string): { source: DebugProtocol.Source; line: number } {
    const file = this.outlineFile;
    const line = file?.parsed.lineOf.get(module);
    if (file && line !== undefined) return { source: new Source(basename(file.path), file.path), line };
    const name = `${this.info?.model?.name ?? "model"}.djinn`.replace(/[\\/]/g, "_");
    return {
      source: { ...new Source(name, undefined, OUTLINE_REF), presentationHint: "normal" } as DebugProtocol.Source,
      line: this.outlineParsed?.lineOf.get(module) ?? 1,
    };
  }

  protected override stackTraceRequest(response: DebugProtocol.StackTraceResponse, args: DebugProtocol.StackTraceArguments): void {
    this.handle(response, ErrorIds.noSession, () => {
      const s = this.session(args.threadId);
      const i = s.info;
      if (i.state !== SessionState.SESSION_STATE_PAUSED || !i.position) {
        response.body = { stackFrames: [], totalFrames: 0 };
        this.sendResponse(response);
        return;
      }
      this.prefetch(s);
      const p = i.position;
      const mod = moduleName(p.layer, p.point);
      const frames: DebugProtocol.StackFrame[] = [];
      const frame = (k: number, name: string, module: string, hint?: "normal" | "label" | "subtle"): DebugProtocol.StackFrame => {
        const { source, line } = this.frameSource(module);
        // ids are new at every stop: a client that kept a frame of the last stop gets an error, not this one
        const f: DebugProtocol.StackFrame = { id: this.frameId(s, k), name, source, line, column: 1 };
        if (hint) f.presentationHint = hint;
        return f;
      };
      const what = p.point === StopPoint.STOP_POINT_ATTN ? "attention output" : p.point === StopPoint.STOP_POINT_MLP ? "MLP output" : "input";
      frames.push(frame(0, `${mod} · ${what}`, mod));
      if (p.point !== StopPoint.STOP_POINT_LAYER) frames.push(frame(1, `layers.${p.layer}`, `layers.${p.layer}`));
      const last = p.inputPos + Math.max(p.numTokens, 1) - 1;
      const pass = p.phase === Phase.PHASE_DECODE
        ? `decode of token ${p.tokenIndex} at position ${p.inputPos}`
        : `prefill · ${p.numTokens} token${p.numTokens === 1 ? "" : "s"} at positions ${p.inputPos}..${last}`;
      frames.push(frame(2, pass, "embed_tokens", "subtle"));
      const prompt = i.prompt ? ` · ${JSON.stringify(i.prompt.length > 40 ? i.prompt.slice(0, 40) + "…" : i.prompt)}` : "";
      const sessFrame = frame(3, `session ${s.id}${prompt}`, "", "subtle");
      sessFrame.line = 1;
      frames.push(sessFrame);
      const start = args.startFrame ?? 0;
      const levels = args.levels && args.levels > 0 ? args.levels : frames.length;
      response.body = { stackFrames: frames.slice(start, start + levels), totalFrames: frames.length };
      this.sendResponse(response);
    });
  }

  protected override sourceRequest(response: DebugProtocol.SourceResponse, args: DebugProtocol.SourceArguments): void {
    this.handle(response, ErrorIds.badRequest, () => {
      const ref = args.source?.sourceReference ?? args.sourceReference;
      if (ref !== OUTLINE_REF || !this.outlineText) throw new VariableError(`no source with reference ${ref}`);
      response.body = { content: this.outlineText, mimeType: "text/x-djinn-model" };
      this.sendResponse(response);
    });
  }

  protected override scopesRequest(response: DebugProtocol.ScopesResponse, args: DebugProtocol.ScopesArguments): void {
    this.handle(response, ErrorIds.noSession, () => {
      const s = this.sessionOfFrame(args.frameId);
      this.focus(s.id);
      if (s.info.state !== SessionState.SESSION_STATE_PAUSED) throw new VariableError(`session ${s.id} is ${stateName(s.info.state)}: scopes exist only while it is paused`);
      this.prefetch(s);
      response.body = { scopes: this.vars.scopes(s.id) };
      this.sendResponse(response);
    });
  }

  protected override variablesRequest(response: DebugProtocol.VariablesResponse, args: DebugProtocol.VariablesArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      if (typeof args.variablesReference !== "number") throw new VariableError("variablesReference must be a number");
      response.body = { variables: await this.vars.variables(args) };
      this.sendResponse(response);
    });
  }

  protected override setVariableRequest(response: DebugProtocol.SetVariableResponse, args: DebugProtocol.SetVariableArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      if (typeof args.value !== "string") throw new VariableError("setVariable needs a value");
      const r = await this.vars.setVariable(args);
      response.body = r;
      this.sendResponse(response);
      this.invalidated(args.variablesReference);
    });
  }

  protected override setExpressionRequest(response: DebugProtocol.SetExpressionResponse, args: DebugProtocol.SetExpressionArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      const s = args.frameId !== undefined ? this.sessionOfFrame(args.frameId) : this.defaultSession();
      if (args.frameId !== undefined) this.focus(s.id);
      if (typeof args.expression !== "string" || typeof args.value !== "string") throw new VariableError("setExpression needs an expression and a value");
      const r = await this.vars.setExpression(s.id, args.expression, args.value);
      response.body = r;
      this.sendResponse(response);
      if (this.clientCaps.supportsInvalidatedEvent) this.send(new InvalidatedEvent(["variables"], s.id));
    });
  }

  private invalidated(_ref: number): void {
    if (this.clientCaps.supportsInvalidatedEvent) this.send(new InvalidatedEvent(["variables"]));
  }

  private defaultSession(): RtSession {
    const paused = this.runtime.list().filter((s) => s.info.state === SessionState.SESSION_STATE_PAUSED);
    const s = (this.lastStopped !== undefined && paused.find((x) => x.id === this.lastStopped)) || paused[0];
    if (!s) throw new VariableError("no session is paused: expressions are evaluated at a stop");
    return s;
  }

  protected override evaluateRequest(response: DebugProtocol.EvaluateResponse, args: DebugProtocol.EvaluateArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      if (typeof args.expression !== "string" || !args.expression.trim()) throw new VariableError("evaluate needs an expression");
      const expr = args.expression.trim();
      // A module name (layers.10, layers.10.attn, norm) in any context: the module, with its
      // children and where to break; it needs no paused session.
      const mod = this.vars.evaluateModule(expr);
      if (mod) {
        response.body = mod;
        this.sendResponse(response);
        return;
      }
      const s = args.frameId !== undefined ? this.sessionOfFrame(args.frameId) : this.defaultSession();
      if (args.frameId !== undefined) this.focus(s.id);
      response.body = await this.vars.evaluate(s.id, expr);
      this.sendResponse(response);
    });
  }

  protected override exceptionInfoRequest(response: DebugProtocol.ExceptionInfoResponse, args: DebugProtocol.ExceptionInfoArguments): void {
    this.handle(response, ErrorIds.noSession, () => {
      const s = this.session(args.threadId);
      const r = s.stop?.reason;
      const id = r === StopReason.STOP_REASON_NAN ? "nan" : r === StopReason.STOP_REASON_INF ? "inf" : r === StopReason.STOP_REASON_NORM_SPIKE ? "normSpike" : undefined;
      if (!id) throw new VariableError(`session ${s.id} did not stop on an exception filter`);
      const where = s.info.position ? moduleName(s.info.position.layer, s.info.position.point) : "?";
      response.body = {
        exceptionId: id,
        description: s.stop?.text || `${id} at ${where}`,
        breakMode: "always",
        details: { message: s.stop?.text, typeName: id === "nan" ? "NaN" : id === "inf" ? "Inf" : "NormSpike", evaluateName: "hidden" },
      };
      this.sendResponse(response);
    });
  }

  protected override readMemoryRequest(response: DebugProtocol.ReadMemoryResponse, args: DebugProtocol.ReadMemoryArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      if (typeof args.memoryReference !== "string" || typeof args.count !== "number") throw new VariableError("readMemory needs memoryReference and count");
      const r = await this.vars.readMemory(args.memoryReference, args.offset ?? 0, args.count);
      response.body = { address: r.address, data: r.data.toString("base64"), unreadableBytes: r.unreadable || undefined };
      this.sendResponse(response);
    });
  }

  // ------------------------------------------------------------- custom

  protected override customRequest(command: string, response: DebugProtocol.Response, args: any): void {
    this.handle(response, ErrorIds.badRequest, () => {
      switch (command) {
        case "djinn/outline": {
          if (!this.outlineText) throw new VariableError("the model is not known yet: launch or attach first");
          const path = args && typeof args.path === "string" ? args.path : undefined;
          if (path) this.runtime.writeFile(path, this.outlineText);
          response.body = { text: this.outlineText, path: path ?? this.outlineFile?.path, model: this.info?.model?.name };
          break;
        }
        case "djinn/serverInfo": {
          const ls = this.runtime.localServer;
          response.body = {
            address: ls?.address ?? this.runtime.client?.address,
            pid: ls?.process.pid,
            local: !!ls,
            model: this.info?.model?.name,
            device: this.info?.device,
            nLayers: this.info?.model?.nLayers,
            sessions: this.runtime.list().map((s) => s.id),
          };
          break;
        }
        default:
          throw new VariableError(`unknown request '${command}'`);
      }
      this.sendResponse(response);
    });
  }

  // ---------------------------------------------------------- teardown

  protected override terminateRequest(response: DebugProtocol.TerminateResponse): void {
    this.handle(response, ErrorIds.server, async () => {
      if (this.launchCfg) {
        this.closing = true;
        await this.runtime.detach(true);
        await this.disposeRuntime();
      }
      this.sendResponse(response);
      this.terminate("");
    });
  }

  protected override disconnectRequest(response: DebugProtocol.DisconnectResponse, args: DebugProtocol.DisconnectArguments): void {
    this.handle(response, ErrorIds.server, async () => {
      // launch: terminate unless told not to; attach: only when told to. Detach removes this
      // adapter's breakpoints everywhere and, terminating, closes the sessions it created.
      const terminate = this.launchCfg ? args?.terminateDebuggee !== false : args?.terminateDebuggee === true;
      if (terminate) this.closing = true;
      await this.runtime.detach(terminate);
      await this.disposeRuntime();
      this.sendResponse(response);
      this.shutdown();
    });
  }

  private disposeRuntime(): Promise<void> {
    this.disposing ??= this.runtime.dispose().catch(() => undefined);
    return this.disposing;
  }

  override shutdown(): void {
    void this.disposeRuntime().finally(() => super.shutdown());
  }
}

/** `s3 · L10 · host · "The quick brown fox" (prompt 2)`: what matters first, for a narrow CALL STACK. */
export function threadName(s: RtSession): string {
  const i = s.info;
  let state: string;
  if (i.state === SessionState.SESSION_STATE_PAUSED && i.position) {
    const p = i.position;
    const where = `L${p.layer}${p.point === StopPoint.STOP_POINT_ATTN ? ".attn" : p.point === StopPoint.STOP_POINT_MLP ? ".mlp" : ""}`;
    state = `${where}${kvShort(i.kvLocation)}`;
  } else if (i.state === SessionState.SESSION_STATE_RUNNING) {
    const n = i.generatedTokens.length;
    state = `running${n ? ` · ${n} tok` : ""}`;
  } else if (i.state === SessionState.SESSION_STATE_FINISHED) {
    state = "done";
  } else if (i.state === SessionState.SESSION_STATE_CREATED) {
    state = "starting";
  } else {
    state = stateName(i.state);
  }
  const prompt = i.prompt ? JSON.stringify(i.prompt.length > 24 ? i.prompt.slice(0, 23) + "…" : i.prompt) : i.promptTokens.length ? `[${i.promptTokens.length} tokens]` : "";
  const tail = [prompt, i.label ? `(${i.label})` : ""].filter(Boolean).join(" ");
  return `s${s.id} · ${state}${tail ? ` · ${tail}` : ""}`;
}

function kvShort(k: KvLocation): string {
  switch (k) {
    case KvLocation.KV_LOCATION_DEVICE: return " · dev";
    case KvLocation.KV_LOCATION_HOST: return " · host";
    case KvLocation.KV_LOCATION_MOVING_OUT: return " · →host";
    case KvLocation.KV_LOCATION_MOVING_IN: return " · →dev";
    default: return "";
  }
}

/** `s1 token 3/4: "<457>" (id 457)`: the token's text, how far the session is, its id. */
export function tokenLine(sessionId: number, token: number, text: string, index: number, max: number): string {
  return `s${sessionId} token ${index}${max ? `/${max}` : ""}: ${JSON.stringify(text)} (id ${token})`;
}

export function swapLine(sessionId: number, direction: "out" | "in", bytes: number, ms: number): string {
  return `s${sessionId} KV → ${direction === "out" ? "host" : "device"}: ${(bytes / 1e6).toFixed(2)} MB in ${ms.toFixed(2)} ms`;
}

/** `s1 finished: 4 tokens "…"`, `s2 failed: why`, `s3 closed: lease expired`. */
export function endLine(sessionId: number, state: SessionState, text: string, info?: { generatedText: string; generatedTokens: number[] }): string {
  if (state === SessionState.SESSION_STATE_FAILED) return `s${sessionId} failed: ${text}`;
  if (state === SessionState.SESSION_STATE_FINISHED) {
    const n = info?.generatedTokens.length ?? 0;
    const generated = info?.generatedText ?? text;
    return `s${sessionId} finished: ${n} token${n === 1 ? "" : "s"}${generated ? ` ${JSON.stringify(generated)}` : ""}`;
  }
  const why = text && text !== info?.generatedText ? `: ${text}` : "";
  return `s${sessionId} ${stateName(state)}${why}`;
}

function moduleName(layer: number, point: StopPoint): string {
  return point === StopPoint.STOP_POINT_ATTN ? `layers.${layer}.attn` : point === StopPoint.STOP_POINT_MLP ? `layers.${layer}.mlp` : `layers.${layer}`;
}

