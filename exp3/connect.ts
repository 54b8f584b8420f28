// Exp 3 start-up: connect to --server, or probe the device and start a local
// server with the matching defaults; then check the options against GetInfo.
import { DjinnClient, startLocalServer, type LocalServer, type ServerInfo } from "../client";
import { defaultsFor, type Exp3Args, type Exp3Options } from "./options";
import { probeCuda } from "./probe";

export interface Connection {
  opts: Exp3Options;
  client: DjinnClient;
  info: ServerInfo;
  address: string;
  server?: LocalServer;
}

const isAutoBudget = (b: number | string) => typeof b === "string" && b.startsWith("auto:");

export async function connect(args: Exp3Args, log: (line: string) => void): Promise<Connection> {
  if (args.server) {
    const tls = args.caFile || args.tlsServerName ? { caFile: args.caFile, serverName: args.tlsServerName } : undefined;
    const client = new DjinnClient(args.server, { token: args.token, tls });
    try {
      await client.waitForReady(15_000);
      const info = await client.getInfo();
      const opts = defaultsFor(info.device.startsWith("cuda"), args);
      // The running server's model and budget are what they are; say so when they differ.
      if (args.model && info.model?.name !== args.model) log(`note: --model ${args.model} ignored; the server runs ${info.model?.name}`);
      if (args.budgetGb !== undefined) log(`note: --budget-gb ignored with --server; the server's budget is ${(info.memory?.budgetBytes ?? 0) / 1e9} GB`);
      opts.model = info.model?.name ?? opts.model;
      return { opts, client, info, address: args.server };
    } catch (e) {
      client.close();
      throw e;
    }
  }

  const device = args.device ?? "auto";
  const gpu = device === "cuda" || (device === "auto" && (await probeCuda(args.python)));
  const opts = defaultsFor(gpu, args);
  log(`starting a local Djinn server: ${opts.model} on ${gpu ? "cuda" : "cpu"}, budget ${opts.budgetGb}`);
  const server = await startLocalServer({
    python: opts.python,
    model: opts.model,
    device: gpu ? "cuda" : "cpu",
    dtype: opts.dtype,
    budgetGb: opts.budgetGb,
    ...(isAutoBudget(opts.budgetGb) ? { planSessions: opts.sessions, planContext: opts.context } : {}),
    hostPoolGb: opts.hostPoolGb,
    maxContext: opts.context,
    swapPolicy: opts.swapPolicy,
    // a local run's server requires --token when one is given, else none (never $DJINN_TOKEN)
    token: opts.token,
    onLog: (line) => log(`[server] ${line}`),
  });
  const client = new DjinnClient(server.address, { token: server.token });
  try {
    await client.waitForReady(30_000);
    const info = await client.getInfo();
    return { opts, client, info, address: server.address, server };
  } catch (e) {
    client.close();
    await server.stop();
    throw e;
  }
}

/** Throws when the options cannot work on this server's model. */
export function validate(opts: Exp3Options, info: ServerInfo): void {
  const layers = info.model?.nLayers ?? 0;
  const problems: string[] = [];
  if (opts.sessions < 1) problems.push("--sessions must be at least 1");
  if (opts.newTokens < 1) problems.push("--new-tokens must be at least 1");
  if (opts.context <= opts.newTokens) problems.push(`--context ${opts.context} must exceed --new-tokens ${opts.newTokens}`);
  const maxContext = info.model?.maxContext ?? 0;
  if (maxContext > 0 && opts.context > maxContext) problems.push(`--context ${opts.context} exceeds the server's max context ${maxContext}`);
  for (const b of opts.breakpoints) if (b >= layers) problems.push(`breakpoint layer ${b} does not exist (the model has ${layers} layers)`);
  if (problems.length) throw new Error(`Exp 3 cannot run: ${problems.join("; ")}`);
}
