// The VRAM panel's view of the server's disk tier (--spill-gb: a swapped session may sit in a
// spill file on the server's disk) and of where each session's KV is. Pure: unit-tested.
import type { Sample } from "../shared/vramMessages";

const gb = (bytes: number) => {
  const g = bytes / 1e9;
  return g >= 10 ? g.toFixed(1) : g >= 1 ? g.toFixed(2) : g.toFixed(3);
};

/** The disk row's cells [label, value, class], when the server has a disk tier; none otherwise. */
export function diskCells(s: Sample): Array<[label: string, value: string, cls: string]> {
  const d = s.spill;
  if (!d || d.size <= 0) return [];
  const rate = (gbps: number) => (gbps > 0 ? `${gbps.toFixed(2)} GB/s` : "–");
  return [
    ["disk spill", `${gb(d.used)} / ${gb(d.size)} GB`, "disk"],
    ["spills to / from disk", `${d.outs} / ${d.ins}`, ""],
    ["disk write / read", `${rate(d.writeGbps)} / ${rate(d.readGbps)}`, ""],
  ];
}

/** The strip's colour class of a session: its state and where its KV is. */
export function cellClass(state: string, kv: string): string {
  if (kv === "moving-out" || kv === "moving-in" || kv === "moving-to-disk" || kv === "moving-from-disk") return "moving";
  if (kv === "disk") return "paused-disk";
  if (state === "paused") return kv === "host" ? "paused-host" : "paused-device";
  if (state === "running") return kv === "host" ? "paused-host" : "running";
  if (state === "created") return "created";
  return "finished";
}
