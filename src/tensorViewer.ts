// The tensor viewer (webview, script in media/tensor/): for a tensor of a paused session,
// the header (dtype, shape, server-computed stats, NaN/Inf counts), a heatmap of a 2-D slice
// with a slice picker, a histogram and values on hover. Only the slice shown is fetched, in
// the tensor's own dtype, and decoded here by the native codec (or its fallback).
import * as vscode from "vscode";
import { DjinnClient, type TensorSummary } from "../client";
import * as codec from "../native/codec";
import type { DebugTracker } from "./debugTracker";
import { defaultView, normalizeView, parseTensorExpression, picture, planSlice, type Picture, type SliceView } from "./tensorSlice";
import { webviewShell } from "./webviewHtml";

export const TENSOR_VIEW_TYPE = "djinn.tensor";
const HOVER_INLINE_MAX = 1 << 18;

export interface TensorRef {
  /** the debug session; undefined for a viewer restored after a reload until a debug session stops there */
  session?: vscode.DebugSession;
  /** the Djinn session (= DAP thread id) */
  threadId: number;
  /** catalog name or $N */
  name: string;
  /** leading indices fixed by the variable (hidden[0] -> [0]) */
  prefix: number[];
  /** what the variable was called in the editor */
  expression: string;
  /** for a $N result: the typed expression it is the value of (evaluated again at each new stop) */
  source?: string;
}

/** An Evaluate result ($N): the server keeps it only until its session leaves that stop. */
export function isResult(name: string): boolean {
  return /^\$\d+$/.test(name);
}

/** What a $N viewer says when its stop ends (the values it shows are that stop's). */
export function resultEndedMessage(ref: Pick<TensorRef, "name" | "threadId" | "source">, now: "resumed" | "stopped"): string {
  const what = `${ref.name} was a result of session ${ref.threadId}'s previous stop (results end with their stop): these are its values there`;
  if (ref.source) return now === "resumed" ? `${what}; '${ref.source}' is evaluated again at the next stop` : what;
  return `${what}. To see it at ${now === "resumed" ? "the next" : "this"} stop, evaluate it again (View Tensor › Expression…).`;
}

/**
 * What a viewer saves in its webview state (kept across a window reload; never the token):
 * enough to show the same tensor again, from the server directly until a debug session on
 * that server stops in that Djinn session.
 */
export interface SavedViewer {
  threadId: number;
  name: string;
  prefix: number[];
  expression: string;
  debugSession: string;
  address: string;
  caFile?: string;
  tlsServerName?: string;
}

export function isSavedViewer(x: unknown): x is SavedViewer {
  const v = x as SavedViewer;
  return !!v && typeof v === "object" && typeof v.threadId === "number" && typeof v.name === "string" && typeof v.expression === "string" && typeof v.address === "string" && Array.isArray(v.prefix);
}

export interface TensorRendered {
  rows: number;
  cols: number;
  nonBlank: boolean;
  at: number;
}

export interface Endpoint {
  address: string;
  token?: string;
  /** TLS to a running server: its CA file and the name on its certificate (the debug configuration's) */
  caFile?: string;
  tlsServerName?: string;
}

/** A client for an endpoint (TLS when the configuration asked for it). */
export function clientFor(e: Endpoint, deadlineMs?: number): DjinnClient {
  const tls = e.caFile || e.tlsServerName ? { caFile: e.caFile, serverName: e.tlsServerName } : undefined;
  return new DjinnClient(e.address, { token: e.token, tls, deadlineMs });
}

/** gRPC clients by server address, shared by the open viewers. */
class Clients implements vscode.Disposable {
  private readonly map = new Map<string, DjinnClient>();
  get(e: Endpoint): DjinnClient {
    const key = `${e.address}|${e.token ?? ""}|${e.caFile ?? ""}|${e.tlsServerName ?? ""}`;
    let c = this.map.get(key);
    if (!c) {
      c = clientFor(e, 60_000);
      this.map.set(key, c);
    }
    return c;
  }
  dispose(): void {
    for (const c of this.map.values()) c.close();
    this.map.clear();
  }
}

/**
 * Where a new tensor viewer opens: in the group of the viewers already open (the one used
 * last), as another tab; the first one beside the active editor. So any number of View
 * Tensors add at most one editor group.
 */
export function viewerColumn(lastUsed: vscode.ViewColumn | undefined, open: Array<vscode.ViewColumn | undefined>): vscode.ViewColumn {
  // A new panel's viewColumn is Beside (-2) until the workbench says where it went: not a group yet.
  const real = open.filter((c): c is vscode.ViewColumn => c !== undefined && c >= 1);
  if (lastUsed !== undefined && real.includes(lastUsed)) return lastUsed;
  return real.length ? real[real.length - 1] : vscode.ViewColumn.Beside;
}

export class TensorViewers implements vscode.Disposable {
  private readonly viewers = new Map<string, TensorViewer>();
  /** the group of the viewer shown last (panels can be dragged to another group) */
  private lastColumn?: vscode.ViewColumn;
  private placing: Promise<unknown> = Promise.resolve();
  private restoredSeq = 0;
  private readonly clients = new Clients();
  private readonly subs: vscode.Disposable[] = [];
  private readonly renderedEmitter = new vscode.EventEmitter<{ key: string; r: TensorRendered }>();
  readonly onDidRender = this.renderedEmitter.event;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly tracker: DebugTracker,
    private readonly log: (line: string) => void,
    /** the stored server token, for a viewer restored after a reload (it has no debug session to ask) */
    private readonly token: () => Promise<string | undefined> = async () => undefined,
  ) {
    const of = (v: TensorViewer, session: vscode.DebugSession) => v.ref.session?.id === session.id;
    this.subs.push(
      tracker.onStopped(({ session, threadId }) => {
        for (const v of this.viewers.values()) if (of(v, session) && (threadId === undefined || v.ref.threadId === threadId)) void v.stoppedAgain();
        for (const v of this.restored) if (threadId === undefined || v.ref.threadId === threadId) void this.adopt(v, session);
      }),
      tracker.onResumed(({ session, threadId }) => {
        for (const v of this.viewers.values()) {
          if (!of(v, session) || (threadId !== undefined && v.ref.threadId !== threadId)) continue;
          v.markStale(isResult(v.ref.name) ? resultEndedMessage(v.ref, "resumed") : `session ${v.ref.threadId} resumed: these values are from its previous stop; they refresh at its next stop`);
        }
      }),
      tracker.onThreadExited(({ session, threadId }) => {
        for (const v of this.viewers.values()) if (of(v, session) && v.ref.threadId === threadId) v.markStale(`session ${threadId} has ended`);
      }),
      vscode.debug.onDidTerminateDebugSession((s) => {
        for (const v of this.viewers.values()) if (of(v, s)) v.markStale("the debug session has ended");
      }),
    );
  }

  /** Viewers restored after a reload that no debug session has taken over yet. */
  private get restored(): TensorViewer[] {
    return this.open.filter((v) => !v.ref.session);
  }

  /**
   * The serializer's half (registered for TENSOR_VIEW_TYPE in extension.ts): a viewer of the
   * previous window comes back with its saved tensor, read from its server directly (the
   * session may still be paused there: the server keeps a detached session for its lease),
   * and is taken over by the first debug session that stops in that Djinn session.
   */
  async restore(panel: vscode.WebviewPanel, state: unknown): Promise<TensorViewer | undefined> {
    const saved = isSavedViewer((state as { restore?: unknown })?.restore) ? (state as { restore: SavedViewer }).restore : undefined;
    if (!saved) {
      // nothing to show again (a viewer of an older version): a page that says so, not a blank one
      panel.webview.options = { enableScripts: false };
      panel.webview.html = `<!DOCTYPE html><html><body><p>This tensor viewer was open before the window was reloaded; it kept no tensor to show. Use <b>Djinn: View Tensor</b> again.</p></body></html>`;
      return undefined;
    }
    const ref: TensorRef = { threadId: saved.threadId, name: saved.name, prefix: saved.prefix, expression: saved.expression };
    const endpoint: Endpoint = { address: saved.address, token: await this.token(), caFile: saved.caFile, tlsServerName: saved.tlsServerName };
    const key = `restored:${saved.address}:${saved.threadId}:${saved.expression}:${++this.restoredSeq}`;
    const v = new TensorViewer(this.extensionUri, ref, () => this.clients.get(endpoint), this.log, (r) => this.renderedEmitter.fire({ key, r }), vscode.ViewColumn.Active, (c) => (this.lastColumn = c), { panel, endpoint, debugSession: saved.debugSession });
    this.viewers.set(key, v);
    v.onDispose(() => this.viewers.delete(key));
    const view = (state as { view?: SliceView }).view;
    if (view && Array.isArray(view.index) && typeof view.rowDim === "number" && typeof view.colDim === "number") v.initialView = view;
    this.log(`tensor viewer ${saved.expression} of session ${saved.threadId} restored after a reload (${saved.address})`);
    await v.refresh(`restored after the window reload: read from ${saved.address} directly; a Djinn debug session that stops in session ${saved.threadId} takes it over`);
    return v;
  }

  /** A restored viewer joins a debug session that stopped in its Djinn session on its server. */
  private async adopt(v: TensorViewer, session: vscode.DebugSession): Promise<void> {
    if (v.ref.session) return;
    let endpoint: Endpoint;
    try {
      endpoint = await endpointOf(session);
    } catch {
      return;
    }
    if (endpoint.address !== v.endpoint?.address || v.ref.session) return;
    const threads: Array<{ id: number }> = (await Promise.resolve(session.customRequest("threads")).catch(() => undefined))?.threads ?? [];
    if (!threads.some((t) => t.id === v.ref.threadId)) return;
    const oldKey = [...this.viewers.entries()].find(([, x]) => x === v)?.[0];
    const key = `${session.id}:${v.ref.threadId}:${v.ref.expression}`;
    if (oldKey) this.viewers.delete(oldKey);
    if (this.viewers.has(key)) return v.dispose(); // the debug session has its own viewer of it already
    this.viewers.set(key, v);
    v.onDispose(() => this.viewers.get(key) === v && this.viewers.delete(key));
    v.adopt(session, endpoint, () => this.clients.get(endpoint));
    await v.refresh(`debug session '${session.name}' stopped in session ${v.ref.threadId}`);
  }

  get open(): TensorViewer[] {
    return [...this.viewers.values()];
  }

  async show(ref: TensorRef & { session: vscode.DebugSession }): Promise<TensorViewer> {
    // a typed expression's viewer is that expression's (its $N changes at every stop)
    const key = `${ref.session.id}:${ref.threadId}:${ref.source !== undefined ? `=${ref.source}` : ref.expression}`;
    const existing = this.viewers.get(key);
    if (existing) {
      if (ref.source !== undefined) existing.retarget(ref.name);
      existing.reveal();
      await existing.refresh();
      return existing;
    }
    const endpoint = await endpointOf(ref.session);
    // One placement at a time: the next viewer goes to the group this one landed in.
    const placing = this.placing.then(async () => {
      const again = this.viewers.get(key);
      if (again) return again;
      const column = viewerColumn(this.lastColumn, this.open.map((v) => v.column));
      const v = new TensorViewer(this.extensionUri, ref, () => this.clients.get(endpoint), this.log, (r) => this.renderedEmitter.fire({ key, r }), column, (c) => (this.lastColumn = c), { endpoint });
      this.viewers.set(key, v);
      v.onDispose(() => this.viewers.delete(key));
      this.lastColumn = (await v.placed()) ?? this.lastColumn;
      return v;
    });
    this.placing = placing.catch(() => undefined);
    const viewer = await placing;
    await viewer.refresh();
    return viewer;
  }

  dispose(): void {
    for (const v of this.viewers.values()) v.dispose();
    for (const s of this.subs) s.dispose();
    this.clients.dispose();
    this.renderedEmitter.dispose();
  }
}

/** The server of a djinn debug session: the adapter says where (djinn/serverInfo). */
export async function endpointOf(session: vscode.DebugSession): Promise<Endpoint> {
  const r = await session.customRequest("djinn/serverInfo");
  if (!r?.address) throw new Error(`the debug session '${session.name}' has no Djinn server yet`);
  const c = session.configuration;
  const str = (v: unknown) => (typeof v === "string" && v ? v : undefined);
  // A local server (the adapter started it) is plain gRPC; TLS settings are for `server`.
  const remote = !r.local;
  return { address: r.address, token: str(c.token), caFile: remote ? str(c.caFile) : undefined, tlsServerName: remote ? str(c.tlsServerName) : undefined };
}

export class TensorViewer {
  private readonly panel: vscode.WebviewPanel;
  private ready: Promise<void>;
  private markReady!: () => void;
  private summary?: TensorSummary;
  private view?: SliceView;
  private pic?: Picture;
  private seq = 0;
  private disposed = false;
  private readonly disposeFns: Array<() => void> = [];
  lastRendered?: TensorRendered;
  /** the last banner it showed (a stale or error message, or the note of a new tensor): tests read it */
  lastNotice?: { type: "stale" | "error" | "note"; message: string };
  /** where its tensor is (saved for a reload, without the token) */
  endpoint?: Endpoint;
  private debugSessionName?: string;
  /** the slice a restored viewer showed before the reload */
  initialView?: SliceView;

  constructor(
    extensionUri: vscode.Uri,
    readonly ref: TensorRef,
    private client: () => DjinnClient,
    private readonly log: (line: string) => void,
    private readonly rendered: (r: TensorRendered) => void,
    column: vscode.ViewColumn = vscode.ViewColumn.Beside,
    onShown: (column: vscode.ViewColumn) => void = () => undefined,
    /** restore: the panel the serializer handed back; endpoint: the server (for the saved state) */
    more: { panel?: vscode.WebviewPanel; endpoint?: Endpoint; debugSession?: string } = {},
  ) {
    this.ready = new Promise((r) => (this.markReady = r));
    this.endpoint = more.endpoint;
    this.debugSessionName = more.debugSession;
    const options = {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(extensionUri, "dist", "webview"), vscode.Uri.joinPath(extensionUri, "media")],
    };
    if (more.panel) {
      this.panel = more.panel;
      this.panel.webview.options = options;
      this.panel.title = `Tensor ${ref.expression} · session ${ref.threadId}`;
    } else {
      this.panel = vscode.window.createWebviewPanel(TENSOR_VIEW_TYPE, `Tensor ${ref.expression} · session ${ref.threadId}`, column, options);
    }
    this.panel.iconPath = vscode.Uri.joinPath(extensionUri, "media", "tensor.svg");
    this.panel.webview.html = webviewShell(this.panel.webview, extensionUri, {
      title: `Tensor ${ref.expression}`,
      script: "tensor",
      styles: ["common.css", "tensor.css"],
      body: `<div id="app" data-view="tensor"></div>`,
    });
    this.panel.webview.onDidReceiveMessage((m) => void this.onMessage(m));
    this.panel.onDidChangeViewState((e) => {
      if (e.webviewPanel.active && e.webviewPanel.viewColumn !== undefined) onShown(e.webviewPanel.viewColumn);
    });
    this.panel.onDidDispose(() => {
      this.disposed = true;
      for (const fn of this.disposeFns) fn();
    });
  }

  get title(): string {
    return this.panel.title;
  }

  /** the editor group it is in (undefined once closed; Beside until the workbench placed it) */
  get column(): vscode.ViewColumn | undefined {
    return this.disposed ? undefined : this.panel.viewColumn;
  }

  /** Resolves with its editor group once the workbench has placed the panel (undefined after `timeoutMs`). */
  placed(timeoutMs = 3000): Promise<vscode.ViewColumn | undefined> {
    const now = this.column;
    if (now !== undefined && now >= 1) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = (c: vscode.ViewColumn | undefined) => {
        clearTimeout(timer);
        sub.dispose();
        resolve(c);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const sub = this.panel.onDidChangeViewState((e) => {
        const c = e.webviewPanel.viewColumn;
        if (c !== undefined && c >= 1) done(c);
      });
    });
  }

  /** A debug session takes over a restored viewer: its server, its stops and resumes from now on. */
  adopt(session: vscode.DebugSession, endpoint: Endpoint, client: () => DjinnClient): void {
    this.ref.session = session;
    this.endpoint = endpoint;
    this.client = client;
    this.debugSessionName = session.name;
  }

  /** What the webview keeps across a reload. */
  private saved(): SavedViewer | undefined {
    const e = this.endpoint;
    if (!e) return undefined;
    return { threadId: this.ref.threadId, name: this.ref.name, prefix: this.ref.prefix, expression: this.ref.expression, debugSession: this.ref.session?.name ?? this.debugSessionName ?? "", address: e.address, caFile: e.caFile, tlsServerName: e.tlsServerName };
  }

  onDispose(fn: () => void): void {
    this.disposeFns.push(fn);
  }

  reveal(): void {
    this.panel.reveal(undefined, false);
  }

  markStale(message: string): void {
    void this.post({ type: "stale", message });
  }

  /** A typed expression's viewer shows its new result ($N). */
  retarget(name: string): void {
    this.ref.name = name;
    this.ref.expression = name;
    this.panel.title = `Tensor ${name} · session ${this.ref.threadId}`;
  }

  /**
   * Its session stopped again. A tensor of the stop is read again; a $N result is gone with the
   * stop it belonged to: its typed expression (if any) is evaluated at the new stop and the new
   * result shown, else the viewer keeps the old values and says whose they are.
   */
  async stoppedAgain(): Promise<void> {
    if (!isResult(this.ref.name)) return this.refresh("the session stopped again");
    const session = this.ref.session;
    if (!this.ref.source || !session) return this.markStale(resultEndedMessage(this.ref, "stopped"));
    try {
      const st = await session.customRequest("stackTrace", { threadId: this.ref.threadId, startFrame: 0, levels: 1 });
      const r = await session.customRequest("evaluate", { expression: this.ref.source, frameId: st?.stackFrames?.[0]?.id, context: "watch" });
      const m = /^(\$\d+) = /.exec(r?.result ?? "");
      if (!m) return this.markStale(`${resultEndedMessage(this.ref, "stopped")}; at this stop '${this.ref.source}' is ${r?.result ?? "nothing"}, not a tensor`);
      this.retarget(m[1]);
      await this.refresh(`'${this.ref.source}' evaluated again at the new stop: ${m[1]}`);
    } catch (e) {
      this.markStale(`${resultEndedMessage(this.ref, "stopped")}; evaluating '${this.ref.source}' at this stop failed: ${(e as Error).message}`);
    }
  }

  /** Re-reads the summary and the slice shown (a new stop, or the first time). */
  async refresh(why?: string): Promise<void> {
    const seq = ++this.seq;
    try {
      const summary = await this.client().getTensorSummary(this.ref.threadId, this.ref.name);
      if (seq !== this.seq || this.disposed) return;
      const sameShape = this.summary && this.summary.shape.join(",") === summary.shape.join(",");
      // a restored viewer keeps the slice it showed before the reload
      const restoredView = !this.summary && this.initialView ? normalizeView(summary.shape, this.initialView) : undefined;
      this.summary = summary;
      this.view = sameShape && this.view ? this.view : restoredView ?? defaultView(summary.shape, this.ref.prefix);
      await this.post({ type: "tensor", header: this.header(summary), view: this.view, note: why, restore: this.saved() });
      // a restored viewer says where its values come from (no debug session follows it yet)
      if (!this.ref.session && why) await this.post({ type: "stale", message: why });
      await this.fetch(seq);
    } catch (e) {
      if (seq !== this.seq || this.disposed) return;
      const msg = e instanceof Error ? ((e as { details?: string }).details || e.message) : String(e);
      this.log(`tensor viewer ${this.ref.expression}: ${msg}`);
      await this.post({ type: "error", message: `Cannot read ${this.ref.expression} of session ${this.ref.threadId}: ${msg}${why && !this.ref.session ? ` (${why})` : ""}` });
    }
  }

  private header(s: TensorSummary) {
    return {
      expression: this.ref.expression,
      name: this.ref.name,
      sessionId: this.ref.threadId,
      debugSession: this.ref.session?.name ?? this.debugSessionName ?? "",
      dtype: s.dtype,
      shape: s.shape,
      numel: s.numel,
      min: s.min,
      max: s.max,
      mean: s.mean,
      std: s.std,
      l2: s.l2Norm,
      nan: s.nanCount,
      inf: s.infCount,
      description: s.description,
      computeMs: s.computeMs,
      writable: s.writable,
      codec: codec.codecBackend,
      codecLine: codec.describeCodec(),
    };
  }

  private async fetch(seq: number): Promise<void> {
    const s = this.summary!;
    const view = normalizeView(s.shape, this.view!);
    this.view = view;
    const plan = planSlice(s.shape, view);
    const t0 = Date.now();
    const got = await this.client().getTensor({ sessionId: this.ref.threadId, name: this.ref.name, slice: plan.slice });
    const fetchMs = Date.now() - t0;
    if (seq !== this.seq || this.disposed) return;
    const pic = picture(new Uint8Array(got.data.buffer, got.data.byteOffset, got.data.byteLength), got.dtype, plan, got.sliceShape);
    this.pic = pic;
    const inline = pic.values.length <= HOVER_INLINE_MAX;
    await this.post({
      type: "slice",
      view,
      rows: pic.rows,
      cols: pic.cols,
      stride: plan.stride,
      sliceShape: got.sliceShape,
      dtype: got.dtype,
      image: pic.image,
      imgRows: pic.imgRows,
      imgCols: pic.imgCols,
      values: inline ? pic.values : undefined,
      stats: pic.stats,
      hist: pic.hist,
      fetch: { bytes: got.data.byteLength, ms: fetchMs, chunks: got.chunks, decodeMs: pic.decodeMs, codec: codec.codecBackend },
    });
  }

  private async onMessage(m: { type: string; [k: string]: unknown }): Promise<void> {
    switch (m.type) {
      case "ready":
        this.markReady();
        break;
      case "view": {
        if (!this.summary) return;
        this.view = normalizeView(this.summary.shape, m.view as SliceView);
        const seq = ++this.seq;
        try {
          await this.fetch(seq);
        } catch (e) {
          await this.post({ type: "error", message: `Cannot read this slice: ${(e as { details?: string }).details || (e as Error).message}` });
        }
        break;
      }
      case "hover": {
        const p = this.pic;
        const r = Number(m.r);
        const c = Number(m.c);
        if (!p || r < 0 || c < 0 || r >= p.rows || c >= p.cols) return;
        await this.post({ type: "hover", r, c, value: p.values[r * p.cols + c] });
        break;
      }
      case "refresh":
        await (isResult(this.ref.name) ? this.stoppedAgain() : this.refresh());
        break;
      case "rendered":
        this.lastRendered = { rows: Number(m.rows), cols: Number(m.cols), nonBlank: !!m.nonBlank, at: Date.now() };
        this.rendered(this.lastRendered);
        break;
    }
  }

  private async post(msg: unknown): Promise<void> {
    if (this.disposed) return;
    const m = msg as { type?: string; message?: string; note?: string };
    if (m.type === "stale" || m.type === "error") this.lastNotice = { type: m.type, message: m.message ?? "" };
    else if (m.type === "tensor") this.lastNotice = m.note ? { type: "note", message: m.note } : undefined;
    await this.ready;
    if (!this.disposed) await this.panel.webview.postMessage(msg);
  }

  dispose(): void {
    this.panel.dispose();
  }
}

/** A variable of the Variables view -> what the viewer shows. */
export function tensorOfVariable(variable: { name?: string; evaluateName?: string; value?: string }): { name: string; prefix: number[]; expression: string } | undefined {
  const expr = variable.evaluateName ?? variable.name;
  if (!expr) return undefined;
  const p = parseTensorExpression(expr);
  return p ? { ...p, expression: expr } : undefined;
}
