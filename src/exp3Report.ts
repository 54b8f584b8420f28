// The Exp 3 report in a webview (the HTML: exp3ReportHtml.ts).
import * as vscode from "vscode";
import type { Exp3Results } from "../exp3/results";
import { reportHtml, reportTitle, type ReportFiles } from "./exp3ReportHtml";
import { nonce } from "./webviewHtml";

export { REPORT_FILE, reportHtml, reportTitle } from "./exp3ReportHtml";
export const REPORT_VIEW_TYPE = "djinn.exp3Report";

export function showReport(extensionUri: vscode.Uri, r: Exp3Results, f: ReportFiles): vscode.WebviewPanel {
  const panel = vscode.window.createWebviewPanel(REPORT_VIEW_TYPE, reportTitle(r), vscode.ViewColumn.Active, { enableScripts: true, localResourceRoots: [] });
  panel.iconPath = vscode.Uri.joinPath(extensionUri, "media", "vram.svg");
  panel.webview.html = reportHtml(r, f, { cspSource: panel.webview.cspSource, nonce: nonce() });
  panel.webview.onDidReceiveMessage((m: { type: string }) => {
    if (m.type === "results") void vscode.window.showTextDocument(vscode.Uri.file(f.resultsFile), { preview: true });
    else if (m.type === "plot") void vscode.commands.executeCommand("vscode.open", vscode.Uri.file(f.plotFile));
    else if (m.type === "folder") void vscode.commands.executeCommand("revealFileInOS", vscode.Uri.file(f.resultsFile));
  });
  return panel;
}
