// Logpoints, completions and data breakpoints through the adapter over stdio against one CPU
// tiny-40l server: a logpoint prints its line (formatted on the server) as an output event at
// its source line and the session never stops; the Debug Console completes tensor names and
// functions with their signatures; a data breakpoint stops where its condition becomes true,
// and one without a condition (VS Code's Break on Value Change) says to add one.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { completionTargets, moduleTargets } from "../../debug-adapter/completions";
import { promptTokens, scopeRef, sharedServer, start, topFrame, variable, type Stopped } from "./helpers";

const shared = sharedServer();
const tmp = mkdtempSync(join(tmpdir(), "djinn-features-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Output = DebugProtocol.OutputEvent & { body: { data?: { sessionId?: number; breakpointId?: number } } };

test("logpoints print their line as an output event at their source line, with conditions and hit counts, and never stop the session", async () => {
  const outline = join(tmp, "logpoints.djinn");
  // 1 comment, 2 layers.3, 3 layers.5.mlp, 4 layers.7
  writeFileSync(outline, ["# logpoints", "layers.3", "layers.5.mlp", "layers.7"].join("\n"));
  const { dc, ev } = await shared.adapter();
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(7)], maxNewTokens: 4 }, {
    sourceBreakpoints: {
      path: outline,
      lines: [2, 3, 4],
      logMessages: ["L{layer} t={token} {{x}} |h|={norm(hidden)}", "mlp t={token} hit", "oops {"],
      // the second: only decode passes (token >= 1), and from the second time that holds
      conditions: [undefined, "token >= 1", undefined],
      hitConditions: [undefined, ">= 2", undefined],
    },
  });
  assert.equal(cfg.capabilities?.supportsLogPoints, true);
  const [every, counted, bad] = cfg.source!.body.breakpoints;
  // the bad message is refused by the server when the session is created: a changed breakpoint with the reason
  const refused = await ev.next<DebugProtocol.BreakpointEvent>("breakpoint", (e) => e.body.breakpoint.id === bad.id && e.body.breakpoint.verified === false && !/pending/.test(e.body.breakpoint.message ?? ""));
  assert.match(refused.body.breakpoint.message ?? "", /^log message: '\{' at column 6 is never closed; write '\{\{' for a literal brace/);
  await ev.next("terminated");
  assert.equal(ev.count("stopped"), 0, "a logpoint never stops the session");

  const lines = (ev.all as Output[]).filter((e) => e.event === "output" && e.body.data?.breakpointId !== undefined);
  const of = (id: number) => lines.filter((e) => e.body.data!.breakpointId === id);
  const a = of(every.id!);
  assert.deepEqual(a.map((e) => /^L3 t=(\d) \{x\} \|h\|=\d+(\.\d+)?\n$/.exec(e.body.output)?.[1]), ["0", "1", "2", "3"], a.map((e) => e.body.output).join(""));
  for (const e of a) {
    assert.equal(e.body.category, "stdout", "a print of the model's, not a warning");
    assert.equal(e.body.source?.path, outline);
    assert.equal(e.body.line, 2);
    assert.ok(e.body.data!.sessionId! > 0, "the thread of the line");
  }
  assert.deepEqual(of(counted.id!).map((e) => e.body.output), ["mlp t=2 hit\n", "mlp t=3 hit\n"]);
  assert.equal(of(counted.id!)[0].body.line, 3);
  assert.equal(of(bad.id!).length, 0);
});

test("a logpoint set while the session is paused: its refusal is the server's answer, a good one prints", async () => {
  const outline = join(tmp, "paused.djinn");
  writeFileSync(outline, ["layers.2", "layers.4"].join("\n"));
  const { dc, ev } = await shared.adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(8)], maxNewTokens: 1, stopOnEntry: true });
  const tid = (await ev.stopped()).body.threadId;
  const r = await dc.setBreakpointsRequest({ source: { path: outline }, breakpoints: [{ line: 1, logMessage: "h={norm(hidden)" }, { line: 2, logMessage: "at {layer}: {1 +}" }] });
  const [unclosed, unparsed] = r.body.breakpoints;
  assert.equal(unclosed.verified, false);
  assert.match(unclosed.message ?? "", /never closed/);
  assert.equal(unparsed.verified, false);
  assert.match(unparsed.message ?? "", /^log message: \{1 \+\} at column \d+: unexpected end of expression/);
  const ok = (await dc.setBreakpointsRequest({ source: { path: outline }, breakpoints: [{ line: 2, logMessage: "s{session} at {layer}" }] })).body.breakpoints[0];
  assert.equal(ok.verified, true);
  await dc.continueRequest({ threadId: tid });
  const line = await ev.next<Output>("output", (e) => e.body.data?.breakpointId === ok.id);
  assert.equal(line.body.output, `s${tid} at 4\n`);
  assert.equal(line.body.data?.sessionId, tid);
  await ev.next("terminated");
});

test("completions: tensor names with shapes at the frame's stop, functions with signatures, keyword arguments, $N; the range each replaces", async () => {
  const { dc, ev } = await shared.adapter();
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(9)], maxNewTokens: 1 }, { functionBreakpoints: [{ name: "layers.2" }] });
  assert.equal(cfg.capabilities?.supportsCompletionsRequest, true);
  assert.ok(cfg.capabilities?.completionTriggerCharacters?.includes("("));
  const tid = (await ev.stopped()).body.threadId;
  const frameId = (await topFrame(dc, tid)).id;
  const complete = async (text: string, column: number, frame?: number) => (await dc.completionsRequest({ text, column, frameId: frame })).body.targets;

  const hid = await complete("norm(hid", 9, frameId);
  assert.deepEqual(hid.map((t) => t.label), ["hidden"]);
  assert.equal(hid[0].type, "variable");
  assert.match(hid[0].detail ?? "", /^f32\[12, 128\] residual stream/);
  assert.equal(hid[0].text, undefined, "the label is what is inserted");
  assert.ok(hid[0].sortText);
  // DAP columns start at 1 here (columnsStartAt1): "hid" starts at column 6 and is 3 long
  assert.deepEqual([hid[0].start, hid[0].length], [6, 3]);

  // without a frame: no session (every name, no values), functions with their signatures
  const soft = await complete("soft", 5);
  assert.deepEqual(soft.map((t) => [t.label, t.type]), [["softmax", "function"]]);
  assert.match(soft[0].detail ?? "", /^softmax\(x, dim\?\): /);
  assert.deepEqual([soft[0].start, soft[0].length], [1, 4]);

  // inside a call: its keyword arguments first
  const kw = await complete("mean(hidden, d", 15, frameId);
  assert.equal(kw[0].label, "dim=");
  assert.equal(kw[0].type, "property");

  // a $N result of an evaluate of this stop
  await dc.evaluateRequest({ expression: "hidden[0] * 2", frameId, context: "repl" });
  const dollar = await complete("$", 2, frameId);
  assert.ok(dollar.some((t) => t.label === "$1" && /^f32\[128\]/.test(t.detail ?? "")), JSON.stringify(dollar));

  // module names (the console describes a module typed there): one level below what is typed
  const mods = await complete("layers.1", 9, frameId);
  assert.deepEqual(mods.map((t) => t.label).sort(), ["layers.1", ...Array.from({ length: 10 }, (_, i) => `layers.1${i}`)].sort());
  assert.ok(mods.every((t) => t.type === "module" && t.start === 1 && t.length === 8));
  assert.equal(mods.find((t) => t.label === "layers.10")!.detail, "layer · 181,504 params");
  const sub = await complete("norm(layers.10.", 16, frameId);
  assert.deepEqual(sub.map((t) => t.label), ["layers.10.attn", "layers.10.mlp"]);
  assert.equal(sub[0].start, 6);

  // the server's refusal is the error
  await assert.rejects(complete("ab", 9, frameId), /column 9 is outside the text/);
});

test("completion columns follow the client's columnsStartAt1; module names sort by number and need a dot", () => {
  const r = { items: [{ label: "hidden", type: "variable", detail: "d", text: "", sortText: "1" }], start: 5, length: 3 };
  assert.equal(completionTargets(r, (c) => c)[0].start, 6);
  assert.equal(completionTargets(r, (c) => c - 1)[0].start, 5);
  const modules = ["embed_tokens", "layers.2", "layers.2.attn", "layers.10", "norm"].map((name) => ({ name, kind: "k", numParams: 1 }));
  const layers = moduleTargets(modules, "layers.", 7, (c) => c);
  assert.deepEqual(layers.sort((a, b) => a.sortText!.localeCompare(b.sortText!)).map((t) => t.label), ["layers.2", "layers.10"]);
  assert.deepEqual(moduleTargets(modules, "x + layers.2.a + 1", 14, (c) => c - 1).map((t) => [t.label, t.start, t.length]), [["layers.2.attn", 4, 10]]);
  assert.deepEqual(moduleTargets(modules, "norm", 4, (c) => c), [], "no dot: the server's functions and names only");
  assert.deepEqual(moduleTargets(modules, "$1.", 3, (c) => c), []);
});

test("data breakpoints: on a tensor variable, stop where the condition becomes true; no condition says Edit Condition; the server's refusals", async () => {
  const { dc, ev } = await shared.adapter();
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(10)], maxNewTokens: 2, stopOnEntry: true }, { functionBreakpoints: [{ name: "layers.30" }] });
  assert.equal(cfg.capabilities?.supportsDataBreakpoints, true);
  const fnId = cfg.functions!.body.breakpoints[0].id;
  const tid = (await ev.stopped()).body.threadId;
  const frameId = (await topFrame(dc, tid)).id;
  const acts = await scopeRef(dc, frameId, "Activations");

  const info = (await dc.dataBreakpointInfoRequest({ variablesReference: acts, name: "hidden" })).body;
  assert.equal(info.dataId, "hidden");
  assert.deepEqual(info.accessTypes, ["write"]);
  assert.equal(info.canPersist, false);
  assert.match(info.description, /condition over hidden/);
  // a row of a tensor, an Evaluate result: not watchable, with the reason
  const hidden = await variable(dc, acts, "hidden");
  const row = (await dc.dataBreakpointInfoRequest({ variablesReference: hidden.variablesReference, name: "[0]" })).body;
  assert.equal(row.dataId, null);
  assert.match(row.description, /whole tensor: set it on hidden, with a condition over this part, e\.g\. max\(abs\(hidden\[0\]\)\) > 1000/);
  await dc.evaluateRequest({ expression: "hidden * 2", frameId, context: "repl" });
  assert.equal((await dc.dataBreakpointInfoRequest({ name: "$1" })).body.dataId, null);

  const set = await dc.setDataBreakpointsRequest({
    breakpoints: [
      { dataId: "hidden", accessType: "write", condition: "layer == 6 and max(abs(hidden)) > 0" },
      { dataId: "hidden", accessType: "write" }, // VS Code's Break on Value Change: no condition
      { dataId: "hidden", condition: "norm(mlp_out) > 1" },
    ],
  });
  const [good, bare, other] = set.body.breakpoints;
  assert.equal(good.verified, true);
  assert.match(good.message ?? "", /^checked where hidden exists \(every stop point\)$/);
  assert.equal(bare.verified, false);
  assert.match(bare.message ?? "", /Edit Condition, e\.g\. max\(abs\(hidden\)\) > 1000/);
  assert.equal(other.verified, false);
  assert.match(other.message ?? "", /its condition does not use 'hidden', the tensor it watches/);
  const ids = [fnId, good.id, bare.id, other.id];
  assert.equal(new Set(ids).size, 4, `one id space for every kind of breakpoint: ${ids}`);

  await dc.continueRequest({ threadId: tid });
  const hit = await ev.stopped(tid);
  assert.equal(hit.body.reason, "data breakpoint");
  assert.deepEqual(hit.body.hitBreakpointIds, [good.id]);
  assert.match(hit.body.description ?? "", new RegExp(`^data breakpoint ${good.id}: .* became true at layers\\.6$`));
  assert.match((await topFrame(dc, tid)).name, /^layers\.6\b/);

  // it stays true at layers.6.attn and .mlp (no stop there); the function breakpoint is next
  await dc.continueRequest({ threadId: tid });
  const next: Stopped = await ev.stopped(tid);
  assert.equal(next.body.reason, "function breakpoint");
  assert.deepEqual(next.body.hitBreakpointIds, [fnId]);

  // cleared: the decode pass passes layer 6 without a stop, only the function breakpoint stops
  assert.deepEqual((await dc.setDataBreakpointsRequest({ breakpoints: [] })).body.breakpoints, []);
  await dc.continueRequest({ threadId: tid });
  const last = await ev.stopped(tid);
  assert.equal(last.body.reason, "function breakpoint");
  assert.match((await topFrame(dc, tid)).name, /^layers\.30\b/);
});

test("a step that lands where a data breakpoint becomes true keeps its reason and names the data breakpoint; a hit condition counts the times it became true", async () => {
  const { dc, ev } = await shared.adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(11)], maxNewTokens: 3, stopOnEntry: true });
  const tid = (await ev.stopped()).body.threadId;
  const [onStep, third] = (await dc.setDataBreakpointsRequest({
    breakpoints: [
      { dataId: "hidden", condition: "layer == 1 and max(abs(hidden)) > 0" },
      // true at layers.5 of every pass (false between): from the third time, i.e. the second decode pass
      { dataId: "hidden", condition: "layer == 5 and norm(hidden) > 0", hitCondition: ">= 3" },
    ],
  })).body.breakpoints;
  assert.ok(onStep.verified && third.verified);
  await dc.nextRequest({ threadId: tid });
  const s = await ev.stopped(tid);
  assert.equal(s.body.reason, "step");
  assert.deepEqual(s.body.hitBreakpointIds, [onStep.id]);
  assert.match(s.body.description ?? "", new RegExp(`^Stepped to layers\\.1 · data breakpoint ${onStep.id}: .* became true at layers\\.1$`));
  await dc.setDataBreakpointsRequest({ breakpoints: [{ dataId: "hidden", condition: "layer == 5 and norm(hidden) > 0", hitCondition: ">= 3" }] });
  await dc.continueRequest({ threadId: tid });
  const d = await ev.stopped(tid);
  assert.equal(d.body.reason, "data breakpoint");
  assert.deepEqual(d.body.hitBreakpointIds, [third.id], "an unchanged data breakpoint keeps its id (and its count)");
  const pass = (await dc.stackTraceRequest({ threadId: tid })).body.stackFrames.find((f) => /^decode|^prefill/.test(f.name));
  assert.match(pass?.name ?? "", /^decode of token 2\b/, "the third time it became true: the second decode pass");
});
