// "Djinn: Continue All Sessions" / "Djinn: Pause All Sessions": one request to the adapter
// (custom `continueAll` / `pauseAll`, answered with `{threads: number}`) instead of one
// continue per thread, from the Call Stack's toolbar, the debug toolbar or the palette.
import * as vscode from "vscode";

export type AllThreadsRequest = "continueAll" | "pauseAll";

/** Programmatic form (tests, other extensions): the debug session to send it to. */
export interface AllThreadsArgs {
  session?: vscode.DebugSession;
}

const DONE: Record<AllThreadsRequest, string> = { continueAll: "continued", pauseAll: "pausing" };

/** Sends the request to the Djinn debug session in view; resolves with how many threads it moved. */
export async function allThreads(request: AllThreadsRequest, arg?: AllThreadsArgs): Promise<number | undefined> {
  const session = djinnSession(arg);
  if (!session) {
    void vscode.window.showWarningMessage(`Djinn: ${request === "continueAll" ? "Continue All" : "Pause All"} needs a Djinn debug session.`);
    return undefined;
  }
  let r: { threads?: unknown } | undefined;
  try {
    r = await session.customRequest(request);
  } catch (e) {
    void vscode.window.showErrorMessage(`Djinn: ${request} failed in '${session.name}': ${(e as Error).message}`);
    return undefined;
  }
  const threads = typeof r?.threads === "number" ? r.threads : 0;
  vscode.window.setStatusBarMessage(`Djinn: ${DONE[request]} ${threads} session${threads === 1 ? "" : "s"} of '${session.name}'`, 4000);
  return threads;
}

/** The given session, else the active one, else the one of the focused stack item, if it is a djinn one. */
function djinnSession(arg?: AllThreadsArgs): vscode.DebugSession | undefined {
  // menus pass their own arguments (a Call Stack item, a URI): only a DebugSession-like `session` counts
  const given = arg && typeof arg === "object" && "session" in arg ? arg.session : undefined;
  if (given) return given.type === "djinn" ? given : undefined;
  const active = vscode.debug.activeDebugSession;
  if (active?.type === "djinn") return active;
  const item = vscode.debug.activeStackItem;
  return item?.session.type === "djinn" ? item.session : undefined;
}
