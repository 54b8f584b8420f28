// The djinn DebugConfigurationProvider: initial configurations for a new launch.json,
// dynamic ones for "Run and Debug" (no launch.json needed), and filling what a
// configuration leaves out (model, python, outline, token, a running server).
import { basename, dirname, join } from "node:path";
import * as vscode from "vscode";
import { parseOutline } from "../debug-adapter/outline";
import type { ServerManager, WantedServer } from "./serverManager";
import { resolveServerPython } from "./python";
import { settings } from "./settings";

/** Attributes that configure a local server: the adapter refuses them together with `server`. */
export const LOCAL_ONLY = ["device", "dtype", "vramBudgetGb", "hostPoolGb", "pythonPath", "env", "serverArgs"];

/**
 * The configurations of a new launch.json: a local run on the CPU (smollm2-135m, a real model
 * that the set-up installs: its tokens, logit lens and steering mean something)
 * and an attach to the running server (the window's, else djinn.server.address, else the
 * server's default port). package.json declares no initialConfigurations: VS Code would add
 * them to these, and they could not know the running server.
 */
export function initialConfigurations(running?: string): vscode.DebugConfiguration[] {
  const attachTo = running || "127.0.0.1:5556";
  return [
    {
      type: "djinn",
      request: "launch",
      name: "Djinn: 4 sessions of smollm2-135m (local, CPU)",
      model: "smollm2-135m",
      device: "cpu",
      sessions: 4,
      prompt: "The capital of France is",
      maxNewTokens: 4,
      contextTokens: 64,
      breakpoints: [10, 20, 29],
      outlinePath: "${workspaceFolder}/smollm2-135m.djinn",
    },
    { type: "djinn", request: "attach", name: `Djinn: attach to ${attachTo}`, server: attachTo, outlinePath: "${workspaceFolder}/model.djinn" },
  ];
}

/** The launch attributes that configure a local server, as ServerManager.ensureServer wants them. */
export function wantedOf(config: vscode.DebugConfiguration): WantedServer {
  const w: WantedServer = {};
  if (typeof config.model === "string" && config.model) w.model = config.model;
  if (typeof config.device === "string") w.device = config.device as WantedServer["device"];
  if (typeof config.dtype === "string") w.dtype = config.dtype;
  if (typeof config.vramBudgetGb === "number" || typeof config.vramBudgetGb === "string") w.budgetGb = config.vramBudgetGb;
  if (typeof config.hostPoolGb === "number") w.hostPoolGb = config.hostPoolGb;
  if (typeof config.contextTokens === "number") w.maxContext = config.contextTokens;
  if (typeof config.pythonPath === "string" && config.pythonPath) w.pythonPath = config.pythonPath;
  if (config.env && typeof config.env === "object") w.env = config.env as Record<string, string>;
  if (Array.isArray(config.serverArgs)) w.extraArgs = config.serverArgs.map(String);
  return w;
}

/** Marks a configuration whose server the extension handed it (the window's): its address. */
export const WINDOW_SERVER = "__djinnWindowServer";

export class DjinnConfigurationProvider implements vscode.DebugConfigurationProvider {
  constructor(private readonly context: vscode.ExtensionContext, private readonly servers: ServerManager) {}

  provideDebugConfigurations(folder: vscode.WorkspaceFolder | undefined): vscode.DebugConfiguration[] {
    void folder;
    return initialConfigurations(this.servers.current?.address || settings().address);
  }

  /**
   * One server per window: a launch configuration that names a model and no `server` gets
   * the window's server (ServerManager.ensureServer: the running one when it fits, a question
   * when it differs, else one started with the configuration's model, device, budget, ...),
   * and the adapter connects to it as `server`. Ending the debug session leaves it running.
   */
  async resolveDebugConfigurationWithSubstitutedVariables(folder: vscode.WorkspaceFolder | undefined, config: vscode.DebugConfiguration): Promise<vscode.DebugConfiguration | undefined> {
    if (config.type !== "djinn" || (config.request ?? "launch") !== "launch" || config.server || !config.model) return config;
    const original = { ...config };
    const wanted = wantedOf(config);
    let server;
    try {
      server = await this.servers.ensureServer(wanted, `debug configuration '${config.name}'`);
    } catch (e) {
      void this.servers.reportStartFailure(e, () => vscode.debug.startDebugging(folder, original));
      return undefined;
    }
    if (!server) return undefined; // cancelled
    const model = server.info.model?.name;
    // the outline named after the configuration's model follows the server's when they differ ("use the running server")
    if (model && config.model !== model && typeof config.outlinePath === "string" && basename(config.outlinePath) === `${basename(String(config.model).replace(/[\\/]+$/, ""))}.djinn`) {
      config.outlinePath = join(dirname(config.outlinePath), `${model}.djinn`);
    }
    for (const k of [...LOCAL_ONLY, "model"]) delete config[k];
    config.server = server.address;
    if (server.token) config.token = server.token;
    else delete config.token;
    if (server.caFile) config.caFile = server.caFile;
    config[WINDOW_SERVER] = server.address;
    return config;
  }

  /** Fills what is missing; returns undefined (with a message) when nothing sensible can be done. */
  async resolveDebugConfiguration(folder: vscode.WorkspaceFolder | undefined, config: vscode.DebugConfiguration): Promise<vscode.DebugConfiguration | undefined> {
    const s = settings();
    // the token from the secret storage (or the deprecated setting, or $DJINN_TOKEN): it reaches
    // the adapter in this resolved configuration, in memory, never in settings or launch.json
    const storedToken = await this.servers.tokens.get();
    const editor = vscode.window.activeTextEditor;
    const outlineEditor = editor?.document.languageId === "djinn-model" ? editor.document : undefined;
    // F5 without a launch.json: debug the outline in the editor (or the default model).
    if (!config.type && !config.request && !config.name) {
      const model = (outlineEditor && parseOutline(outlineEditor.getText()).model) || s.defaultModel;
      config = { type: "djinn", request: "launch", name: `Djinn: ${model}`, model, sessions: 4, maxNewTokens: 4 };
    }
    if (config.type !== "djinn") return config;
    const request = config.request ?? "launch";
    config.request = request;
    config.name ??= "Djinn";
    const palette = this.servers.current;

    if (request === "attach") {
      config.server ??= s.address || palette?.address;
      if (!config.server) {
        const address = await vscode.window.showInputBox({ title: "Djinn: attach to which server?", prompt: "host:port of a running Djinn server", placeHolder: "127.0.0.1:5556", ignoreFocusOut: true });
        if (!address) return undefined;
        config.server = address.trim();
      }
      if (!config.token && storedToken) config.token = storedToken;
      // the palette's own local server is plain gRPC; djinn.caFile is for remote ones
      if (!config.caFile && s.caFile && !(palette?.kind === "local" && palette.address === config.server)) config.caFile = s.caFile;
      this.fillOutline(folder, config, outlineEditor);
      return config;
    }

    // launch: a model for a local server, or a running server's address.
    if (!config.server && !config.model) {
      if (palette) {
        config.server = palette.address;
        if (palette.token && !config.token) config.token = palette.token;
        if (palette.caFile && !config.caFile) config.caFile = palette.caFile;
      } else if (s.address) {
        config.server = s.address;
      } else {
        config.model = (outlineEditor && parseOutline(outlineEditor.getText()).model) || s.defaultModel;
      }
    }
    if (config.server) {
      if (!config.token && storedToken) config.token = storedToken;
      if (!config.caFile && s.caFile && !(palette?.kind === "local" && palette.address === config.server)) config.caFile = s.caFile;
      for (const k of LOCAL_ONLY) {
        if (config[k] !== undefined) {
          void vscode.window.showErrorMessage(`Djinn: '${k}' configures a local server, but 'server' (${config.server}) names a running one: remove one of them from '${config.name}'.`);
          return undefined;
        }
      }
    } else {
      config.pythonPath ??= resolveServerPython(this.context);
      if (config.vramBudgetGb === undefined && typeof s.vramBudgetGb === "number") config.vramBudgetGb = s.vramBudgetGb;
      if (config.hostPoolGb === undefined && s.hostPoolGb > 0) config.hostPoolGb = s.hostPoolGb;
      if (config.device === undefined && s.device !== "auto") config.device = s.device;
      if (storedToken && !config.token) config.token = storedToken;
    }
    this.fillOutline(folder, config, outlineEditor);
    return config;
  }

  private fillOutline(folder: vscode.WorkspaceFolder | undefined, config: vscode.DebugConfiguration, outlineEditor?: vscode.TextDocument): void {
    if (config.outlinePath) return;
    // the outline in the editor, unless it is another model's (the adapter would rewrite it)
    const shown = outlineEditor && !outlineEditor.isUntitled ? parseOutline(outlineEditor.getText()).model : undefined;
    const model = typeof config.model === "string" ? basename(config.model.replace(/[\\/]+$/, "")) : undefined;
    if (outlineEditor && !outlineEditor.isUntitled && (!model || !shown || shown === model)) {
      config.outlinePath = outlineEditor.uri.fsPath;
      config.cwd ??= dirname(outlineEditor.uri.fsPath);
      return;
    }
    if (folder) {
      const name = String(config.model ?? this.servers.current?.info.model?.name ?? "model").replace(/[\\/]+$/, "");
      config.outlinePath = join(folder.uri.fsPath, `${basename(name)}.djinn`);
      config.cwd ??= folder.uri.fsPath;
    }
  }
}

/** "Run and Debug" > Djinn: configurations without a launch.json. */
export class DjinnDynamicProvider implements vscode.DebugConfigurationProvider {
  constructor(private readonly servers: ServerManager) {}

  async provideDebugConfigurations(folder: vscode.WorkspaceFolder | undefined): Promise<vscode.DebugConfiguration[]> {
    const s = settings();
    const out: vscode.DebugConfiguration[] = [];
    const palette = this.servers.current;
    if (palette) {
      const model = palette.info.model?.name ?? "model";
      out.push({ type: "djinn", request: "launch", name: `Djinn: 4 sessions on ${palette.address} (${model})`, server: palette.address, sessions: 4, maxNewTokens: 4 });
      out.push({ type: "djinn", request: "attach", name: `Djinn: attach to ${palette.address}`, server: palette.address });
    }
    if (s.address && s.address !== palette?.address) out.push({ type: "djinn", request: "attach", name: `Djinn: attach to ${s.address}`, server: s.address });
    const outlines = folder ? await vscode.workspace.findFiles(new vscode.RelativePattern(folder, "**/*.djinn"), "**/node_modules/**", 10) : [];
    for (const uri of outlines) {
      const text = (await vscode.workspace.fs.readFile(uri)).toString();
      const model = parseOutline(text).model ?? s.defaultModel;
      out.push({ type: "djinn", request: "launch", name: `Djinn: debug ${basename(uri.fsPath)} (${model}, local)`, model, sessions: 4, maxNewTokens: 4, outlinePath: uri.fsPath });
    }
    out.push({ type: "djinn", request: "launch", name: `Djinn: ${s.defaultModel} (local, 4 sessions)`, model: s.defaultModel, sessions: 4, maxNewTokens: 4 });
    const names = new Set<string>();
    return out.filter((c) => !names.has(c.name) && !!names.add(c.name));
  }
}
