// The adapter over stdio, launching its own local server (tiny-40l on the CPU): loading
// progress, the outline file, the three ways of setting breakpoints, output, terminate.
// Plus malformed requests and attributes, which need no server.
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DebugProtocol } from "@vscode/debugprotocol";
import { DjinnClient, repoRoot } from "../../client";
import { newClient, promptTokens, readMemory, start, stop, topFrame, waitFor, type DC } from "./helpers";

const FIXTURE = join(repoRoot(), "test", "adapter", "fixtures", "tiny-40l.djinn");
const tmp = mkdtempSync(join(tmpdir(), "djinn-adapter-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** 1-based line of a module in the fixture outline. */
function lineOf(module: string): number {
  const lines = readFileSync(FIXTURE, "utf8").split("\n");
  const i = lines.findIndex((l) => l.split("#")[0].trim() === module);
  assert.ok(i >= 0, module);
  return i + 1;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("launch: local server with progress; gutter, function and launch breakpoints hit their layers; output; terminate stops the server", async () => {
  const { dc, ev } = await newClient();
  let pid = 0;
  try {
    const outline = join(tmp, "gutter.djinn");
    copyFileSync(FIXTURE, outline);
    const written = join(tmp, "sub", "generated.djinn");
    // the third is past the last module line (a comment or blank line moves to the next module line: breakpoints.test.ts)
    const lines = [lineOf("layers.3.attn"), lineOf("norm"), lineOf("lm_head") + 1, lineOf("layers.39.mlp")];
    const cfg = await start(
      dc,
      ev,
      "launch",
      { model: "tiny-40l", device: "cpu", prompt: [promptTokens(1)], maxNewTokens: 2, breakpoints: [12], outlinePath: written, token: "s3cret" },
      {
        sourceBreakpoints: { path: outline, lines, hitConditions: [undefined, undefined, undefined, "2"] },
        functionBreakpoints: [{ name: "layers.7.mlp" }, { name: "layers.99" }, { name: "lm_head" }],
      },
    );
    // Before the model is known: unverified; comments and norm get their reason at once.
    const src = cfg.source!.body.breakpoints;
    assert.equal(src.length, 4);
    assert.equal(src[0].verified, false);
    assert.match(src[0].message ?? "", /pending/);
    assert.match(src[1].message ?? "", /norm runs after the last layer/);
    assert.match(src[2].message ?? "", /no module line at or after line/);
    const fns = cfg.functions!.body.breakpoints;
    assert.match(fns[2].message ?? "", /lm_head/);

    // Loading the model reports progress; then 'breakpoint' events verify what the server accepted.
    const ps = await ev.next<DebugProtocol.ProgressStartEvent>("progressStart", (e) => /Starting Djinn/.test(e.body.title));
    await ev.next<DebugProtocol.ProgressEndEvent>("progressEnd", (e) => e.body.progressId === ps.body.progressId);
    const changed = await ev.next<DebugProtocol.BreakpointEvent>("breakpoint", (e) => e.body.breakpoint.id === src[0].id);
    assert.equal(changed.body.reason, "changed");
    assert.equal(changed.body.breakpoint.verified, true);
    const bad = await ev.next<DebugProtocol.BreakpointEvent>("breakpoint", (e) => e.body.breakpoint.id === fns[1].id);
    assert.equal(bad.body.breakpoint.verified, false);
    assert.match(bad.body.breakpoint.message ?? "", /layer 99 does not exist/);

    // The generated outline file was written where outlinePath says, and equals the fixture.
    assert.ok(existsSync(written));
    assert.equal(readFileSync(written, "utf8"), readFileSync(FIXTURE, "utf8"));
    const ol = await dc.customRequest("djinn/outline");
    assert.equal(ol.body.text, readFileSync(FIXTURE, "utf8"));

    const info = await dc.customRequest("djinn/serverInfo");
    assert.equal(info.body.local, true);
    assert.equal(info.body.model, "tiny-40l");
    pid = info.body.pid;
    assert.ok(alive(pid));
    // the local server was started with the token: a client without it is refused
    const stranger = new DjinnClient(info.body.address);
    await assert.rejects(stranger.getInfo(), /UNAUTHENTICATED|PERMISSION_DENIED/);
    stranger.close();

    // 1. gutter: layers.3.attn, and its frame points at that line of the outline file (written one).
    const s1 = await ev.stopped();
    const tid = s1.body.threadId;
    assert.equal(s1.body.reason, "breakpoint");
    assert.deepEqual(s1.body.hitBreakpointIds, [src[0].id]);
    assert.equal(s1.body.allThreadsStopped, false);
    let f = await topFrame(dc, tid);
    assert.match(f.name, /^layers\.3\.attn/);
    assert.equal(f.line, lineOf("layers.3.attn"));
    assert.ok(f.source?.path?.endsWith(".djinn"));
    // 2. function breakpoint: layers.7.mlp
    await dc.continueRequest({ threadId: tid });
    const s2 = await ev.stopped(tid);
    assert.equal(s2.body.reason, "function breakpoint");
    assert.deepEqual(s2.body.hitBreakpointIds, [fns[0].id]);
    f = await topFrame(dc, tid);
    assert.match(f.name, /^layers\.7\.mlp/);
    // 3. launch attribute: layers.12
    await dc.continueRequest({ threadId: tid });
    const s3 = await ev.stopped(tid);
    assert.equal(s3.body.reason, "breakpoint");
    f = await topFrame(dc, tid);
    assert.match(f.name, /^layers\.12 /);
    // hit count 2 on layers.39.mlp: not in the prefill pass (first hit), so the decode pass stops at layers.3.attn first
    await dc.continueRequest({ threadId: tid });
    const s4 = await ev.stopped(tid);
    assert.deepEqual(s4.body.hitBreakpointIds, [src[0].id]);
    const st = await dc.stackTraceRequest({ threadId: tid });
    assert.match(st.body.stackFrames.map((x) => x.name).join(" | "), /decode of token 1/);
    for (let i = 0; i < 2; i++) {
      await dc.continueRequest({ threadId: tid });
      await ev.stopped(tid);
    }
    f = await topFrame(dc, tid);
    assert.match(f.name, /^layers\.12 /);
    await dc.continueRequest({ threadId: tid });
    const s5 = await ev.stopped(tid);
    assert.deepEqual(s5.body.hitBreakpointIds, [src[3].id]);
    f = await topFrame(dc, tid);
    assert.match(f.name, /^layers\.39\.mlp/);
    assert.equal(f.line, lineOf("layers.39.mlp"));

    // Output streams the generated text: one token so far, as an output event with its data.
    const tokenOut = ev.all.find((e) => e.event === "output" && (e as DebugProtocol.OutputEvent).body.data?.token !== undefined) as DebugProtocol.OutputEvent;
    assert.ok(tokenOut, "token output");
    assert.equal(tokenOut.body.category, "stdout");
    assert.equal(tokenOut.body.data.sessionId, tid);

    // terminate: the launch closes its session and stops its local server.
    await dc.terminateRequest({});
    await ev.next("terminated");
    await waitFor("the local server to exit", () => !alive(pid), 15_000);
  } finally {
    await stop(dc);
    if (pid && alive(pid)) process.kill(pid, "SIGKILL");
  }
});

async function expectError(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.match(e.message, re);
    return true;
  });
}

test("malformed attributes and requests get error responses naming what is wrong; the adapter lives", async () => {
  const { dc, ev } = await newClient();
  try {
    await dc.initializeRequest({ adapterID: "djinn", pathFormat: "path", linesStartAt1: true, columnsStartAt1: true });
    const launch = (args: object) => dc.launchRequest(args as DebugProtocol.LaunchRequestArguments);
    const cases: Array<[object, RegExp]> = [
      [{}, /'model' is required/],
      [{ model: "tiny-40l", sesions: 3 }, /unknown launch attribute 'sesions' \(did you mean 'sessions'\?\)/],
      [{ model: "tiny-40l", sessions: "8" }, /'sessions' must be an integer in 1\.\.10000; got "8" \(a string\)/],
      [{ model: "tiny-40l", sessions: 0 }, /'sessions'/],
      [{ model: "tiny-40l", device: "tpu" }, /'device' must be one of "auto", "cpu", "cuda"/],
      [{ model: "tiny-40l", prompt: 5 }, /'prompt' must be a string, or a list/],
      [{ model: "tiny-40l", prompt: ["a", {}] }, /'prompt' item 1/],
      [{ model: "tiny-40l", prompt: ["a", "b", "c"], sessions: 2 }, /'sessions' \(2\) is smaller than the number of prompts \(3\)/],
      [{ model: "tiny-40l", breakpoints: ["layers.x"] }, /'breakpoints' item 0/],
      [{ model: "tiny-40l", breakpoints: 10 }, /'breakpoints' must be a list/],
      [{ model: "tiny-40l", maxNewTokens: 0 }, /'maxNewTokens'/],
      [{ model: "tiny-40l", contextTokens: 1.5 }, /'contextTokens'/],
      [{ model: "tiny-40l", vramBudgetGb: -1 }, /'vramBudgetGb'/],
      [{ model: "tiny-40l", vramBudgetGb: "lots" }, /'vramBudgetGb' must be a number of GB or "auto:FRACTION"/],
      [{ model: "tiny-40l", hostPoolGb: "2" }, /'hostPoolGb'/],
      [{ model: "tiny-40l", stopOnEntry: "yes" }, /'stopOnEntry' must be true or false/],
      [{ model: "tiny-40l", server: "nohost" }, /'server' must be an address "host:port"/],
      [{ server: "127.0.0.1:5556", device: "cpu" }, /'device' configures a local server, but 'server'/],
      [{ model: "tiny-40l", token: 5 }, /'token' must be a string/],
      [{ model: "tiny-40l", env: { A: 1 } }, /'env' must be an object of string values/],
    ];
    for (const [args, re] of cases) await expectError(launch(args), re);
    await expectError(dc.attachRequest({} as DebugProtocol.AttachRequestArguments), /attach attribute 'server' is required/);
    await expectError(dc.attachRequest({ server: "127.0.0.1:1", model: "x" } as DebugProtocol.AttachRequestArguments), /unknown attach attribute 'model'/);

    // Requests that make no sense before (or without) a session.
    await expectError(dc.stackTraceRequest({ threadId: 42 }), /no thread 42/);
    await expectError(dc.stackTraceRequest({ threadId: "x" as unknown as number }), /threadId must be an integer/);
    await expectError(dc.variablesRequest({ variablesReference: 999 }), /variable reference 999 is unknown/);
    await expectError(dc.scopesRequest({ frameId: 12345 }), /no thread|unknown frameId/);
    await expectError(dc.evaluateRequest({ expression: "hidden" }), /no session is paused/);
    await expectError(dc.evaluateRequest({ expression: "" }), /evaluate needs an expression/);
    await expectError(dc.continueRequest({ threadId: 7 }), /no thread 7/);
    await expectError(readMemory(dc, { memoryReference: "nope", count: 4 } as DebugProtocol.ReadMemoryArguments), /memory reference 'nope' is unknown/);
    await expectError(dc.customRequest("djinn/nothing"), /unknown request 'djinn\/nothing'/);
    await expectError(dc.customRequest("djinn/outline"), /model is not known yet/);
    await expectError(dc.customRequest("variables"), /'variables' needs arguments/);
    await expectError(dc.setBreakpointsRequest({} as DebugProtocol.SetBreakpointsArguments), /needs arguments/);
    await expectError(dc.setBreakpointsRequest({ breakpoints: [{ line: 1 }] } as DebugProtocol.SetBreakpointsArguments), /needs a source/);
    await expectError(dc.sourceRequest({ sourceReference: 77 }), /no source with reference 77/);
    // A gutter breakpoint in a file that is not an outline is unverified, with the reason.
    const notOutline = await dc.setBreakpointsRequest({ source: { path: join(tmp, "missing.djinn") }, breakpoints: [{ line: 3 }] });
    assert.equal(notOutline.body.breakpoints[0].verified, false);
    assert.match(notOutline.body.breakpoints[0].message ?? "", /cannot read/);
    const filters = await dc.setExceptionBreakpointsRequest({ filters: ["nan", "bogus"], filterOptions: [{ filterId: "normSpike", condition: "0.5" }] });
    assert.deepEqual(filters.body?.breakpoints?.map((b) => b.verified), [true, false, false]);

    // Garbage on the wire: no response is possible, but the adapter keeps serving.
    const raw = (dc as unknown as { _adapterProcess: { stdin: NodeJS.WritableStream } })._adapterProcess.stdin;
    const junk = "{this is not json";
    raw.write(`Content-Length: ${Buffer.byteLength(junk)}\r\n\r\n${junk}`);
    await ev.next<DebugProtocol.OutputEvent>("output", (e) => /malformed message/.test(e.body.output));
    const threads = await dc.threadsRequest();
    assert.deepEqual(threads.body.threads, []);

    // A launch against a server that is not there fails with a clear message, and the adapter still answers.
    await expectError(launch({ server: "127.0.0.1:9" }), /could not launch: .*no Djinn server at 127\.0\.0\.1:9/);
    assert.deepEqual((await dc.threadsRequest()).body.threads, []);
  } finally {
    await stop(dc as DC);
  }
});

test("bf16: values, pages, raw memory and writes in the tensor's own dtype (a bfloat16 server on the CPU)", async () => {
  const { dc, ev } = await newClient();
  let client: DjinnClient | undefined;
  try {
    await start(dc, ev, "launch", { model: "tiny-40l", device: "cpu", dtype: "bfloat16", prompt: [promptTokens(2)], maxNewTokens: 1, breakpoints: [4] });
    const s = await ev.stopped();
    const tid = s.body.threadId;
    const info = await dc.customRequest("djinn/serverInfo");
    client = new DjinnClient(info.body.address);
    const f = await topFrame(dc, tid);
    const acts = (await dc.scopesRequest({ frameId: f.id })).body.scopes[0].variablesReference;
    const hidden = (await dc.variablesRequest({ variablesReference: acts })).body.variables.find((v) => v.name === "hidden")!;
    assert.match(hidden.value, /^bf16\[12, 128\] μ=/);
    assert.equal(hidden.type, "bfloat16[12, 128]");
    const row = (await dc.variablesRequest({ variablesReference: hidden.variablesReference, start: 3, count: 1 })).body.variables[0];
    const vals = (await dc.variablesRequest({ variablesReference: row.variablesReference, start: 0, count: 8 })).body.variables.map((v) => Number(v.value));
    const raw = (await client.getTensor({ sessionId: tid, name: "hidden", slice: [{ start: 3, stop: 4, step: 0 }] })).data;
    assert.equal(raw.length, 128 * 2);
    const truth = Array.from({ length: 8 }, (_, i) => {
      const b = Buffer.alloc(4);
      b.writeUInt16LE(raw.readUInt16LE(i * 2), 2);
      return b.readFloatLE(0);
    });
    vals.forEach((v, i) => assert.ok(Math.abs(v - truth[i]) <= Math.abs(truth[i]) * 1e-5, `${v} vs ${truth[i]}`));
    const mem = await readMemory(dc, { memoryReference: row.memoryReference!, offset: 6, count: 16 });
    assert.deepEqual(Buffer.from(mem.body!.data!, "base64"), raw.subarray(6, 22));
    // an fp32 expression written into a bf16 region is converted to bf16: row 3 becomes row 4, bit for bit
    const w = await dc.customRequest("setExpression", { expression: "hidden[3]", value: "float(hidden[4])", frameId: f.id });
    assert.match(w.body.value, /^bf16\[1, 128\]/);
    const rows = (await client.getTensor({ sessionId: tid, name: "hidden", slice: [{ start: 3, stop: 5, step: 0 }] })).data;
    assert.deepEqual(rows.subarray(0, 256), rows.subarray(256, 512));
    await dc.terminateRequest({});
    await ev.next("terminated");
  } finally {
    client?.close();
    await stop(dc);
  }
});
