// The Djinn Debugger extension: the djinn debugger (adapter inline or as a process), its
// configuration provider, the model-outline language, the VRAM panel, the tensor viewer,
// Exp 3 from the palette, local server / connection commands and the status-bar item.
import * as vscode from "vscode";
import { DjinnDebugSession } from "../debug-adapter/index";
import * as codec from "../native/codec";
import { DebugTracker } from "./debugTracker";
import { DjinnConfigurationProvider, DjinnDynamicProvider } from "./debugConfig";
import { Exp3Runner, type Exp3CommandArgs } from "./exp3Command";
import { Monitor } from "./monitor";
import { Notices } from "./notices";
import { openOutline } from "./outlineCommand";
import { setupPython } from "./python";
import { ServerManager } from "./serverManager";
import { register as registerSetValue } from "./setValueCommand";
import { settings } from "./settings";
import { StatusBar } from "./statusBar";
import { TensorViewers } from "./tensorViewer";
import { viewTensor } from "./viewTensorCommand";
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

  const notices = new Notices();
  const monitor = new Monitor(() => settings().telemetryIntervalMs, log, notices, monitorTiming());
  const servers = new ServerManager(context, monitor, out, notices);
  const vram = new VramPanel(context.extensionUri, monitor);
  const tracker = new DebugTracker(monitor, log);
  const tensors = new TensorViewers(context.extensionUri, tracker, log);
  const exp3 = new Exp3Runner(context, monitor, vram, servers);
  const statusBar = new StatusBar(monitor);
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
  );

  const fail = (what: string) => (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    log(`${what}: ${msg}`);
    const show = "Show Log";
    void vscode.window.showErrorMessage(`Djinn: ${what}: ${msg.split("\n")[0]}`, show).then((c) => c === show && out.show());
    return undefined;
  };
  const command = (id: string, fn: (...args: any[]) => unknown) => context.subscriptions.push(vscode.commands.registerCommand(id, fn));

  command("djinn.runExp3", (args?: Exp3CommandArgs) => exp3.run(args ?? {}).catch(fail("Exp 3 failed")));
  command("djinn.showVramPanel", () => vram.show());
  command("djinn.openOutline", (arg?: { path?: string } | vscode.Uri) =>
    openOutline(servers, arg instanceof vscode.Uri ? { path: arg.fsPath } : arg).catch(fail("cannot open the model outline")),
  );
  command("djinn.viewTensor", (arg?: any) => viewTensor(tensors, arg).catch(fail("cannot view the tensor")));
  registerSetValue(context, tensors);
  command("djinn.startServer", () =>
    vscode.window
      .withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: starting a local server (${settings().defaultModel})` }, () => servers.startLocal())
      .then((s) => {
        void vscode.window.showInformationMessage(`Djinn: local server ready at ${s.address}: ${s.info.model?.name} on ${s.info.deviceName || s.info.device}.`);
        return s.address;
      }, fail("the local server did not start")),
  );
  command("djinn.stopServer", async () => {
    const s = servers.current;
    if (!(await servers.stop())) void vscode.window.showInformationMessage("Djinn: no local server or connection to stop.");
    else void vscode.window.showInformationMessage(`Djinn: ${s?.kind === "local" ? "stopped the local server" : "disconnected from"} ${s?.address}.`);
  });
  command("djinn.disconnectServer", () => servers.stop());
  command("djinn.restartServer", () =>
    vscode.window
      .withProgress({ location: vscode.ProgressLocation.Notification, title: "Djinn: restarting the local server" }, () => servers.restart())
      .then((s) => s.address, fail("the local server did not restart")),
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
    const token =
      arg?.token ??
      (arg?.address ? s.token : await vscode.window.showInputBox({ title: "Djinn: token (empty when the server has none)", value: s.token, password: true, ignoreFocusOut: true }));
    if (token === undefined) return undefined;
    return vscode.window
      .withProgress({ location: vscode.ProgressLocation.Notification, title: `Djinn: connecting to ${address}` }, () =>
        servers.connect(address.trim(), token || undefined, arg?.caFile ?? (s.caFile || undefined)),
      )
      .then((srv) => {
        void vscode.window.showInformationMessage(`Djinn: connected to ${srv.address}: ${srv.info.model?.name} on ${srv.info.deviceName || srv.info.device}.`);
        return srv.address;
      }, fail(`cannot connect to ${address}`));
  });
  command("djinn.showLog", () => out.show());
  command("djinn.setupPython", () => setupPython(context, out));

  return { monitor, notices, servers, vram, tensors, exp3, statusBar, tracker, configProvider, dynamicProvider, codecBackend: codec.codecBackend };
}

/** The monitor's reconnection timing; DJINN_MONITOR_DOWN_MS shortens the grace time (tests). */
function monitorTiming(): { downAfterMs?: number } {
  const ms = Number(process.env.DJINN_MONITOR_DOWN_MS);
  return Number.isFinite(ms) && ms > 0 ? { downAfterMs: ms } : {};
}

export function deactivate(): void {
  // Disposables (servers, streams, panels) are released through context.subscriptions.
}
