// Language features of model outlines (*.djinn, language djinn-model): document symbols (the
// Outline view and breadcrumbs: layers with their attention and MLP inside), a hover on a
// module name (what it is, where a breakpoint there stops, and at a stop the norms of its
// tensors), and inline values at the stopped layer: the L2 norms of the stop's tensors,
// evaluated by the debug session in the expression language (`norm(hidden)`).
import * as vscode from "vscode";
import { isStopTarget, moduleOfLine, moduleToStop } from "../debug-adapter/outline";

export const OUTLINE_LANGUAGE = "djinn-model";
/** at most this many tensors' norms on the stopped line (one evaluate each) */
const MAX_NORMS = 6;
/** tensors whose norm says little at a stop (the whole cache), and results ($N) */
const SKIP = /^(k_cache|v_cache|\$\d+)$/;

export interface OutlineEntry {
  name: string;
  /** 0-based line */
  line: number;
  /** column of the name */
  start: number;
  /** the line's comment: "layer · 181,504 params" */
  detail: string;
}

/** The module lines of an outline, in order. */
export function outlineEntries(text: string): OutlineEntry[] {
  const out: OutlineEntry[] = [];
  text.split(/\r?\n/).forEach((raw, line) => {
    const name = moduleOfLine(raw);
    if (!name) return;
    const hash = raw.indexOf("#");
    out.push({ name, line, start: raw.indexOf(name), detail: hash >= 0 ? raw.slice(hash + 1).trim() : "" });
  });
  return out;
}

function symbolKind(name: string): vscode.SymbolKind {
  if (/^layers\.\d+$/.test(name)) return vscode.SymbolKind.Module;
  if (/\.(attn|self_attn|attention)$/.test(name) || /\.mlp$/.test(name)) return vscode.SymbolKind.Function;
  if (name === "embed_tokens") return vscode.SymbolKind.Field;
  return vscode.SymbolKind.Object;
}

/** Symbols nested by name: layers.3.attn inside layers.3 (the nearest earlier module whose name is its prefix). */
export function outlineSymbols(document: vscode.TextDocument): vscode.DocumentSymbol[] {
  const roots: vscode.DocumentSymbol[] = [];
  const open: Array<{ name: string; sym: vscode.DocumentSymbol }> = [];
  for (const e of outlineEntries(document.getText())) {
    const lineRange = document.lineAt(e.line).range;
    const nameRange = new vscode.Range(e.line, e.start, e.line, e.start + e.name.length);
    const sym = new vscode.DocumentSymbol(e.name, e.detail, symbolKind(e.name), lineRange, nameRange);
    while (open.length && !e.name.startsWith(open[open.length - 1].name + ".")) open.pop();
    const parent = open[open.length - 1];
    if (parent) {
      parent.sym.children.push(sym);
      // a parent's range covers its children (the Outline view and breadcrumbs follow the cursor by ranges)
      for (const o of open) o.sym.range = o.sym.range.union(lineRange);
    } else {
      roots.push(sym);
    }
    open.push({ name: e.name, sym });
  }
  return roots;
}

/** Where a breakpoint on this module stops, in words. */
export function stopsWhere(name: string): string {
  const t = moduleToStop(name);
  if (!isStopTarget(t)) return t.error;
  if (name === "embed_tokens") return `a breakpoint here stops before layers.0 (the embedding's output is its input)`;
  if (/\.mlp$/.test(name)) return `a breakpoint here stops after the MLP of layer ${t.layer}`;
  if (name !== `layers.${t.layer}`) return `a breakpoint here stops after the attention of layer ${t.layer}`;
  return `a breakpoint here stops before layer ${t.layer} (its input)`;
}

/** The focused frame of a paused djinn debug session. */
function djinnFrame(): { session: vscode.DebugSession; frameId: number; threadId: number } | undefined {
  const item = vscode.debug.activeStackItem;
  if (!item || item.session.type !== "djinn" || !(item instanceof vscode.DebugStackFrame)) return undefined;
  return { session: item.session, frameId: item.frameId, threadId: item.threadId };
}

/** The layer a module belongs to (embed_tokens: layer 0's input). */
function layerOf(name: string): number | undefined {
  if (name === "embed_tokens") return 0;
  const m = /^layers\.(\d+)(\.|$)/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * The L2 norms of the tensors at a stop: the frame's Activations (catalog tensors, not the
 * caches), each `norm(name)` evaluated by the debug session at that frame.
 */
export async function stopNorms(session: vscode.DebugSession, frameId: number, token?: vscode.CancellationToken): Promise<Array<{ name: string; norm: string }>> {
  const scopes = await session.customRequest("scopes", { frameId });
  const acts = (scopes?.scopes ?? []).find((s: { name: string }) => s.name === "Activations");
  if (!acts) return [];
  const vars: Array<{ name: string; type?: string; variablesReference: number }> = (await session.customRequest("variables", { variablesReference: acts.variablesReference }))?.variables ?? [];
  // tensors with statistics (a type like float32[1, 20, 128]); lazy ones are computed on request: skip them
  const names = vars.filter((v) => !SKIP.test(v.name) && /\[/.test(v.type ?? "")).map((v) => v.name).slice(0, MAX_NORMS);
  const out: Array<{ name: string; norm: string }> = [];
  for (const name of names) {
    if (token?.isCancellationRequested) break;
    try {
      const r = await session.customRequest("evaluate", { expression: `norm(${name})`, frameId, context: "watch" });
      out.push({ name, norm: shortNumber(String(r?.result ?? "?")) });
    } catch {
      /* a tensor the expression language cannot take at this point: leave it out */
    }
  }
  return out;
}

function shortNumber(s: string): string {
  const x = Number(s);
  return Number.isFinite(x) ? (Math.abs(x) >= 1e5 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : String(Number(x.toPrecision(4)))) : s;
}

export function normsText(norms: Array<{ name: string; norm: string }>): string {
  return norms.map((n) => `‖${n.name}‖ ${n.norm}`).join(" · ");
}

class Symbols implements vscode.DocumentSymbolProvider {
  provideDocumentSymbols(document: vscode.TextDocument): vscode.DocumentSymbol[] {
    return outlineSymbols(document);
  }
}

class Hovers implements vscode.HoverProvider {
  async provideHover(document: vscode.TextDocument, position: vscode.Position, token: vscode.CancellationToken): Promise<vscode.Hover | undefined> {
    const e = outlineEntries(document.lineAt(position.line).text)[0];
    if (!e || position.character < e.start || position.character > e.start + e.name.length) return undefined;
    const range = new vscode.Range(position.line, e.start, position.line, e.start + e.name.length);
    const md = new vscode.MarkdownString();
    md.appendMarkdown(`**${e.name}**${e.detail ? ` · ${e.detail}` : ""}\n\n`);
    md.appendMarkdown(`${stopsWhere(e.name)}.`);
    // at a stop in this module's layer: the norms of the stop's tensors
    const f = djinnFrame();
    if (f) {
      try {
        const st = await f.session.customRequest("stackTrace", { threadId: f.threadId, startFrame: 0, levels: 1 });
        const top: string | undefined = st?.stackFrames?.[0]?.name;
        const stopped = top ? /^(\S+)/.exec(top)?.[1] : undefined;
        if (stopped && layerOf(stopped) !== undefined && layerOf(stopped) === layerOf(e.name)) {
          const norms = await stopNorms(f.session, f.frameId, token);
          if (norms.length) md.appendMarkdown(`\n\nAt the stop of session ${f.threadId} (${stopped}): ${normsText(norms)}`);
        }
      } catch {
        /* the session moved on: the hover without values */
      }
    }
    return new vscode.Hover(md, range);
  }
}

class InlineNorms implements vscode.InlineValuesProvider {
  async provideInlineValues(document: vscode.TextDocument, _viewPort: vscode.Range, context: vscode.InlineValueContext, token: vscode.CancellationToken): Promise<vscode.InlineValue[]> {
    const session = vscode.debug.activeDebugSession;
    if (!session || session.type !== "djinn") return [];
    const line = context.stoppedLocation.start.line;
    if (line < 0 || line >= document.lineCount) return [];
    const name = moduleOfLine(document.lineAt(line).text);
    if (!name) return [];
    const norms = await stopNorms(session, context.frameId, token);
    if (!norms.length) return [];
    const end = document.lineAt(line).range.end;
    return [new vscode.InlineValueText(new vscode.Range(end, end), normsText(norms))];
  }
}

export function registerOutlineLanguage(context: vscode.ExtensionContext): void {
  const selector: vscode.DocumentSelector = [{ language: OUTLINE_LANGUAGE }];
  context.subscriptions.push(
    vscode.languages.registerDocumentSymbolProvider(selector, new Symbols(), { label: "Djinn model outline" }),
    vscode.languages.registerHoverProvider(selector, new Hovers()),
    vscode.languages.registerInlineValuesProvider(selector, new InlineNorms()),
  );
}
