// The stdio entry of the Djinn debug adapter (bundled to dist/debugAdapter.js).
// The extension can also run DjinnDebugSession inline: `new DjinnDebugSession()`.
import { DebugSession } from "@vscode/debugadapter";
import { DjinnDebugSession } from "./session";

// stdout carries the protocol: anything else goes to stderr, and a stray rejection
// is reported there instead of ending the adapter.
process.on("unhandledRejection", (e) => console.error("djinn debug adapter: unhandled rejection:", e));

DebugSession.run(DjinnDebugSession);
