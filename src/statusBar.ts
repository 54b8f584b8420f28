// The status-bar item: server state and VRAM used / budget. Live, a click opens the VRAM
// panel; without a server it says "Djinn: no server" and a click offers to start or connect.
// It is shown from startup in a Djinn workspace (outlines, exp3.yaml, a djinn launch
// configuration, djinn.server.address), elsewhere from the first Djinn command or server.
import * as vscode from "vscode";
import type { Monitor, MonitorStatus, Sample } from "./monitor";

const gb = (b: number) => (b / 1e9).toFixed(b >= 10e9 ? 1 : b >= 1e9 ? 2 : 3);

/** The command behind a click when there is no server (a quick pick: start, connect, ...). */
export const STATUS_MENU = "djinn.statusMenu";

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("djinn.status", vscode.StatusBarAlignment.Left, 50);
  private readonly subs: vscode.Disposable[] = [];
  private lastDraw = 0;
  private pending?: NodeJS.Timeout;
  private shown = false;

  constructor(private readonly monitor: Monitor, show = true) {
    this.item.name = "Djinn server and VRAM";
    this.item.command = "djinn.showVramPanel";
    this.subs.push(
      monitor.onStatus((st) => {
        if (st.state !== "idle") this.reveal();
        this.draw();
      }),
      monitor.onSample(() => this.throttled()),
    );
    this.draw();
    if (show) this.reveal();
  }

  /** Shows the item (from then on, for the rest of the window's life). */
  reveal(): void {
    if (this.shown) return;
    this.shown = true;
    this.item.show();
  }

  get visible(): boolean {
    return this.shown;
  }

  /** The command a click runs now (tests read it). */
  get command(): string | undefined {
    const c = this.item.command;
    return typeof c === "string" ? c : c?.command;
  }

  /** The text shown now (tests read it). */
  get text(): string {
    return this.item.text;
  }

  private throttled(): void {
    const wait = 500 - (Date.now() - this.lastDraw);
    if (wait <= 0) return this.draw();
    if (!this.pending) this.pending = setTimeout(() => ((this.pending = undefined), this.draw()), wait);
  }

  private draw(): void {
    this.lastDraw = Date.now();
    const st: MonitorStatus = this.monitor.status;
    const s: Sample | undefined = this.monitor.samples[this.monitor.samples.length - 1];
    const item = this.item;
    item.backgroundColor = undefined;
    item.command = st.state === "gone" ? STATUS_MENU : "djinn.showVramPanel";
    switch (st.state) {
      case "idle":
        item.text = "$(circle-slash) Djinn: no server";
        item.command = STATUS_MENU;
        item.tooltip = new vscode.MarkdownString(`**Djinn**: no server.\n\nClick to start a local server or connect to a running one (or start debugging: F5 starts the window's server).`);
        return;
      case "connecting":
        item.text = "$(sync~spin) Djinn";
        item.tooltip = st.message;
        return;
      case "gone":
        item.text = "$(error) Djinn: server gone";
        item.tooltip = new vscode.MarkdownString(
          `**Djinn**: ${st.message}\n\nThe VRAM panel keeps its history and goes on when the server is back. *Djinn: Reconnect to Server* tries now.`,
        );
        item.backgroundColor = new vscode.ThemeColor("statusBarItem.errorBackground");
        return;
      case "live": {
        const info = st.info ?? { model: "", dtype: "", device: "", deviceName: "", layers: 0, budget: 0 };
        if (!s) {
          item.text = `$(server) Djinn ${info.model}`;
          item.tooltip = st.message;
          return;
        }
        const used = s.accounted;
        const paused = s.sessions.filter((x) => x[1] === "paused").length;
        const onHost = s.sessions.filter((x) => x[2] === "host").length;
        item.text = `$(server) Djinn ${info.model} · VRAM ${gb(used)}/${gb(s.budget)} GB`;
        if (s.budget > 0 && used / s.budget > 0.95) item.backgroundColor = new vscode.ThemeColor("statusBarItem.warningBackground");
        const md = new vscode.MarkdownString(undefined, true);
        md.appendMarkdown(`**Djinn** · ${st.target?.label} \`${st.target?.address}\`\n\n`);
        md.appendMarkdown(`${info.model} (${info.dtype}) on ${info.deviceName || info.device}\n\n`);
        md.appendMarkdown(`| | GB |\n|---|---:|\n`);
        md.appendMarkdown(`| budget | ${gb(s.budget)} |\n| accounted (weights + workspace + resident KV) | ${gb(s.accounted)} |\n`);
        md.appendMarkdown(`| weights | ${gb(s.weights)} |\n| resident KV | ${gb(s.residentKv)} |\n| swapped KV (host) | ${gb(s.swappedKv)} |\n`);
        if (s.nvml > 0) md.appendMarkdown(`| NVML used | ${gb(s.nvml)} |\n`);
        md.appendMarkdown(`\n${s.sessions.length} sessions, ${paused} paused, ${onHost} with KV on the host · ${s.swapOuts} swap-outs, ${s.swapIns} swap-ins\n\n`);
        md.appendMarkdown(`Click to open the VRAM panel.`);
        item.tooltip = md;
        return;
      }
    }
  }

  dispose(): void {
    clearTimeout(this.pending);
    for (const d of this.subs) d.dispose();
    this.item.dispose();
  }
}
