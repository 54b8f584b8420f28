// The Djinn Debugger extension: the djinn debugger (adapter inline or as a process), its
// configuration provider, the model-outline language, the VRAM panel, the tensor viewer,
// Exp 3 from the palette, local server / connection commands and the status-bar item.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import * as vscode from "vscode";
import { DjinnDebugSession } from "../debug-adapter/index";
import * as codec from "../native/codec";
import { allThreads } from "./allThreadsCommand";
import { DebugTracker } from "./debugTracker";
import { useServerPython } from "./defaultModel";
import { DjinnConfigurationProvider, DjinnDynamicProvider } from "./debugConfig";
import { Exp3Runner, type Exp3CommandArgs } from "./exp3Command";
import { Monitor } from "./monitor";
import { Notices } from "./notices";
import { openOutline } from "./outlineCommand";
import { registerOutlineLanguage } from "./outlineLanguage";
import { resolveServerPython } from "./python";
import { ServerManager } from "./serverManager";
import { register as registerSetValue } from "./setValueCommand";
import { settings } from "./settings";
import { StatusBar, STATUS_MENU } from "./statusBar";
import { setServerTokenCommand } from "./tokenStore";
import { TensorViewers, TENSOR_VIEW_TYPE } from "./tensorViewer";
import { viewTensor, viewTensorPrompts, type ViewTensorPrompts } from "./viewTensorCommand";
import { VramPanel, VRAM_VIEW_TYPE } from "./vramPanel";

export interface DjinnApi {
  monitor: Monitor;
  notices: Notices;
  servers: ServerManager;
  vram: VramPanel;
  tensors: TensorViewers;
  exp3: Exp3Runner;
  statusBar: StatusBar;
  tracker: DebugTracker;
  configProvider: DjinnConfigurationProvider;
  dynamicProvider: DjinnDynamicProvider;
  codecBackend: string;
  /** View Tensor's picker and InputBox (replaceable by tests) */
  viewTensorPrompts: ViewTensorPrompts;
}

class AdapterFactory implements vscode.DebugAdapterDescriptorFactory {
  constructor(private readonly extensionUri: vscode.Uri) {}
  createDebugAdapterDescriptor(): vscode.DebugAdapterDescriptor {
    if (settings().inlineAdapter) return new vscode.DebugAdapterInlineImplementation(new DjinnDebugSession() as unknown as vscode.DebugAdapter);
    // The same adapter as a process: dist/debugAdapter.js on the editor's own Node (Electron as Node on the desktop).
    const program = vscode.Uri.joinPath(this.extensionUri, "dist", "debugAdapter.js").fsPath;
    return new vscode.DebugAdapterExecutable(process.execPath, [program], { env: { ELECTRON_RUN_AS_NODE: "1" } });
  }
}

export function activate(context: vscode.ExtensionContext): DjinnApi {
  const out = vscode.window.createOutputChannel("Djinn");
  const log = (line: string) => out.appendLine(line);
  log(`Djinn Debugger ${context.extension.packageJSON.version} on VS Code ${vscode.version}, Node ${process.version}`);
  log(codec.describeCodec());

  // (djinn.server.pythonPath read here: settings() asks for the default model, which asks this)
  useServerPython(() => resolveServerPython(context, (vscode.workspace.getConfiguration("djinn").get<string>("server.pythonPath") ?? "").trim()));
  const notices = new Notices();
  const monitor = new Monitor(() => settings().telemetryIntervalMs, log, notices, monitorTiming());
  const servers = new ServerManager(context, monitor, out, notices);
  const vram = new VramPanel(context.extensionUri, monitor);
  const tracker = new DebugTracker(monitor, log);
  const tensors = new TensorViewers(context.extensionUri, tracker, log, () => servers.tokens.get());
  const exp3 = new Exp3Runner(context, monitor, vram, servers);
  const statusBar = new StatusBar(monitor, isDjinnWorkspace());
  const configProvider = new DjinnConfigurationProvider(context, servers);
  const dynamicProvider = new DjinnDynamicProvider(servers);
  context.subscriptions.push(out, notices, monitor, servers, vram, tracker, tensors, statusBar);

  context.subscriptions.push(
    vscode.debug.registerDebugConfigurationProvider("djinn", configProvider),
    vscode.debug.registerDebugConfigurationProvider("djinn", dynamicProvider, vscode.DebugConfigurationProviderTriggerKind.Dynamic),
    vscode.debug.registerDebugAdapterDescriptorFactory("djinn", new AdapterFactory(context.extensionUri)),
    vscode.window.registerWebviewPanelSerializer(VRAM_VIEW_TYPE, {
      deserializeWebviewPanel: async (panel) => vram.restore(panel),
    }),
    // a tensor viewer comes back after a reload with the tensor its webview saved (never the token)
    vscode.window.registerWebviewPanelSerializer(TENSOR_VIEW_TYPE, {
      deserializeWebviewPanel: async (panel, state) => void (await tensors.restore(panel, state)),
    }),
  );
  registerOutlineLanguage(context);

  const fail = (what: string) => (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    log(`${what}: ${msg}`);
    const show = "Show Log";
    void vscode.window.showErrorMessage(`Djinn: ${what}: ${msg.split("\n")[0]}`, show).then((c) => c === show && out.show());
    return undefined;
  };
  // any Djinn command shows the status-bar item from then on
  const command = (id: string, fn: (...args: any[]) => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, (...args: any[]) => (statusBar.reveal(), fn(...args))));
  context.subscriptions.push(vscode.debug.onDidStartDebugSession((s) => s.type === "djinn" && statusBar.reveal()));

  command("djinn.runExp3", (args?: Exp3CommandArgs) => exp3.run(args ?? {}).catch(fail("Exp 3 failed")));
  command("djinn.showVramPanel", () => vram.show());
  command("djinn.openOutline", (arg?: { path?: string } | vscode.Uri) =>
    openOutline(servers, arg instanceof vscode.Uri ? { path: arg.fsPath } : arg).catch(fail("cannot open the model outline")),
  );
  command("djinn.viewTensor", (arg?: any) => viewTensor(tensors, arg).catch(fail("cannot view the tensor")));
  command("djinn.continueAll", (arg?: any) => allThreads("continueAll", arg));
  command("djinn.pauseAll", (arg?: any) => allThreads("pauseAll", arg));
  registerSetValue(context, tensors);
  const startServer = (): Thenable<string | undefined> =>
    vscode.window
      .withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: starting a local server (${settings().defaultModel})` }, () => servers.startLocal())
      .then(
        (s) => {
          void vscode.window.showInformationMessage(`Djinn: local server ready at ${s.address}: ${s.info.model?.name} on ${s.info.deviceName || s.info.device}.`);
          return s.address;
        },
        // the cause in the message (a missing module, no such python, ...) with the Python buttons
        async (e) => (await servers.reportStartFailure(e, startServer), undefined),
      );
  command("djinn.startServer", startServer);
  command("djinn.stopServer", async () => {
    const s = servers.current;
    if (!(await servers.stop())) void vscode.window.showInformationMessage("Djinn: no local server or connection to stop.");
    else void vscode.window.showInformationMessage(`Djinn: ${s?.kind === "local" ? "stopped the local server" : "disconnected from"} ${s?.address}.`);
  });
  command("djinn.disconnectServer", () => servers.stop());
  command("djinn.restartServer", () =>
    vscode.window
      .withProgress({ location: vscode.ProgressLocation.Notification, title: "Djinn: restarting the local server" }, () => servers.restart())
      .then(
        (s) => s.address,
        async (e) => (await servers.reportStartFailure(e, () => vscode.commands.executeCommand("djinn.restartServer")), undefined),
      ),
  );
  command("djinn.reconnect", () => {
    if (!monitor.target) void vscode.window.showInformationMessage("Djinn: no server to reconnect to.");
    else monitor.reconnectNow();
  });
  command("djinn.connectServer", async (arg?: { address?: string; token?: string; caFile?: string }) => {
    const s = settings();
    const address =
      arg?.address ??
      (await vscode.window.showInputBox({
        title: "Djinn: connect to a server",
        prompt: "host:port of a running Djinn server (for a remote GPU host, e.g. an SSH tunnel's local end)",
        value: s.address || "127.0.0.1:5556",
        ignoreFocusOut: true,
        validateInput: (x) => (/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/.test(x.trim()) ? undefined : "host:port"),
      }));
    if (!address) return undefined;
    const stored = (await servers.tokens.get()) ?? "";
    const typed = arg?.token === undefined && !arg?.address;
    const token =
      arg?.token ??
      (arg?.address ? stored : await vscode.window.showInputBox({ title: "Djinn: token (empty when the server has none)", value: stored, password: true, ignoreFocusOut: true }));
    if (token === undefined) return undefined;
    return vscode.window
      .withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: connecting to ${address}` }, () =>
        servers.connect(address.trim(), token || undefined, arg?.caFile ?? (s.caFile || undefined)),
      )
      .then(async (srv) => {
        // a token typed here (and accepted by the server) goes to the secret storage, not to settings
        if (typed && token.trim() && token.trim() !== stored) await servers.tokens.set(token);
        void vscode.window.showInformationMessage(`Djinn: connected to ${srv.address}: ${srv.info.model?.name} on ${srv.info.deviceName || srv.info.device}.`);
        return srv.address;
      }, fail(`cannot connect to ${address}`));
  });
  command("djinn.showLog", () => out.show());
  command("djinn.setServerToken", (arg?: { token?: string }) => setServerTokenCommand(servers.tokens, arg));
  const offerStart = (py: string | undefined) => {
    if (py && !servers.current)
      notices.show("info", `Djinn: local servers will run with ${py}.`, ["Start Server"], (a) => a === "Start Server" && vscode.commands.executeCommand("djinn.startServer"));
    return py;
  };
  command("djinn.setupPython", () => servers.python.setup().then(offerStart));
  command("djinn.selectPython", () => servers.python.select().then(offerStart));
  command(STATUS_MENU, () => statusMenu(servers));

  void servers.checkAfterReload();

  return { monitor, notices, servers, vram, tensors, exp3, statusBar, tracker, configProvider, dynamicProvider, codecBackend: codec.codecBackend, viewTensorPrompts };
}

/** Outlines, exp3.yaml, a djinn launch configuration or a server address: show the status bar from startup. */
function isDjinnWorkspace(): boolean {
  const launch = vscode.workspace.getConfiguration("launch").get<Array<{ type?: string }>>("configurations") ?? [];
  if (launch.some((c) => c?.type === "djinn")) return true;
  if (settings().address) return true;
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (folders.some((f) => existsSync(join(f.uri.fsPath, "exp3.yaml")))) return true;
  // *.djinn anywhere activates the extension (workspaceContains), so it is one
  return folders.some((f) => {
    try {
      return readdirSync(f.uri.fsPath).some((n) => n.endsWith(".djinn"));
    } catch {
      return false;
    }
  });
}

/** A click on the status bar without a server: start, connect, or fix the Python. */
async function statusMenu(servers: ServerManager): Promise<unknown> {
  type Item = vscode.QuickPickItem & { command: string };
  const s = settings();
  const items: Item[] = [
    { label: "$(play) Start Local Server", description: `${s.defaultModel} on ${s.device}`, command: "djinn.startServer" },
    { label: "$(plug) Connect to Server…", description: s.address || "host:port", command: "djinn.connectServer" },
  ];
  if (servers.canRestart) items.push({ label: "$(debug-restart) Restart Local Server", description: "the same settings, the same port", command: "djinn.restartServer" });
  items.push(
    { label: "$(tools) Set Up Python Environment…", description: "a venv with torch, grpcio, protobuf, numpy", command: "djinn.setupPython" },
    { label: "$(symbol-namespace) Select Python Interpreter…", description: s.pythonPath || "", command: "djinn.selectPython" },
    { label: "$(key) Set Server Token…", description: "kept in VS Code's secret storage", command: "djinn.setServerToken" },
    { label: "$(graph-line) Show VRAM Panel", command: "djinn.showVramPanel" },
    { label: "$(output) Show Log", command: "djinn.showLog" },
  );
  const pick = await vscode.window.showQuickPick(items, { title: "Djinn: no server" });
  return pick ? vscode.commands.executeCommand(pick.command) : undefined;
}

/** The monitor's reconnection timing; DJINN_MONITOR_DOWN_MS shortens the grace time (tests). */
function monitorTiming(): { downAfterMs?: number } {
  const ms = Number(process.env.DJINN_MONITOR_DOWN_MS);
  return Number.isFinite(ms) && ms > 0 ? { downAfterMs: ms } : {};
}

export function deactivate(): void {
  // Disposables (servers, streams, panels) are released through context.subscriptions.
}
