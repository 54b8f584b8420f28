// Debug Console completions: the server completes the word before the cursor (tensor names at
// the stop with their shapes, $N results, scalars, keyword arguments, functions with their
// signatures); this maps its answer to DAP's CompletionItems. Columns: the server takes and
// gives them as DAP does with columnsStartAt1 (the cursor 1-based; `start` 0-based in the text).
import type { DebugProtocol } from "@vscode/debugprotocol";
import type { CompleteResponse } from "../client";

/**
 * Characters after which VS Code asks for completions unprompted: a call's first argument, the
 * next one, a `$N`. Not "." (the language has no attributes: the server offers nothing there).
 */
export const COMPLETION_TRIGGERS = ["(", ",", "$"];

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
