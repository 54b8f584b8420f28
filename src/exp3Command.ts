// "Djinn: Run Exp 3 Memory-Pressure Test": the same driver as the command line
// (exp3/driver.ts runExp3) with a cancellable progress notification, the VRAM panel
// following the run's server, per-session lines in an output channel, and at the end the
// results JSON and plot in the workspace and a readable report.
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import * as vscode from "vscode";
import { DjinnClient, EventKind, READY_PREFIX, type Event } from "../client";
import { PLOT_FILE, RESULTS_FILE, runExp3 } from "../exp3/driver";
import type { Exp3Args } from "../exp3/options";
import type { Exp3Results } from "../exp3/results";
import { summaryLines } from "../exp3/summary";
import { describeArgs, detectMachine, EXP3_FILE, Exp3ConfigError, exp3Choices, parseExp3Yaml, type CustomDefaults, type Machine } from "./exp3Config";
import { REPORT_FILE, reportHtml, showReport } from "./exp3Report";
import type { Monitor } from "./monitor";
import { resolveServerPython } from "./python";
import { serverDifferences, type PaletteServer, type ServerManager, type WantedServer } from "./serverManager";
import { settings } from "./settings";
import type { VramPanel } from "./vramPanel";

/** Arguments of the command when called programmatically (tests, other extensions). */
export interface Exp3CommandArgs extends Exp3Args {
  /** results folder; relative paths are relative to the workspace folder */
  out?: string;
  /** skip every prompt (use exp3.yaml and these arguments, else the CPU/GPU defaults) */
  noPrompt?: boolean;
  /** do not open the report (tests) */
  noReport?: boolean;
}

export interface Exp3CommandResult {
  status: Exp3Results["status"];
  reasons: string[];
  outDir: string;
  resultsFile: string;
  plotFile: string;
  reportFile: string;
}

const STOP_REASONS: Record<number, string> = { 1: "breakpoint", 2: "step", 3: "pause", 4: "entry", 5: "NaN", 6: "Inf", 7: "norm spike" };
const POINTS: Record<number, string> = { 2: ".attn", 3: ".mlp" };

export class Exp3Runner {
  private running = false;
  private readonly out: vscode.OutputChannel;
  private probed?: Promise<Machine>;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly monitor: Monitor,
    private readonly vram: VramPanel,
    /** the window's (palette's) server: Exp 3 runs there unless another run is picked */
    private readonly servers?: ServerManager,
  ) {
    this.out = vscode.window.createOutputChannel("Djinn Exp 3");
    context.subscriptions.push(this.out);
  }

  get isRunning(): boolean {
    return this.running;
  }

  async run(cmd: Exp3CommandArgs = {}): Promise<Exp3CommandResult | undefined> {
    if (this.running) {
      void vscode.window.showWarningMessage("Djinn: Exp 3 is already running (see its progress notification).");
      return undefined;
    }
    const folder = vscode.workspace.workspaceFolders?.[0];
    const plan = await this.plan(folder, cmd);
    if (!plan) return undefined;
    this.running = true;
    try {
      const args = await this.onWindowServer(plan.args, !!cmd.noPrompt);
      if (!args) return undefined;
      return await this.execute(folder, args, plan.out, cmd);
    } finally {
      this.running = false;
    }
  }

  /**
   * Exp 3 runs on the window's server when one runs (`--server` to the driver): at once when
   * the run asks for nothing it lacks, else through ensureServer, which asks whether to use it
   * anyway or restart it as the run wants (one server per window; two 80 GB budgets do not fit
   * one GPU). Without prompts (noPrompt), a run that differs starts a server of its own, as
   * when none runs. undefined: cancelled.
   */
  private async onWindowServer(args: Exp3Args, noPrompt: boolean): Promise<Exp3Args | undefined> {
    const current = this.servers?.current;
    if (args.server || !this.servers || !current) return args;
    const wanted: WantedServer = stripUndefined({
      model: args.model,
      device: args.device,
      dtype: args.dtype,
      budgetGb: args.budgetGb,
      hostPoolGb: args.hostPoolGb,
      maxContext: args.context,
      // an auto budget is a fraction of the KV of this run's sessions
      planSessions: typeof args.budgetGb === "string" ? args.sessions : undefined,
    });
    let server: PaletteServer | undefined = current;
    if (noPrompt) {
      const differences = serverDifferences(current, wanted);
      if (differences.length) {
        this.out.appendLine(`The window's server at ${current.address} differs from this run (${differences.join("; ")}): starting a server of its own.`);
        return args;
      }
    } else {
      server = await this.servers.ensureServer(wanted, "Exp 3");
      if (!server) return undefined;
    }
    this.out.appendLine(`Exp 3 runs on the window's server at ${server.address} (${server.info.model?.name} on ${server.info.deviceName || server.info.device}).`);
    // Its model and budget are the server's (the driver reads them from GetInfo): drop ours.
    const rest: Exp3Args = { ...args };
    for (const k of ["model", "device", "dtype", "budgetGb", "hostPoolGb"] as const) delete rest[k];
    return { ...rest, server: server.address, token: server.token, caFile: server.caFile };
  }

  /** exp3.yaml, then the command's arguments, else questions (or defaults with noPrompt). */
  private async plan(folder: vscode.WorkspaceFolder | undefined, cmd: Exp3CommandArgs): Promise<{ args: Exp3Args; out?: string } | undefined> {
    const { noPrompt, noReport, out: cmdOut, ...cmdArgs } = cmd;
    void noReport;
    let fromFile: { args: Exp3Args; out?: string } | undefined;
    const yamlPath = folder ? join(folder.uri.fsPath, EXP3_FILE) : undefined;
    if (yamlPath && existsSync(yamlPath)) {
      try {
        fromFile = parseExp3Yaml(readFileSync(yamlPath, "utf8"));
      } catch (e) {
        if (!(e instanceof Exp3ConfigError)) throw e;
        const open = "Open exp3.yaml";
        void vscode.window.showErrorMessage(`Djinn: ${e.message}`, open).then((c) => {
          if (c === open) void vscode.window.showTextDocument(vscode.Uri.file(yamlPath));
        });
        return undefined;
      }
      this.out.appendLine(`Options from ${yamlPath}`);
    }
    const merged: Exp3Args = { ...(fromFile?.args ?? {}), ...stripUndefined(cmdArgs) };
    const out = cmdOut ?? fromFile?.out;
    if (fromFile || noPrompt || Object.keys(stripUndefined(cmdArgs)).length > 0) return { args: merged, out };
    const asked = await this.ask();
    return asked ? { args: asked, out } : undefined;
  }

  /** This machine: the running server's device, else the device setting, else `nvidia-smi -L` (looked up once). */
  async machine(): Promise<Machine> {
    const cur = this.servers?.current;
    if (cur) return detectMachine({ serverDevice: cur.info.device, serverDeviceName: cur.info.deviceName });
    const device = settings().device;
    if (device !== "auto") return detectMachine({ deviceSetting: device });
    this.probed ??= detectMachine({ deviceSetting: "auto" });
    return this.probed;
  }

  /** The picker's items (the pre-selected one first) and Custom's defaults, for this window and machine. */
  async choices(): Promise<ReturnType<typeof exp3Choices>> {
    const s = settings();
    const cur = this.servers?.current;
    const running = cur ? { address: cur.address, token: cur.token, caFile: cur.caFile, info: cur.info } : undefined;
    return exp3Choices(await this.machine(), { running, address: s.address, token: await this.servers?.tokens.get(), defaultModel: s.defaultModel });
  }

  private async ask(): Promise<Exp3Args | undefined> {
    const { items, custom } = await this.choices();
    // showQuickPick makes the first item the active one: the run that fits this machine.
    const pick = await vscode.window.showQuickPick(items, { title: "Djinn: Exp 3 memory-pressure test (put an exp3.yaml in the workspace to skip this)", ignoreFocusOut: true });
    if (!pick) return undefined;
    let args = pick.args;
    if (pick.custom) args = await this.askCustom(custom);
    if (!args) return undefined;
    const baseline = await vscode.window.showQuickPick(
      [
        { label: "Djinn only", baseline: false },
        { label: "Djinn and the eager baseline", description: "PyTorch eager keeping paused sessions' KV in VRAM, side by side", baseline: true },
      ],
      { title: "Djinn: Exp 3 — also run the baseline?", ignoreFocusOut: true },
    );
    if (!baseline) return undefined;
    return { ...args, baseline: baseline.baseline };
  }

  private async askCustom(d: CustomDefaults): Promise<Exp3Args | undefined> {
    const intBox = async (title: string, value: string, min = 1) => {
      const v = await vscode.window.showInputBox({ title, value, ignoreFocusOut: true, validateInput: (x) => (/^\d+$/.test(x.trim()) && Number(x) >= min ? undefined : `an integer ≥ ${min}`) });
      return v === undefined ? undefined : Number(v);
    };
    const where = d.device === "cuda" ? "on the GPU" : "on the CPU";
    const sessions = await intBox(`Exp 3: sessions created at once (${where})`, String(d.sessions));
    if (sessions === undefined) return undefined;
    const model = await vscode.window.showInputBox({ title: `Exp 3: model (named config or checkpoint folder; ${where})`, value: d.model, ignoreFocusOut: true });
    if (!model) return undefined;
    const same = model === d.model;
    const context = await intBox("Exp 3: context per session (tokens)", same ? String(d.context) : model.startsWith("llama") ? "2048" : "256", 2);
    if (context === undefined) return undefined;
    const bps = await vscode.window.showInputBox({ title: "Exp 3: breakpoints (layers)", value: d.breakpoints.join(","), ignoreFocusOut: true, validateInput: (x) => (/^\d+(\s*,\s*\d+)*$/.test(x.trim()) ? undefined : "comma-separated layer numbers") });
    if (bps === undefined) return undefined;
    const budget = await vscode.window.showInputBox({
      title: "Exp 3: VRAM budget (GB, or auto:FRACTION)",
      value: same ? d.budget : model.startsWith("llama") ? "80" : "auto:0.33",
      ignoreFocusOut: true,
      validateInput: (x) => (/^(\d+(\.\d+)?|auto:(0?\.\d+|1(\.0*)?))$/.test(x.trim()) ? undefined : "a number of GB or auto:FRACTION"),
    });
    if (budget === undefined) return undefined;
    return {
      sessions,
      model,
      context,
      breakpoints: bps.split(",").map((x) => Number(x.trim())),
      budgetGb: /^auto:/.test(budget.trim()) ? budget.trim() : Number(budget),
      device: d.device,
    };
  }

  private async execute(folder: vscode.WorkspaceFolder | undefined, argsIn: Exp3Args, outRel: string | undefined, cmd: Exp3CommandArgs): Promise<Exp3CommandResult | undefined> {
    const s = settings();
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").replace(/-\d+Z$/, "Z");
    const base = folder?.uri.fsPath ?? this.context.globalStorageUri.fsPath;
    const outBase = outRel ? (isAbsolute(outRel) ? outRel : join(base, outRel)) : join(base, s.exp3OutputFolder);
    const outDir = join(outBase, stamp);
    const args: Exp3Args = {
      ...argsIn,
      python: argsIn.python ?? resolveServerPython(this.context),
      // a running server gets the stored token; a local run's server requires none (client/localServer.ts)
      token: argsIn.token ?? (argsIn.server ? await this.servers?.tokens.get() : undefined),
      outDir,
      // The commit recorded: the extension's own checkout, else the workspace when it is a Djinn checkout.
      gitDirs: [this.context.extensionUri.fsPath, ...(folder ? [folder.uri.fsPath] : [])],
      commandLine: ["vscode", "djinn.runExp3", JSON.stringify(stripUndefined({ ...argsIn, token: argsIn.token ? "***" : undefined }))],
    };
    await mkdir(outDir, { recursive: true });
    this.out.show(true);
    this.out.appendLine(`\n=== Exp 3 ${new Date().toLocaleString()}: ${describeArgs(args)}`);
    this.out.appendLine(`results folder: ${outDir}`);

    let events: { cancel(): void } | undefined;
    let startedHere = false;
    let eventsClient: DjinnClient | undefined;
    const follow = (address: string, token?: string) => {
      this.monitor.offer({ id: "exp3", address, token, label: "Exp 3" });
      this.vram.show(true, vscode.ViewColumn.Beside);
      eventsClient = new DjinnClient(address, { token });
      const stream = eventsClient.events({ sinceSeq: 0 });
      stream.on("event", (e) => this.sessionLine(e));
      stream.on("error", () => undefined);
      events = stream;
    };
    if (args.server) follow(args.server, args.token);

    let results: Exp3Results | undefined;
    let failure: string | undefined;
    try {
      results = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: "Djinn Exp 3", cancellable: true },
        async (progress, token) => {
          let reported = 0;
          progress.report({ message: args.server ? `connecting to ${args.server}` : "starting a local Djinn server" });
          token.onCancellationRequested(() => this.out.appendLine("cancelling…"));
          return runExp3(args, {
            log: (line) => {
              if (line.startsWith("[server] ")) {
                const rest = line.slice(9);
                if (rest.startsWith(READY_PREFIX) && !args.server) {
                  try {
                    const ready = JSON.parse(rest.slice(READY_PREFIX.length));
                    if (typeof ready.address === "string") {
                      startedHere = true;
                      follow(ready.address, args.token);
                    }
                  } catch {
                    /* the driver reports an unreadable ready line itself */
                  }
                }
                if (!/^Djinn serving/.test(rest)) return;
              }
              this.out.appendLine(line);
            },
            progress: (done, total, message) => {
              const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
              progress.report({ increment: Math.max(0, pct - reported), message: `${message} (${done}/${total})` });
              reported = Math.max(reported, pct);
            },
            isCancelled: () => token.isCancellationRequested,
          });
        },
      );
    } catch (e) {
      failure = e instanceof Error ? e.message : String(e);
    } finally {
      events?.cancel();
      eventsClient?.close();
      // A server of the window (or one named) goes on: the monitor goes back to whoever showed it.
      this.monitor.withdraw("exp3", startedHere ? "Exp 3 finished; its server has stopped. The chart shows the run." : "Exp 3 finished. The chart shows the run.");
    }
    if (!results) {
      this.out.appendLine(`Exp 3 could not run: ${failure}`);
      const show = "Show Output";
      void vscode.window.showErrorMessage(`Djinn: Exp 3 could not run: ${failure?.split("\n")[0]}`, show).then((c) => c === show && this.out.show());
      return undefined;
    }
    const resultsFile = join(outDir, RESULTS_FILE);
    const plotFile = join(outDir, PLOT_FILE);
    this.out.appendLine("");
    for (const line of summaryLines(results, resultsFile)) this.out.appendLine(line);
    this.out.appendLine("per session:");
    for (const x of results.sessions) {
      this.out.appendLine(
        `  #${x.index} session ${x.session_id}: ${x.ended}, ${x.stops} stops, ${x.swap_outs} swap-outs, ${x.swap_ins} swap-ins, tokens [${x.generated_tokens.join(", ")}] ${x.output_matches ? "= reference" : "≠ reference"}${x.error ? ` (${x.error})` : ""}`,
      );
    }
    const reportFile = join(outDir, REPORT_FILE);
    const svg = existsSync(plotFile) ? readFileSync(plotFile, "utf8") : "";
    await writeFile(reportFile, reportHtml(results, { resultsFile, plotFile, svg, standalone: true }));
    if (!cmd.noReport) showReport(this.context.extensionUri, results, { resultsFile, plotFile, svg, reportFile });
    const msg = `Djinn Exp 3: ${results.status.toUpperCase()} — ${results.num_sessions_finished}/${results.num_sessions_requested} sessions finished, ${results.outputs_match} identical, peak ${results.peaks.accounted_gb.toFixed(3)} of ${results.budget_gb.toFixed(3)} GB, ${results.swap_count.out} swap-outs`;
    if (results.status === "success") void vscode.window.showInformationMessage(msg);
    else void vscode.window.showWarningMessage(`${msg}: ${results.reasons[0] ?? ""}`);
    return { status: results.status, reasons: results.reasons, outDir, resultsFile, plotFile, reportFile };
  }

  /** One line per session event (stops, swaps, tokens, ends). */
  private sessionLine(e: Event): void {
    const who = `[session ${e.sessionId}${e.session?.label ? ` · ${e.session.label}` : ""}]`;
    const pos = e.session?.position;
    const where = pos ? `layers.${pos.layer}${POINTS[pos.point] ?? ""} (${pos.phase === 2 ? `decode ${pos.tokenIndex}` : "prefill"})` : "";
    switch (e.kind) {
      case EventKind.EVENT_KIND_CREATED:
        this.out.appendLine(`${who} created`);
        break;
      case EventKind.EVENT_KIND_STOPPED:
        this.out.appendLine(`${who} stopped at ${where}: ${STOP_REASONS[e.stopReason] ?? "stop"}`);
        break;
      case EventKind.EVENT_KIND_SWAP_OUT:
        this.out.appendLine(`${who} KV swapped out to host: ${(e.bytes / 1e6).toFixed(2)} MB in ${e.ms.toFixed(2)} ms (${e.gbps.toFixed(2)} GB/s)`);
        break;
      case EventKind.EVENT_KIND_SWAP_IN:
        this.out.appendLine(`${who} KV swapped in to the device: ${(e.bytes / 1e6).toFixed(2)} MB in ${e.ms.toFixed(2)} ms (${e.gbps.toFixed(2)} GB/s)`);
        break;
      case EventKind.EVENT_KIND_WAITING:
        this.out.appendLine(`${who} waiting for VRAM`);
        break;
      case EventKind.EVENT_KIND_FINISHED:
        this.out.appendLine(`${who} finished: tokens [${e.session?.generatedTokens.join(", ") ?? ""}]`);
        break;
      case EventKind.EVENT_KIND_ERROR:
        this.out.appendLine(`${who} error: ${e.text}`);
        break;
    }
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
