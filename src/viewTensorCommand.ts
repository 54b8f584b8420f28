// "Djinn: View Tensor": from the Variables view's context menu (the variable clicked), from
// the palette (a tensor of the selected thread), or programmatically.
import * as vscode from "vscode";
import { clientFor, endpointOf, tensorOfVariable, type TensorViewer, type TensorViewers } from "./tensorViewer";

/** The picker's last item: an InputBox for an expression (the picker itself only filters its items). */
export const EXPRESSION_LABEL = "$(edit) Expression…";
const TYPE_EXPRESSION = Symbol("type an expression");

/** The picker and the box, replaceable (the extension-host tests answer them: a quick input cannot be typed into from there). */
export interface ViewTensorPrompts {
  pick<T extends vscode.QuickPickItem>(items: T[], options: vscode.QuickPickOptions): Thenable<T | undefined>;
  input(options: vscode.InputBoxOptions): Thenable<string | undefined>;
}
export const viewTensorPrompts: ViewTensorPrompts = {
  pick: (items, options) => vscode.window.showQuickPick(items, options),
  input: (options) => vscode.window.showInputBox(options),
};

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
  /** the typed expression a $N result is the value of (the viewer evaluates it again at each stop) */
  let source: string | undefined;
  if (expression && !tensorOfVariable({ evaluateName: expression })) {
    // programmatic, an expression of the language (hidden * 2): viewed as its result, as a typed one is
    const r = await tensorOfExpression(session, threadId, expression);
    if (!r) return undefined;
    ({ expression, source } = r);
  }
  if (!expression && arg?.variable) {
    const t = tensorOfVariable(arg.variable);
    if (!t) {
      void vscode.window.showWarningMessage(`Djinn: '${arg.variable.name}' is not a tensor.`);
      return undefined;
    }
    expression = t.expression;
  }
  if (!expression) {
    // From the palette: the tensors of this stop, or "Expression…", which asks for one to type.
    const endpoint = await endpointOf(session);
    const client = clientFor(endpoint);
    let picked: string | typeof TYPE_EXPRESSION | undefined;
    try {
      const list = await client.listTensors(threadId);
      type Item = vscode.QuickPickItem & { name: string | typeof TYPE_EXPRESSION };
      const items: Item[] = [
        ...list.tensors.map((t) => ({
          label: t.name,
          description: t.dtype ? `${t.dtype}[${t.shape.join(", ")}]` : "computed on request",
          detail: t.description,
          name: t.name,
        })),
        { label: "", kind: vscode.QuickPickItemKind.Separator, name: "" },
        { label: EXPRESSION_LABEL, description: "type one: hidden[0], hidden * 2, softmax(attn_scores[0, 3])", name: TYPE_EXPRESSION, alwaysShow: true },
      ];
      const pick = await viewTensorPrompts.pick(items, { title: `Djinn: view which tensor of session ${threadId}?`, matchOnDetail: true });
      picked = pick?.name;
    } finally {
      client.close();
    }
    if (picked === TYPE_EXPRESSION) {
      const typed = await askExpression(threadId);
      if (typed === undefined) return undefined;
      const r = await tensorOfExpression(session, threadId, typed);
      expression = r?.expression;
      source = r?.source;
    } else {
      expression = picked;
    }
    if (!expression) return undefined;
  }
  const t = tensorOfVariable({ evaluateName: expression });
  if (!t) {
    void vscode.window.showWarningMessage(`Djinn: '${expression}' does not name a tensor (e.g. hidden, attn_out, k_cache[3], $1).`);
    return undefined;
  }
  try {
    return await viewers.show({ session, threadId, name: t.name, prefix: t.prefix, expression: t.expression, source });
  } catch (e) {
    void vscode.window.showErrorMessage(`Djinn: cannot view ${expression}: ${(e as Error).message}`);
    return undefined;
  }
}

/** The InputBox after "Expression…": anything of the expression language; empty is refused with a message. */
export function askExpression(threadId: number): Thenable<string | undefined> {
  return viewTensorPrompts.input({
    title: `Djinn: view a tensor expression of session ${threadId}`,
    prompt: "A tensor name (hidden, k_cache[3], $1) or an expression of the expression language (hidden * 2, softmax(attn_scores[0, 3]))",
    placeHolder: "hidden[0]",
    ignoreFocusOut: true,
    validateInput: validateExpression,
  }).then((x) => (x === undefined ? undefined : x.trim()));
}

export function validateExpression(text: string): string | undefined {
  if (!text.trim()) return "Type an expression, e.g. hidden[0] or hidden * 2 (empty is not one).";
  let depth = 0;
  for (const ch of text) {
    depth += ch === "(" || ch === "[" ? 1 : ch === ")" || ch === "]" ? -1 : 0;
    if (depth < 0) return "A closing bracket without its opening one.";
  }
  return depth > 0 ? "A bracket is not closed." : undefined;
}

/**
 * What the viewer shows for a typed expression: a tensor name as it is (hidden, k_cache[3],
 * $1); anything else is evaluated by the debug session at the thread's top frame, and its
 * result ($N) is viewed. undefined (with a message) when it fails or is not a tensor.
 */
export async function tensorOfExpression(session: vscode.DebugSession, threadId: number, expression: string): Promise<{ expression: string; source?: string } | undefined> {
  if (tensorOfVariable({ evaluateName: expression })) return { expression };
  let r: { result?: string } | undefined;
  try {
    const st = await session.customRequest("stackTrace", { threadId, startFrame: 0, levels: 1 });
    const frameId = st?.stackFrames?.[0]?.id;
    r = await session.customRequest("evaluate", { expression, frameId, context: "watch" });
  } catch (e) {
    void vscode.window.showErrorMessage(`Djinn: cannot evaluate '${expression}' in session ${threadId}: ${(e as Error).message}`);
    return undefined;
  }
  const m = /^(\$\d+) = /.exec(r?.result ?? "");
  if (!m) {
    void vscode.window.showWarningMessage(`Djinn: '${expression}' is ${r?.result ?? "nothing"}, not a tensor: View Tensor shows tensors.`);
    return undefined;
  }
  return { expression: m[1], source: expression };
}
