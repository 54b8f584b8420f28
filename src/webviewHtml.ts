// The HTML shell of the webview panels: a strict content security policy, a nonce for the
// bundled script (dist/webview/<name>.js) and its CSS, and the VS Code theme variables.
import { randomBytes } from "node:crypto";
import * as vscode from "vscode";

export function nonce(): string {
  return randomBytes(16).toString("base64").replace(/[^A-Za-z0-9]/g, "");
}

export interface ShellOptions {
  title: string;
  /** dist/webview/<script>.js (and <script>.css when it exists) */
  script?: string;
  /** media/<file>.css files */
  styles?: string[];
  body: string;
  /** extra img-src (e.g. data:) */
  allowDataImages?: boolean;
}

export function webviewShell(webview: vscode.Webview, extensionUri: vscode.Uri, o: ShellOptions): string {
  const n = nonce();
  const uri = (...p: string[]) => webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, ...p)).toString();
  const css = (o.styles ?? []).map((s) => `<link rel="stylesheet" href="${uri("media", s)}">`);
  if (o.script) css.unshift(`<link rel="stylesheet" href="${uri("dist", "webview", `${o.script}.css`)}">`);
  const csp = [
    "default-src 'none'",
    `style-src ${webview.cspSource} 'unsafe-inline'`,
    `img-src ${webview.cspSource}${o.allowDataImages ? " data:" : ""}`,
    `font-src ${webview.cspSource}`,
    o.script ? `script-src 'nonce-${n}'` : "",
  ].filter(Boolean).join("; ");
  const script = o.script ? `<script nonce="${n}" src="${uri("dist", "webview", `${o.script}.js`)}"></script>` : "";
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>${escapeHtml(o.title)}</title>
${css.join("\n")}
</head>
<body>
${o.body}
${script}
</body>
</html>`;
}

import { escapeHtml } from "./exp3ReportHtml";

export { escapeHtml };
