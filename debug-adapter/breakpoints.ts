// The editor's breakpoints as the adapter keeps them: gutter breakpoints of outline files,
// function breakpoints, the launch configuration's `breakpoints`, and the exception filters.
// Each is checked here for what can be checked without the server (a module line, a stop
// point, a layer that exists); the server's verdicts come back through applyStatuses. The
// union of all of them is what every session gets (runtime.setBreakpoints).
import type { DebugProtocol } from "@vscode/debugprotocol";
import { isStopTarget, moduleToStop, type ParsedOutline, type StopTarget } from "./outline";
import type { BpStatus, RtBreakpoint, RtTraps } from "./runtime";

export type BpOrigin = "source" | "function" | "launch";

export interface BpEntry {
  id: number;
  origin: BpOrigin;
  key: string;
  target?: StopTarget;
  /** why it cannot be a breakpoint, found without the server */
  error?: string;
  condition?: string;
  hitCondition?: string;
  /** a logpoint (DAP logMessage): the server prints it there instead of stopping */
  logMessage?: string;
  /** the line it is on (a breakpoint on a comment or blank line moves to the next module line) */
  line?: number;
  source?: DebugProtocol.Source;
  /** the model its outline file names in its header (a gutter breakpoint of a generated outline) */
  outlineModel?: string;
  verified: boolean;
  message?: string;
}

export const EXCEPTION_FILTERS = ["nan", "inf", "normSpike"] as const;
export const DEFAULT_NORM_SPIKE = 10;

/** `phase == decode` -> `phase == "decode"` (the server's language wants a string). */
export function normalizeCondition(c: string | undefined): string | undefined {
  if (!c || !c.trim()) return undefined;
  return c.replace(/\b(phase\s*[!=]=\s*)(prefill|decode)\b/g, '$1"$2"');
}

/** Is this module line a stop point (not norm / lm_head, not a layer the model lacks)? */
function stopsAt(module: string, nLayers?: number): boolean {
  return isStopTarget(moduleToStop(module, nLayers));
}

/**
 * Where a gutter breakpoint on `line` goes: that line when it names a module, else the next
 * line that names one (as debuggers move a breakpoint off a blank line); undefined past the last.
 */
export function resolveLine(parsed: ParsedOutline, line: number): { line: number; module: string } | undefined {
  const here = parsed.moduleAt.get(line);
  if (here) return { line, module: here };
  let best: number | undefined;
  for (const l of parsed.moduleAt.keys()) if (l > line && (best === undefined || l < best)) best = l;
  return best === undefined ? undefined : { line: best, module: parsed.moduleAt.get(best)! };
}

/** The lines of [line, endLine] where a breakpoint stops a session (breakpointLocations). */
export function stopLines(parsed: ParsedOutline, line: number, endLine: number, nLayers?: number): number[] {
  return [...parsed.moduleAt.entries()]
    .filter(([l, m]) => l >= line && l <= endLine && stopsAt(m, nLayers))
    .map(([l]) => l)
    .sort((a, b) => a - b);
}

export class BreakpointStore {
  private nextId = 1;
  private readonly source = new Map<string, BpEntry[]>();
  private functions: BpEntry[] = [];
  private launch: BpEntry[] = [];
  traps: RtTraps = { nan: false, inf: false, normSpike: 0 };
  /** the model's layer count, once known */
  nLayers?: number;
  /** the model's name, once known: gutter breakpoints of another model's outline do not apply */
  modelName?: string;
  /** sessions exist: a breakpoint's verdict is the server's, not "pending" */
  sessionsCreated = false;

  /** `changed` breakpoint events: a breakpoint the editor set changed its verdict */
  constructor(private readonly announce: (bp: DebugProtocol.Breakpoint) => void) {}

  all(): BpEntry[] {
    return [...[...this.source.values()].flat(), ...this.functions, ...this.launch];
  }

  /** What the server gets: every breakpoint that names a stop point. */
  union(): RtBreakpoint[] {
    return this.all()
      .filter((e) => e.target)
      .map((e) => ({ id: e.id, layer: e.target!.layer, point: e.target!.point, condition: e.condition, hitCondition: e.hitCondition, logMessage: e.logMessage }));
  }

  /** A new id, unique among every kind of breakpoint of this adapter (data breakpoints draw from it too). */
  newId(): number {
    return this.nextId++;
  }

  /** The breakpoint with this id (a logpoint's output names it). */
  byId(id: number): BpEntry | undefined {
    return this.all().find((e) => e.id === id);
  }

  /** Ids the editor knows (a launch attribute's breakpoints are not the editor's). */
  editorIds(): Set<number> {
    return new Set(this.all().filter((x) => x.origin !== "launch").map((x) => x.id));
  }

  isFunction(id: number): boolean {
    return this.functions.some((b) => b.id === id);
  }

  private make(origin: BpOrigin, module: string | undefined, extra: Partial<BpEntry> = {}, previous: BpEntry[] = []): BpEntry {
    const condition = normalizeCondition(extra.condition);
    const hitCondition = extra.hitCondition?.trim() || undefined;
    const logMessage = extra.logMessage || undefined;
    const key = `${module ?? ""}|${extra.line ?? ""}|${condition ?? ""}|${hitCondition ?? ""}|${logMessage ?? ""}`;
    const old = previous.find((p) => p.key === key);
    // an unchanged breakpoint keeps its id, so its hit count on the server survives edits of others
    const entry: BpEntry = { id: old?.id ?? this.nextId++, origin, key, condition, hitCondition, logMessage, line: extra.line, source: extra.source, outlineModel: extra.outlineModel, verified: false };
    const otherModel = this.otherModel(entry);
    if (module === undefined) {
      entry.error = extra.error ?? "not a module line";
    } else if (otherModel) {
      entry.error = otherModel;
    } else {
      const t = moduleToStop(module, this.nLayers);
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

  /**
   * Why a gutter breakpoint of another model's outline does not apply here (VS Code sends every
   * open file's breakpoints to every debug session): undefined when it does, or before the model is known.
   */
  private otherModel(e: BpEntry): string | undefined {
    if (!e.outlineModel || !this.modelName || e.outlineModel === this.modelName) return undefined;
    return `this outline is ${e.outlineModel}'s; this debug session runs ${this.modelName}: the breakpoint applies to sessions of ${e.outlineModel} only`;
  }

  toDap(e: BpEntry): DebugProtocol.Breakpoint {
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
    if (changed && announce && e.origin !== "launch") this.announce(this.toDap(e));
  }

  /** The server's verdicts (per breakpoint id); local errors stay as they are. */
  applyStatuses(statuses: Map<number, BpStatus> | undefined, announce: boolean): void {
    for (const e of this.all()) {
      if (e.error) {
        this.setVerified(e, false, e.error, announce);
        continue;
      }
      const st = statuses?.get(e.id);
      if (st) this.setVerified(e, st.verified, st.verified ? undefined : st.message, announce);
    }
  }

  /** Attach with no session yet: well-formed breakpoints are accepted, the server checks them per session later. */
  markPendingAsVerifiedLocally(): void {
    for (const e of this.all()) {
      if (!e.error && !e.verified) this.setVerified(e, true, undefined, true);
    }
  }

  /** The model is known: breakpoints set before, on layers it lacks, are refused now. */
  modelKnown(nLayers: number, name?: string): void {
    this.nLayers = nLayers;
    this.modelName = name;
    for (const e of this.all()) {
      const other = this.otherModel(e);
      if (other && e.target) {
        e.error = other;
        e.target = undefined;
        this.setVerified(e, false, e.error, true);
        continue;
      }
      if (e.target && e.target.layer >= nLayers) {
        e.error = `layer ${e.target.layer} does not exist: the model has layers 0..${nLayers - 1}`;
        e.target = undefined;
        this.setVerified(e, false, e.error, true);
      }
    }
  }

  setLaunch(list: Array<number | string>): void {
    this.launch = list.map((b) => this.make("launch", typeof b === "number" ? `layers.${b}` : b));
  }

  /**
   * The gutter breakpoints of one source. `parsed` is its outline (undefined: not an outline);
   * a breakpoint on a comment or blank line goes to the next module line.
   */
  setSource(source: DebugProtocol.Source, parsed: ParsedOutline | undefined, requested: DebugProtocol.SourceBreakpoint[]): BpEntry[] {
    const key = source.path ?? `ref:${source.sourceReference ?? source.name}`;
    const previous = this.source.get(key) ?? [];
    const entries = requested.map((b) => {
      if (typeof b?.line !== "number") return this.make("source", undefined, { error: "a breakpoint needs a line", source });
      const extra = { line: b.line, condition: b.condition, hitCondition: b.hitCondition, logMessage: typeof b.logMessage === "string" ? b.logMessage : undefined, source, outlineModel: parsed?.model };
      if (!parsed) {
        return this.make("source", undefined, { ...extra, error: `cannot read ${source.path ?? source.name ?? "this source"}: gutter breakpoints go in a model outline (*.djinn)` }, previous);
      }
      const at = resolveLine(parsed, b.line);
      if (!at) return this.make("source", undefined, { ...extra, error: `no module line at or after line ${b.line}` }, previous);
      return this.make("source", at.module, { ...extra, line: at.line }, previous);
    });
    this.source.set(key, entries);
    return entries;
  }

  setFunctions(bps: DebugProtocol.FunctionBreakpoint[]): BpEntry[] {
    const previous = this.functions;
    this.functions = bps.map((b) => {
      const name = typeof b?.name === "string" ? b.name.trim() : "";
      const module = /^\d+$/.test(name) ? `layers.${name}` : name || undefined;
      return this.make("function", module, { condition: b?.condition, hitCondition: b?.hitCondition, error: name ? undefined : "a function breakpoint needs a module name such as layers.10" }, previous);
    });
    return this.functions;
  }

  /** The exception filters (nan, inf, normSpike with its factor); one verdict per filter. */
  setExceptionFilters(args: DebugProtocol.SetExceptionBreakpointsArguments): DebugProtocol.Breakpoint[] {
    const filters = new Map<string, string | undefined>();
    for (const f of args.filters ?? []) filters.set(f, undefined);
    for (const o of args.filterOptions ?? []) filters.set(o.filterId, o.condition);
    const results: DebugProtocol.Breakpoint[] = [];
    const traps: RtTraps = { nan: false, inf: false, normSpike: 0 };
    for (const [f, cond] of filters) {
      if (!(EXCEPTION_FILTERS as readonly string[]).includes(f)) {
        results.push({ verified: false, message: `unknown exception filter '${f}'; known: ${EXCEPTION_FILTERS.join(", ")}` });
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
    return results;
  }
}
