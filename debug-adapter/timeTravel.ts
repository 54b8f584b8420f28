// Time travel inside a forward pass, on the DAP side: stepBack (the previous stop point of the
// pass), reverseContinue (the previous breakpoint of the pass, or its start) and restartFrame on
// the pass frame (layers.0 of the pass). The server does the work (StepBack, RestartPass: see
// docs/time-travel.md); a session keeps its pass's stop points only when it was created with
// the launch attribute `timeTravel: true`. Each request is answered first, then the server's
// STOPPED event (reason STEP_BACK or RESTART) becomes the DAP stopped event.
import type { DebugProtocol } from "@vscode/debugprotocol";
import { StepBackTarget, type HistoryInfo } from "../client";
import { moduleName } from "./lines";
import { StopReason, type DjinnRuntime, type RtSession } from "./runtime";
import type { FrameKind } from "./stack";
import { VariableError } from "./variables";

export const TIME_TRAVEL_CAPABILITIES = { supportsStepBack: true, supportsRestartFrame: true } as const;

export type TimeTravelCommand = "stepBack" | "reverseContinue";

/** A session that can go back: created with time travel (the server reports its history). */
function checkHistory(s: RtSession, what: string): void {
  if (!s.info.history) {
    throw new VariableError(`session ${s.id} keeps no history, so it cannot ${what}: set the launch attribute "timeTravel": true (docs/time-travel.md)`);
  }
}

/** stepBack / reverseContinue of a paused session's thread. */
export async function goBack(rt: DjinnRuntime, s: RtSession, command: TimeTravelCommand): Promise<void> {
  checkHistory(s, command === "stepBack" ? "step back" : "reverse continue");
  const to = command === "stepBack" ? StepBackTarget.STEP_BACK_TARGET_PREVIOUS_POINT : StepBackTarget.STEP_BACK_TARGET_PREVIOUS_BREAKPOINT;
  await rt.client!.stepBack({ sessionId: s.id, to });
}

/** restartFrame: only the pass frame restarts (the pass from layers.0); the others say where to click. */
export async function restartFrame(rt: DjinnRuntime, s: RtSession, kind: FrameKind): Promise<void> {
  if (kind !== "pass") {
    throw new VariableError(`only the pass frame (prefill / decode of token k) restarts: it re-runs the pass from layers.0; to go back one stop point, use Step Back`);
  }
  checkHistory(s, "restart its pass");
  await rt.client!.restartPass(s.id);
}

/** Marks the pass frame restartable (canRestart) for a session with history; no other frame is. */
export function markRestartable(frames: DebugProtocol.StackFrame[], s: RtSession, kindOf: (frameId: number) => FrameKind): void {
  const history = !!s.info.history;
  for (const f of frames) f.canRestart = history && kindOf(f.id) === "pass";
}

/** The DAP stopped event's reason and description for the server's STEP_BACK / RESTART stops; undefined for other stops. */
export function timeTravelStop(reason: StopReason, s: RtSession, hit: boolean, text: string): { reason: string; description: string } | undefined {
  const p = s.info.position!;
  const where = moduleName(p.layer, p.point);
  if (reason === StopReason.STOP_REASON_RESTART) return { reason: "restart", description: `Restarted the pass: at ${where}` };
  if (reason !== StopReason.STOP_REASON_STEP_BACK) return undefined;
  const note = /no breakpoint before/.test(text) ? " (no breakpoint before it in this pass)" : "";
  return { reason: hit ? "breakpoint" : "step", description: `Stepped back to ${where}${note}` };
}

/** The session scope's "time travel" line: `12 stop points of this pass to go back to · 11 kept (84.0 KB, all on the device) · cap 1.0 GB`. */
export function historyLine(h: HistoryInfo): string {
  const size = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} KB`);
  const where = h.bytes === 0 ? "" : h.deviceBytes === h.bytes ? ", all on the device" : h.deviceBytes === 0 ? ", on the host" : `, ${size(h.deviceBytes)} on the device`;
  const dropped = h.dropped ? ` · ${h.dropped} dropped for the cap (re-run when gone back to)` : "";
  return `${h.points} stop point${h.points === 1 ? "" : "s"} of this pass to go back to · ${h.snapshots} kept (${size(h.bytes)}${where})${dropped} · cap ${size(h.capBytes)}`;
}
