// What the frames and the outline offer, through the adapter over stdio against one CPU tiny-40l
// server: each frame's own scopes (layer: its tensors; pass: tokens, logits; session: prompt,
// text, memory), the `tensor` menu context on tensors only, breakpointLocations, and a gutter
// breakpoint on a blank or comment line moved to the next module line.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { promptTokens, sharedServer, start } from "./helpers";

const shared = sharedServer();
const tmp = mkdtempSync(join(tmpdir(), "djinn-frames-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ctx = (v: DebugProtocol.Variable) => (v as { __vscodeVariableMenuContext?: string }).__vscodeVariableMenuContext;

test("each frame has its own scopes: the layer's tensors, the pass's tokens and logits, the session and its memory; tensors carry the 'tensor' menu context", async () => {
  const { dc, ev } = await shared.adapter();
  await start(dc, ev, "launch", { server: shared.server.address, prompt: ["The quick brown fox"], maxNewTokens: 2 }, {
    functionBreakpoints: [{ name: "layers.10.attn" }],
    clientID: "vscode",
  });
  const tid = (await ev.stopped()).body.threadId;
  const frames = (await dc.stackTraceRequest({ threadId: tid })).body.stackFrames;
  assert.equal(frames.length, 4);
  const [mod, layer, pass, session] = frames;
  const scopes = async (f: DebugProtocol.StackFrame) => (await dc.scopesRequest({ frameId: f.id })).body.scopes;
  const vars = async (ref: number) => (await dc.variablesRequest({ variablesReference: ref })).body.variables;
  const names = (vs: DebugProtocol.Variable[]) => vs.map((v) => v.name);

  // the module frame: everything at the stop, as before
  assert.deepEqual((await scopes(mod)).map((s) => s.name), ["Activations", "KV cache", "Session", "Logit lens"]);

  // the layer frame: layer 10's tensors (not the pass's), and its KV
  const ls = await scopes(layer);
  assert.deepEqual(ls.map((s) => s.name), ["Layer 10", "KV cache"]);
  const lv = await vars(ls[0].variablesReference);
  for (const n of ["hidden", "attn_out", "q", "k", "v", "k_cache", "v_cache"]) assert.ok(names(lv).includes(n), `${n} in ${names(lv)}`);
  for (const n of ["tokens", "logits"]) assert.ok(!names(lv).includes(n), `${n} is the pass's`);
  for (const v of lv) assert.ok(ctx(v) === "tensor" || ctx(v) === "djinnTensor", `${v.name}: ${ctx(v)}`);

  // the pass frame: what the pass is, its input tokens, the logits so far (lazy), the logit lens
  const ps = await scopes(pass);
  assert.deepEqual(ps.map((s) => s.name), ["Pass", "Logit lens"]);
  assert.equal(ps[1].expensive, true);
  const pv = await vars(ps[0].variablesReference);
  const get = (vs: DebugProtocol.Variable[], n: string) => {
    const v = vs.find((x) => x.name === n);
    assert.ok(v, `${n} in ${names(vs)}`);
    return v;
  };
  assert.equal(get(pv, "phase").value, "prefill");
  assert.match(get(pv, "progress").value, /^layer 10 after attention of 40$/);
  const tokens = get(pv, "tokens");
  assert.match(tokens.value, /^i64\[\d+\]/);
  assert.equal(ctx(tokens), "tensor");
  const logits = get(pv, "logits");
  assert.equal(logits.presentationHint?.lazy, true);
  assert.equal(ctx(logits), "tensor");
  const expanded = await vars(logits.variablesReference);
  assert.match(expanded[0].value, /^f32\[\d+, \d+\] μ=/);
  assert.equal(ctx(get(pv, "phase")), undefined, "not a tensor: no View Tensor");
  assert.match(get(pv, "generated before this pass").value, /^0 tokens ""$/);

  // the session frame: prompt, generated text, where its memory is
  const ss = await scopes(session);
  assert.deepEqual(ss.map((s) => s.name), ["Session", "Memory"]);
  const sv = await vars(ss[0].variablesReference);
  assert.equal(get(sv, "prompt").value, '"The quick brown fox"');
  assert.ok(names(sv).includes("generated text"));
  for (const v of sv) assert.equal(ctx(v), undefined, v.name);
  const mv = await vars(ss[1].variablesReference);
  assert.deepEqual(names(mv), ["location", "bytes", "context", "filled", "last swap out", "last swap in", "swaps"]);
  assert.match(get(mv, "location").value, /resident|host/);

  // an element of a tensor is a number, not a tensor
  const hidden = get(lv, "hidden");
  const row = (await dc.variablesRequest({ variablesReference: hidden.variablesReference, start: 0, count: 1 })).body.variables[0];
  assert.equal(ctx(row), "djinnTensor", "a row of a writable tensor is a (writable) tensor");
  const el = (await dc.variablesRequest({ variablesReference: row.variablesReference, start: 0, count: 1 })).body.variables[0];
  assert.equal(ctx(el), undefined);
});

test("breakpointLocations: the stop-point lines of a range; a breakpoint on a blank or comment line moves to the next module line", async () => {
  const outline = join(tmp, "hand.djinn");
  // 1 header, 2 module, 3 blank, 4 comment, 5 module (stop point), 6 norm (not a stop point), 7 blank
  writeFileSync(outline, ["# my outline", "embed_tokens", "", "# the one I care about", "  layers.3.attn   # attention", "norm", ""].join("\n"));
  const { dc, ev } = await shared.adapter();
  const cfg = await start(dc, ev, "launch", { server: shared.server.address, prompt: [promptTokens(91)], maxNewTokens: 1 }, {
    sourceBreakpoints: { path: outline, lines: [3, 7] },
  });
  const [moved, past] = cfg.source!.body.breakpoints;
  assert.equal(moved.line, 5, "moved from the blank line 3 to layers.3.attn");
  assert.equal(past.line, 7);
  assert.equal(past.verified, false);
  assert.match(past.message ?? "", /no module line at or after line 7/);

  const loc = (line: number, endLine?: number) => dc.customRequest("breakpointLocations", { source: { path: outline }, line, endLine }) as Promise<DebugProtocol.BreakpointLocationsResponse>;
  assert.deepEqual((await loc(1, 7)).body.breakpoints, [{ line: 2 }, { line: 5 }], "norm is no stop point");
  assert.deepEqual((await loc(4)).body.breakpoints, []);
  assert.deepEqual((await loc(5)).body.breakpoints, [{ line: 5 }]);
  await assert.rejects(dc.customRequest("breakpointLocations", { source: { path: outline } }), /breakpointLocations needs a line/);

  // the moved breakpoint is the one the session stops on (embed_tokens has none)
  const s = await ev.stopped();
  assert.deepEqual(s.body.hitBreakpointIds, [moved.id]);
  const f = (await dc.stackTraceRequest({ threadId: s.body.threadId })).body.stackFrames[0];
  assert.match(f.name, /^layers\.3\.attn/);
  assert.equal(f.source?.path, outline);
  assert.equal(f.line, 5);

  // a breakpoint on a comment line set while the session runs moves too, and is verified by the server
  const again = await dc.setBreakpointsRequest({ source: { path: outline }, breakpoints: [{ line: 1 }] });
  assert.equal(again.body.breakpoints[0].line, 2);
  assert.equal(again.body.breakpoints[0].verified, true);
});
