// "Set Value…" on a tensor in VARIABLES (djinn.setTensorValue). VS Code's own inline Set Value
// would start from the variable's value line (`bf16[1,5,64] μ=… σ=…`), so for writable tensors
// the adapter marks the variable readOnly (hiding VS Code's) and gives it the menu context
// `djinnTensor`; this command asks for the new value starting from an expression of the same
// shape, and sends it as a DAP setExpression at the session's selected stack frame. The
// adapter then invalidates the views; open tensor viewers of that session refresh here.
import * as vscode from "vscode";
import type { TensorViewers } from "./tensorViewer";

export const SET_TENSOR_VALUE = "djinn.setTensorValue";

/** What VS Code passes to a `debug/variables/context` command. */
export interface VariableMenuArg {
  sessionId?: string;
  container?: { name?: string; variablesReference?: number; expensive?: boolean };
  variable?: { name?: string; value?: string; evaluateName?: string; variablesReference?: number };
}

export interface SetValueBox {
  title: string;
  prompt: string;
  value: string;
  /** the factor of `expr * 1.0`, selected: typing 0.5 scales, 0 zeroes */
  valueSelection: [number, number];
  placeHolder: string;
}

/** The expression that names the variable: evaluateName (`hidden`, `hidden[0]`), else its name. */
export function targetOf(variable: VariableMenuArg["variable"]): string | undefined {
  const e = (variable?.evaluateName ?? variable?.name ?? "").trim();
  return e || undefined;
}

/** The input box: pre-filled with `<expr> * 1.0`, the factor selected, the syntax in the prompt. */
export function setValueBox(expr: string, valueLine?: string): SetValueBox {
  const value = `${expr} * 1.0`;
  const at = value.length - "1.0".length;
  return {
    title: `Djinn: set ${expr}${valueLine ? `  (now ${valueLine})` : ""}`,
    prompt: `A number fills it (0); += x / -= x adds; any expression of the same shape is copied in (${expr} * 0.5, $1). Applies before the forward pass continues.`,
    value,
    valueSelection: [at, value.length],
    placeHolder: `${expr} * 0.5`,
  };
}

/** The DAP request the command sends. */
export function setExpressionArgs(expr: string, value: string, frameId: number | undefined): { expression: string; value: string; frameId?: number } {
  return { expression: expr, value: value.trim(), ...(frameId !== undefined ? { frameId } : {}) };
}

/** What the command needs from VS Code (replaced in tests). */
export interface SetValueDeps {
  session(id: string | undefined): vscode.DebugSession | undefined;
  activeStackItem(): vscode.DebugThread | vscode.DebugStackFrame | undefined;
  showInputBox(o: vscode.InputBoxOptions): Thenable<string | undefined>;
  showError(message: string): void;
  refreshViewers?(session: vscode.DebugSession, threadId: number | undefined): void;
}

export interface SetValueOutcome {
  request?: { expression: string; value: string; frameId?: number };
  error?: string;
  body?: unknown;
}

/** The frame to evaluate at: the selected frame of that session, else the top frame of its selected thread. */
async function frameOf(session: vscode.DebugSession, item: vscode.DebugThread | vscode.DebugStackFrame | undefined): Promise<{ frameId?: number; threadId?: number }> {
  if (!item || item.session.id !== session.id) return {};
  if ("frameId" in item && typeof item.frameId === "number") return { frameId: item.frameId, threadId: item.threadId };
  try {
    const r = await session.customRequest("stackTrace", { threadId: item.threadId, startFrame: 0, levels: 1 });
    const top = r?.stackFrames?.[0]?.id;
    return { frameId: typeof top === "number" ? top : undefined, threadId: item.threadId };
  } catch {
    return { threadId: item.threadId };
  }
}

export async function setTensorValue(arg: VariableMenuArg | undefined, deps: SetValueDeps = vscodeDeps()): Promise<SetValueOutcome | undefined> {
  const expr = targetOf(arg?.variable);
  const session = deps.session(arg?.sessionId);
  if (!expr || !session || session.type !== "djinn") {
    deps.showError("Djinn: Set Value… works on a tensor in VARIABLES of a paused Djinn debug session.");
    return undefined;
  }
  const box = setValueBox(expr, arg?.variable?.value);
  const value = await deps.showInputBox({
    ...box,
    ignoreFocusOut: true,
    validateInput: (x) => (x.trim() ? undefined : "a number, += x, or an expression"),
  });
  // Cancelled, or accepted unchanged (x * 1.0 would write the same values back).
  if (value === undefined || !value.trim() || value.trim() === box.value) return undefined;
  const { frameId, threadId } = await frameOf(session, deps.activeStackItem());
  const request = setExpressionArgs(expr, value, frameId);
  try {
    const body = await session.customRequest("setExpression", request);
    deps.refreshViewers?.(session, threadId);
    return { request, body };
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    deps.showError(`Djinn: cannot set ${expr} to '${request.value}': ${msg}`);
    return { request, error: msg };
  }
}

function vscodeDeps(viewers?: TensorViewers): SetValueDeps {
  return {
    session: (id) => {
      const active = vscode.debug.activeDebugSession;
      const item = vscode.debug.activeStackItem;
      if (!id) return active?.type === "djinn" ? active : item?.session;
      if (active?.id === id) return active;
      if (item?.session.id === id) return item.session;
      return undefined;
    },
    activeStackItem: () => vscode.debug.activeStackItem,
    showInputBox: (o) => vscode.window.showInputBox(o),
    showError: (m) => void vscode.window.showErrorMessage(m),
    refreshViewers: (session, threadId) => {
      for (const v of viewers?.open ?? []) if (v.ref.session?.id === session.id && (threadId === undefined || v.ref.threadId === threadId)) void v.refresh("a value was set");
    },
  };
}

/** Registers djinn.setTensorValue (the VARIABLES context menu of tensors, `djinnTensor`). */
export function register(context: vscode.ExtensionContext, viewers?: TensorViewers): void {
  context.subscriptions.push(vscode.commands.registerCommand(SET_TENSOR_VALUE, (arg?: VariableMenuArg) => setTensorValue(arg, vscodeDeps(viewers))));
}
