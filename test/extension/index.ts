// The extension-host test suite: VS Code (or code-server) loads this module as
// extensionTestsPath and calls run(). Mocha runs the suites in order; the counts go to
// $RESULTS/results.json (read by e2e/print-summary.js).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Mocha from "mocha";

// In running order: cheap checks first, the debug session, then Exp 3.
const SUITES = ["activation.test.js", "units.test.js", "setValue.test.js", "tensorLayout.test.js", "config.test.js", "server.test.js", "python.test.js", "windowServer.test.js", "debug.test.js", "hygiene.test.js", "exp3.test.js"];

export function run(): Promise<void> {
  const out = process.env.RESULTS || "/tmp/ext-test-results";
  mkdirSync(out, { recursive: true });
  const mocha = new Mocha({ ui: "bdd", timeout: 30_000, color: false, reporter: "spec" });
  const grep = process.env.DJINN_TEST_GREP;
  if (grep) mocha.grep(grep);
  for (const f of SUITES) mocha.addFile(join(__dirname, f));
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => {
      const s = runner.stats!;
      writeFileSync(join(out, "results.json"), JSON.stringify({ passes: s.passes, failures: s.failures, pending: s.pending, duration: s.duration }));
      if (failures > 0) reject(new Error(`${failures} tests failed.`));
      else resolve();
    });
  });
}
