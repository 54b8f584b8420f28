// Data breakpoints ("break when a condition over a tensor becomes true"): what
// dataBreakpointInfo answers for a variable, the editor's data breakpoints as the adapter keeps
// them, and the server's verdicts. A tensor changes at every stop point, so "break on value
// change" means nothing here: each data breakpoint needs a condition (VS Code's Break on Value
// Change sends none; the user adds one with Edit Condition). The server checks it at every stop
// point where the tensors it names exist and stops where it becomes true.
import type { DebugProtocol } from "@vscode/debugprotocol";
import { normalizeCondition } from "./breakpoints";
import type { BpStatus, RtDataBreakpoint } from "./runtime";

export interface DataBpEntry {
  id: number;
  key: string;
  tensor: string;
  condition?: string;
  hitCondition?: string;
  /** why it is not sent to the server, found without it */
  error?: string;
  verified: boolean;
  message?: string;
}

/** A condition to suggest for a tensor (the server's own example). */
export function exampleCondition(tensor: string): string {
  return `max(abs(${tensor})) > 1000`;
}

/** dataBreakpointInfo's answer for a watchable tensor, or for one that is not (dataId null, the reason). */
export function dataBreakpointInfo(w: { tensor: string } | { why: string }): DebugProtocol.DataBreakpointInfoResponse["body"] {
  if ("why" in w) return { dataId: null, description: w.why };
  return {
    dataId: w.tensor,
    description: `when a condition over ${w.tensor} becomes true (add one with Edit Condition, e.g. ${exampleCondition(w.tensor)})`,
    accessTypes: ["write"],
    canPersist: false,
  };
}

export class DataBreakpointStore {
  private entries: DataBpEntry[] = [];
  /** sessions exist: a verdict is the server's, not "pending" */
  sessionsCreated = false;

  /** `newId`: the breakpoint store's ids (one id space for every kind: hitBreakpointIds name any of them) */
  constructor(private readonly newId: () => number, private readonly announce: (bp: DebugProtocol.Breakpoint) => void) {}

  ids(): Set<number> {
    return new Set(this.entries.map((e) => e.id));
  }

  has(id: number): boolean {
    return this.entries.some((e) => e.id === id);
  }

  /** setDataBreakpoints: the whole new set (an unchanged one keeps its id, so its hit count survives). */
  set(requested: DebugProtocol.DataBreakpoint[]): DataBpEntry[] {
    const previous = this.entries;
    this.entries = requested.map((b) => {
      const tensor = typeof b?.dataId === "string" ? b.dataId.trim() : "";
      const condition = normalizeCondition(b?.condition);
      const hitCondition = b?.hitCondition?.trim() || undefined;
      const key = `${tensor}|${condition ?? ""}|${hitCondition ?? ""}|${b?.accessType ?? ""}`;
      const old = previous.find((p) => p.key === key);
      const e: DataBpEntry = { id: old?.id ?? this.newId(), key, tensor, condition, hitCondition, verified: false };
      if (!tensor) e.error = "a data breakpoint needs a dataId: a tensor such as hidden";
      else if (b.accessType && b.accessType !== "write") e.error = `only writes can be watched (a tensor is written at every stop point); got access type '${b.accessType}'`;
      else if (!condition) {
        e.error = `needs a condition: right-click this data breakpoint in BREAKPOINTS, Edit Condition, e.g. ${exampleCondition(tensor)} (${tensor} changes at every stop point; it stops where the condition becomes true)`;
      }
      if (e.error) e.message = e.error;
      else if (old && this.sessionsCreated) {
        e.verified = old.verified;
        e.message = old.message;
      } else e.message = this.sessionsCreated ? undefined : "pending: verified by the Djinn server once the sessions exist";
      return e;
    });
    return this.entries;
  }

  /** What the server gets: every data breakpoint with a tensor and a condition. */
  union(): RtDataBreakpoint[] {
    return this.entries.filter((e) => !e.error).map((e) => ({ id: e.id, tensor: e.tensor, condition: e.condition!, hitCondition: e.hitCondition }));
  }

  toDap(e: DataBpEntry): DebugProtocol.Breakpoint {
    const bp: DebugProtocol.Breakpoint = { id: e.id, verified: e.verified };
    if (e.message) bp.message = e.message;
    return bp;
  }

  /** The server's verdicts, by id (a verified one says where it is checked). */
  applyStatuses(statuses: Map<number, BpStatus> | undefined, announce: boolean): void {
    for (const e of this.entries) {
      if (e.error) continue;
      const st = statuses?.get(e.id);
      if (!st) continue;
      const changed = e.verified !== st.verified || e.message !== st.message;
      e.verified = st.verified;
      e.message = st.message;
      if (changed && announce) this.announce(this.toDap(e));
    }
  }
}
