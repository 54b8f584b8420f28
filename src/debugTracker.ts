// Watches the DAP traffic of djinn debug sessions: stops and resumes (the tensor viewer
// refreshes or marks itself stale), and, once a session is launched, where its server is
// (offered to the monitor, so the VRAM panel and the status bar follow the debug session).
import * as vscode from "vscode";
import type { Monitor } from "./monitor";

interface ThreadEvt {
  session: vscode.DebugSession;
  threadId?: number;
}

export interface DebugServer {
  address: string;
  local: boolean;
  model?: string;
  device?: string;
  nLayers?: number;
}

export class DebugTracker implements vscode.Disposable {
  private readonly subs: vscode.Disposable[] = [];
  private readonly stopped = new vscode.EventEmitter<ThreadEvt>();
  private readonly resumed = new vscode.EventEmitter<ThreadEvt>();
  private readonly exited = new vscode.EventEmitter<ThreadEvt>();
  readonly onStopped = this.stopped.event;
  readonly onResumed = this.resumed.event;
  readonly onThreadExited = this.exited.event;
  /** Servers of the live djinn debug sessions, by debug session id. */
  readonly servers = new Map<string, DebugServer>();

  constructor(private readonly monitor: Monitor, private readonly log: (line: string) => void) {
    this.subs.push(
      vscode.debug.registerDebugAdapterTrackerFactory("djinn", { createDebugAdapterTracker: (s) => this.tracker(s) }),
      vscode.debug.onDidTerminateDebugSession((s) => {
        if (s.type !== "djinn") return;
        this.servers.delete(s.id);
        this.monitor.withdraw(`debug:${s.id}`);
      }),
    );
  }

  private tracker(session: vscode.DebugSession): vscode.DebugAdapterTracker {
    return {
      onWillReceiveMessage: (m: { type: string; command?: string; arguments?: { threadId?: number; singleThread?: boolean } }) => {
        if (m.type !== "request") return;
        if (["continue", "next", "stepIn", "stepOut", "reverseContinue"].includes(m.command ?? "")) {
          this.resumed.fire({ session, threadId: m.arguments?.threadId });
        }
      },
      onDidSendMessage: (m: { type: string; event?: string; command?: string; success?: boolean; body?: Record<string, unknown> }) => {
        if (m.type === "event") {
          const b = m.body ?? {};
          if (m.event === "stopped") this.stopped.fire({ session, threadId: b.allThreadsStopped ? undefined : (b.threadId as number) });
          else if (m.event === "continued") this.resumed.fire({ session, threadId: b.allThreadsContinued ? undefined : (b.threadId as number) });
          else if (m.event === "thread" && b.reason === "exited") this.exited.fire({ session, threadId: b.threadId as number });
        } else if (m.type === "response" && (m.command === "launch" || m.command === "attach") && m.success) {
          void this.learnServer(session);
        }
      },
    };
  }

  private async learnServer(session: vscode.DebugSession): Promise<void> {
    try {
      const r = await session.customRequest("djinn/serverInfo");
      if (!r?.address) return;
      this.servers.set(session.id, r);
      const c = session.configuration;
      const token = typeof c.token === "string" && c.token ? c.token : undefined;
      const caFile = !r.local && typeof c.caFile === "string" && c.caFile ? c.caFile : undefined;
      const windows = c.__djinnWindowServer === r.address;
      // the window's server: the same address as the palette's, so the same history (no reconnect)
      this.monitor.offer({ id: `debug:${session.id}`, address: r.address, token, caFile, label: windows ? `the window's server (debug session '${session.name}')` : `debug session '${session.name}'` });
    } catch (e) {
      this.log(`debug session ${session.name}: djinn/serverInfo failed: ${(e as Error).message}`);
    }
  }

  dispose(): void {
    for (const s of this.subs) s.dispose();
    this.stopped.dispose();
    this.resumed.dispose();
    this.exited.dispose();
  }
}
