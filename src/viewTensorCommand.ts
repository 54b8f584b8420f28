// "Djinn: View Tensor": from the Variables view's context menu (the variable clicked), from
// the palette (a tensor of the selected thread), or programmatically.
import * as vscode from "vscode";
import { clientFor, endpointOf, tensorOfVariable, type TensorViewer, type TensorViewers } from "./tensorViewer";

interface MenuArg {
  sessionId?: string;
  container?: unknown;
  variable?: { name?: string; evaluateName?: string; value?: string; variablesReference?: number };
}

/** Programmatic form: { session?, threadId?, expression } */
export interface ViewTensorArgs {
  session?: vscode.DebugSession;
  threadId?: number;
  expression?: string;
}

function djinnSession(id?: string): vscode.DebugSession | undefined {
  const active = vscode.debug.activeDebugSession;
  if (id && active?.id === id) return active;
  if (!id && active?.type === "djinn") return active;
  const item = vscode.debug.activeStackItem;
  if (item && (!id || item.session.id === id) && item.session.type === "djinn") return item.session;
  return undefined;
}

/** The Djinn session (thread) the user is looking at. */
async function currentThread(session: vscode.DebugSession): Promise<number | undefined> {
  const item = vscode.debug.activeStackItem;
  if (item && item.session.id === session.id) return item.threadId;
  const r = await session.customRequest("threads");
  const threads: Array<{ id: number; name: string }> = r?.threads ?? [];
  if (threads.length === 1) return threads[0].id;
  const pick = await vscode.window.showQuickPick(threads.map((t) => ({ label: t.name, id: t.id })), { title: "Djinn: which session?" });
  return pick?.id;
}

export async function viewTensor(viewers: TensorViewers, arg?: MenuArg & ViewTensorArgs): Promise<TensorViewer | undefined> {
  const session = arg?.session ?? djinnSession(arg?.sessionId);
  if (!session || session.type !== "djinn") {
    void vscode.window.showWarningMessage("Djinn: View Tensor needs a Djinn debug session paused at a breakpoint.");
    return undefined;
  }
  const threadId = arg?.threadId ?? (await currentThread(session));
  if (threadId === undefined) return undefined;
  let expression = arg?.expression;
  if (!expression && arg?.variable) {
    const t = tensorOfVariable(arg.variable);
    if (!t) {
      void vscode.window.showWarningMessage(`Djinn: '${arg.variable.name}' is not a tensor.`);
      return undefined;
    }
    expression = t.expression;
  }
  if (!expression) {
    // From the palette: the tensors of this stop, or an expression naming one.
    const endpoint = await endpointOf(session);
    const client = clientFor(endpoint);
    try {
      const list = await client.listTensors(threadId);
      type Item = vscode.QuickPickItem & { name: string };
      const items: Item[] = list.tensors.map((t) => ({
        label: t.name,
        description: t.dtype ? `${t.dtype}[${t.shape.join(", ")}]` : "computed on request",
        detail: t.description,
        name: t.name,
      }));
      const pick = await vscode.window.showQuickPick(items, { title: `Djinn: view which tensor of session ${threadId}? (or type e.g. hidden[0])`, matchOnDetail: true });
      expression = pick?.name;
    } finally {
      client.close();
    }
    if (!expression) return undefined;
  }
  const t = tensorOfVariable({ evaluateName: expression });
  if (!t) {
    void vscode.window.showWarningMessage(`Djinn: '${expression}' does not name a tensor (e.g. hidden, attn_out, k_cache[3], $1).`);
    return undefined;
  }
  try {
    return await viewers.show({ session, threadId, name: t.name, prefix: t.prefix, expression: t.expression });
  } catch (e) {
    void vscode.window.showErrorMessage(`Djinn: cannot view ${expression}: ${(e as Error).message}`);
    return undefined;
  }
}
