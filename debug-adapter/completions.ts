// Debug Console completions: the server completes the word before the cursor (tensor names at
// the stop with their shapes, $N results, scalars, keyword arguments, functions with their
// signatures); this maps its answer to DAP's CompletionItems. Columns: the server takes and
// gives them as DAP does with columnsStartAt1 (the cursor 1-based; `start` 0-based in the text).
import type { DebugProtocol } from "@vscode/debugprotocol";
import type { CompleteResponse } from "../client";

/**
 * Characters after which VS Code asks for completions unprompted: a call's first argument, the
 * next one, a `$N`, the next part of a module name (`layers.` -> `layers.0` …).
 */
export const COMPLETION_TRIGGERS = ["(", ",", "$", "."];

/**
 * DAP completion targets of the server's answer. `toClientColumn` turns the adapter's 1-based
 * column into the client's (columnsStartAt1 or not); every item replaces the same word.
 */
export function completionTargets(r: CompleteResponse, toClientColumn: (column: number) => number): DebugProtocol.CompletionItem[] {
  const start = toClientColumn(r.start + 1);
  return r.items.map((i) => ({
    label: i.label,
    type: (i.type || undefined) as DebugProtocol.CompletionItemType | undefined,
    detail: i.detail || undefined,
    sortText: i.sortText || undefined,
    text: i.text || undefined,
    start,
    length: r.length,
  }));
}

export interface CompletionModule {
  name: string;
  kind: string;
  numParams: number;
}

/**
 * Module names for a dotted word before the cursor (`layers.1`, `layers.10.`): the server's
 * language has no attributes, but a module name typed in the Debug Console describes the module
 * (evaluate). Offers the modules one level below the part before the last dot. `cursor` is
 * 0-based in `text`; `toClientColumn` as for completionTargets. None when the word has no dot.
 */
export function moduleTargets(modules: CompletionModule[], text: string, cursor: number, toClientColumn: (column: number) => number): DebugProtocol.CompletionItem[] {
  const m = /(?<![\w$])[A-Za-z_]\w*(\.\w*)+$/.exec(text.slice(0, cursor));
  if (!m) return [];
  const word = m[0];
  const parent = word.slice(0, word.lastIndexOf("."));
  const depth = parent.split(".").length + 1;
  const byName = new Map(modules.map((x) => [x.name, x]));
  const names = new Set<string>();
  for (const x of modules) {
    if (!x.name.startsWith(parent + ".")) continue;
    const name = x.name.split(".").slice(0, depth).join(".");
    if (name.startsWith(word)) names.add(name);
  }
  const start = toClientColumn(cursor - word.length + 1);
  return [...names].map((name) => {
    const mod = byName.get(name);
    return {
      label: name,
      type: "module" as const,
      detail: mod ? `${mod.kind} · ${mod.numParams.toLocaleString("en-US")} params` : undefined,
      // layers.2 before layers.10
      sortText: name.replace(/\d+/g, (d) => d.padStart(6, "0")),
      start,
      length: word.length,
    };
  });
}
