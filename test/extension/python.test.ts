// Start Local Server with a Python that cannot run the server: the message says why (the
// missing module, "Python not found") and offers "Set Up Python Environment" and "Select
// Python Interpreter"; each writes djinn.server.pythonPath and offers "Start Again", which
// then starts the server. (The pickers and the set-up's commands are stubbed through the
// API's test hooks: a quick pick cannot be clicked from the extension host, and the set-up
// would pip-install torch.)
import * as assert from "node:assert";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import * as vscode from "vscode";
import type { PythonEnvironments, PythonItem } from "../../src/python";
import { api, EXTENSION_ID, waitFor } from "./helpers";

describe("Djinn extension: a local server without a usable Python", function () {
  this.timeout(180_000);
  const cfg = () => vscode.workspace.getConfiguration("djinn");
  const extRoot = () => vscode.extensions.getExtension(EXTENSION_ID)!.extensionPath;
  /** the Python with the server's packages (scripts/setup.sh made it) */
  const good = () => join(extRoot(), ".venv", "bin", "python");
  let bareDir = "";
  let bare = "";
  let hooks: Pick<PythonEnvironments, "quickPick" | "run"> | undefined;
  let managedWrapper: string | undefined;

  before(async () => {
    const a = await api();
    await a.servers.stop();
    hooks = { quickPick: a.servers.python.quickPick, run: a.servers.python.run };
    // a fresh venv without any package: what a person has before installing anything
    bareDir = mkdtempSync(join(tmpdir(), "djinn-bare-python-"));
    execFileSync("python3", ["-m", "venv", "--without-pip", bareDir]);
    bare = join(bareDir, "bin", "python");
  });

  after(async () => {
    const a = await api();
    if (hooks) Object.assign(a.servers.python, hooks);
    await cfg().update("server.pythonPath", undefined, vscode.ConfigurationTarget.Workspace);
    await a.servers.stop();
    rmSync(bareDir, { recursive: true, force: true });
    if (managedWrapper) rmSync(dirname(dirname(managedWrapper)), { recursive: true, force: true });
  });

  async function startAndFail(python: string) {
    const a = await api();
    await cfg().update("server.pythonPath", python, vscode.ConfigurationTarget.Workspace);
    const before = a.notices.recent.length;
    const r = await vscode.commands.executeCommand("djinn.startServer");
    assert.strictEqual(r, undefined, "no server");
    assert.strictEqual(a.servers.current, undefined);
    return waitFor("the message", () => a.notices.recent.slice(before).find((n) => /could not start/.test(n.message)), 20_000);
  }

  it("a Python without the server's packages: the message names the missing module and offers 'Set Up Python Environment' and 'Select Python Interpreter'", async () => {
    const n = await startAndFail(bare);
    assert.strictEqual(n.level, "error");
    assert.match(n.message, /No module named '(torch|grpc|numpy|google)'/, n.message);
    assert.match(n.message, /lacks torch, grpcio, protobuf, numpy/, n.message);
    assert.ok(n.message.includes(bare), "names the Python");
    assert.doesNotMatch(n.message, /server_main|exited before it was ready|\(code 1/, "not the command line and an exit code");
    assert.deepStrictEqual(n.actions.slice(0, 2), ["Set Up Python Environment", "Select Python Interpreter"]);
    n.choose(undefined);
  });

  it("a Python that does not exist: 'Python not found' with the same two buttons", async () => {
    const n = await startAndFail("/nonexistent/djinn/bin/python3");
    assert.match(n.message, /Python not found: \/nonexistent\/djinn\/bin\/python3/, n.message);
    assert.deepStrictEqual(n.actions.slice(0, 2), ["Set Up Python Environment", "Select Python Interpreter"]);
    n.choose(undefined);
  });

  it("'Select Python Interpreter' lists the Pythons found with what they lack, writes djinn.server.pythonPath, and 'Start Again' starts the server", async () => {
    const a = await api();
    const n = await startAndFail(bare);
    let listed: PythonItem[] = [];
    a.servers.python.quickPick = async (items) => {
      listed = items;
      return items.find((i) => i.python === good());
    };
    const before = a.notices.recent.length;
    n.choose("Select Python Interpreter");
    await waitFor("the setting", () => cfg().get("server.pythonPath") === good(), 20_000);
    const bareItem = listed.find((i) => i.python === bare);
    assert.ok(bareItem, `the current (bare) Python is listed: ${listed.map((i) => i.label).join(" | ")}`);
    assert.match(String(bareItem!.description), /lacks torch, grpcio, protobuf, numpy/);
    assert.match(String(listed.find((i) => i.python === good())!.description), /has torch, grpcio, protobuf, numpy/);
    assert.ok(listed.some((i) => i.browse), "and Browse…");
    const again = await waitFor("'Start Again'", () => a.notices.recent.slice(before).find((x) => x.actions.includes("Start Again")), 10_000);
    assert.match(again.message, /local servers will run with/);
    again.choose("Start Again");
    const srv = await waitFor("the server", () => a.servers.current, 120_000);
    assert.strictEqual(srv.kind, "local");
    assert.strictEqual(srv.started?.python, good());
    await a.servers.stop();
  });

  it("'Set Up Python Environment' makes a venv in the extension's storage, pip-installs the shipped server into it, writes djinn.server.pythonPath and offers 'Start Again'", async () => {
    const a = await api();
    const n = await startAndFail(bare);
    const calls: string[][] = [];
    a.servers.python.run = async (cmd, args) => {
      calls.push([cmd, ...args]);
      if (args[0] === "-m" && args[1] === "venv") {
        // the venv's python: a wrapper around the one with the packages (no download here)
        managedWrapper = join(args[2], "bin", "python");
        mkdirSync(dirname(managedWrapper), { recursive: true });
        writeFileSync(managedWrapper, `#!/bin/sh\nexec "${good()}" "$@"\n`);
        chmodSync(managedWrapper, 0o755);
      }
    };
    const before = a.notices.recent.length;
    n.choose("Set Up Python Environment");
    const again = await waitFor("'Start Again'", () => a.notices.recent.slice(before).find((x) => x.actions.includes("Start Again")), 30_000);
    assert.ok(managedWrapper && existsSync(managedWrapper), `a venv was made: ${JSON.stringify(calls)}`);
    assert.strictEqual(cfg().get("server.pythonPath"), managedWrapper);
    assert.deepStrictEqual(calls[0].slice(1, 3), ["-m", "venv"], JSON.stringify(calls));
    assert.ok(!calls[0][0].includes(bareDir), "the venv is made by a Python 3.10+ found here, not the broken one");
    const install = calls.find((c) => c.includes("install") && !c.includes("--upgrade"));
    assert.ok(install, JSON.stringify(calls));
    assert.strictEqual(install![0], managedWrapper);
    assert.strictEqual(install![install!.length - 1], join(extRoot(), "server"), "the server shipped in the extension");
    again.choose("Start Again");
    const srv = await waitFor("the server", () => a.servers.current, 120_000);
    assert.strictEqual(srv.started?.python, managedWrapper);
    await a.servers.stop();
  });
});
