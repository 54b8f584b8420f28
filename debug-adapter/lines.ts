// What the adapter writes for people: thread names (CALL STACK) and console lines (tokens,
// swaps, ends). Plain functions of a session's state; no DAP, no gRPC.
import { KvLocation, SessionState, StopPoint, stateName, type RtSession } from "./runtime";

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
    case KvLocation.KV_LOCATION_DISK: return " · disk";
    case KvLocation.KV_LOCATION_MOVING_TO_DISK: return " · →disk";
    case KvLocation.KV_LOCATION_MOVING_FROM_DISK: return " · disk→host";
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

/** `s3 KV → disk: 12.00 MB in 3.10 ms (3.87 GB/s)`: a swapped session's state moved between the host pool and the server's disk. */
export function spillLine(sessionId: number, direction: "to disk" | "from disk", bytes: number, ms: number): string {
  const rate = ms > 0 ? ` (${(bytes / 1e6 / ms).toFixed(2)} GB/s)` : "";
  return `s${sessionId} KV ${direction === "to disk" ? "host → disk" : "disk → host"}: ${(bytes / 1e6).toFixed(2)} MB in ${ms.toFixed(2)} ms${rate}`;
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

export function moduleName(layer: number, point: StopPoint): string {
  return point === StopPoint.STOP_POINT_ATTN ? `layers.${layer}.attn` : point === StopPoint.STOP_POINT_MLP ? `layers.${layer}.mlp` : `layers.${layer}`;
}

