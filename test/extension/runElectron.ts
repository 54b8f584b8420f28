// Runs the extension-host suite in a desktop VS Code downloaded by @vscode/test-electron
// (needs network access to update.code.visualstudio.com; CI here uses code-server, see
// e2e/run-ext-tests.js). Usage: npm run test:electron [-- --version 1.100.3]
import { cpSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runTests } from "@vscode/test-electron";

async function main(): Promise<void> {
  const root = resolve(__dirname, "..", "..");
  const ws = mkdtempSync(join(tmpdir(), "djinn-ws-"));
  cpSync(join(root, "test", "fixtures", "ws"), ws, { recursive: true });
  const i = process.argv.indexOf("--version");
  await runTests({
    version: i > 0 ? process.argv[i + 1] : process.env.VSCODE_VERSION || "stable",
    extensionDevelopmentPath: root,
    extensionTestsPath: join(root, "out", "ext-test", "index.js"),
    launchArgs: [ws, "--disable-extensions", "--disable-workspace-trust"],
    extensionTestsEnv: { RESULTS: process.env.RESULTS || join(tmpdir(), "ext-test-results") },
  });
}

main().catch((e) => {
  console.error(`extension tests failed: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
