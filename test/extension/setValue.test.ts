// "Set Value…" on a tensor (djinn.setTensorValue): the input box starts from an expression of
// the variable (never its statistics line), the request is a DAP setExpression at the
// selected frame, the adapter's error is shown naming the problem. A stand-in session and
// input box; the real end-to-end runs in code-server's UI.
import * as assert from "node:assert";
import * as vscode from "vscode";
import { setExpressionArgs, setTensorValue, setValueBox, SET_TENSOR_VALUE, targetOf, type SetValueDeps } from "../../src/setValueCommand";
import { api } from "./helpers";

interface Sent {
  command: string;
  args: any;
}

function fakeSession(reply: (command: string, args: any) => unknown, id = "sv-1"): { session: vscode.DebugSession; sent: Sent[] } {
  const sent: Sent[] = [];
  const session = {
    id,
    type: "djinn",
    name: "set value test",
    configuration: { type: "djinn", request: "attach", name: "set value test" },
    customRequest: async (command: string, args: any) => {
      sent.push({ command, args });
      return reply(command, args);
    },
  } as unknown as vscode.DebugSession;
  return { session, sent };
}

function deps(session: vscode.DebugSession, answer: string | undefined, item?: Partial<vscode.DebugStackFrame & vscode.DebugThread>): SetValueDeps & { boxes: vscode.InputBoxOptions[]; errors: string[]; refreshed: number } {
  const d = {
    boxes: [] as vscode.InputBoxOptions[],
    errors: [] as string[],
    refreshed: 0,
    session: (id: string | undefined) => (id === undefined || id === session.id ? session : undefined),
    activeStackItem: () => (item ? ({ session, ...item } as vscode.DebugStackFrame) : undefined),
    showInputBox: async (o: vscode.InputBoxOptions) => {
      d.boxes.push(o);
      return answer;
    },
    showError: (m: string) => void d.errors.push(m),
    refreshViewers: () => void d.refreshed++,
  };
  return d;
}

const hidden = { name: "hidden", value: "bf16[1,5,64] μ=0.0123 σ=1.02", evaluateName: "hidden", variablesReference: 7 };

describe("Djinn extension: Set Value… on a tensor", () => {
  it("is contributed to the VARIABLES context menu of Djinn tensors (djinnTensor) and registered", async () => {
    await api();
    const pkg = vscode.extensions.getExtension("djinn.djinn-debugger")!.packageJSON;
    const menu = pkg.contributes.menus["debug/variables/context"].find((m: { command: string }) => m.command === SET_TENSOR_VALUE);
    assert.ok(menu, "in debug/variables/context");
    assert.match(menu.when, /debugType == 'djinn'/);
    assert.match(menu.when, /debugProtocolVariableMenuContext == 'djinnTensor'/);
    assert.ok((await vscode.commands.getCommands(true)).includes(SET_TENSOR_VALUE));
  });

  it("pre-fills an expression of the variable, not its statistics line, with the factor selected", () => {
    assert.strictEqual(targetOf(hidden), "hidden");
    assert.strictEqual(targetOf({ name: "[0]", evaluateName: "hidden[0]" }), "hidden[0]");
    assert.strictEqual(targetOf({ name: "attn_out" }), "attn_out");
    const box = setValueBox("hidden[0]", hidden.value);
    assert.strictEqual(box.value, "hidden[0] * 1.0");
    assert.deepStrictEqual(box.value.slice(...box.valueSelection), "1.0");
    assert.ok(!box.value.includes("μ") && !box.value.includes("bf16"), box.value);
    assert.match(box.prompt, /number fills it/);
    assert.match(box.prompt, /\+= x/);
    assert.match(box.prompt, /hidden\[0\] \* 0\.5/);
    assert.match(box.prompt, /\$1/);
  });

  it("sends setExpression with the evaluateName, the value and the selected frame", async () => {
    const { session, sent } = fakeSession(() => ({ value: "bf16[1,5,64] μ=0.0062" }));
    const d = deps(session, "hidden * 0.5", { threadId: 3, frameId: 1003 });
    const r = await setTensorValue({ sessionId: session.id, container: { name: "Activations", variablesReference: 2 }, variable: hidden }, d);
    assert.strictEqual(d.boxes.length, 1);
    assert.strictEqual(d.boxes[0].value, "hidden * 1.0");
    assert.deepStrictEqual(sent, [{ command: "setExpression", args: { expression: "hidden", value: "hidden * 0.5", frameId: 1003 } }]);
    assert.deepStrictEqual(r?.request, setExpressionArgs("hidden", " hidden * 0.5 ", 1003));
    assert.strictEqual(d.errors.length, 0);
    assert.strictEqual(d.refreshed, 1, "open viewers of the session refresh");
  });

  it("a thread selected (no frame): its top frame; cancelled or unchanged: nothing is sent", async () => {
    const { session, sent } = fakeSession((command) => (command === "stackTrace" ? { stackFrames: [{ id: 2001, name: "layers.10" }] } : {}));
    await setTensorValue({ sessionId: session.id, variable: hidden }, deps(session, "+= 1", { threadId: 2 }));
    assert.deepStrictEqual(sent.map((s) => s.command), ["stackTrace", "setExpression"]);
    assert.strictEqual(sent[0].args.threadId, 2);
    assert.deepStrictEqual(sent[1].args, { expression: "hidden", value: "+= 1", frameId: 2001 });
    sent.length = 0;
    assert.strictEqual(await setTensorValue({ sessionId: session.id, variable: hidden }, deps(session, undefined, { threadId: 2 })), undefined);
    assert.strictEqual(await setTensorValue({ sessionId: session.id, variable: hidden }, deps(session, "hidden * 1.0", { threadId: 2 })), undefined);
    assert.deepStrictEqual(sent, []);
  });

  it("shows the adapter's error, naming the expression and the problem", async () => {
    const problem = "'hidden[0]' has 320 elements (shape [5, 64]) but hidden region has 64 (shape [64])";
    const { session } = fakeSession(() => {
      throw new Error(problem);
    });
    const d = deps(session, "hidden[0]", { threadId: 1, frameId: 1001 });
    const r = await setTensorValue({ sessionId: session.id, variable: { name: "[0]", evaluateName: "hidden[0, 0]", value: "bf16[64] μ=…" } }, d);
    assert.strictEqual(r?.error, problem);
    assert.strictEqual(d.errors.length, 1);
    assert.ok(d.errors[0].includes("hidden[0, 0]") && d.errors[0].includes(problem), d.errors[0]);
    assert.strictEqual(d.refreshed, 0);
  });

  it("outside a Djinn session it says what it needs and sends nothing", async () => {
    const { session, sent } = fakeSession(() => ({}));
    const other = { ...session, type: "node" } as vscode.DebugSession;
    const d = deps(other, "0");
    assert.strictEqual(await setTensorValue({ sessionId: session.id, variable: hidden }, d), undefined);
    assert.match(d.errors[0], /paused Djinn debug session/);
    assert.deepStrictEqual(sent, []);
  });
});
