// The call stack of a paused session, and the ids of its frames. Innermost first:
//   module   layers.20.attn · attention output   (where it stopped)
//   layer    layers.20                            (only when stopped inside a layer)
//   pass     prefill · 24 tokens at positions 0..23 / decode of token 3 at position 26
//   session  session 7 · "The quick brown fox"
// Each kind of frame has its own scopes (variables.ts). Frame ids are new at every stop (the
// same stop keeps its ids): a frame of an earlier stop is refused with a clear error, never
// answered from the new stop.
import type { DebugProtocol } from "@vscode/debugprotocol";
import { Phase } from "../client";
import { moduleName } from "./lines";
import type { ModelOutline } from "./outline";
import { SessionState, StopPoint, stateName, type DjinnRuntime, type RtSession } from "./runtime";
import { VariableError } from "./variables";

export type FrameKind = "module" | "layer" | "pass" | "session";

/** frame ids of earlier stops remembered (to answer them with a clear error) */
const OLD_FRAMES_KEPT = 10_000;

export interface FrameRef {
  sessionId: number;
  epoch: number;
  kind: FrameKind;
}

export class FrameStore {
  /** frame id -> the stop it belongs to; ids are unique per stop, never reused */
  private readonly frames = new Map<number, FrameRef>();
  /** session -> the frame ids of its current stop, by kind */
  private readonly current = new Map<number, { epoch: number; ids: Map<FrameKind, number> }>();
  /** frame ids of earlier stops -> their session (bounded) */
  private readonly old = new Map<number, number>();
  private nextId = 1;

  constructor(private readonly rt: DjinnRuntime) {}

  /** The id of a session's frame of this kind at its current stop (allocated once per stop). */
  id(s: RtSession, kind: FrameKind): number {
    let cur = this.current.get(s.id);
    if (!cur || cur.epoch !== s.epoch) {
      this.retire(s.id);
      cur = { epoch: s.epoch, ids: new Map() };
      this.current.set(s.id, cur);
    }
    let id = cur.ids.get(kind);
    if (id === undefined) {
      id = this.nextId++;
      cur.ids.set(kind, id);
      this.frames.set(id, { sessionId: s.id, epoch: s.epoch, kind });
    }
    return id;
  }

  /** The session left the stop its frames belong to: they are remembered only to be refused clearly. */
  retire(sessionId: number): void {
    const cur = this.current.get(sessionId);
    if (!cur) return;
    this.current.delete(sessionId);
    for (const id of cur.ids.values()) {
      this.frames.delete(id);
      this.old.set(id, sessionId);
    }
    for (const id of this.old.keys()) {
      if (this.old.size <= OLD_FRAMES_KEPT) break;
      this.old.delete(id);
    }
  }

  /** The frame of a session's current stop; a frame of an earlier stop is refused, never read at the new one. */
  lookup(frameId: unknown): { session: RtSession; kind: FrameKind } {
    if (typeof frameId !== "number" || !Number.isInteger(frameId)) throw new VariableError(`unknown frameId ${JSON.stringify(frameId)}`);
    const f = this.frames.get(frameId);
    const stale = f ? (this.rt.sessions.get(f.sessionId)?.epoch === f.epoch ? undefined : f.sessionId) : this.old.get(frameId);
    if (stale !== undefined) {
      const s = this.rt.sessions.get(stale);
      const now = !s || s.ended
        ? "it has ended"
        : s.info.state === SessionState.SESSION_STATE_PAUSED && s.info.position
          ? `it is paused at ${moduleName(s.info.position.layer, s.info.position.point)} now`
          : `it is ${stateName(s.info.state)} now`;
      throw new VariableError(`frame ${frameId} is from an earlier stop of session ${stale} (${now}): ask for the stack of thread ${stale} again`);
    }
    if (!f) throw new VariableError(`unknown frameId ${frameId}`);
    const session = this.rt.sessions.get(f.sessionId);
    if (!session) throw new VariableError(`no thread ${f.sessionId}`);
    return { session, kind: f.kind };
  }
}

/** The frames of a paused session (none while it runs). */
export function stackFrames(s: RtSession, frames: FrameStore, outline: ModelOutline): DebugProtocol.StackFrame[] {
  const i = s.info;
  if (i.state !== SessionState.SESSION_STATE_PAUSED || !i.position) return [];
  const p = i.position;
  const mod = moduleName(p.layer, p.point);
  const frame = (kind: FrameKind, name: string, module: string, hint?: "normal" | "label" | "subtle"): DebugProtocol.StackFrame => {
    const { source, line } = outline.frameSource(module);
    const f: DebugProtocol.StackFrame = { id: frames.id(s, kind), name, source, line, column: 1 };
    if (hint) f.presentationHint = hint;
    return f;
  };
  const out: DebugProtocol.StackFrame[] = [];
  const what = p.point === StopPoint.STOP_POINT_ATTN ? "attention output" : p.point === StopPoint.STOP_POINT_MLP ? "MLP output" : "input";
  out.push(frame("module", `${mod} · ${what}`, mod));
  if (p.point !== StopPoint.STOP_POINT_LAYER) out.push(frame("layer", `layers.${p.layer}`, `layers.${p.layer}`));
  out.push(frame("pass", passName(s), "embed_tokens", "subtle"));
  const prompt = i.prompt ? ` · ${JSON.stringify(i.prompt.length > 40 ? i.prompt.slice(0, 40) + "…" : i.prompt)}` : "";
  const session = frame("session", `session ${s.id}${prompt}`, "", "subtle");
  session.line = 1;
  out.push(session);
  return out;
}

/** `prefill · 24 tokens at positions 0..23` or `decode of token 3 at position 26`. */
export function passName(s: RtSession): string {
  const p = s.info.position!;
  const last = p.inputPos + Math.max(p.numTokens, 1) - 1;
  return p.phase === Phase.PHASE_DECODE
    ? `decode of token ${p.tokenIndex} at position ${p.inputPos}`
    : `prefill · ${p.numTokens} token${p.numTokens === 1 ? "" : "s"} at positions ${p.inputPos}..${last}`;
}
