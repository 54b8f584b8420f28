// Which Python runs a local server, and "Djinn: Set Up Python Environment": a virtual
// environment in the extension's global storage with the server package shipped in the
// extension (server/, pyproject.toml) installed into it.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as vscode from "vscode";
import { resolvePython } from "../client";
import { settings } from "./settings";

export function managedVenvPython(context: vscode.ExtensionContext): string {
  return join(context.globalStorageUri.fsPath, "venv", process.platform === "win32" ? "Scripts/python.exe" : "bin/python");
}

/** The setting, else $DJINN_PYTHON, else the managed venv, else <extension>/.venv, else python3. */
export function resolveServerPython(context: vscode.ExtensionContext): string {
  const s = settings();
  if (s.pythonPath) return s.pythonPath;
  if (process.env.DJINN_PYTHON) return process.env.DJINN_PYTHON;
  const managed = managedVenvPython(context);
  if (existsSync(managed)) return managed;
  return resolvePython();
}

function run(cmd: string, args: string[], out: vscode.OutputChannel, token?: vscode.CancellationToken): Promise<void> {
  return new Promise((resolve, reject) => {
    out.appendLine(`$ ${cmd} ${args.join(" ")}`);
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    const onData = (b: Buffer) => out.append(b.toString());
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const sub = token?.onCancellationRequested(() => child.kill("SIGTERM"));
    child.on("error", (e) => (sub?.dispose(), reject(e)));
    child.on("close", (code) => (sub?.dispose(), code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}`))));
  });
}

/** Creates (or updates) the managed venv and installs the server package into it. */
export async function setupPython(context: vscode.ExtensionContext, out: vscode.OutputChannel): Promise<string | undefined> {
  const serverDir = vscode.Uri.joinPath(context.extensionUri, "server").fsPath;
  if (!existsSync(join(serverDir, "pyproject.toml"))) {
    void vscode.window.showErrorMessage(`Djinn: the server package is missing from the extension (${serverDir}/pyproject.toml).`);
    return undefined;
  }
  const base = await vscode.window.showInputBox({
    title: "Djinn: Python for the server environment",
    prompt: "A Python 3.10+ to create the virtual environment with (torch, grpcio, protobuf and numpy are installed into it)",
    value: "python3",
    ignoreFocusOut: true,
  });
  if (!base) return undefined;
  const venvDir = join(context.globalStorageUri.fsPath, "venv");
  out.show(true);
  try {
    await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: "Djinn: setting up the server's Python environment", cancellable: true }, async (progress, token) => {
      progress.report({ message: `creating ${venvDir}` });
      await run(base, ["-m", "venv", venvDir], out, token);
      const py = managedVenvPython(context);
      progress.report({ message: "pip install (torch, grpcio, protobuf, numpy)" });
      await run(py, ["-m", "pip", "install", "--upgrade", "pip"], out, token);
      await run(py, ["-m", "pip", "install", serverDir], out, token);
    });
  } catch (e) {
    void vscode.window.showErrorMessage(`Djinn: setting up the Python environment failed: ${(e as Error).message} (see the Djinn output)`);
    return undefined;
  }
  const py = managedVenvPython(context);
  void vscode.window.showInformationMessage(`Djinn: local servers will run with ${py}.`);
  return py;
}
