// Which Python runs a local server, and the help when it cannot: "Djinn: Set Up Python
// Environment" (a virtual environment in the extension's global storage with the server
// package shipped in the extension installed into it, or the repository's scripts/setup.sh
// when the workspace is a Djinn checkout) and "Djinn: Select Python Interpreter" (the Python
// extension's picker when it is installed, else a quick pick of the Pythons found here, each
// with its version and what it lacks). Both write djinn.server.pythonPath.
import { execFile, spawn } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { delimiter, join } from "node:path";
import * as vscode from "vscode";
import { resolvePython } from "../client";
import { settings } from "./settings";

/** What the server needs, as `import` names and as pip names. */
export const SERVER_MODULES: ReadonlyArray<[module: string, pip: string]> = [
  ["torch", "torch"],
  ["grpc", "grpcio"],
  ["google.protobuf", "protobuf"],
  ["numpy", "numpy"],
];
export const MIN_PYTHON: [number, number] = [3, 10];

export function managedVenvPython(context: vscode.ExtensionContext): string {
  return join(context.globalStorageUri.fsPath, "venv", process.platform === "win32" ? "Scripts/python.exe" : "bin/python");
}

/** The setting, else $DJINN_PYTHON, else the managed venv, else <extension>/.venv, else python3. */
export function resolveServerPython(context: vscode.ExtensionContext, pythonPath?: string): string {
  const explicit = pythonPath ?? settings().pythonPath;
  if (explicit) return explicit;
  if (process.env.DJINN_PYTHON) return process.env.DJINN_PYTHON;
  const managed = managedVenvPython(context);
  if (existsSync(managed)) return managed;
  return resolvePython();
}

/** What a Python is: its version and which of the server's packages it lacks (pip names). */
export interface PythonProbe {
  python: string;
  /** undefined: it did not run (not found, not executable, hung) */
  version?: [number, number, number];
  missing: string[];
  /** it is a virtual environment's python */
  venv?: boolean;
  error?: string;
}

const PROBE = [
  "import sys, json",
  "r = {'v': list(sys.version_info[:3]), 'missing': [], 'venv': sys.prefix != getattr(sys, 'base_prefix', sys.prefix)}",
  "try:",
  "    import importlib.util as u",
  "    for m, pip in " + JSON.stringify(SERVER_MODULES.map(([m, p]) => [m, p])).replace(/"/g, "'") + ":",
  "        try:",
  "            ok = u.find_spec(m) is not None",
  "        except Exception:",
  "            ok = False",
  "        if not ok: r['missing'].append(pip)",
  "except Exception:",
  "    r['missing'] = " + JSON.stringify(SERVER_MODULES.map(([, p]) => p)).replace(/"/g, "'"),
  "print(json.dumps(r))",
].join("\n");

/** Runs `python -c PROBE` (a few hundred ms; imports nothing heavy). */
export function probePython(python: string, timeoutMs = 10_000): Promise<PythonProbe> {
  return new Promise((resolve) => {
    execFile(python, ["-c", PROBE], { timeout: timeoutMs, windowsHide: true }, (err, stdout) => {
      try {
        const r = JSON.parse(String(stdout).trim().split("\n").pop() ?? "");
        resolve({ python, version: r.v, missing: r.missing ?? [], venv: !!r.venv });
      } catch {
        resolve({ python, missing: SERVER_MODULES.map(([, p]) => p), error: err ? ((err as NodeJS.ErrnoException).code === "ENOENT" ? "not found" : err.message.split("\n")[0]) : "no answer" });
      }
    });
  });
}

export const versionText = (v?: number[]) => (v ? v.join(".") : "?");
export const tooOld = (v?: number[]) => !!v && (v[0] < MIN_PYTHON[0] || (v[0] === MIN_PYTHON[0] && v[1] < MIN_PYTHON[1]));

/** One line about a probed Python: "Python 3.11.7 · ready", "Python 3.11.7 · lacks torch, grpcio", "not found". */
export function describeProbe(p: PythonProbe): string {
  if (!p.version) return p.error ?? "does not run";
  if (tooOld(p.version)) return `Python ${versionText(p.version)} · too old (the server needs ${MIN_PYTHON.join(".")}+)`;
  return `Python ${versionText(p.version)} · ${p.missing.length ? `lacks ${p.missing.join(", ")}` : "has torch, grpcio, protobuf, numpy"}`;
}

/** Where a command of the set-up runs: `cmd args` in `cwd`, output into the Djinn log. */
export type Runner = (cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; token?: vscode.CancellationToken }) => Promise<void>;

export interface PythonItem extends vscode.QuickPickItem {
  python?: string;
  browse?: boolean;
  probe?: PythonProbe;
}

/** A workspace folder that is a Djinn checkout (its scripts/setup.sh makes .venv). */
export function djinnCheckout(): vscode.WorkspaceFolder | undefined {
  return vscode.workspace.workspaceFolders?.find((f) =>
    ["scripts/setup.sh", "server/pyproject.toml", "proto/djinn/v1/djinn.proto"].every((p) => existsSync(join(f.uri.fsPath, p))),
  );
}

export class PythonEnvironments {
  /** Test hooks: the quick pick, the file dialog and the runner of the set-up's commands. */
  quickPick: (items: PythonItem[], options: vscode.QuickPickOptions) => Thenable<PythonItem | undefined> = (items, options) => vscode.window.showQuickPick(items, options);
  openDialog: (options: vscode.OpenDialogOptions) => Thenable<vscode.Uri[] | undefined> = (options) => vscode.window.showOpenDialog(options);
  run: Runner;

  constructor(private readonly context: vscode.ExtensionContext, private readonly out: vscode.OutputChannel) {
    this.run = (cmd, args, o) => runLogged(cmd, args, out, o);
  }

  /** Writes djinn.server.pythonPath (the workspace's when a folder is open). */
  async use(python: string): Promise<void> {
    const target = vscode.workspace.workspaceFolders?.length ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    await vscode.workspace.getConfiguration("djinn").update("server.pythonPath", python, target);
    this.out.appendLine(`[python] djinn.server.pythonPath = ${python}`);
  }

  /** The Python extension's active interpreter for the workspace, when that extension is installed. */
  async activeInterpreter(): Promise<string | undefined> {
    const ext = vscode.extensions.getExtension<any>("ms-python.python");
    if (!ext) return undefined;
    try {
      const api = ext.isActive ? ext.exports : await ext.activate();
      const envs = api?.environments;
      if (envs?.getActiveEnvironmentPath) {
        const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
        const active = envs.getActiveEnvironmentPath(resource);
        const resolved = active && envs.resolveEnvironment ? await envs.resolveEnvironment(active) : undefined;
        return resolved?.executable?.uri?.fsPath ?? active?.path;
      }
      // the older API
      const details = api?.settings?.getExecutionDetails?.(vscode.workspace.workspaceFolders?.[0]?.uri);
      return details?.execCommand?.[0];
    } catch (e) {
      this.out.appendLine(`[python] the Python extension's interpreter: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** Pythons found here (settings, venvs, PATH), each probed. */
  async candidates(): Promise<PythonProbe[]> {
    const paths: string[] = [];
    const add = (p?: string) => p && !paths.includes(p) && paths.push(p);
    add(settings().pythonPath);
    add(process.env.DJINN_PYTHON);
    add(managedVenvPython(this.context));
    add(resolvePython());
    for (const f of vscode.workspace.workspaceFolders ?? []) for (const v of [".venv", "venv", "env"]) add(join(f.uri.fsPath, v, "bin", "python"));
    add(await this.activeInterpreter());
    for (const name of ["python3", "python3.13", "python3.12", "python3.11", "python3.10", "python"]) add(onPath(name));
    const seen = new Set<string>();
    const unique = paths.filter((p) => {
      if (!p.includes("/") && !p.includes("\\")) return true;
      if (!existsSync(p)) return false;
      // a venv's python is a link to its base: keep both (the venv has the packages), drop exact repeats
      let key = p;
      try {
        key = `${realpathSync(join(p, "..", ".."))}|${p.split(/[\\/]/).pop()}`;
      } catch {
        /* keep p */
      }
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    return Promise.all(unique.map((p) => probePython(p)));
  }

  /**
   * Djinn: Select Python Interpreter. The Python extension's picker when it is installed (its
   * choice is read back through its API), else a quick pick of the Pythons found here (ready
   * ones first) and "Browse…". Writes djinn.server.pythonPath; returns the path.
   */
  async select(): Promise<string | undefined> {
    if (vscode.extensions.getExtension("ms-python.python")) {
      try {
        const before = await this.activeInterpreter();
        await vscode.commands.executeCommand("python.setInterpreter");
        const py = await this.activeInterpreter();
        if (py && (py !== before || (await this.confirmSame(py)))) {
          await this.use(py);
          return py;
        }
        if (!py) return undefined;
      } catch (e) {
        this.out.appendLine(`[python] python.setInterpreter: ${(e as Error).message}; using Djinn's own picker`);
      }
    }
    const found = await this.candidates();
    const ready = (p: PythonProbe) => !!p.version && !tooOld(p.version) && p.missing.length === 0;
    found.sort((a, b) => Number(ready(b)) - Number(ready(a)));
    const current = settings().pythonPath;
    const items: PythonItem[] = found
      .filter((p) => p.version)
      .map((p) => ({ label: `${ready(p) ? "$(check)" : "$(warning)"} ${p.python}`, description: describeProbe(p) + (p.python === current ? " · current" : ""), python: p.python, probe: p }));
    items.push({ label: "$(folder-opened) Browse…", description: "a python executable", browse: true });
    const pick = await this.quickPick(items, { title: "Djinn: Python for local servers (needs torch, grpcio, protobuf, numpy)", ignoreFocusOut: true, matchOnDescription: true });
    if (!pick) return undefined;
    let python = pick.python;
    if (pick.browse) {
      const uris = await this.openDialog({ title: "Djinn: the python executable of local servers", canSelectMany: false, openLabel: "Use this Python" });
      python = uris?.[0]?.fsPath;
    }
    if (!python) return undefined;
    await this.use(python);
    return python;
  }

  private async confirmSame(py: string): Promise<boolean> {
    return (await vscode.window.showInformationMessage(`Djinn: use ${py} for local servers?`, "Use It")) === "Use It";
  }

  /**
   * Djinn: Set Up Python Environment. In a Djinn checkout: its scripts/setup.sh (which makes
   * .venv with the server's requirements; the VS Code test harness is skipped); elsewhere a
   * venv in the extension's storage made by a Python 3.10+ found here, with the server shipped
   * in the extension pip-installed into it (torch, grpcio, protobuf, numpy come with it).
   * Writes djinn.server.pythonPath; returns the environment's python.
   */
  async setup(opts: { base?: string } = {}): Promise<string | undefined> {
    const checkout = djinnCheckout();
    let python: string;
    const steps: Array<{ message: string; cmd: string; args: string[]; cwd?: string; env?: NodeJS.ProcessEnv }> = [];
    if (checkout) {
      const root = checkout.uri.fsPath;
      python = join(root, ".venv", "bin", "python");
      steps.push({ message: `scripts/setup.sh in ${root}`, cmd: "bash", args: ["scripts/setup.sh"], cwd: root, env: { ...process.env, DJINN_SETUP_SKIP_E2E: "1" } });
    } else {
      const serverDir = vscode.Uri.joinPath(this.context.extensionUri, "server").fsPath;
      if (!existsSync(join(serverDir, "pyproject.toml"))) {
        void vscode.window.showErrorMessage(`Djinn: the server package is missing from the extension (${serverDir}/pyproject.toml).`);
        return undefined;
      }
      const base = opts.base ?? (await this.baseForVenv());
      if (!base) return undefined;
      const venvDir = join(this.context.globalStorageUri.fsPath, "venv");
      python = managedVenvPython(this.context);
      steps.push(
        { message: `creating ${venvDir} with ${base}`, cmd: base, args: ["-m", "venv", venvDir] },
        { message: "pip install --upgrade pip", cmd: python, args: ["-m", "pip", "install", "--upgrade", "pip"] },
        { message: "pip install the server (torch, grpcio, protobuf, numpy)", cmd: python, args: ["-m", "pip", "install", serverDir] },
      );
    }
    this.out.show(true);
    try {
      await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: "Djinn: setting up the server's Python environment", cancellable: true }, async (progress, token) => {
        for (const st of steps) {
          if (token.isCancellationRequested) throw new Error("cancelled");
          progress.report({ message: st.message });
          await this.run(st.cmd, st.args, { cwd: st.cwd, env: st.env, token });
        }
      });
    } catch (e) {
      void vscode.window.showErrorMessage(`Djinn: setting up the Python environment failed: ${(e as Error).message} (see Djinn: Show Log)`);
      return undefined;
    }
    await this.use(python);
    return python;
  }

  /** A Python 3.10+ to make the venv with: a base interpreter (python3 on PATH first), else any. */
  private async baseForVenv(): Promise<string | undefined> {
    const names = ["python3", "python3.13", "python3.12", "python3.11", "python3.10"].map(onPath).filter((p): p is string => !!p);
    const probes = [...(await Promise.all(names.map((p) => probePython(p)))), ...(await this.candidates())];
    const usable = probes.filter((p) => p.version && !tooOld(p.version));
    const base = usable.find((p) => !p.venv) ?? usable[0];
    if (base) return base.python;
    const found = probes.filter((p) => p.version).map((p) => `${p.python} (${versionText(p.version)})`);
    void vscode.window.showErrorMessage(`Djinn: no Python ${MIN_PYTHON.join(".")} or newer found${found.length ? `; found ${[...new Set(found)].join(", ")}` : ""}. Install one, then run Djinn: Set Up Python Environment again, or Djinn: Select Python Interpreter.`);
    return undefined;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function runLogged(cmd: string, args: string[], out: vscode.OutputChannel, o: { cwd?: string; env?: NodeJS.ProcessEnv; token?: vscode.CancellationToken }): Promise<void> {
  return new Promise((resolve, reject) => {
    out.appendLine(`$ ${cmd} ${args.join(" ")}${o.cwd ? `   (in ${o.cwd})` : ""}`);
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], cwd: o.cwd, env: o.env });
    const onData = (b: Buffer) => out.append(b.toString());
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const sub = o.token?.onCancellationRequested(() => child.kill("SIGTERM"));
    child.on("error", (e) => (sub?.dispose(), reject(e)));
    child.on("close", (code) => (sub?.dispose(), code === 0 ? resolve() : reject(new Error(`${cmd} ${args.slice(0, 3).join(" ")} exited with ${code}`))));
  });
}
