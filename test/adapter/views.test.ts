// What VS Code's views show, through the adapter over stdio against one CPU tiny-40l server
// (eager swap policy: every stop swaps the session's KV to the host): the focus and the frames
// of a new stop (VARIABLES must never show the previous one), module names in the console,
// small results as values, thread names that tell sessions apart and stay current, the
// console's token lines, and VS Code's own Set Value kept off multi-element tensors.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { decode } from "../../debug-adapter/variables";
import { close, promptTokens, scopeRef, sharedEagerServer, start, threadNames, topFrame, variable, waitFor, type Recorder } from "./helpers";

const shared = sharedEagerServer();
const adapter = shared.adapter;

const outputs = (ev: Recorder) => ev.all.filter((e) => e.event === "output") as DebugProtocol.OutputEvent[];

test("a continued thread's next stop takes the focus; its new frames and scopes describe the new stop; the old ones are refused clearly", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(61), promptTokens(62)], maxNewTokens: 3 }, {
    functionBreakpoints: [{ name: "layers.11.attn" }, { name: "layers.10", condition: "token >= 1" }],
  });
  const first = await ev.stopped();
  const second = await ev.stopped();
  // another session stopping while one is paused keeps the user where they are
  assert.equal(first.body.preserveFocusHint, false);
  assert.equal(second.body.preserveFocusHint, true);
  const a = first.body.threadId;
  const b = second.body.threadId;

  // the user looks at a: its stop at layers.11.attn, the Session scope
  const oldStack = (await dc.stackTraceRequest({ threadId: a })).body.stackFrames;
  assert.match(oldStack[0].name, /^layers\.11\.attn · /);
  const oldTop = oldStack[0].id;
  const oldSession = await scopeRef(dc, oldTop, "Session");
  assert.match((await variable(dc, oldSession, "position")).value, /layer 11 after attention/);
  // the same stop keeps its frame ids
  assert.deepEqual((await dc.stackTraceRequest({ threadId: a })).body.stackFrames.map((f) => f.id), oldStack.map((f) => f.id));

  // continue a (b stays paused): it stops again at layers.10 of the next token, and that stop must take the focus
  await dc.continueRequest({ threadId: a, singleThread: true });
  const again = await ev.stopped(a);
  assert.equal(again.body.preserveFocusHint, false, "the thread the user continued gets the focus back");
  const stack = (await dc.stackTraceRequest({ threadId: a })).body.stackFrames;
  assert.match(stack[0].name, /^layers\.10 · input/);
  assert.match(stack.map((f) => f.name).join(" | "), /decode of token 1/);
  for (const f of stack) assert.ok(!oldStack.some((o) => o.id === f.id), `frame id ${f.id} is new at this stop`);
  const acts = await scopeRef(dc, stack[0].id, "Activations");
  assert.ok((await dc.variablesRequest({ variablesReference: acts })).body.variables.some((v) => v.name === "hidden"));
  const sess = await scopeRef(dc, stack[0].id, "Session");
  assert.match((await variable(dc, sess, "position")).value, /^decode of token 1 · .* layer 10 before the layer$/);
  assert.match((await dc.evaluateRequest({ expression: "layer", frameId: stack[0].id, context: "watch" })).body.result, /^10$/);

  // the previous stop's frame and references: a clear error, never an answer from the new stop
  const staleFrame = new RegExp(`frame ${oldTop} is from an earlier stop of session ${a} \\(it is paused at layers\\.10 now\\)`);
  await assert.rejects(dc.scopesRequest({ frameId: oldTop }), staleFrame);
  await assert.rejects(dc.evaluateRequest({ expression: "layer", frameId: oldTop, context: "watch" }), staleFrame);
  await assert.rejects(dc.variablesRequest({ variablesReference: oldSession }), new RegExp(`variable reference ${oldSession} is stale: it is from an earlier stop of session ${a}`));
  await assert.rejects(dc.scopesRequest({ frameId: 987654 }), /unknown frameId 987654/);

  // resumed by someone else while the user looks at it (scopes above): its stop takes the focus too
  await shared.client.continue(a);
  const third = await ev.stopped(a);
  assert.equal(third.body.preserveFocusHint, false, "the focused thread's stop is shown");
  assert.match((await topFrame(dc, a)).name, /^layers\.11\.attn/);
  // ... while a stop of a thread nobody looks at leaves the focus where it is
  await shared.client.continue(b);
  const other = await ev.stopped(b);
  assert.equal(other.body.preserveFocusHint, true);
});

test("module names in the console: described, expandable to sub-modules and where to break; unknown ones get a clear message", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(63)], maxNewTokens: 2, breakpoints: ["layers.20.mlp"] });
  const s = await ev.stopped();
  const f = await topFrame(dc, s.body.threadId);
  for (const context of ["repl", "watch", "hover", undefined]) {
    const r = await dc.evaluateRequest({ expression: "layers.10", frameId: f.id, context });
    assert.match(r.body.result, /^layers\.10 · layer · [\d,]+ params · layer 10$/, `context ${context}`);
    assert.ok(r.body.variablesReference > 0);
  }
  const r = await dc.evaluateRequest({ expression: " layers.10 ", context: "repl" }); // no frame: needs no session either
  const kids = (await dc.variablesRequest({ variablesReference: r.body.variablesReference })).body.variables;
  assert.deepEqual(kids.map((v) => v.name), ["break", "layers.10.attn", "layers.10.mlp"]);
  assert.match(kids[0].value, /^stops before layer 10 \(its input\): a function breakpoint named layers\.10, or the gutter of line \d+ of tiny-40l\.djinn$/);
  assert.match(kids[1].value, /^layers\.10\.attn · attention · [\d,]+ params · layer 10$/);
  assert.equal(kids[1].evaluateName, "layers.10.attn");
  const attn = (await dc.variablesRequest({ variablesReference: kids[1].variablesReference })).body.variables;
  assert.deepEqual(attn.map((v) => v.name), ["break"]);
  assert.match(attn[0].value, /^stops after the attention of layer 10: /);
  // the layers group, and a module that is not a stop point
  const layers = await dc.evaluateRequest({ expression: "layers", frameId: f.id, context: "repl" });
  assert.equal(layers.body.result, "layers · 40 modules (layers.0 … layers.39)");
  assert.equal((await dc.variablesRequest({ variablesReference: layers.body.variablesReference })).body.variables.length, 40);
  const norm = await dc.evaluateRequest({ expression: "norm", frameId: f.id, context: "repl" });
  assert.match(norm.body.result, /^norm · norm · 128 params$/);
  const nb = (await dc.variablesRequest({ variablesReference: norm.body.variablesReference })).body.variables;
  assert.match(nb[0].value, /norm runs after the last layer and is not a stop point; break at layers\.39\.mlp/);
  // names that are no module: what there is instead, never a lexer error
  for (const context of ["repl", "hover", "watch"]) {
    await assert.rejects(dc.evaluateRequest({ expression: "layers.99", frameId: f.id, context }), (e: Error) => {
      assert.match(e.message, /^no module 'layers\.99' in tiny-40l: layers has layers\.0, layers\.1 … layers\.39 \(40\)$/);
      return true;
    });
  }
  await assert.rejects(dc.evaluateRequest({ expression: "layers.10.foo", frameId: f.id, context: "repl" }), /no module 'layers\.10\.foo' in tiny-40l: layers\.10 has layers\.10\.attn, layers\.10\.mlp$/);
  // the expression language is untouched
  assert.match((await dc.evaluateRequest({ expression: "hidden", frameId: f.id, context: "repl" })).body.result, /^f32\[12, 128\] μ=/);
  assert.match((await dc.evaluateRequest({ expression: "layer + 1", frameId: f.id, context: "repl" })).body.result, /^21$/);
});

test("small results print their values (the server's line); topk names values and indices; empty tensors say so", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(64)], maxNewTokens: 2, breakpoints: [3] });
  const s = await ev.stopped();
  const tid = s.body.threadId;
  const f = await topFrame(dc, tid);
  const row = decode((await shared.client.getTensor({ sessionId: tid, name: "hidden", slice: [{ start: -1, stop: 0, step: 0 }] })).data, "float32");

  const five = await dc.evaluateRequest({ expression: "hidden[-1, :5]", frameId: f.id, context: "repl" });
  const m = /^\$(\d+) = f32\[5\] \[([^\]]+)\]$/.exec(five.body.result);
  assert.ok(m, five.body.result);
  m[2].split(", ").forEach((x, i) => assert.ok(close(Number(x), row[i], 1e-5), `${x} vs ${row[i]}`));
  assert.equal(five.body.indexedVariables, 5);

  // shape(x): the server prints it as the list it is
  const shape = await dc.evaluateRequest({ expression: "shape(hidden)", frameId: f.id, context: "repl" });
  assert.match(shape.body.result, /^\$\d+ = \[12, 128\]$/);

  // topk: values and indices, two $N, both named; the variable expands to both
  const top = await dc.evaluateRequest({ expression: "topk(hidden[-1], 5)", frameId: f.id, context: "repl" });
  const t = /^\$(\d+) = f32\[5\] \[([^\]]+)\] · indices \$(\d+) = i64\[5\] \[([^\]]+)\]$/.exec(top.body.result);
  assert.ok(t, top.body.result);
  assert.equal(Number(t[3]), Number(t[1]) + 1);
  const order = row.map((v, i) => [v, i]).sort((x, y) => y[0] - x[0]).slice(0, 5);
  assert.deepEqual(t[4].split(", ").map(Number), order.map((x) => x[1]));
  t[2].split(", ").forEach((x, i) => assert.ok(close(Number(x), order[i][0], 1e-5)));
  const parts = (await dc.variablesRequest({ variablesReference: top.body.variablesReference })).body.variables;
  assert.deepEqual(parts.map((v) => v.name), ["values", "indices"]);
  assert.equal(parts[1].value, `i64[5] [${t[4]}]`);
  assert.equal(parts[1].evaluateName, `$${t[3]}`);
  const idx = (await dc.variablesRequest({ variablesReference: parts[1].variablesReference })).body.variables;
  assert.deepEqual(idx.map((v) => Number(v.value)), order.map((x) => x[1]));
  assert.ok(idx.every((v) => /^\d+$/.test(v.value)), "indices print as integers");

  // before layer 3 of the prefill, this layer's cache holds nothing yet
  const acts = await scopeRef(dc, f.id, "Activations");
  assert.match((await variable(dc, acts, "k_cache")).value, /^f32\[\d+, 0, \d+\] empty$/);
  const kv = await scopeRef(dc, f.id, "KV cache");
  const lazy = await variable(dc, kv, "k_cache");
  const got = (await dc.variablesRequest({ variablesReference: lazy.variablesReference })).body.variables[0];
  assert.match(got.value, /^f32\[\d+, 0, \d+\] empty$/);
  assert.equal(got.variablesReference, 0);
  // large tensors keep their statistics
  assert.match((await variable(dc, acts, "hidden")).value, /^f32\[12, 128\] μ=\S+ σ=/);
});

test("threads: distinct default prompts and labels, short names with the state first; names stay current (a thread event makes the client re-read them); short console lines", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, sessions: 4, maxNewTokens: 400, contextTokens: 440 }, { functionBreakpoints: [{ name: "layers.3" }] });
  const ids = (await Promise.all([0, 1, 2, 3].map(() => ev.stopped()))).map((s) => s.body.threadId).sort((x, y) => x - y);
  const infos = await Promise.all(ids.map((id) => shared.client.getSession(id)));
  assert.equal(new Set(infos.map((i) => i.prompt)).size, 4, `distinct prompts: ${infos.map((i) => i.prompt).join(" | ")}`);
  assert.deepEqual(infos.map((i) => i.label), ["prompt 1", "prompt 2", "prompt 3", "prompt 4"]);
  await waitFor("every KV on the host", async () => [...(await threadNames(dc)).values()].every((n) => / · host · /.test(n)));
  const names = await threadNames(dc);
  assert.equal(new Set(names.values()).size, 4);
  ids.forEach((id, k) => {
    const p = JSON.stringify(infos[k].prompt).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assert.match(names.get(id)!, new RegExp(`^s${id} · L3 · host · ${p} \\(prompt ${k + 1}\\)$`));
  });
  assert.match(names.get(ids[0])!, new RegExp(`^s${ids[0]} · L3 · host · "Hello, Djinn\\." \\(prompt 1\\)$`));

  // a resumed thread: the client is told to re-read the names (a "started" thread event for the
  // known thread), and the next threads request says what it does now
  await dc.setFunctionBreakpointsRequest({ breakpoints: [] });
  const x = ids[1];
  const before = ev.all.length;
  await dc.continueRequest({ threadId: x, singleThread: true });
  await ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "started" && e.body.threadId === x, 5_000);
  const running = (await threadNames(dc)).get(x);
  assert.match(running ?? "", new RegExp(`^s${x} · running( · \\d+ tok)? · "`));
  // more tokens: the name goes out of date again and another refresh follows (at most every 250 ms)
  await ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "started" && e.body.threadId === x, 5_000);
  const later = (await threadNames(dc)).get(x);
  assert.match(later ?? "", new RegExp(`^s${x} · running · \\d+ tok · `));
  assert.ok(ev.all.slice(before).every((e) => e.event !== "thread" || (e as DebugProtocol.ThreadEvent).body.threadId === x), "only the changed thread is named");
  // while it generates, refreshes come at most every 250 ms
  const n0 = ev.all.filter((e) => e.event === "thread").length;
  await new Promise((r) => setTimeout(r, 1000));
  const n1 = ev.all.filter((e) => e.event === "thread").length;
  assert.ok(n1 - n0 >= 1 && n1 - n0 <= 5, `${n1 - n0} refreshes in a second`);
  // pause it. A stop makes VS Code re-read the names itself, and a thread event would cancel its
  // handling of the stop: a later change (the KV going to the host) is announced only a second after it
  const threadEventsAt: number[] = [];
  let stoppedAt = 0;
  dc.on("stopped", (e: DebugProtocol.StoppedEvent) => e.body.threadId === x && (stoppedAt = Date.now()));
  dc.on("thread", (e: DebugProtocol.ThreadEvent) => e.body.threadId === x && stoppedAt > 0 && threadEventsAt.push(Date.now()));
  await dc.pauseRequest({ threadId: x });
  const p = await ev.stopped(x);
  assert.equal(p.body.reason, "pause");
  assert.match((await threadNames(dc)).get(x)!, new RegExp(`^s${x} · L\\d+(\\.attn|\\.mlp)? · (dev|host|→host|→dev) · `));
  await waitFor("the KV on the host", async () => / · host · /.test((await threadNames(dc)).get(x)!));
  await new Promise((r) => setTimeout(r, 1300));
  assert.ok(threadEventsAt.every((t) => t - stoppedAt >= 900), `thread events ${threadEventsAt.map((t) => t - stoppedAt).join(", ")} ms after the stop`);
  // names the client has read are not announced again
  await dc.threadsRequest();
  const seen = threadEventsAt.length;
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(threadEventsAt.length, seen, "no refresh of a name the client has read");

  // console: short token lines with their data; swaps and ends with the same prefix
  const tokens = outputs(ev).filter((e) => e.body.data?.token !== undefined && e.body.data.sessionId === x);
  assert.ok(tokens.length >= 2);
  tokens.forEach((e, k) => {
    assert.match(e.body.output, new RegExp(`^s${x} token ${k + 1}/400: ".*" \\(id ${e.body.data.token}\\)\\n$`));
    assert.equal(e.body.category, "stdout");
    assert.equal(e.body.data.index, k + 1);
    assert.equal(typeof e.body.data.text, "string");
    assert.equal(typeof e.body.data.generated, "string");
  });
  assert.ok(!outputs(ev).some((e) => /→ ""/.test(e.body.output)));
  const swap = outputs(ev).find((e) => e.body.data?.swap === "out")!;
  assert.match(swap.body.output, new RegExp(`^s${swap.body.data.sessionId} KV → host: [\\d.]+ MB in [\\d.]+ ms\\n$`));
  const gone = ids[3];
  const exited = ev.next<DebugProtocol.ThreadEvent>("thread", (e) => e.body.reason === "exited" && e.body.threadId === gone);
  await dc.customRequest("terminateThreads", { threadIds: [gone] });
  await exited;
  const end = outputs(ev).find((e) => e.body.data?.sessionId === gone && e.body.data?.state !== undefined)!;
  assert.match(end.body.output, new RegExp(`^s${gone} closed(: .*)?\\n$`));
});

test("launch attributes `sessions` with one prompt: labels tell the copies apart", async () => {
  const { dc, ev } = await adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: "The quick brown fox", sessions: 3, maxNewTokens: 2, stopOnEntry: true });
  const ids = (await Promise.all([0, 1, 2].map(() => ev.stopped()))).map((s) => s.body.threadId).sort((x, y) => x - y);
  const names = await threadNames(dc);
  ids.forEach((id, k) => assert.match(names.get(id)!, new RegExp(`^s${id} · L0 · (dev|host|→host) · "The quick brown fox" \\(prompt 1, copy ${k + 1}\\)$`)));
});

test("VS Code (clientID vscode): writable multi-element tensors are readOnly with the djinnTensor menu context and keep their evaluateName; elements keep Set Value; other clients unchanged", async () => {
  for (const clientID of ["vscode", "djinn-tests"]) {
    const vscode = clientID === "vscode";
    const { dc, ev } = await adapter();
    await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(65)], maxNewTokens: 2, breakpoints: [20] }, { clientID });
    const s = await ev.stopped();
    const f = await topFrame(dc, s.body.threadId);
    const acts = await scopeRef(dc, f.id, "Activations");
    const hidden = await variable(dc, acts, "hidden");
    const ctx = (v: DebugProtocol.Variable) => (v as { __vscodeVariableMenuContext?: string }).__vscodeVariableMenuContext;
    assert.deepEqual(hidden.presentationHint?.attributes, vscode ? ["readOnly"] : [], clientID);
    assert.equal(ctx(hidden), vscode ? "djinnTensor" : "tensor");
    assert.equal(hidden.evaluateName, "hidden");
    const q = await variable(dc, acts, "q");
    assert.deepEqual(q.presentationHint?.attributes, ["readOnly"]);
    assert.equal(ctx(q), "tensor", "a read-only tensor has no Set Value at all, but View Tensor");
    const row = (await dc.variablesRequest({ variablesReference: hidden.variablesReference, start: 2, count: 1 })).body.variables[0];
    assert.equal(row.evaluateName, "hidden[2]");
    assert.deepEqual(row.presentationHint?.attributes, vscode ? ["readOnly"] : []);
    assert.equal(ctx(row), vscode ? "djinnTensor" : "tensor");
    const el = (await dc.variablesRequest({ variablesReference: row.variablesReference, start: 5, count: 1 })).body.variables[0];
    assert.deepEqual(el.presentationHint?.attributes, [], "a single element keeps VS Code's Set Value");
    assert.equal(ctx(el), undefined, "an element is no tensor: no View Tensor");
    // what the extension's own Set Value sends: setExpression of the evaluateName
    const w = (await dc.customRequest("setExpression", { expression: row.evaluateName, value: "0.25", frameId: f.id })) as DebugProtocol.SetExpressionResponse;
    assert.match(w.body.value, /^f32\[1, 128\] μ=0\.25 σ=0 /);
    const e2 = await dc.setVariableRequest({ variablesReference: row.variablesReference, name: "[5]", value: "1.5" });
    assert.equal(e2.body.value, "1.5");
  }
});
