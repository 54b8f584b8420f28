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
  /** the disk tier (0: none), what spilled sessions hold of it, moves each way, measured GB/s (0: none yet) */
  spill?: { size: number; used: number; outs: number; ins: number; writeGbps: number; readGbps: number };
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
