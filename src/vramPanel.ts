// The VRAM panel (webview, script in media/vram/): live telemetry of the monitored server.
// One panel; it keeps its state when hidden (retainContextWhenHidden) and is restored after
// a reload by its serializer (the webview also saves its history with setState). The history
// is the monitor's, one per server address: it stays while the server is gone and goes on
// when it is back.
import * as vscode from "vscode";
import type { Monitor } from "./monitor";
import { webviewShell } from "./webviewHtml";

export const VRAM_VIEW_TYPE = "djinn.vram";
const INIT_SAMPLES = 3000;

export interface VramRendered {
  points: number;
  sessions: number;
  swaps: number;
  status: string;
  at: number;
}

export class VramPanel implements vscode.Disposable {
  private panel?: vscode.WebviewPanel;
  private subs: vscode.Disposable[] = [];
  private ready = false;
  /** What the webview last said it drew (tests and the UI run read this). */
  lastRendered?: VramRendered;
  private readonly renderedEmitter = new vscode.EventEmitter<VramRendered>();
  readonly onDidRender = this.renderedEmitter.event;

  constructor(private readonly extensionUri: vscode.Uri, private readonly monitor: Monitor) {}

  get visible(): boolean {
    return !!this.panel?.visible;
  }

  get isOpen(): boolean {
    return !!this.panel;
  }

  show(preserveFocus = false, column = vscode.ViewColumn.Active): void {
    if (this.panel) {
      this.panel.reveal(undefined, preserveFocus);
      return;
    }
    const panel = vscode.window.createWebviewPanel(VRAM_VIEW_TYPE, "Djinn VRAM", { viewColumn: column, preserveFocus }, this.options());
    this.attach(panel);
  }

  /** The serializer hands back the panel of a previous window after a reload. */
  restore(panel: vscode.WebviewPanel): void {
    if (this.panel && this.panel !== panel) this.panel.dispose();
    panel.webview.options = this.options();
    this.attach(panel);
  }

  private options(): vscode.WebviewPanelOptions & vscode.WebviewOptions {
    return {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(this.extensionUri, "dist", "webview"), vscode.Uri.joinPath(this.extensionUri, "media")],
    };
  }

  private attach(panel: vscode.WebviewPanel): void {
    this.panel = panel;
    this.ready = false;
    panel.iconPath = vscode.Uri.joinPath(this.extensionUri, "media", "vram.svg");
    panel.webview.html = webviewShell(panel.webview, this.extensionUri, {
      title: "Djinn VRAM",
      script: "vram",
      styles: ["common.css", "vram.css"],
      body: `<div id="app" data-view="vram"></div>`,
    });
    this.subs.push(
      panel.webview.onDidReceiveMessage((m) => this.onMessage(m)),
      panel.onDidDispose(() => {
        for (const d of this.subs.splice(0)) d.dispose();
        this.panel = undefined;
        this.ready = false;
      }),
      this.monitor.onSample((s) => this.post({ type: "sample", sample: s })),
      this.monitor.onSwap((m) => this.post({ type: "swap", swap: m })),
      this.monitor.onStatus((st) => this.post({ type: "status", status: st })),
      // another server's history (one per address): redraw from it
      this.monitor.onHistory(() => this.sendInit(true)),
    );
  }

  private sendInit(reset: boolean, force = false): void {
    this.post(
      {
        type: "init",
        reset,
        status: this.monitor.status,
        samples: this.monitor.samples.slice(-INIT_SAMPLES),
        swaps: this.monitor.swaps,
      },
      force,
    );
  }

  private onMessage(m: { type: string; [k: string]: unknown }): void {
    switch (m.type) {
      case "ready":
        this.ready = true;
        this.sendInit(false, true);
        break;
      case "rendered":
        this.lastRendered = { points: Number(m.points), sessions: Number(m.sessions), swaps: Number(m.swaps), status: String(m.status), at: Date.now() };
        this.renderedEmitter.fire(this.lastRendered);
        break;
      case "command":
        if (typeof m.command === "string" && m.command.startsWith("djinn.")) void vscode.commands.executeCommand(m.command);
        break;
    }
  }

  private post(msg: unknown, force = false): void {
    if (!this.panel || (!this.ready && !force)) return;
    void this.panel.webview.postMessage(msg);
  }

  dispose(): void {
    this.panel?.dispose();
    this.renderedEmitter.dispose();
  }
}
