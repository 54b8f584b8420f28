// Messages from the extension host to the VRAM panel webview: no imports, so both sides can
// use these types (the host in src/monitor.ts, the webview in media/vram/main.ts).

/** What the webview draws: one compact telemetry sample (bytes, unix seconds). */
export interface Sample {
  t: number;
  budget: number;
  weights: number;
  workspace: number;
  residentKv: number;
  swappedKv: number;
  accounted: number;
  nvml: number;
  allocReserved: number;
  hostPoolUsed: number;
  hostPool: number;
  swapOuts: number;
  swapIns: number;
  /** [id, state name, kv location name, layer, point] */
  sessions: Array<[number, string, string, number, string]>;
}

export interface SwapMark {
  t: number;
  dir: "out" | "in";
  sessionId: number;
  bytes: number;
  ms: number;
  gbps: number;
}
