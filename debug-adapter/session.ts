// The DAP side of the Djinn debug adapter: translates Debug Adapter Protocol requests into
// runtime calls and runtime events into DAP events, and nothing else. The breakpoint store is
// breakpoints.ts, the stack and its frame ids stack.ts, scopes and variables variables.ts, the
// outline outline.ts, cancellation cancel.ts, what is printed lines.ts. No gRPC here
// (runtime.ts), no `vscode` import: the same class runs as a stdio program (main.ts) and inline
// in the extension host.
import { isAbsolute, resolve } from "node:path";
import {
  BreakpointEvent,
  ContinuedEvent,
  InitializedEvent,
  InvalidatedEvent,
  LoggingDebugSession,
  OutputEvent,
  ProgressEndEvent,
  ProgressStartEvent,
  StoppedEvent,
  TerminatedEvent,
  ThreadEvent,
  logger,
  Logger,
} from "@vscode/debugadapter";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { BreakpointStore, DEFAULT_NORM_SPIKE, stopLines } from "./breakpoints";
import { CancelledError, Cancellations } from "./cancel";
import { COMPLETION_TRIGGERS, completionTargets, moduleTargets } from "./completions";
import { DataBreakpointStore, dataBreakpointInfo } from "./dataBreakpoints";
import { ConfigError, parseAttach, parseLaunch, type AttachConfig, type LaunchConfig } from "./config";
import { endLine, moduleName, spillLine, swapLine, threadName, tokenLine } from "./lines";
import { ModelOutline, OUTLINE_REF } from "./outline";
import { SessionState, StepKind, StopPoint, StopReason, stateName, type RtSession, type ServerInfo, type StoppedEvt } from "./runtime";
import { DjinnRuntime } from "./runtime";
import { FrameStore, stackFrames } from "./stack";
import { TIME_TRAVEL_CAPABILITIES, goBack, markRestartable, restartFrame, timeTravelStop, type TimeTravelCommand } from "./timeTravel";
import { VariableError, VariableStore } from "./variables";

export { normalizeCondition } from "./breakpoints";
export { endLine, spillLine, swapLine, threadName, tokenLine } from "./lines";

/** Error ids of DAP error responses. */
export const ErrorIds = {
  config: 2001,
  launch: 2002,
  attach: 2003,
  noSession: 2004,
  server: 2005,
  variables: 2006,
  badRequest: 2007,
  cancelled: 2008,
} as const;

const CONFIG_DONE_TIMEOUT_MS = 5000;
/** thread-name refreshes (a `thread` event, reason "started", for a known thread) at most this often */
const THREAD_REFRESH_MS = 250;
/** a refresh names a paused thread only this long after its stopped event (VS Code cancels a stop's handling on a thread event) */
const STOP_SETTLE_MS = 1000;
/** launch attributes a restart may change: they only shape the sessions, not the server or the model */
const RESTARTABLE = new Set(["prompt", "sessions", "maxNewTokens", "contextTokens", "breakpoints", "stopOnEntry", "timeTravel", "trace", "outlinePath", "cwd"]);

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

export class DjinnDebugSession extends LoggingDebugSession {
  readonly runtime = new DjinnRuntime();
  private readonly vars = new VariableStore(this.runtime);
  private readonly frames = new FrameStore(this.runtime);
  private readonly outline = new ModelOutline();
  private readonly bps = new BreakpointStore((bp) => this.send(new BreakpointEvent("changed", bp)));
  private readonly dataBps = new DataBreakpointStore(() => this.bps.newId(), (bp) => this.send(new BreakpointEvent("changed", bp)));
  private readonly cancels = new Cancellations();
  private readonly configDone = new Deferred();
  private clientCaps: DebugProtocol.InitializeRequestArguments = { adapterID: "djinn" };
  private launchCfg?: LaunchConfig;
  /** the launch's attributes as given (a restart compares its new ones with them) */
  private launchArgs?: Record<string, unknown>;
  /** the seq of the launch request while it runs (its model-load progress cancels it) */
  private launchSeq?: number;
  private attachCfg?: AttachConfig;
  private info?: ServerInfo;
  private sessionsCreated = false;
  private terminated = false;
  /** terminate/disconnect is closing the sessions */
  private closing = false;
  private disposing?: Promise<void>;
  private lastStopped?: number;
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
  /** requests answered "cancelled": whatever they would have answered later is dropped */
  private readonly cancelledSeqs = new Set<number>();

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
    this.vars.outline = (module) => this.outline.where(module);
  }

  // ------------------------------------------------------------------ plumbing

  /**
   * Runs an async handler; any failure becomes an error response (the adapter lives on).
   * `cancellable`: a `cancel` of this request answers it at once with "cancelled".
   */
  private handle<R extends DebugProtocol.Response>(response: R, id: number, fn: () => Promise<void> | void, cancellable = false): void {
    let p: Promise<void> | void;
    try {
      p = cancellable ? this.cancels.run(response.request_seq, async () => fn()) : fn();
    } catch (e) {
      this.fail(response, id, e);
      return;
    }
    if (p) p.catch((e) => this.fail(response, id, e));
  }

  private fail(response: DebugProtocol.Response, id: number, e: unknown): void {
    if (e instanceof CancelledError) {
      this.cancelledSeqs.add(response.request_seq);
      // DAP: a cancelled request answers with an error whose message is "cancelled"
      this.sendErrorResponse(response, { id: ErrorIds.cancelled, format: "cancelled", showUser: false });
      return;
    }
    this.sendErrorResponse(response, { id, format: message(e).replace(/[{}]/g, (c) => (c === "{" ? "(" : ")")), showUser: id === ErrorIds.config || id === ErrorIds.launch || id === ErrorIds.attach });
  }

  protected override dispatchRequest(request: DebugProtocol.Request): void {
    // Requests without arguments where arguments are required get a clear error.
    const needsArgs = new Set([
      "launch", "attach", "setBreakpoints", "setFunctionBreakpoints", "setExceptionBreakpoints", "continue", "next", "stepIn",
      "stepOut", "pause", "stackTrace", "scopes", "variables", "setVariable", "setExpression", "evaluate", "source",
      "readMemory", "exceptionInfo", "terminateThreads", "breakpointLocations", "completions", "dataBreakpointInfo", "setDataBreakpoints",
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
      this.frames.retire(e.sessionId);
      this.whenSettled(e.sessionId, () => this.onStopped(e));
    });
    rt.on("resumed", ({ sessionId, byUs }) => {
      this.vars.invalidate(sessionId);
      this.frames.retire(sessionId);
      if (!byUs) this.send(new ContinuedEvent(sessionId, false));
      this.scheduleThreadRefresh();
    });
    rt.on("sessionStarted", ({ sessionId }) => this.send(new ThreadEvent("started", sessionId)));
    rt.on("sessionEnded", ({ sessionId, state, text }) => {
      this.vars.invalidate(sessionId);
      this.frames.retire(sessionId);
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
    rt.on("spill", ({ sessionId, direction, bytes, ms }) => {
      this.send(new OutputEvent(`${spillLine(sessionId, direction, bytes, ms)}\n`, "stdout", { sessionId, spill: direction, bytes, ms }));
      this.scheduleThreadRefresh();
    });
    rt.on("sessionChanged", () => this.scheduleThreadRefresh());
    rt.on("progressStart", ({ id, kind, title, message: m }) => {
      if (!this.clientCaps.supportsProgressReporting) return;
      const ev = new ProgressStartEvent(id, title, m) as DebugProtocol.ProgressStartEvent;
      // the model load is the launch's: cancelling the progress cancels the launch
      if (kind === "load" && this.launchSeq !== undefined && this.cancels.linkProgress(id, this.launchSeq)) {
        ev.body.cancellable = true;
        ev.body.requestId = this.launchSeq;
      }
      this.send(ev);
    });
    rt.on("progressEnd", ({ id, message: m }) => {
      if (this.clientCaps.supportsProgressReporting) this.send(new ProgressEndEvent(id, m));
    });
    rt.on("log", ({ text, category }) => this.send(new OutputEvent(text + "\n", category)));
    // a logpoint's line (formatted on the server), pointing at the logpoint; the model's own
    // output, as a print would be: `stdout` (VS Code shows `console` in the warning colour)
    rt.on("logpoint", ({ sessionId, breakpointId, text }) => {
      const bp = this.bps.byId(breakpointId);
      const ev = new OutputEvent(`${text}\n`, "stdout", { sessionId, breakpointId }) as DebugProtocol.OutputEvent;
      if (bp?.source) ev.body.source = bp.source;
      if (bp?.line !== undefined) ev.body.line = bp.line;
      this.send(ev);
    });
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

  /**
   * Runs a request that resumes `threadIds`; their stopped events go out only after its response.
   * `after`: events that follow the response (a `continued` for threads resumed along with it).
   */
  private resumeRequest(response: DebugProtocol.Response, threadIds: number[], call: () => Promise<void>, body?: object, after?: () => void): void {
    for (const id of threadIds) this.inflight.set(id, (this.inflight.get(id) ?? 0) + 1);
    const settle = () => {
      for (const threadId of threadIds) {
        const n = (this.inflight.get(threadId) ?? 1) - 1;
        if (n > 0) this.inflight.set(threadId, n);
        else {
          this.inflight.delete(threadId);
          for (const fn of this.deferred.get(threadId)?.splice(0) ?? []) fn();
          this.deferred.delete(threadId);
        }
      }
    };
    call().then(
      () => {
        if (body) response.body = body;
        this.sendResponse(response);
        after?.();
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

  private sessionOfFrame(frameId: unknown): RtSession {
    return this.frames.lookup(frameId).session;
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
      ...TIME_TRAVEL_CAPABILITIES,
      supportsRestartRequest: true,
      supportsCancelRequest: true,
      supportsBreakpointLocationsRequest: true,
      supportsLogPoints: true,
      supportsCompletionsRequest: true,
      completionTriggerCharacters: COMPLETION_TRIGGERS,
      supportsDataBreakpoints: true,
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
    this.launchArgs = { ...(args as Record<string, unknown>) };
    this.launchSeq = response.request_seq;
    if (cfg.trace) logger.setup(Logger.LogLevel.Verbose, false);
    let cancelled = false;
    const work = async () => {
      try {
        const [info] = await Promise.all([this.runtime.launch(cfg), this.configDone.wait(CONFIG_DONE_TIMEOUT_MS)]);
        if (cancelled) return;
        this.modelKnown(info, cfg.outlinePath, cfg.cwd);
        this.bps.setLaunch(cfg.breakpoints);
        await this.runtime.setBreakpoints(this.bps.union(), this.bps.traps, false);
        if (cancelled) return;
        const statuses = await this.runtime.createSessions(cfg);
        this.sessionsCreated = this.bps.sessionsCreated = this.dataBps.sessionsCreated = true;
        this.bps.applyStatuses(statuses, true);
        this.dataBps.applyStatuses(statuses, true);
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
        if (cancelled) return;
        await this.runtime.detach(true);
        await this.disposeRuntime();
        throw new Error(`Djinn could not launch: ${message(e)}`);
      } finally {
        this.launchSeq = undefined;
      }
    };
    // Cancelled (the request, or its model-load progress): the answer is "cancelled" at once; the
    // local server is stopped (once it is up, if it is still loading) and the debug session ends.
    const onCancel = () => {
      cancelled = true;
      this.closing = true;
      this.runtime.cancelLaunch();   // a server still loading its model stops now
      void this.runtime.detach(true).finally(() => this.disposeRuntime()).finally(() => this.terminate("the launch was cancelled"));
    };
    this.cancels.run(response.request_seq, work, onCancel).catch((e) => this.fail(response, ErrorIds.launch, e));
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
    let cancelled = false;
    const work = async () => {
      try {
        const info = await this.runtime.attach(cfg);
        if (cancelled) return;
        this.modelKnown(info, cfg.outlinePath, cfg.cwd);
        await this.configDone.wait(CONFIG_DONE_TIMEOUT_MS);
        const statuses = await this.runtime.setBreakpoints(this.bps.union(), this.bps.traps, false);
        this.sessionsCreated = this.bps.sessionsCreated = this.dataBps.sessionsCreated = true;
        if (statuses) this.bps.applyStatuses(statuses, true);
        else this.bps.markPendingAsVerifiedLocally();
        if (this.dataBps.union().length) await this.pushDataBreakpoints();
        this.send(new OutputEvent(`djinn: attached to ${cfg.server} (${info.model?.name} on ${info.device}): ${this.runtime.list().length} session(s)\n`, "stdout"));
        this.sendResponse(response);
        for (const s of this.runtime.list()) {
          if (s.info.state === SessionState.SESSION_STATE_PAUSED && s.stop && this.announced.get(s.id) !== s.epoch) {
            this.onStopped({ sessionId: s.id, reason: s.stop.reason, text: s.stop.text, hitIds: s.stop.hitIds });
          }
        }
      } catch (e) {
        if (cancelled) return;
        await this.disposeRuntime();
        throw new Error(`Djinn could not attach: ${message(e)}`);
      }
    };
    // Cancelled (e.g. while the server does not answer): the debug session ends, touching nothing.
    const onCancel = () => {
      cancelled = true;
      void this.disposeRuntime().finally(() => this.terminate("the attach was cancelled"));
    };
    this.cancels.run(response.request_seq, work, onCancel).catch((e) => this.fail(response, ErrorIds.attach, e));
  }

  private modelKnown(info: ServerInfo, outlinePath: string | undefined, cwd: string | undefined): void {
    this.info = info;
    const m = info.model!;
    const path = outlinePath ? (isAbsolute(outlinePath) ? outlinePath : resolve(cwd ?? process.cwd(), outlinePath)) : undefined;
    this.outline.known(
      {
        model: { name: m.name, nLayers: m.nLayers, dim: m.dim, dtype: info.dtype, device: info.device },
        modules: info.modules.map((x) => ({ name: x.name, kind: x.kind, layer: x.layer, numParams: x.numParams })),
      },
      path,
      (p, text) => this.runtime.writeFile(p, text),
    );
    if (path) this.send(new OutputEvent(`djinn: model outline ${path}\n`, "stdout"));
    // Breakpoints set before the model was known: check what can be checked without a session.
    this.bps.modelKnown(m.nLayers, m.name);
  }

  /**
   * Restart keeps the server and its model: this launch's sessions are closed and created again
   * with the same attributes (VS Code sends the configuration again: what only shapes the
   * sessions, such as the prompt or maxNewTokens, may change; anything else needs a new launch).
   */
  protected override restartRequest(response: DebugProtocol.RestartResponse, args: DebugProtocol.RestartArguments): void {
    this.handle(response, ErrorIds.server, async () => {
      if (this.attachCfg) throw new VariableError("restart is for a launch: an attach shows sessions it did not create (detach and attach again)");
      if (!this.launchCfg || !this.sessionsCreated) throw new VariableError("nothing to restart yet: the launch has not created its sessions");
      let cfg = this.launchCfg;
      const next = (args?.arguments ?? undefined) as Record<string, unknown> | undefined;
      if (next && typeof next === "object") {
        const before = this.launchArgs ?? {};
        const keys = new Set([...Object.keys(before), ...Object.keys(next)]);
        for (const k of keys) {
          if (k.startsWith("__") || RESTARTABLE.has(k) || ["type", "request", "name", "presentation", "preLaunchTask", "postDebugTask", "internalConsoleOptions", "noDebug"].includes(k)) continue;
          if (JSON.stringify(before[k]) !== JSON.stringify(next[k])) {
            throw new ConfigError(k, `restart keeps the server and the model, but launch attribute '${k}' changed: stop and start the debug session to use it`);
          }
        }
        cfg = parseLaunch({ ...before, ...next, server: before.server });
      }
      this.launchCfg = cfg;
      this.bps.setLaunch(cfg.breakpoints);
      await this.runtime.setBreakpoints(this.bps.union(), this.bps.traps, false);
      const statuses = await this.runtime.restartSessions(cfg);
      this.bps.applyStatuses(statuses, true);
      this.dataBps.applyStatuses(statuses, true);
      this.send(new OutputEvent(`djinn: restarted: ${cfg.sessions} session(s) of ${this.info?.model?.name} (the server and its model stay)\n`, "stdout"));
      this.sendResponse(response);
    }, true);
  }

  // ------------------------------------------------------------ breakpoints

  private async pushBreakpoints(): Promise<void> {
    const statuses = await this.runtime.setBreakpoints(this.bps.union(), this.bps.traps);
    if (statuses) this.bps.applyStatuses(statuses, false);
    else if (this.sessionsCreated && this.attachCfg) this.bps.markPendingAsVerifiedLocally();
  }

  protected override setBreakPointsRequest(response: DebugProtocol.SetBreakpointsResponse, args: DebugProtocol.SetBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const source = args.source;
      if (!source || typeof source !== "object") throw new VariableError("setBreakpoints needs a source");
      const parsed = this.outline.read(source);
      const requested: DebugProtocol.SourceBreakpoint[] = args.breakpoints ?? (args.lines ?? []).map((line) => ({ line }));
      const entries = this.bps.setSource(source, parsed, requested);
      if (source.path && parsed && entries.length) this.outline.use(source.path, parsed);
      await this.pushBreakpoints();
      response.body = { breakpoints: entries.map((e) => this.bps.toDap(e)) };
      this.sendResponse(response);
    });
  }

  /** The lines of a range where a breakpoint stops a session: the module lines that are stop points. */
  protected override breakpointLocationsRequest(response: DebugProtocol.BreakpointLocationsResponse, args: DebugProtocol.BreakpointLocationsArguments): void {
    this.handle(response, ErrorIds.badRequest, () => {
      if (!args.source || typeof args.source !== "object") throw new VariableError("breakpointLocations needs a source");
      if (typeof args.line !== "number") throw new VariableError("breakpointLocations needs a line");
      const parsed = this.outline.read(args.source);
      const lines = parsed ? stopLines(parsed, args.line, args.endLine ?? args.line, this.info?.model?.nLayers) : [];
      response.body = { breakpoints: lines.map((line) => ({ line })) };
      this.sendResponse(response);
    });
  }

  protected override setFunctionBreakPointsRequest(response: DebugProtocol.SetFunctionBreakpointsResponse, args: DebugProtocol.SetFunctionBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const entries = this.bps.setFunctions(args.breakpoints ?? []);
      await this.pushBreakpoints();
      response.body = { breakpoints: entries.map((e) => this.bps.toDap(e)) };
      this.sendResponse(response);
    });
  }

  protected override setExceptionBreakPointsRequest(response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const results = this.bps.setExceptionFilters(args);
      await this.pushBreakpoints();
      response.body = { breakpoints: results };
      this.sendResponse(response);
    });
  }

  // ------------------------------------------ data breakpoints, completions

  private async pushDataBreakpoints(): Promise<void> {
    this.dataBps.applyStatuses(await this.runtime.setDataBreakpoints(this.dataBps.union()), true);
  }

  protected override dataBreakpointInfoRequest(response: DebugProtocol.DataBreakpointInfoResponse, args: DebugProtocol.DataBreakpointInfoArguments): void {
    this.handle(response, ErrorIds.badRequest, () => {
      if (typeof args.name !== "string") throw new VariableError("dataBreakpointInfo needs a name");
      response.body = dataBreakpointInfo(this.vars.watchable(args.variablesReference, args.name));
      this.sendResponse(response);
    });
  }

  protected override setDataBreakpointsRequest(response: DebugProtocol.SetDataBreakpointsResponse, args: DebugProtocol.SetDataBreakpointsArguments): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      const entries = this.dataBps.set(Array.isArray(args.breakpoints) ? args.breakpoints : []);
      this.dataBps.applyStatuses(await this.runtime.setDataBreakpoints(this.dataBps.union()), false);
      response.body = { breakpoints: entries.map((e) => this.dataBps.toDap(e)) };
      this.sendResponse(response);
    });
  }

  /** Debug Console completions from the server (the frame's session; 0 without a frame: no values), and module names. */
  protected override completionsRequest(response: DebugProtocol.CompletionsResponse, args: DebugProtocol.CompletionsArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      if (typeof args.text !== "string" || typeof args.column !== "number") throw new VariableError("completions needs text and column");
      const sessionId = args.frameId !== undefined ? this.sessionOfFrame(args.frameId).id : 0;
      const column = this.convertClientColumnToDebugger(args.column);
      const r = await this.runtime.complete(sessionId, args.text, column);
      const toClient = (c: number) => this.convertDebuggerColumnToClient(c);
      const modules = moduleTargets(this.info?.modules ?? [], args.text, column > 0 ? column - 1 : args.text.length, toClient);
      response.body = { targets: [...completionTargets(r, toClient), ...modules] };
      this.sendResponse(response);
    }, true);
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
    const knownIds = new Set([...this.bps.editorIds(), ...this.dataBps.ids()]);
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
        const fn = hit.length > 0 && hit.every((id) => this.bps.isFunction(id));
        reason = fn ? "function breakpoint" : "breakpoint";
        description = `Paused on breakpoint at ${where}`;
        if (e.text) text = e.text;
        break;
      }
      case StopReason.STOP_REASON_DATA_BREAKPOINT:
        reason = "data breakpoint";
        description = e.text || (hit.length ? `Paused on a data breakpoint at ${where}` : `Paused at ${where} on a data breakpoint of another client`);
        break;
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
        ({ reason, description } = timeTravelStop(e.reason, s, hit.length > 0, e.text) ?? { reason: "pause", description: `Paused at ${where}` });
    }
    // a step, pause or entry stop where a data breakpoint became true too: say so
    if (reason !== "data breakpoint" && reason !== "exception" && e.text && hit.some((id) => this.dataBps.has(id))) description += ` · ${e.text}`;
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

  /**
   * The paused threads a resume of `main` takes along: none with `singleThread`, else every other
   * paused thread of this debug session (as js-debug and debugpy do; VS Code never sends
   * singleThread, so its Continue resumes them all, and the `continueAll` request says so).
   */
  private alongWith(main: RtSession, singleThread: boolean | undefined): RtSession[] {
    if (singleThread) return [];
    return this.runtime.list().filter((x) => x.id !== main.id && x.info.state === SessionState.SESSION_STATE_PAUSED);
  }

  /** Resumes `others` along with a request; a failure of one of them (it resumed meanwhile) is only logged. */
  private resumeAlong(others: RtSession[]): Promise<void> {
    return Promise.all(
      others.map((o) =>
        this.runtime.continue(o.id).catch((e) => logger.verbose(`djinn: continue of s${o.id} along with the request: ${message(e)}`)),
      ),
    ).then(() => undefined);
  }

  protected override continueRequest(response: DebugProtocol.ContinueResponse, args: DebugProtocol.ContinueArguments): void {
    this.handle(response, ErrorIds.server, () => {
      const s = this.session(args.threadId);
      this.focus(s.id);
      this.userDriven.add(s.id);
      const others = this.alongWith(s, args.singleThread);
      const all = !args.singleThread;
      this.resumeRequest(response, [s.id, ...others.map((o) => o.id)], async () => {
        await Promise.all([this.runtime.continue(s.id), this.resumeAlong(others)]);
      }, { allThreadsContinued: all });
    });
  }

  protected override nextRequest(response: DebugProtocol.NextResponse, args: DebugProtocol.NextArguments): void {
    this.stepRequest(response, args, () => StepKind.STEP_KIND_LAYER);
  }

  protected override stepInRequest(response: DebugProtocol.StepInResponse, args: DebugProtocol.StepInArguments): void {
    this.stepRequest(response, args, () => StepKind.STEP_KIND_SUBLAYER);
  }

  /**
   * Step out of what it stopped in: from a sub-point (layers.N.attn, layers.N.mlp) to the end of
   * the layer (the server's LAYER step: before layers.N+1); from a layer point to the end of the
   * pass (TOKEN: before layer 0 of the next forward pass).
   */
  protected override stepOutRequest(response: DebugProtocol.StepOutResponse, args: DebugProtocol.StepOutArguments): void {
    this.stepRequest(response, args, (s) => (s.info.position && s.info.position.point !== StopPoint.STOP_POINT_LAYER ? StepKind.STEP_KIND_LAYER : StepKind.STEP_KIND_TOKEN));
  }

  private stepRequest(response: DebugProtocol.Response, args: { threadId: number; singleThread?: boolean }, kind: (s: RtSession) => StepKind): void {
    this.handle(response, ErrorIds.server, () => {
      const s = this.session(args.threadId);
      this.focus(s.id);
      this.userDriven.add(s.id);
      const others = this.alongWith(s, args.singleThread);
      const k = kind(s);
      // the client marks only the stepped thread as running: the others get a `continued`
      const after = others.length ? () => this.send(new ContinuedEvent(s.id, true)) : undefined;
      this.resumeRequest(response, [s.id, ...others.map((o) => o.id)], async () => {
        await Promise.all([this.runtime.step(s.id, k), this.resumeAlong(others)]);
      }, undefined, after);
    });
  }

  protected override stepBackRequest(response: DebugProtocol.StepBackResponse, args: DebugProtocol.StepBackArguments): void {
    this.timeTravelRequest(response, args?.threadId, "stepBack");
  }

  protected override reverseContinueRequest(response: DebugProtocol.ReverseContinueResponse, args: DebugProtocol.ReverseContinueArguments): void {
    this.timeTravelRequest(response, args?.threadId, "reverseContinue");
  }

  protected override restartFrameRequest(response: DebugProtocol.RestartFrameResponse, args: DebugProtocol.RestartFrameArguments): void {
    this.handle(response, ErrorIds.server, () => {
      const { session: s, kind } = this.frames.lookup(args?.frameId);
      this.focus(s.id);
      this.userDriven.add(s.id);
      this.resumeRequest(response, [s.id], () => restartFrame(this.runtime, s, kind));
    });
  }

  /** timeTravel.ts: the thread goes back inside its pass; its stopped event follows the response. */
  private timeTravelRequest(response: DebugProtocol.Response, threadId: unknown, command: TimeTravelCommand): void {
    this.handle(response, ErrorIds.server, () => {
      const s = this.session(threadId);
      this.focus(s.id);
      this.userDriven.add(s.id);
      this.resumeRequest(response, [s.id], () => goBack(this.runtime, s, command));
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

  /** `continueAll`: every paused thread of this debug session goes on. Answers `{ threads }`, how many. */
  private continueAll(response: DebugProtocol.Response): void {
    const paused = this.runtime.list().filter((x) => x.info.state === SessionState.SESSION_STATE_PAUSED);
    const after = paused.length ? () => this.send(new ContinuedEvent(paused[0].id, true)) : undefined;
    this.resumeRequest(response, paused.map((x) => x.id), async () => {
      const results = await Promise.allSettled(paused.map((x) => this.runtime.continue(x.id)));
      const failed = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
      if (failed.length === paused.length && failed.length) throw failed[0].reason;
      for (const f of failed) logger.verbose(`djinn: continueAll: ${message(f.reason)}`);
    }, { threads: paused.length }, after);
  }

  /** `pauseAll`: every running thread of this debug session stops where it is. Answers `{ threads }`, how many. */
  private async pauseAll(response: DebugProtocol.Response): Promise<void> {
    const running = this.runtime.list().filter((x) => x.info.state !== SessionState.SESSION_STATE_PAUSED);
    const results = await Promise.allSettled(running.map((x) => this.runtime.pause(x.id)));
    const failed = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    if (failed.length === running.length && failed.length) throw failed[0].reason;
    response.body = { threads: running.length - failed.length };
    this.sendResponse(response);
  }

  protected override terminateThreadsRequest(response: DebugProtocol.TerminateThreadsResponse, args: DebugProtocol.TerminateThreadsArguments): void {
    this.handle(response, ErrorIds.server, async () => {
      const ids = (args.threadIds ?? []).map((id) => this.session(id).id);
      await Promise.all(ids.map((id) => this.runtime.client!.closeSession(id)));
      this.sendResponse(response);
    });
  }

  // ------------------------------------------------------------- stack

  protected override stackTraceRequest(response: DebugProtocol.StackTraceResponse, args: DebugProtocol.StackTraceArguments): void {
    this.handle(response, ErrorIds.noSession, () => {
      const s = this.session(args.threadId);
      const frames = stackFrames(s, this.frames, this.outline);
      markRestartable(frames, s, (id) => this.frames.lookup(id).kind);
      if (frames.length) this.prefetch(s);
      const start = args.startFrame ?? 0;
      const levels = args.levels && args.levels > 0 ? args.levels : frames.length;
      response.body = { stackFrames: frames.slice(start, start + levels), totalFrames: frames.length };
      this.sendResponse(response);
    });
  }

  protected override sourceRequest(response: DebugProtocol.SourceResponse, args: DebugProtocol.SourceArguments): void {
    this.handle(response, ErrorIds.badRequest, () => {
      const ref = args.source?.sourceReference ?? args.sourceReference;
      if (ref !== OUTLINE_REF || !this.outline.text) throw new VariableError(`no source with reference ${ref}`);
      response.body = { content: this.outline.text, mimeType: "text/x-djinn-model" };
      this.sendResponse(response);
    });
  }

  protected override scopesRequest(response: DebugProtocol.ScopesResponse, args: DebugProtocol.ScopesArguments): void {
    this.handle(response, ErrorIds.noSession, () => {
      const { session: s, kind } = this.frames.lookup(args.frameId);
      this.focus(s.id);
      if (s.info.state !== SessionState.SESSION_STATE_PAUSED) throw new VariableError(`session ${s.id} is ${stateName(s.info.state)}: scopes exist only while it is paused`);
      this.prefetch(s);
      response.body = { scopes: this.vars.scopes(s.id, kind) };
      this.sendResponse(response);
    });
  }

  protected override variablesRequest(response: DebugProtocol.VariablesResponse, args: DebugProtocol.VariablesArguments): void {
    this.handle(response, ErrorIds.variables, async () => {
      if (typeof args.variablesReference !== "number") throw new VariableError("variablesReference must be a number");
      response.body = { variables: await this.vars.variables(args) };
      this.sendResponse(response);
    }, true);
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
    }, true);
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
    }, true);
  }

  // ------------------------------------------------------------- cancel

  /** `cancel` of a request (its seq) or of a progress it started: that request answers "cancelled". */
  protected override cancelRequest(response: DebugProtocol.CancelResponse, args: DebugProtocol.CancelArguments): void {
    const seq = args?.requestId ?? (args?.progressId !== undefined ? this.cancels.requestOf(args.progressId) : undefined);
    if (seq !== undefined) this.cancels.cancel(seq);
    this.sendResponse(response);
  }

  /** A request cancelled is answered once, with "cancelled": its late answer is dropped. */
  override sendResponse(response: DebugProtocol.Response): void {
    if (this.cancelledSeqs.has(response.request_seq)) {
      if (response.success || response.message !== "cancelled") return;
    }
    super.sendResponse(response);
  }

  // ------------------------------------------------------------- custom

  protected override customRequest(command: string, response: DebugProtocol.Response, args: any): void {
    this.handle(response, ErrorIds.badRequest, async () => {
      switch (command) {
        case "continueAll":
          return this.continueAll(response);
        case "pauseAll":
          return this.pauseAll(response);
        case "djinn/outline": {
          if (!this.outline.text) throw new VariableError("the model is not known yet: launch or attach first");
          const path = args && typeof args.path === "string" ? args.path : undefined;
          if (path) this.runtime.writeFile(path, this.outline.text);
          response.body = { text: this.outline.text, path: path ?? this.outline.path, model: this.info?.model?.name };
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

