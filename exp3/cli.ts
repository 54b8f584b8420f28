// `node dist/exp3.js [options]`: runs Exp 3 and prints a summary; exit code 0 iff success.
import { join } from "node:path";
import { runExp3, RESULTS_FILE } from "./driver";
import { parseArgs, USAGE, UsageError, type Exp3Args } from "./options";
import { summaryLines } from "./summary";

async function main(): Promise<number> {
  let args: Exp3Args | null;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`exp3: ${e.message}\n\n${USAGE}`);
    return 2;
  }
  if (!args) {
    console.log(USAGE);
    return 0;
  }
  args.commandLine = process.argv.slice(1);
  // The token of a running server may come from the environment; a local run's server never
  // takes it from there (client/localServer.ts), so DJINN_TOKEN cannot lock the run out.
  if (args.server && args.token === undefined && process.env.DJINN_TOKEN) args.token = process.env.DJINN_TOKEN;

  // First Ctrl-C: cancel cleanly (sessions closed, server stopped); second: leave now.
  let cancelled = false;
  process.on("SIGINT", () => {
    if (cancelled) process.exit(130);
    cancelled = true;
    console.error("\nexp3: cancelling (Ctrl-C again to quit at once)...");
  });
  process.on("SIGTERM", () => (cancelled = true));

  const verbose = process.env.DJINN_EXP3_VERBOSE === "1";
  let lastProgress = "";
  const results = await runExp3(args, {
    log: (line) => {
      if (verbose || !line.startsWith("[server]")) console.error(line);
    },
    progress: (done, total, message) => {
      if (message !== lastProgress) console.error(`[${done}/${total}] ${message}`);
      lastProgress = message;
    },
    isCancelled: () => cancelled,
  });
  const outDir = args.outDir ?? "out/exp3";
  console.log(summaryLines(results, join(outDir, RESULTS_FILE)).join("\n"));
  return results.status === "success" ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`exp3: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
